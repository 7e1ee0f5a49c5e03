import { isPlainFluxMsg } from '../fluxmsg/check.js';
import { decodeFluxMsg, encodeFluxMsg } from '../fluxmsg/codec.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { fluxMsgOf } from '../gears/records.js';
import type { GearSpec, WireSpec } from '../scenario/types.js';
import type { CallTrace, ConnectionHost, MessageEnd, WorkerGear, WorkerGearContext } from '../gears/gear.js';
import type { GearCounts, StatsRecord } from '../gears/records.js';
import { emptyHistogram, type HistogramData, observe } from '../telemetry/histogram.js';
import { gearType } from '../gears/registry.js';
import type { GuestClock } from '../gears/wasm/guest-clock.js';
import { isBusWire } from '../scenario/lanes.js';
import { scenarioTargets } from './targets.js';

/** What the chain needs from the thread it runs in, beyond what it builds itself. */
export type ChainEnv = Omit<
  WorkerGearContext,
  'emit' | 'emitEncoded' | 'hasRoute' | 'describe' | 'ended' | 'emitTracked' | 'lastHop' | 'guestClockFor' | 'callTimed'
> & {
  /** The worker's guest clock; a gear's guest id is its index in the chain's guestNames. */
  guestClock: GuestClock | undefined;
  /** A message, encoded, for a gear that lives on the main thread (log, nats, ...). */
  toMain(gear: string, port: string, bytes: Uint8Array): void;
  /**
   * A message sent out of gear.port along a bus wire: the main thread publishes it. `bytes`: its
   * encoding, when the message came as bytes (published as they are; `msg` gives its id and call).
   */
  toLane(gear: string, port: string, msg: FluxMsg, bytes?: Uint8Array): void;
};

/** One version of the scenario as a chain runs it. */
export interface ChainPlan {
  gears: GearSpec[];
  wires: WireSpec[];
  /** What each gear type's prepare() returned on the main thread, by gear name. */
  prepared: Record<string, unknown>;
  /**
   * Each gear's identity (type, config and what prepare() read): a gear whose fingerprint is the
   * same in the next plan is kept as it is, with its state and its connections.
   */
  fingerprints: Record<string, string>;
  /** Guest ids for the pool's watchdog: a gear's index here (the list only grows across plans). */
  guestNames: string[];
}

export interface ChainStats {
  delivered: number;
  unrouted: number;
}

type Input = (port: string, msg: FluxMsg) => void;
type InputEncoded = (port: string, bytes: Uint8Array) => void;

/** Where a wire from gear.port leads in this thread: a gear's input, or the bus (lane). */
interface WireTarget {
  gear: string;
  port: string;
  lane: boolean;
}

interface BuiltGear {
  fingerprint: string;
  input: Input;
  /** The gear reads bytes (WorkerGear.inputEncoded), or lives on the main thread. */
  inputEncoded: InputEncoded | undefined;
  host: ConnectionHost | undefined;
  messages: number;
  errors: number;
}

/** Call latencies kept per worker between two stats requests (a uniform sample beyond it). */
const LATENCY_SAMPLES = 1024;

/**
 * The scenario's gear graph inside one thread. Hot-lane hops between gears are plain function
 * calls; a message for a main-thread gear leaves through the env. Each gear is built by its type
 * (registry.ts) from what the main thread prepared for it.
 *
 * A new plan (a reload) is taken up between two records: gears whose fingerprint did not change
 * are kept (a fluxar gear keeps its sessions, a Wasm gear its instance), the others are built
 * afresh, and the wires are replaced at once.
 */
export class GearChain {
  readonly stats: ChainStats = { delivered: 0, unrouted: 0 };
  /** The gears that host connections' sessions, by gear name. */
  readonly connectionHosts = new Map<string, ConnectionHost>();
  private gears = new Map<string, BuiltGear>();
  private wires = new Map<string, WireTarget[]>();
  private guestNames: string[] = [];
  /** The plan running now: its gears and wires answer fluxar.describe. */
  private plan!: ChainPlan;
  private readonly ctx: WorkerGearContext;
  private readonly toLane: ChainEnv['toLane'];
  /** The sends being tracked (nested when a tracked send reaches another tracked send). */
  private readonly traces: CallTrace[] = [];
  private readonly tracePool: CallTrace[] = [];
  private hopGear = '';
  private hopPort = '';
  private readonly latencies: number[] = [];
  private latencyCount = 0;
  private readonly callHistograms = new Map<string, HistogramData>();

