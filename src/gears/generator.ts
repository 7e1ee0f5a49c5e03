// The generator gear: a source that emits messages at a set rate (load, heartbeats, tests). It
// pauses while the lanes it feeds are full, so a source never outruns the rack.
import { createFluxMsg } from '../fluxmsg/fluxmsg.js';
import type { Pausable } from '../ring/pool.js';
import { configOf, type GearType, type Inject, type MainGear, type GearSpec } from './gear.js';
import type { GearManifest } from './manifest.js';

export const manifest: GearManifest = {
  type: 'generator',
  summary: 'a source: emits messages at a set rate (load, heartbeats, tests)',
  placement: 'main',
  inputs: [],
  outputs: ['out'],
  config: {
    type: 'object',
    description: 'generator',
    properties: {
      rate_per_s: { type: 'number', description: 'messages per second', minimum: 0.001 },
      count: { type: 'integer', description: 'stop after this many (default: run until the rack stops)', minimum: 1 },
      data: {
        type: 'object',
        description: 'data of every message; data.seq is added',
        properties: {},
        additionalProperties: { type: 'any', description: 'value' },
      },
      meta: {
        type: 'object',
        description: 'meta of every message (fluxar.topic: TOPIC makes a fluxar gear publish what reaches its in port)',
        properties: {},
        additionalProperties: { type: 'string', description: 'meta value' },
      },
    },
    required: ['rate_per_s'],
  },
  notes: ['Paused while the worker lanes it feeds are full: a source never outruns the rack.'],
};

export interface GeneratorConfig {
  rate_per_s: number;
  count?: number;
  data?: Record<string, unknown>;
  meta?: Record<string, string>;
}

class Generator implements MainGear, Pausable {
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private paused = false;
  private startedAt = 0;
  private sentAtStart = 0;
  private readonly config: GeneratorConfig;

  constructor(
    private readonly spec: GearSpec,
    private readonly inject: Inject,
  ) {
    this.config = configOf<GeneratorConfig>(spec, manifest);
  }

  async start(): Promise<void> {
    this.resume();
  }

  private tick(): void {
    const limit = this.config.count ?? Number.POSITIVE_INFINITY;
    const due = Math.floor(((Date.now() - this.startedAt) / 1000) * this.config.rate_per_s) + this.sentAtStart;
    const base = this.config.data ?? {};
    const meta = this.config.meta ?? {};
    while (this.seq < due && this.seq < limit && !this.paused) {
      const seq = this.seq++;
      this.inject(this.spec.name, 'out', createFluxMsg({ data: { ...base, seq }, meta: { ...meta, 'generator.gear': this.spec.name } }), seq, this);
    }
    if (this.seq >= limit) clearInterval(this.timer);
  }

  receive(): void {}

  pause(): void {
    this.paused = true;
    clearInterval(this.timer);
  }

  resume(): void {
    this.paused = false;
    this.startedAt = Date.now();
    this.sentAtStart = this.seq;
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), Math.max(1, Math.min(100, 1000 / this.config.rate_per_s)));
  }

  async quiesce(): Promise<void> {
    clearInterval(this.timer);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
  }
}

export const generatorGear: GearType = {
  manifest,
  main: (spec, ctx) => new Generator(spec, ctx.inject),
};
