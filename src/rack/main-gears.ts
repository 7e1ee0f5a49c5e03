import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { Logger } from 'pino';
import { decodeFluxMsg, encodeFluxMsg } from '../fluxmsg/codec.js';
import { createFluxMsg, type FluxMsg } from '../fluxmsg/fluxmsg.js';
import type { GearSpec } from '../scenario/types.js';
import type { Pausable } from '../ring/pool.js';

/** Where a main-thread gear's output goes: into the chain, in the worker that owns `key`. */
export type Inject = (gear: string, port: string, msg: FluxMsg, key: number, source?: Pausable) => void;

/** A gear that runs on the main thread (it does I/O). */
export interface MainGear {
  readonly spec: GearSpec;
  start(): Promise<void>;
  /** A message for one of its input ports. */
  receive(port: string, msg: FluxMsg): void;
  stop(): Promise<void>;
}

/** Writes what it receives to the rack log. */
export class LogGear implements MainGear {
  constructor(
    readonly spec: GearSpec,
    private readonly logger: Logger,
  ) {}
  async start(): Promise<void> {}
  receive(_port: string, msg: FluxMsg): void {
    const level = (this.spec.config.level as 'debug' | 'info' | 'warn' | 'error' | undefined) ?? 'info';
    const fields = this.spec.config.fields as string[] | undefined;
    const data = fields === undefined ? msg.data : Object.fromEntries(fields.map((f) => [f, msg.data[f]]));
    this.logger[level]({ gear: this.spec.name, meta: msg.meta, data: safeForJson(data) }, 'message');
  }
  async stop(): Promise<void> {}
}

function safeForJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)));
}

/** Emits messages at a set rate; pauses while the lanes it feeds are full. */
export class GeneratorGear implements MainGear, Pausable {
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private paused = false;
  private startedAt = 0;
  private sentAtStart = 0;

  constructor(
    readonly spec: GearSpec,
    private readonly inject: Inject,
  ) {}

  async start(): Promise<void> {
    this.resume();
  }

  private tick(): void {
    const rate = this.spec.config.rate_per_s as number;
    const limit = (this.spec.config.count as number | undefined) ?? Infinity;
    const due = Math.floor(((Date.now() - this.startedAt) / 1000) * rate) + this.sentAtStart;
    const base = (this.spec.config.data ?? {}) as Record<string, unknown>;
    while (this.seq < due && this.seq < limit && !this.paused) {
      const seq = this.seq++;
      this.inject(this.spec.name, 'out', createFluxMsg({ data: { ...base, seq }, meta: { 'generator.gear': this.spec.name } }), seq, this);
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
    const rate = this.spec.config.rate_per_s as number;
    this.timer = setInterval(() => this.tick(), Math.max(1, Math.min(100, 1000 / rate)));
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
  }
}

/** Publishes to a subject, or feeds a subject's messages into the scenario. */
export class NatsGear implements MainGear {
  private subscription: Subscription | undefined;
  private js: JetStreamClient | undefined;
  private readonly acks = new Set<Promise<unknown>>();
  private seq = 0;

  constructor(
    readonly spec: GearSpec,
    private readonly nc: NatsConnection,
    private readonly inject: Inject,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const subject = this.spec.config.subject as string;
    if (this.spec.config.jetstream) this.js = jetstream(this.nc);
    if (this.spec.config.mode === 'subscribe') {
      this.subscription = this.nc.subscribe(subject, {
        callback: (err, m) => {
          if (err !== null) return this.logger.warn({ gear: this.spec.name, err: err.message }, 'subscription error');
          let msg: FluxMsg;
          try {
            msg = decodeFluxMsg(m.data, { copyBuffers: true });
          } catch {
            // Not a fluxMsg: carry the bytes as they came.
            msg = createFluxMsg({ raw: m.data.slice(), meta: {} });
          }
          msg.meta['nats.subject'] = m.subject;
          this.inject(this.spec.name, 'out', msg, this.seq++);
        },
      });
    }
  }

  receive(_port: string, msg: FluxMsg): void {
    const subject = this.spec.config.subject as string;
    const bytes = encodeFluxMsg(msg);
    if (this.js === undefined) {
      this.nc.publish(subject, bytes);
      return;
    }
    // JetStream publishes are pipelined: the acks are collected, not awaited one by one.
    const ack = this.js
      .publish(subject, bytes)
      .catch((err: Error) => this.logger.error({ gear: this.spec.name, err: err.message }, 'JetStream publish failed'));
    this.acks.add(ack);
    void ack.finally(() => this.acks.delete(ack));
  }

  async stop(): Promise<void> {
    this.subscription?.unsubscribe();
    await Promise.all(this.acks);
  }
}
