// The wasm gear: a Wasm logic gear (docs/wasm-abi.md) in every worker. OK sends the message(s)
// to `out`; Reject sends the message to `error` with meta error.reason and error.gear; Drop is
// counted.
import type { GearType, WorkerGearContext, GearSpec } from './gear.js';
import type { GearManifest } from './manifest.js';
import type { WasmGearConfig } from './wasm/config.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { type FailureKind, type GearOutcome, type GearServices, WasmGear } from './wasm/host.js';
import { fluxMsgOf } from './records.js';
import type { PreparedModule } from './wasm/loader.js';

export const manifest: GearManifest = {
  type: 'wasm',
  summary: 'runs a Wasm logic gear (docs/wasm-abi.md) in every worker',
  placement: 'worker',
  inputs: ['in'],
  outputs: ['out', 'error'],
  config: {
    type: 'object',
    description: 'Wasm gear',
    properties: {
      module: { type: 'string', description: 'path (relative to the scenario), file://path or urn:wasm:NAME:VERSION' },
      source: { type: 'string', description: "the same as module (fluxrig's name for it)" },
      entrypoint: { type: 'string', description: 'exported function that handles a message', default: 'process' },
      allow_kv: { type: 'boolean', description: 'grant flux_kv_get and flux_kv_put', default: false },
      allow_http: { type: 'boolean', description: 'grant flux_req_http (to http_allow_hosts only)', default: false },
      http_allow_hosts: { type: 'array', description: 'hosts the gear may call', items: { type: 'string', description: 'host or host:port' } },
      memory_limit_pages: { type: 'integer', description: 'linear memory ceiling in 64 KiB pages', minimum: 1, maximum: 65536, default: 256 },
      timeout_ms: { type: 'integer', description: 'per-message time limit', minimum: 1, default: 100 },
      log_rate_per_s: { type: 'integer', description: 'log lines per second', minimum: 0, default: 50 },
      wasi: {
        type: 'object',
        description: 'WASI descriptors granted beyond clocks, random, proc_exit and stdout/stderr (docs/wasm-abi.md)',
        properties: {
          env: {
            type: 'object',
            description: 'environment variables the guest sees (none otherwise)',
            properties: {},
            additionalProperties: { type: 'string', description: 'value' },
          },
          preopens: {
            type: 'array',
            description: 'host directories the guest may open (none otherwise)',
            items: {
              type: 'object',
              description: 'a preopened directory',
              properties: {
                guest: { type: 'string', description: 'the path the guest opens it by, e.g. /data' },
                host: { type: 'string', description: 'the host directory (relative to the scenario)' },
                rw: { type: 'boolean', description: 'writable (read-only otherwise)', default: false },
              },
              required: ['guest', 'host'],
            },
          },
        },
      },
    },
    oneRequired: ['module', 'source'],
  },
  notes: ['OK passes the message(s) to `out`; Reject sends it to `error` with meta error.reason and error.gear; Drop is counted.'],
};

/** The config of a wasm gear in a scenario; `source` is fluxrig's (Go) name for `module`. */
export function wasmConfig(spec: GearSpec): WasmGearConfig {
  const raw = spec.config as Partial<WasmGearConfig> & { source?: string };
  // Validation refuses a wasm gear with neither key, so one of them is there.
  return { ...raw, module: raw.module ?? raw.source! };
}

/**
 * The services a Wasm gear is granted in a worker, built in this one place for the rack and for
 * the gear pool: log, KV (allow_kv), HTTP (allow_http), emit (to `out`) and the guest clock.
 */
export function gearServices(
  name: string,
  config: WasmGearConfig,
  ctx: Pick<WorkerGearContext, 'logger' | 'lineWriter' | 'kv' | 'http' | 'guestClockFor'>,
  emit: GearServices['emit'],
): GearServices {
  return {
    logger: ctx.logger,
    lines: ctx.lineWriter?.(name),
    kv: config.allow_kv ? ctx.kv : undefined,
    http: config.allow_http ? ctx.http() : undefined,
    emit,
    guestClock: ctx.guestClockFor(name),
  };
}