  constructor(plan: ChainPlan, env: ChainEnv) {
    this.toLane = env.toLane;
    this.ctx = {
      ...env,
      emit: (gear, port, msg) => this.emit(gear, port, msg),
      emitEncoded: (gear, port, bytes) => this.emitEncoded(gear, port, bytes),
      hasRoute: (gear, port) => this.hasRoute(gear, port),
      describe: (gear) => scenarioTargets(this.plan.gears, this.plan.wires, gear),
      ended: (end) => this.ended(end),
      emitTracked: (gear, port, msg) => this.emitTracked(gear, port, msg),
      lastHop: () => ({ gear: this.hopGear, port: this.hopPort }),
      guestClockFor: (gear) => {
        const clock = env.guestClock;
        const guest = this.guestNames.indexOf(gear);
        return clock === undefined ? undefined : { enter: () => clock.enter(guest), leave: () => clock.leave() };
      },
      callTimed: (gear, ms) => this.callTimed(gear, ms),
    };
    this.reconfigure(plan, env);
  }

  /**
   * Takes up a plan (the first one at construction). Returns the connection hosts of the gears
   * it retired: their sessions are told to drain by the caller, and finish their calls on the
   * new wires.
   */
  reconfigure(plan: ChainPlan, env: ChainEnv): ConnectionHost[] {
    this.guestNames = plan.guestNames;
    this.plan = plan;
    const wires = new Map<string, WireTarget[]>();
    for (const w of plan.wires) {
      const key = `${w.from.gear}.${w.from.port}`;
      const list = wires.get(key) ?? [];
      // Every bus wire from one port reads the same subject: the message is published once.
      if (isBusWire(w)) {
        if (!list.some((t) => t.lane)) list.push({ gear: w.from.gear, port: w.from.port, lane: true });
      } else list.push({ gear: w.to.gear, port: w.to.port, lane: false });
      wires.set(key, list);
    }
    const previous = this.gears;
    const next = new Map<string, BuiltGear>();
    // Built before anything is replaced: a gear that fails to build leaves the old plan running.
    for (const spec of plan.gears) {
      const fingerprint = plan.fingerprints[spec.name] ?? '';
      const kept = previous.get(spec.name);
      if (kept !== undefined && kept.fingerprint === fingerprint && fingerprint !== '') {
        next.set(spec.name, kept);
        continue;
      }
      next.set(spec.name, { fingerprint, ...this.build(spec, plan.prepared[spec.name], env), messages: 0, errors: 0 });
    }
    this.wires = wires;
    this.gears = next;
    this.connectionHosts.clear();
    for (const [name, gear] of next) if (gear.host !== undefined) this.connectionHosts.set(name, gear.host);
    const retired: ConnectionHost[] = [];
    for (const [name, gear] of previous) if (next.get(name) !== gear && gear.host !== undefined) retired.push(gear.host);
    return retired;
  }

  private build(spec: GearSpec, prepared: unknown, env: ChainEnv): Pick<BuiltGear, 'input' | 'inputEncoded' | 'host'> {
    const type = gearType(spec);
    if (type.worker === undefined) {
      return {
        input: (port, msg) => {
          this.leftWorker();
          env.toMain(spec.name, port, encodeFluxMsg(msg));
        },
        inputEncoded: (port, bytes) => {
          this.leftWorker();
          env.toMain(spec.name, port, bytes);
        },
        host: undefined,
      };
    }
    const gear: WorkerGear = type.worker(spec, prepared, this.ctx);
    return { input: gear.input, inputEncoded: gear.inputEncoded, host: gear.connections };
  }

  /** The message being traced went on outside this worker (the main thread, the bus). */
  private leftWorker(): void {
    const trace = this.traces.at(-1);
    if (trace !== undefined) trace.leftWorker = true;
  }

  /** Whether anything is wired from gear.port. */
  hasRoute(gear: string, port: string): boolean {
    return this.wires.has(`${gear}.${port}`);
  }

  /** Sends `msg` out of gear.port, along every wire from it. */
  emit(gear: string, port: string, msg: FluxMsg): void {
    const targets = this.targetsOf(gear, port);
    if (targets === undefined) return;
    // Fan-out along several wires: each target gets its own copy of the mutable parts.
    for (let i = 0; i < targets.length; i++) {
      const t = targets[i]!;
      if (t.lane) {
        // Encoded on the spot, so the copies below need not protect it.
        this.leftWorker();
        this.toLane(gear, port, msg);
        continue;
      }
      this.hopGear = gear;
      this.hopPort = port;
      this.deliver(t.gear, t.port, i === targets.length - 1 ? msg : { ...msg, meta: { ...msg.meta }, data: { ...msg.data }, path: [...msg.path] });
    }
  }

  /**
   * emit() for a message as bytes that are certainly a valid fluxMsg. They are never changed, so
   * every wire of a fan-out shares them; each gear that needs the object decodes its own.
   */
  emitEncoded(gear: string, port: string, bytes: Uint8Array): void {
    const targets = this.targetsOf(gear, port);
    if (targets === undefined) return;
    // Decoded once for all bus wires (they read its id and call, never change it), and only if there are any.
    let msg: FluxMsg | undefined;
    for (const t of targets) {
      if (t.lane) {
        this.leftWorker();
        msg ??= fluxMsgOf(bytes);
        this.toLane(gear, port, msg, bytes);
        continue;
      }
      this.hopGear = gear;
      this.hopPort = port;
      this.deliverEncoded(t.gear, t.port, bytes, true);
    }
  }

