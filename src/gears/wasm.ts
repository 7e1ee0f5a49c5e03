// The wasm gear: a Wasm logic gear (docs/wasm-abi.md) in every worker. OK sends the message(s)
// to `out`; Reject sends the message to `error` with meta error.reason and error.gear; Drop is
// counted.
import type { GearType, WorkerGearContext, GearSpec } from './gear.js';
import type { GearManifest } from './manifest.js';
import { WASM_DEFAULTS, type WasmGearConfig } from './wasm/config.js';
import { type GearServices, WasmGear } from './wasm/host.js';
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
  config: WasmGearConfig,
  ctx: Pick<WorkerGearContext, 'logger' | 'kv' | 'http' | 'guestClock'>,
  emit: GearServices['emit'],
): GearServices {
  return {
    logger: ctx.logger,
    kv: config.allow_kv ? ctx.kv : undefined,
    http: config.allow_http ? ctx.http() : undefined,
    emit,
    guestClock: ctx.guestClock,
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
      gearServices(config, ctx, (msg) => ctx.emit(name, 'out', msg)),
    );
    return {
      input: (_port, msg) => {
        const outcome = gear.process(msg);
        if (outcome.status === 'ok') {
          for (const out of outcome.msgs) ctx.emit(name, 'out', out);
        } else if (outcome.status === 'reject') {
          msg.meta['error.reason'] = outcome.reason;
          msg.meta['error.gear'] = name;
          if (ctx.hasRoute(name, 'error')) ctx.emit(name, 'error', msg);
        }
      },
    };
  },
};

export { WASM_DEFAULTS };
