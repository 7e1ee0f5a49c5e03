import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import type { GearSpec, WireSpec } from '../scenario/types.js';
import type { CallTrace, ConnectionHost, WorkerGearContext } from '../gears/gear.js';
import { gearType } from '../gears/registry.js';
import type { GuestClock } from '../gears/wasm/guest-clock.js';

/** What the chain needs from the thread it runs in, beyond what it builds itself. */
export type ChainEnv = Omit<WorkerGearContext, 'emit' | 'hasRoute' | 'ended' | 'emitTracked' | 'lastHop' | 'guestClockFor'> & {
  /** The worker's guest clock; a gear's guest id is its index in the chain's gears. */
  guestClock: GuestClock | undefined;
  /** A message for a gear that lives on the main thread (log, nats, ...). */
  toMain(gear: string, port: string, msg: FluxMsg): void;
};

export interface ChainStats {
  delivered: number;
  unrouted: number;
}

type Input = (port: string, msg: FluxMsg) => void;

/**
 * The scenario's gear graph inside one thread. Hot-lane hops between gears are plain function
 * calls; a message for a main-thread gear leaves through the env. Each gear is built by its type
 * (registry.ts) from what the main thread prepared for it.
 */
export class GearChain {
  readonly stats: ChainStats = { delivered: 0, unrouted: 0 };
  /** The gears that host connections' sessions, by gear name. */
  readonly connectionHosts = new Map<string, ConnectionHost>();
  private readonly inputs = new Map<string, Input>();
  private readonly wires = new Map<string, Array<{ gear: string; port: string }>>();
  /** The sends being tracked (nested when a tracked send reaches another tracked send). */
  private readonly traces: CallTrace[] = [];
  private readonly tracePool: CallTrace[] = [];
  private hopGear = '';
  private hopPort = '';

  constructor(gears: GearSpec[], wires: WireSpec[], prepared: Record<string, unknown>, env: ChainEnv) {
    for (const w of wires) {
      const key = `${w.from.gear}.${w.from.port}`;
      const list = this.wires.get(key) ?? [];
      list.push({ gear: w.to.gear, port: w.to.port });
      this.wires.set(key, list);
    }
    const ctx: WorkerGearContext = {
      ...env,
      emit: (gear, port, msg) => this.emit(gear, port, msg),
      hasRoute: (gear, port) => this.hasRoute(gear, port),
      ended: (end) => this.traces.at(-1)?.ends.push(end),
      emitTracked: (gear, port, msg) => this.emitTracked(gear, port, msg),
      lastHop: () => ({ gear: this.hopGear, port: this.hopPort }),
      guestClockFor: (gear) => {
        const clock = env.guestClock;
        const guest = gears.findIndex((g) => g.name === gear);
        return clock === undefined ? undefined : { enter: () => clock.enter(guest), leave: () => clock.leave() };
      },
    };
    for (const spec of gears) {
      const type = gearType(spec);
      if (type.worker === undefined) {
        this.inputs.set(spec.name, (port, msg) => {
          const trace = this.traces.at(-1);
          if (trace !== undefined) trace.leftWorker = true;
          env.toMain(spec.name, port, msg);
        });
        continue;
      }
      const gear = type.worker(spec, prepared[spec.name], ctx);
      this.inputs.set(spec.name, gear.input);
      if (gear.connections !== undefined) this.connectionHosts.set(spec.name, gear.connections);
    }
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
      this.traces.at(-1)?.ends.push({ gear, port, why: 'unrouted' });
      return;
    }
    // Fan-out along several wires: each target gets its own copy of the mutable parts.
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]!;
      this.hopGear = gear;
      this.hopPort = port;
      this.deliver(t.gear, t.port, i === targets.length - 1 ? msg : { ...msg, meta: { ...msg.meta }, data: { ...msg.data }, path: [...msg.path] });
    }
  }

  deliver(gear: string, port: string, msg: FluxMsg): void {
    this.stats.delivered++;
    this.inputs.get(gear)!(port, msg);
  }

  /**
   * Emits, recording how the messages it starts end in this worker. Traces are reused (one per
   * nesting depth), so a call on the hot path allocates nothing for them.
   */
  emitTracked(gear: string, port: string, msg: FluxMsg): CallTrace {
    const depth = this.traces.length;
    const trace = (this.tracePool[depth] ??= { ends: [], leftWorker: false });
    trace.ends.length = 0;
    trace.leftWorker = false;
    this.traces.push(trace);
    try {
      this.emit(gear, port, msg);
    } finally {
      this.traces.pop();
    }
    return trace;
  }
}
