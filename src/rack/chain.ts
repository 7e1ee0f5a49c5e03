import type { Logger } from 'pino';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { GEAR_MANIFESTS } from '../gears/manifest.js';
import type { GearServices } from '../gears/wasm/host.js';
import { WasmGear } from '../gears/wasm/host.js';
import type { PreparedModule } from '../gears/wasm/loader.js';
import type { WasmGearConfig } from '../gears/wasm/config.js';
import type { GearSpec, WireSpec } from '../scenario/types.js';

/** What the chain needs from the thread it runs in. */
export interface ChainEnv {
  /** A message for a gear that lives on the main thread (log, nats, ...). */
  toMain(gear: string, port: string, msg: FluxMsg): void;
  /** A message arriving on a fluxar gear's `in` port: an answer for one of its connections. */
  toFluxar(gear: string, msg: FluxMsg): void;
  services(gear: GearSpec): GearServices;
  logger?: Logger;
}

type Input = (port: string, msg: FluxMsg) => void;

export interface ChainStats {
  delivered: number;
  dropped: number;
  unrouted: number;
}

interface RouteRule {
  port: string;
  meta: Array<[string, string]>;
  data: Array<[string, unknown]>;
}

/**
 * The scenario's gear graph inside one thread. Hot-lane hops between gears here are plain
 * function calls; a message that reaches a main-thread gear leaves through the env.
 */
export class GearChain {
  readonly stats: ChainStats = { delivered: 0, dropped: 0, unrouted: 0 };
  readonly wasm = new Map<string, WasmGear>();
  private readonly inputs = new Map<string, Input>();
  private readonly wires = new Map<string, Array<{ gear: string; port: string }>>();
  private readonly env: ChainEnv;

  constructor(gears: GearSpec[], wires: WireSpec[], modules: Record<string, PreparedModule>, env: ChainEnv) {
    this.env = env;
    for (const w of wires) {
      const key = `${w.from.gear}.${w.from.port}`;
      const list = this.wires.get(key) ?? [];
      list.push({ gear: w.to.gear, port: w.to.port });
      this.wires.set(key, list);
    }
    for (const gear of gears) this.inputs.set(gear.name, this.makeInput(gear, modules));
  }

  /** Whether anything is wired from gear.port. */
  hasRoute(gear: string, port: string): boolean {
    return this.wires.has(`${gear}.${port}`);
  }

  /** Sends `msg` out of gear.port, along every wire from it. */
  emit(gear: string, port: string, msg: FluxMsg): void {
    const targets = this.wires.get(`${gear}.${port}`);
    if (targets === undefined) {
      this.stats.unrouted++;
      return;
    }
    // Fan-out along several wires: each target gets its own copy of the mutable parts.
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]!;
      this.deliver(t.gear, t.port, i === targets.length - 1 ? msg : { ...msg, meta: { ...msg.meta }, data: { ...msg.data }, path: [...msg.path] });
    }
  }

  deliver(gear: string, port: string, msg: FluxMsg): void {
    this.stats.delivered++;
    this.inputs.get(gear)!(port, msg);
  }

  private makeInput(gear: GearSpec, modules: Record<string, PreparedModule>): Input {
    const manifest = GEAR_MANIFESTS[gear.type]!;
    if (gear.type === 'fluxar') return (_port, msg) => this.env.toFluxar(gear.name, msg);
    if (manifest.placement === 'main') return (port, msg) => this.env.toMain(gear.name, port, msg);
    if (gear.type === 'wasm') {
      const config = gear.config as unknown as WasmGearConfig;
      const wasm = new WasmGear(gear.name, modules[gear.name]!, config, this.env.services(gear));
      this.wasm.set(gear.name, wasm);
      return (_port, msg) => {
        const outcome = wasm.process(msg);
        if (outcome.status === 'ok') {
          for (const out of outcome.msgs) this.emit(gear.name, 'out', out);
        } else if (outcome.status === 'reject') {
          msg.meta['error.reason'] = outcome.reason;
          msg.meta['error.gear'] = gear.name;
          if (this.hasRoute(gear.name, 'error')) this.emit(gear.name, 'error', msg);
          else this.stats.dropped++;
        } else this.stats.dropped++;
      };
    }
    if (gear.type === 'router') {
      const rules: RouteRule[] = ((gear.config.routes ?? []) as Array<Record<string, unknown>>).map((r) => ({
        port: String(r.port),
        meta: Object.entries((r.meta ?? {}) as Record<string, string>),
        data: Object.entries((r.data ?? {}) as Record<string, unknown>),
      }));
      return (_port, msg) => {
        for (const rule of rules) {
          if (rule.meta.every(([k, v]) => msg.meta[k] === v) && rule.data.every(([k, v]) => msg.data[k] === v)) {
            this.emit(gear.name, rule.port, msg);
            return;
          }
        }
        this.emit(gear.name, 'default', msg);
      };
    }
    throw new Error(`gear type ${gear.type} cannot run in a worker`);
  }
}