  /** The wires out of gear.port; undefined (counted, and traced as where the message ended) when there are none. */
  private targetsOf(gear: string, port: string): WireTarget[] | undefined {
    if (port === 'error') this.countError(gear);
    const targets = this.wires.get(`${gear}.${port}`);
    if (targets === undefined) {
      this.stats.unrouted++;
      this.traces.at(-1)?.ends.push({ gear, port, why: 'unrouted' });
    }
    return targets;
  }

  deliver(gear: string, port: string, msg: FluxMsg): void {
    const target = this.gears.get(gear);
    if (target === undefined) {
      // A gear of an older plan (a main-thread gear's message that crossed a reload).
      this.stats.unrouted++;
      this.traces.at(-1)?.ends.push({ gear, port, why: 'unrouted' });
      return;
    }
    this.stats.delivered++;
    target.messages++;
    target.input(port, msg);
  }

  /**
   * deliver() for a message as bytes. A gear that reads bytes gets them as they are; any other
   * gets the message decoded. `checked`: the bytes are certainly a valid fluxMsg (a gear of this
   * worker wrote them); otherwise (from the bus) they are checked in one pass, and bytes that
   * pass no check are decoded strictly, which throws what is wrong with them.
   */
  deliverEncoded(gear: string, port: string, bytes: Uint8Array, checked: boolean): void {
    const target = this.gears.get(gear);
    if (target?.inputEncoded === undefined || !(checked || isPlainFluxMsg(bytes))) {
      this.deliver(gear, port, checked ? fluxMsgOf(bytes) : decodeFluxMsg(bytes));
      return;
    }
    this.stats.delivered++;
    target.messages++;
    target.inputEncoded(port, bytes);
  }

  /** A gear's errors: what it sends out of its error port, or rejects and fails with that port unwired. */
  private ended(end: MessageEnd): void {
    if (end.why === 'failed' || end.why === 'rejected') this.countError(end.gear);
    this.traces.at(-1)?.ends.push(end);
  }

  private countError(name: string): void {
    const gear = this.gears.get(name);
    if (gear !== undefined) gear.errors++;
  }

  /** A call was handled in this worker in `ms`: counted in its gear's histogram, sampled for the rack's p50 and p99. */
  private callTimed(gear: string, ms: number): void {
    let histogram = this.callHistograms.get(gear);
    if (histogram === undefined) this.callHistograms.set(gear, (histogram = emptyHistogram()));
    observe(histogram, ms);
    const n = this.latencyCount++;
    if (n < LATENCY_SAMPLES) this.latencies.push(ms);
    else {
      // Reservoir sampling: every call of the interval has the same chance to be kept.
      const slot = Math.floor(Math.random() * (n + 1));
      if (slot < LATENCY_SAMPLES) this.latencies[slot] = ms;
    }
  }

  /** Messages and errors per gear, and sampled call latencies, since the last time; then zeroes them. */
  takeCounts(): StatsRecord {
    const gears: GearCounts[] = [];
    for (const [name, g] of this.gears) {
      gears.push({ gear: name, messages: g.messages, errors: g.errors });
      g.messages = 0;
      g.errors = 0;
    }
    const latenciesMs = this.latencies.splice(0);
    this.latencyCount = 0;
    const calls = [...this.callHistograms].map(([gear, h]) => ({ gear, ...h }));
    this.callHistograms.clear();
    return { gears, latenciesMs, calls };
  }

  /**
   * Delivers a bus wire's message to its target gear, recording how it ended in this worker.
   * Given as the bytes the bus delivered, it is checked, and decoded only for a gear that needs
   * the object (deliverEncoded); what is wrong with bytes that are no fluxMsg is thrown.
   */
  deliverTracked(gear: string, port: string, msg: FluxMsg | Uint8Array): CallTrace {
    return this.tracked(gear, port, msg, true);
  }

  /**
   * Emits, recording how the messages it starts end in this worker. Traces are reused (one per
   * nesting depth), so a call on the hot path allocates nothing for them.
   */
  emitTracked(gear: string, port: string, msg: FluxMsg): CallTrace {
    return this.tracked(gear, port, msg, false);
  }

  /** `direct`: into gear.port's input (bytes always are); otherwise out of gear.port along its wires. */
  private tracked(gear: string, port: string, msg: FluxMsg | Uint8Array, direct: boolean): CallTrace {
    const depth = this.traces.length;
    const trace = (this.tracePool[depth] ??= { ends: [], leftWorker: false });
    trace.ends.length = 0;
    trace.leftWorker = false;
    this.traces.push(trace);
    try {
      if (msg instanceof Uint8Array) this.deliverEncoded(gear, port, msg, false);
      else if (direct) this.deliver(gear, port, msg);
      else this.emit(gear, port, msg);
    } finally {
      this.traces.pop();
    }
    return trace;
  }
}
