// The log gear: a sink that writes every message it receives to the rack log (pino).
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { configOf, type GearType, type MainGear } from './gear.js';
import type { GearManifest } from './manifest.js';

export const manifest: GearManifest = {
  type: 'log',
  summary: 'a sink: writes every message it receives to the rack log (pino)',
  placement: 'main',
  inputs: ['in'],
  outputs: [],
  config: {
    type: 'object',
    description: 'log sink',
    properties: {
      level: { type: 'string', description: 'log level', enum: ['debug', 'info', 'warn', 'error'], default: 'info' },
      fields: { type: 'array', description: 'data fields to include (default: all)', items: { type: 'string', description: 'field' } },
    },
  },
  notes: [],
};

export interface LogConfig {
  level: 'debug' | 'info' | 'warn' | 'error';
  fields?: string[];
}

/** A value pino can write as JSON: bigints as text, bytes as base64. */
function safeForJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)));
}

export const logGear: GearType = {
  manifest,
  main: (spec, ctx): MainGear => {
    const { level, fields } = configOf<LogConfig>(spec, manifest);
    return {
      async start() {},
      receive(_port: string, msg: FluxMsg) {
        const data = fields === undefined ? msg.data : Object.fromEntries(fields.map((f) => [f, msg.data[f]]));
        ctx.logger[level]({ gear: spec.name, meta: msg.meta, data: safeForJson(data) }, 'message');
      },
      async quiesce() {},
      async stop() {},
    };
  },
};