export const wasmGear: GearType = {
  manifest,
  prepare: (spec, ctx) => ctx.loadModule(spec),
  worker: (spec, prepared, ctx) => {
    const config = wasmConfig(spec);
    const name = spec.name;
    const gear = new WasmGear(
      name,
      prepared as PreparedModule,
      config,
      gearServices(name, config, ctx, (msg) => ctx.emit(name, 'out', msg)),
    );
    let lastFailureLog = 0;
    return {
      input: (_port, msg) => {
        const outcome = gear.process(msg);
        if (outcome.status !== 'ok') return notOk(outcome, msg);
        for (const out of outcome.msgs) ctx.emit(name, 'out', out);
      },
      // A bus delivery or another gear's output, as bytes: into the guest and out of it without
      // being decoded or encoded on the way (docs/performance.md, "Bytes through a Wasm gear").
      inputEncoded: (_port, bytes) => {
        const outcome = gear.processEncoded(bytes);
        if (outcome.status !== 'ok') return notOk(outcome, outcome.status === 'drop' ? undefined : fluxMsgOf(bytes));
        for (const out of outcome.encoded) ctx.emitEncoded(name, 'out', out);
      },
    };

    /** A message the gear dropped, rejected or failed on (`msg`: the message it was given; not needed for a drop). */
    function notOk(outcome: Exclude<GearOutcome, { status: 'ok' }>, msg: FluxMsg | undefined): void {
      switch (outcome.status) {
        case 'drop':
          return ctx.ended({ gear: name, why: 'dropped' });
        case 'reject':
          return toErrorPort(msg!, outcome.reason, FAILURE_CODES.reject, 'rejected');
        case 'fail': {
          // The detail (pointers, offsets, source positions) is for the operator, once a second.
          const now = Date.now();
          if (now - lastFailureLog >= FAILURE_LOG_INTERVAL_MS) {
            lastFailureLog = now;
            ctx.logger.error({ gear: name, kind: outcome.kind, detail: outcome.detail, failed: gear.stats.failed }, `wasm gear ${name} failed`);
          }
          return toErrorPort(msg!, failureReason(name, outcome.kind), FAILURE_CODES[outcome.kind], 'failed');
        }
      }
    }

    /** A rejected or failed message goes to `error` with its reason; with `error` unwired it ends here. */
    function toErrorPort(msg: FluxMsg, reason: string, code: number, why: 'rejected' | 'failed'): void {
      msg.meta['error.reason'] = reason;
      msg.meta['error.gear'] = name;
      msg.meta['error.code'] = String(code);
      if (ctx.hasRoute(name, 'error')) ctx.emit(name, 'error', msg);
      else ctx.ended({ gear: name, why, reason, code });
    }
  },
};

/** FLUXAR codes a caller gets: a business reject is 403; a gear that breaks is a server error. */
export const FAILURE_CODES: Readonly<Record<'reject' | FailureKind, number>> = {
  reject: 403,
  trap: 500,
  output: 500,
  memory: 500,
  timeout: 503,
  exit: 500,
};
const FAILURE_LOG_INTERVAL_MS = 1000;

/** What a caller is told when a gear breaks: which gear, and the kind, never the guest's internals. */
export function failureReason(gear: string, kind: FailureKind): string {
  switch (kind) {
    case 'memory':
      return `gear ${gear} ran out of memory near its limit (memory_limit_pages)`;
    case 'timeout':
      return `gear ${gear} ran past its time limit (timeout_ms)`;
    case 'output':
      return `gear ${gear} failed: it returned output the host cannot read`;
    case 'exit':
      return `gear ${gear} failed: it exited (proc_exit)`;
    default:
      return `gear ${gear} failed`;
  }
}
