import { EventEmitter } from 'node:events';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';
import { LEVEL_VALUES, type LogTap } from '../telemetry/log-tap.js';
import type { WorkerTelemetry } from '../telemetry/uplink.js';
import { addHistogram, emptyHistogram, type HistogramData } from '../telemetry/histogram.js';
import { connectRackBus, type RackBus } from '../bus/rack-bus.js';
import type { BusTls } from '../bus/tls.js';
import { TopicBridge } from '../bus/topic-bridge.js';
import { FluxrigError } from '../errors.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { encodeFluxMsg } from '../fluxmsg/codec.js';
import type { MainGear, MainGearContext } from '../gears/gear.js';
import type { KvStore } from '../gears/kv.js';
import { fluxMsgOf, lanePublication, RecordTag, Records, type StatsRecord } from '../gears/records.js';
import { gearType } from '../gears/registry.js';
import { wasmConfig } from '../gears/wasm.js';
import { shortestGuestTimeout } from '../gears/wasm/guest-clock.js';
import type { PreparedModule } from '../gears/wasm/loader.js';
import type { ModuleSource } from '../gears/wasm/store.js';
import { type Pausable, WorkerPool, type WorkerReplaced } from '../ring/pool.js';
import type { GearSpec, Scenario } from '../scenario/types.js';
import { gearsOnRack } from '../scenario/placement.js';
import { isBusWire } from '../scenario/lanes.js';
import { ConnectionTable, type WorkerLink } from './connections.js';
import { RACK_DEFAULTS } from './defaults.js';
import { drain } from './drain.js';
import { gearFingerprint } from './fingerprint.js';
import { GuaranteedLanes, type LaneCounts } from './lanes.js';
import { preflight } from './preflight.js';
import { buildRackHandler, type RackHandlerOptions } from './rack-handler.js';

/** The rack cannot run this scenario as configured. */
export class RackError extends FluxrigError {}

/** A rack's name: the one given, else the scenario's only named rack, else "rack". */
export function rackNameIn(scenario: Scenario, name: string | undefined): string {
  const named = scenario.racks.filter((r) => r.name !== undefined);
  return name ?? (named.length === 1 ? named[0]!.name! : 'rack');
}

export interface RackOptions {
  scenario: Scenario;
  /** This rack's name (which gears of the scenario it runs). Default: the only rack, or "rack". */
  name?: string;
  /** Rack groups this rack belongs to (a gear deployed to one of them runs here too). */
  groups?: string[];
  /** Worker threads; 0 runs the gears on the main thread (the baseline the workers must beat). Default: cores. */
  workers?: number;
  natsUrl?: string;
  /** The rack's certificate for `natsUrl` when that bus runs mTLS (docs/snake-protocol.md). */
  natsTls?: BusTls;
  /** KV entries to start with. */
  kv?: Record<string, string>;
  /** Where urn:wasm: modules come from; with NATS and `moduleBucket`, the bucket instead. */
  moduleStore?: ModuleSource;
  /** NATS KV bucket for the gears' KV when on the bus. */
  kvBucket?: string;
  /** NATS Object Store bucket of gear modules when on the bus. */
  moduleBucket?: string;
  /** Vendor keys (PEM or raw 32 bytes): with any, only modules signed by one of them load. */
  trustedKeys?: Array<string | Uint8Array>;
  /** The fleet's Mixer keys: with any, only modules it countersigned at import load. */
  clusterKeys?: Array<string | Uint8Array>;
  laneQueueSize?: number;
  laneSendTimeoutMs?: number;
  ringBytes?: number;
  drainTimeoutMs?: number;
  /** Bytes queued for a client that does not read before it is disconnected. */
  maxWriteBuffer?: number;
  /** Workers write readable log lines (for a terminal) instead of JSON. */
  readableLogs?: boolean;
  /** Where `env:NAME` secret references in the scenario are read (default: process.env). */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /**
   * The logger's destination when it has two outlets (the local log and telemetry,
   * src/telemetry/log-tap.ts): setLogLevels then sets each, here and in every worker.
   */
  logTap?: LogTap;
}

/** What Rack.takeStats reports: counts since the last call. */
export interface RackStats {
  gears: Record<string, { messages: number; errors: number }>;
  /** Calls each fluxar gear answered in a worker, in the shared latency buckets. */
  calls: Record<string, HistogramData>;
  p50Ms: number | null;
  p99Ms: number | null;
}

export const DEFAULT_RING_BYTES = RACK_DEFAULTS.ring_bytes;

/** How long a reload waits for every worker to take up the new chain. */
const RECONFIGURE_TIMEOUT_MS = 10_000;
/** How long a stats request waits for the workers' reports. */
const STATS_TIMEOUT_MS = 1000;
/** How long a reloaded listener waits for the port its predecessor is letting go of. */
const PORT_HANDOVER_MS = 2000;

function fingerprintsOf(gears: GearSpec[], prepared: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(gears.map((g) => [g.name, gearFingerprint(g, prepared[g.name])]));
}

/**
 * A rack, assembled: the bus, the gears' preparation, the workers (or the inline baseline), the
 * main-thread gears and the connection table. Each part lives in a module of its own; this is
 * where they are wired together.
 */
export class Rack extends EventEmitter {
  readonly name: string;
  readonly log: Logger;
  private readonly options: RackOptions;
  private scenario: Scenario;
  private gears: GearSpec[];
  /** The scenario version the workers run: 1 at start, one more per reload. */
  private version = 1;
  /** Each running gear's fingerprint: what a reload compares to keep it. */
  private fingerprints: Record<string, string> = {};
  /** Guest ids for the pool's watchdog: every gear name ever run, in order (it only grows). */
  private guestNames: string[] = [];
  private handlerOptions: RackHandlerOptions | undefined;
  private reconfigureWorkers: ((options: RackHandlerOptions) => void) | undefined;
  private readonly awaiting = new Map<number, { remaining: number; errors: string[]; done(errors: string[]): void }>();
  private statsWaiter: { remaining: number; stats: StatsRecord[]; done(stats: StatsRecord[]): void } | undefined;
  /** The rack groups this rack is in (a push from the Mixer says which). */
  private groups: string[];
  /** Reloads run one at a time. */
  private reloading: Promise<unknown> = Promise.resolve();
  private bus: RackBus | undefined;
  private bridge: TopicBridge | undefined;
  /** The guaranteed wires this rack sends or receives on (on the bus only). */
  private lanes: GuaranteedLanes | undefined;
  /** gear.port of main-thread gears wired along bus wires only: their messages skip the workers. */
  private busOnlyPorts = new Set<string>();
  private pool: WorkerPool | undefined;
  private link: WorkerLink | undefined;
  private connections: ConnectionTable | undefined;
  private readonly mainGears = new Map<string, MainGear>();
  /** During a reload, the main-thread gears of the scenario the workers are switching to. */
  private arrivingGears: ReadonlyMap<string, MainGear> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(options: RackOptions) {
    super();
    this.options = options;
    this.scenario = options.scenario;
    this.log = options.logger ?? pino({ name: 'fluxrig.rack' });
    this.groups = options.groups ?? [];
    this.name = rackNameIn(this.scenario, options.name);
    this.gears = this.gearsOf(this.scenario);
  }

  /**
   * Every check of preflight() for the gears of `scenario` this rack runs, with the rack's bus,
   * module store and keys; what the gear types prepared, or a RackError listing each problem.
   */
  private async prepare(scenario: Scenario, gears: GearSpec[]): Promise<Record<string, unknown>> {
    const bus = this.bus!;
    const { prepared, problems } = await preflight(scenario, gears, {
      onBus: bus.nats !== undefined,
      env: this.options.env ?? process.env,
      moduleStore: bus.modules,
      trustedKeys: this.options.trustedKeys,
      clusterKeys: this.options.clusterKeys,
      ringBytes: this.options.ringBytes,
    });
    if (problems.length > 0) throw new RackError(problems.map((p) => `${p.at}: ${p.message}`).join('\n'));
    this.noteSignatures(prepared);
    return prepared;
  }

  /** Says once per load which modules carry a signature in a deprecated format. */
  private noteSignatures(prepared: Record<string, unknown>): void {
    for (const [gear, p] of Object.entries(prepared)) {
      const note = (p as Partial<PreparedModule>).signatureNote;
      if (note !== undefined) this.log.warn({ gear, module: (p as PreparedModule).source }, `deprecated module signature: ${note}`);
    }
  }

  private gearsOf(scenario: Scenario): GearSpec[] {
    return gearsOnRack(scenario, this.name, this.groups);
  }

  /** The scenario running now, and its version in this rack (1 at start, one more per reload). */
  get running(): { scenario: Scenario; version: number; gears: string[] } {
    return { scenario: this.scenario, version: this.version, gears: this.gears.map((g) => g.name) };
  }

  /** The gears' KV store (in memory standalone, a NATS KV bucket on the bus). */
  get kv(): KvStore {
    if (this.bus === undefined) throw new RackError('the rack has not started');
    return this.bus.kv;
  }

  /** The URLs each listening gear is serving on (ports picked for port 0 filled in). */
  addresses(gear?: string): string[] {
    return [...this.mainGears].filter(([name]) => gear === undefined || name === gear).flatMap(([, g]) => g.addresses?.() ?? []);
  }

  get workers(): number {
    return this.pool?.size ?? 0;
  }

  private get drainTimeoutMs(): number {
    return this.options.drainTimeoutMs ?? RACK_DEFAULTS.drain_timeout_ms;
  }

  async start(): Promise<void> {
    try {
      await this.startParts();
    } catch (err) {
      // A rack that cannot start leaves nothing running behind it (workers keep a process alive).
      await this.pool?.close().catch(() => {});
      await Promise.all([...this.mainGears.values()].map((g) => g.stop().catch(() => {})));
      await this.bus?.close().catch(() => {});
      throw err;
    }
    this.log.info(
      { rack: this.name, scenario: this.scenario.meta.name, workers: this.workers, listening: this.addresses(), node_flags: process.execArgv },
      'rack started',
    );
  }

  private async startParts(): Promise<void> {
    try {
      this.bus = await connectRackBus({
        rack: this.name,
        natsUrl: this.options.natsUrl,
        tls: this.options.natsTls,
        kvBucket: this.options.kvBucket ?? RACK_DEFAULTS.kv_bucket,
        moduleBucket: this.options.moduleBucket,
        kv: this.options.kv,
        moduleStore: this.options.moduleStore,
        logger: this.log,
      });
    } catch (err) {
      throw new RackError(`cannot use NATS at ${this.options.natsUrl}: ${(err as Error).message}`, { cause: err });
    }
    const bus = this.bus;
    const prepared = await this.prepare(this.scenario, this.gears);
    this.guestNames = this.gears.map((g) => g.name);
    this.fingerprints = fingerprintsOf(this.gears, prepared);
    const handlerOptions: RackHandlerOptions = {
      version: this.version,
      gears: this.gears,
      wires: this.scenario.wires,
      prepared,
      fingerprints: this.fingerprints,
      guestNames: this.guestNames,
      kvSnapshot: [...bus.kv.entries()],
      logLevel: this.logLevels.local,
      telemetryLevel: this.logLevels.telemetry,
      readableLogs: this.options.readableLogs ?? false,
      drainTimeoutMs: this.drainTimeoutMs,
      onBus: bus.nats !== undefined,
    };
    this.handlerOptions = handlerOptions;
    const link = this.startWorkers(handlerOptions);
    this.link = link;
    this.connections = new ConnectionTable(link, this.log, this.options.maxWriteBuffer ?? RACK_DEFAULTS.max_write_buffer);
    if (this.pool !== undefined) await this.pool.start();
    if (bus.nats !== undefined) {
      // Publications of other racks go to every worker, as one of ours would.
      this.bridge = new TopicBridge(bus.nats, this.name, this.log, (p) =>
        this.broadcast(RecordTag.Publication, Records.publication.encode({ origin: 'bus', ...p, conn: 0, key: '' })),
      );
      await this.bridge.start();
      await this.followLanes(this.scenario, this.gears);
    }
    bus.kv.watch((key, value) => this.broadcast(RecordTag.KvSet, Records.kvSet.encode({ key, value: value ?? null })));
    for (const spec of this.gears) {
      const gear = this.buildMainGear(spec);
      if (gear !== undefined) this.mainGears.set(spec.name, gear);
    }
    for (const [name, gear] of this.mainGears) await this.startMainGear(name, gear, this.gears);
    this.lanes?.open();
  }

  /** Starts, reconfigures or stops the guaranteed lanes for the scenario about to run. */
  private async followLanes(scenario: Scenario, gears: GearSpec[]): Promise<void> {
    const nats = this.bus?.nats;
    const names = new Set(gears.map((g) => g.name));
    if (nats === undefined) return;
    this.busOnlyPorts = busOnlyPorts(scenario);
    // Lanes that run take up any scenario, one without bus wires too: they stop consuming the
    // wires it lacks, and start again on those a later one brings.
    if (this.lanes !== undefined) return this.lanes.reconfigure(scenario, names);
    if (!GuaranteedLanes.needed(scenario, names)) return;
    const link = this.link!;
    const lanes = new GuaranteedLanes(nats, this.name, scenario, names, {
      log: this.log,
      deliver: (key, payload, source) => {
        const worker = link.workerFor(key);
        link.send(worker, RecordTag.LaneDeliver, payload, source);
        return worker;
      },
      answer: (conn, msg) => {
        const gear = this.connections?.gearOf(conn);
        if (gear === undefined) return; // the caller has gone
        const payload = Records.laneDeliver.encode({ token: 0, gear, port: 'in', bytes: encodeFluxMsg(msg) });
        if (!link.trySend(link.workerFor(conn), RecordTag.LaneDeliver, payload)) this.log.warn({ conn }, 'lane full: the answer to a call is lost');
      },
      hold: (on) => this.connections?.hold(on),
      settled: async () => {
        await Promise.all([...this.mainGears.values()].map((g) => g.settled?.()));
      },
    });
    try {
      await lanes.start();
    } catch (err) {
      await lanes.stop().catch(() => {});
      throw new RackError(`cannot set up the guaranteed lanes of scenario ${scenario.meta.name}: ${(err as Error).message}`, { cause: err });
    }
    this.lanes = lanes;
  }

  /** Counters of the rack's guaranteed lanes (none off the bus, or without bus wires). */
  get laneCounts(): LaneCounts | undefined {
    return this.lanes === undefined ? undefined : { ...this.lanes.counts };
  }

  private mainGearContext(): MainGearContext {
    const connections = this.connections!;
    return {
      logger: this.log,
      inject: (gear, port, msg, key, source) => this.inject(gear, port, msg, key, source),
      nats: this.bus!.nats,
      baseDir: dirname(this.scenario.file),
      accept: (gear, transport) => connections.accept(gear, transport),
    };
  }

  private buildMainGear(spec: GearSpec): MainGear | undefined {
    const type = gearType(spec);
    if (type.main === undefined) return undefined;
    try {
      return type.main(spec, this.mainGearContext());
    } catch (err) {
      throw new RackError(`${spec.at}: ${(err as Error).message}`, { cause: err });
    }
  }

  private async startMainGear(name: string, gear: MainGear, specs: GearSpec[]): Promise<void> {
    try {
      await gear.start();
    } catch (err) {
      const spec = specs.find((g) => g.name === name)!;
      throw new RackError(`${spec.at}: gear ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Runs `scenario` instead of the current one, without a restart. Every check a start makes
   * comes first, and a scenario that fails one is refused while the current one runs on. Then:
   * - gears whose fingerprint (type, config, what they read) did not change keep running, with
   *   their state and connections (a fluxar gear's sessions and calls in flight);
   * - every worker takes up the new chain between two records, so no message sees half of it;
   * - main-thread gears that changed or left stop accepting, their sessions say bye and finish
   *   their calls, and the new ones start.
   * Returns the version now running.
   */
  reload(scenario: Scenario, groups?: string[]): Promise<number> {
    const next = this.reloading.then(async () => {
      const before = this.groups;
      if (groups !== undefined) this.groups = groups;
      try {
        return await this.reloadNow(scenario);
      } catch (err) {
        this.groups = before;
        throw err;
      }
    });
    this.reloading = next.catch(() => {});
    return next;
  }

  private async reloadNow(scenario: Scenario): Promise<number> {
    if (this.stopping !== undefined) throw new RackError('the rack is stopping');
    if (this.handlerOptions === undefined) throw new RackError('the rack has not started');
    const gears = this.gearsOf(scenario);
    const prepared = await this.prepare(scenario, gears);
    const fingerprints = fingerprintsOf(gears, prepared);
    for (const g of gears) if (!this.guestNames.includes(g.name)) this.guestNames.push(g.name);
    const previous = { options: this.handlerOptions, scenario: this.scenario, gears: this.gears, fingerprints: this.fingerprints };
    const running = this.fingerprints;
    const kept = (name: string) => running[name] !== undefined && running[name] === fingerprints[name];

    // New main-thread gears are built (not started) before anything changes: a config a type
    // refuses leaves the running scenario as it is.
    const built = new Map<string, MainGear>();
    for (const spec of gears) {
      if (kept(spec.name) && this.mainGears.has(spec.name)) continue;
      const gear = this.buildMainGear(spec);
      if (gear !== undefined) built.set(spec.name, gear);
    }
    const options: RackHandlerOptions = {
      ...this.handlerOptions,
      version: this.version + 1,
      gears,
      wires: scenario.wires,
      prepared,
      fingerprints,
      guestNames: [...this.guestNames],
      logLevel: this.logLevels.local,
      telemetryLevel: this.logLevels.telemetry,
    };
    // The stream must take the new wires' subjects before any worker sends on them.
    await this.followLanes(scenario, gears);
    // A worker on the new chain may hand a new gear a message before the last worker has switched.
    this.arrivingGears = built;
    const errors = await this.switchWorkers(options);
    if (errors.length > 0) {
      this.arrivingGears = undefined;
      await this.followLanes(previous.scenario, previous.gears).catch((err: unknown) => this.log.error({ err }, 'the previous lanes could not be restored'));
      // Some worker could not build the new chain: every worker goes back to the running one.
      await this.switchWorkers({ ...previous.options, version: this.version + 1, guestNames: [...this.guestNames] });
      this.lanes?.open();
      throw new RackError(`the workers could not run scenario ${scenario.meta.name}: ${errors.join('; ')}`);
    }
    this.scenario = scenario;
    this.gears = gears;
    this.fingerprints = fingerprints;
    const retired = [...this.mainGears].filter(([name]) => !(kept(name) && gears.some((g) => g.name === name)));
    // Every worker runs the new chain: its messages go to the new gears from now on.
    for (const [name] of retired) this.mainGears.delete(name);
    for (const [name, gear] of built) this.mainGears.set(name, gear);
    this.arrivingGears = undefined;
    // A changed listener must let go of its port before its successor binds it.
    await Promise.all(retired.map(([, gear]) => gear.quiesce()));
    // Retired gears finish in the background: a listener's stop() waits for its last connection.
    for (const [name, gear] of retired) gear.stop().catch((err: unknown) => this.log.error({ err, gear: name }, 'a retired gear failed to stop'));
    try {
      for (const [name, gear] of built) built.set(name, await this.startReplacing(name, gear, gears, retired.length > 0));
    } catch (err) {
      this.log.error({ err, scenario: scenario.meta.name }, 'a gear of the new scenario could not start; going back to the previous scenario');
      await Promise.all([...built].map(([, gear]) => gear.stop().catch(() => {})));
      for (const [name] of built) this.mainGears.delete(name);
      await this.reloadNow(previous.scenario).catch((again: unknown) => this.log.error({ err: again }, 'the previous scenario could not be restored'));
      throw err;
    }
    this.lanes?.open();
    this.log.info(
      { rack: this.name, scenario: scenario.meta.name, version: this.version, kept: gears.filter((g) => kept(g.name)).map((g) => g.name) },
      'scenario reloaded',
    );
    return this.version;
  }

  /**
   * Starts a gear of a reload. A listener that takes over its predecessor's port may find it
   * still held for a moment (a closed server lets go of its socket asynchronously): it is tried
   * afresh for up to PORT_HANDOVER_MS.
   */
  private async startReplacing(name: string, gear: MainGear, specs: GearSpec[], handover: boolean): Promise<MainGear> {
    const deadline = Date.now() + PORT_HANDOVER_MS;
    for (let attempt = gear; ; ) {
      try {
        await this.startMainGear(name, attempt, specs);
        this.mainGears.set(name, attempt);
        return attempt;
      } catch (err) {
        if (!handover || !/EADDRINUSE/.test((err as Error).message) || Date.now() >= deadline) throw err;
        await attempt.stop().catch(() => {});
        await new Promise((resolve) => setTimeout(resolve, 20));
        attempt = this.buildMainGear(specs.find((g) => g.name === name)!)!;
      }
    }
  }

  /** Hands every worker the new plan and waits until each runs it; returns their errors. */
  private async switchWorkers(options: RackHandlerOptions): Promise<string[]> {
    const workers = this.pool?.size ?? 1;
    const done = new Promise<string[]>((resolve) => {
      const timer = setTimeout(() => {
        const remaining = this.awaiting.get(options.version)?.remaining;
        this.awaiting.delete(options.version);
        resolve([`${remaining} of ${workers} workers did not take up the new scenario within ${RECONFIGURE_TIMEOUT_MS} ms`]);
      }, RECONFIGURE_TIMEOUT_MS);
      this.awaiting.set(options.version, {
        remaining: workers,
        errors: [],
        done: (errors) => {
          clearTimeout(timer);
          resolve(errors);
        },
      });
    });
    this.reconfigureWorkers!(options);
    const errors = await done;
    this.version = options.version;
    this.handlerOptions = options;
    return errors;
  }

  private reconfigured(version: number, error: string | null): void {
    const waiting = this.awaiting.get(version);
    if (waiting === undefined) return;
    if (error !== null) waiting.errors.push(error);
    if (--waiting.remaining > 0) return;
    this.awaiting.delete(version);
    waiting.done(waiting.errors);
  }

  /** Accepted connections open now. */
  get connectionCount(): number {
    return this.connections?.size ?? 0;
  }

  /** Sets the log level of the main thread and every worker. */
  setLogLevel(level: string): void {
    this.setLogLevels({ local: level });
  }

  /**
   * Sets the level of the local log, of the lines that go to telemetry, or both, on the main
   * thread and in every worker. Telemetry needs the rack's logger to write through a LogTap.
   */
  setLogLevels(levels: { local?: string; telemetry?: string }): void {
    for (const level of [levels.local, levels.telemetry])
      if (level !== undefined && LEVEL_VALUES[level] === undefined)
        throw new RackError(`unknown log level ${JSON.stringify(level)} (expected ${Object.keys(LEVEL_VALUES).join(', ')})`);
    if (levels.telemetry !== undefined && this.options.logTap === undefined) throw new RackError('this rack has no telemetry log (no LogTap)');
    const tap = this.options.logTap;
    if (tap !== undefined) this.log.level = tap.setLevels(levels);
    else if (levels.local !== undefined) this.log.level = levels.local;
    const { local, telemetry } = this.logLevels;
    if (this.handlerOptions !== undefined) this.handlerOptions = { ...this.handlerOptions, logLevel: local, telemetryLevel: telemetry };
    if (this.pool !== undefined) this.broadcast(RecordTag.LogLevel, Records.logLevel.encode({ level: local, telemetryLevel: telemetry }));
  }

  /** The log levels in force: the local log's and telemetry's. */
  get logLevels(): { local: string; telemetry: string } {
    const tap = this.options.logTap;
    return tap === undefined ? { local: this.log.level, telemetry: 'silent' } : { local: tap.localLevel, telemetry: tap.telemetryLevel };
  }

  /** Local log lines the workers dropped because their log output could not keep up. */
  get localLogDropped(): number {
    return this.pool?.localLogDropped() ?? 0;
  }

  /** The workers' telemetry rings, for the uplink; none with workers: 0 (the main logger has it all). */
  get workerTelemetry(): WorkerTelemetry | undefined {
    if (this.options.workers === 0) return undefined;
    return {
      pending: () => this.pool?.telemetryPending() ?? 0,
      take: (max) => this.pool?.takeTelemetry(max) ?? [],
      dropped: () => this.pool?.telemetryDropped() ?? 0,
    };
  }

  /**
   * Messages and errors per gear since the last call, summed over the workers, and the p50 and
   * p99 of the calls the workers answered (ms; null without calls).
   */
  async takeStats(): Promise<RackStats> {
    const workers = this.pool?.size ?? 1;
    const reports = await new Promise<StatsRecord[]>((resolve) => {
      if (this.statsWaiter !== undefined || this.link === undefined) return resolve([]);
      const timer = setTimeout(() => {
        const partial = this.statsWaiter?.stats ?? [];
        this.statsWaiter = undefined;
        resolve(partial);
      }, STATS_TIMEOUT_MS);
      this.statsWaiter = {
        remaining: workers,
        stats: [],
        done: (stats) => {
          clearTimeout(timer);
          this.statsWaiter = undefined;
          resolve(stats);
        },
      };
      this.broadcast(RecordTag.StatsRequest, Records.statsRequest.encode({}));
    });
    const gears: RackStats['gears'] = {};
    const calls: RackStats['calls'] = {};
    const latencies: number[] = [];
    for (const report of reports) {
      for (const g of report.gears) {
        const sum = (gears[g.gear] ??= { messages: 0, errors: 0 });
        sum.messages += g.messages;
        sum.errors += g.errors;
      }
      for (const c of report.calls) addHistogram((calls[c.gear] ??= emptyHistogram()), c);
      latencies.push(...report.latenciesMs);
    }
    latencies.sort((a, b) => a - b);
    const at = (q: number) =>
      latencies.length === 0 ? null : Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]! * 1000) / 1000;
    return { gears, calls, p50Ms: at(0.5), p99Ms: at(0.99) };
  }

  private statsReported(stats: StatsRecord): void {
    const waiter = this.statsWaiter;
    if (waiter === undefined) return;
    waiter.stats.push(stats);
    if (--waiter.remaining === 0) waiter.done(waiter.stats);
  }

  /** The worker pool, or with workers: 0 the same handler called on the main thread. */
  private startWorkers(handlerOptions: RackHandlerOptions): WorkerLink {
    const onOutput = (tag: number, bytes: Uint8Array, start: number, length: number) => this.onOutput(tag, bytes, start, length);
    if (this.options.workers === 0) {
      let staged: RackHandlerOptions | undefined;
      const inline = buildRackHandler(
        handlerOptions,
        { send: (tag, payload) => onOutput(tag, payload, 0, payload.length), maxRecordBytes: Infinity },
        () => {
          const options = staged;
          staged = undefined;
          return options;
        },
        undefined,
        Date.now(),
        this.log,
      );
      const deliver = (tag: number, payload: Uint8Array) => inline(tag, payload, 0, payload.length);
      this.reconfigureWorkers = (options) => {
        staged = options;
        deliver(RecordTag.Reconfigure, Records.reconfigure.encode({ version: options.version }));
      };
      return {
        send: (_worker, tag, payload) => deliver(tag, payload),
        trySend: (_worker, tag, payload) => {
          deliver(tag, payload);
          return true;
        },
        broadcast: deliver,
        workerFor: () => 0,
        workers: 1,
        maxRecordBytes: Infinity,
      };
    }
    const pool = new WorkerPool({
      handler: new URL('./rack-handler.js', import.meta.url),
      handlerOptions,
      size: this.options.workers,
      ringCapacity: this.options.ringBytes ?? RACK_DEFAULTS.ring_bytes,
      laneQueueSize: this.options.laneQueueSize,
      laneSendTimeoutMs: this.options.laneSendTimeoutMs,
      guestTimeoutMs: shortestGuestTimeout(this.gears.filter((g) => g.type === 'wasm').map(wasmConfig)),
      // A guest's id is its gear's index in the chain, which is built from this same list.
      guestNames: this.guestNames,
      batchDoorbells: true,
      logger: this.log,
      onOutput: (_worker, tag, bytes, start, length) => onOutput(tag, bytes, start, length),
    });
    pool.on('worker-replaced', (event: WorkerReplaced) => {
      const reason =
        event.timedOutTag !== undefined
          ? `a gear timed out and the worker serving this connection was restarted (${event.reason})`
          : `the worker serving this connection was restarted (${event.reason})`;
      this.connections?.workerReplaced(event.index, reason);
      this.lanes?.workerLost(event.index, event.lostRecords);
      this.emit('worker-replaced', event);
    });
    this.pool = pool;
    this.reconfigureWorkers = (options) =>
      pool.reconfigure(options, RecordTag.Reconfigure, Records.reconfigure.encode({ version: options.version }), options.guestNames);
    return {
      send: (worker, tag, payload, source) => pool.sendOrPause(worker, tag, payload, source),
      trySend: (worker, tag, payload) => pool.send(worker, tag, payload),
      broadcast: (tag, payload) => pool.broadcast(tag, payload),
      workerFor: (key) => pool.workerFor(key),
      workers: pool.size,
      // Read when used: the pool knows its rings' size once it has started.
      get maxRecordBytes() {
        return pool.maxRecordBytes;
      },
    };
  }

  /**
   * Graceful stop: no new connections, every session says bye and finishes its calls (up to
   * drain_timeout), outputs are delivered, workers finish their rings, then everything closes.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      // A rack whose start failed has released what it held already; there is nothing to drain.
      if (this.connections === undefined) {
        await this.bus?.close().catch(() => {});
        return;
      }
      await drain({
        mainGears: [...this.mainGears.values(), ...(this.lanes === undefined ? [] : [this.lanes])],
        connections: this.connections!,
        sayBye: () => this.broadcast(RecordTag.Drain, Records.drain.encode({})),
        drainTimeoutMs: this.drainTimeoutMs,
        stopWorkers: async () => this.pool?.close(),
        closeBus: async () => {
          await this.bridge?.close();
          await this.bus?.close();
        },
      });
      this.log.info({ rack: this.name }, 'rack stopped');
    })();
    return this.stopping;
  }

  private broadcast(tag: number, payload: Uint8Array): void {
    this.link?.broadcast(tag, payload);
  }

  /**
   * A publication made in this rack, to the other racks. A client's QoS 1 or 2 publish waits for
   * the bus: its worker is told when the bus has it (or could not take it), and answers then.
   */
  private bridgePublication(payload: Uint8Array): void {
    const bridge = this.bridge;
    if (bridge === undefined) return;
    const record = Records.publication.decode(payload);
    const answer = (error: string | null) => {
      if (record.conn === 0) return;
      const ack = Records.publicationAck.encode({ conn: record.conn, key: record.key, error });
      const link = this.link!;
      if (!link.trySend(link.workerFor(record.conn), RecordTag.PublicationAck, ack))
        this.log.warn({ conn: record.conn }, 'lane full: a publish answer is lost');
    };
    bridge.publish(record).then(
      () => answer(null),
      (err: Error) => {
        this.log.error({ err, topic: record.topic }, 'a publication could not reach the other racks');
        answer(`the bus did not take the publication: ${err.message}`);
      },
    );
  }

  private inject(gear: string, port: string, msg: FluxMsg, key: number, source?: Pausable): void {
    // Sent only along bus wires: published from here, without a round trip through a worker.
    if (this.lanes !== undefined && this.busOnlyPorts.has(`${gear}.${port}`)) return this.lanes.publish(lanePublication(gear, port, msg), source);
    const link = this.link!;
    const payload = Records.inject.encode({ gear, port, msg });
    const worker = link.workerFor(key);
    if (source !== undefined) link.send(worker, RecordTag.Inject, payload, source);
    else if (!link.trySend(worker, RecordTag.Inject, payload)) this.log.warn({ gear }, 'lane full: message from a main-thread gear dropped');
  }

  private onOutput(tag: number, bytes: Uint8Array, start: number, length: number): void {
    const payload = bytes.subarray(start, start + length);
    if (tag > 0) return this.connections?.write(tag, payload);
    switch (tag) {
      case RecordTag.ConnEnd:
        return this.connections?.end(Records.connEnd.decode(payload).id);
      case RecordTag.Publication:
        // To every worker (the one it came from skips it), and to the other racks.
        this.broadcast(tag, payload);
        return this.bridgePublication(payload);
      case RecordTag.ToMain: {
        const { gear, port, bytes } = Records.toMain.decode(payload);
        const target = this.mainGears.get(gear) ?? this.arrivingGears?.get(gear);
        if (target === undefined) {
          // Never meant to happen (the gears a chain leads to run before it does): said, not silent.
          this.log.error({ gear, port }, 'a message for a main-thread gear that does not run; dropped');
          return;
        }
        if (target.receiveEncoded !== undefined) return target.receiveEncoded(port, bytes);
        return target.receive(port, fluxMsgOf(bytes));
      }
      case RecordTag.LanePublish:
        if (this.lanes !== undefined) this.lanes.publish(Records.lanePublish.decode(payload));
        else this.log.error('a message for a guaranteed wire reached a rack without lanes; dropped');
        return;
      case RecordTag.LaneDone:
        return this.lanes?.done(Records.laneDone.decode(payload));
      case RecordTag.Reconfigured: {
        const { version, error } = Records.reconfigured.decode(payload);
        return this.reconfigured(version, error);
      }
      case RecordTag.Stats:
        return this.statsReported(Records.stats.decode(payload));
      case RecordTag.KvPut: {
        const { key, value } = Records.kvPut.decode(payload);
        if (value === null) this.bus?.kv.delete(key);
        else this.bus?.kv.put(key, value);
        return;
      }
    }
  }
}

/** gear.port of every port whose wires all go over the bus. */
function busOnlyPorts(scenario: Scenario): Set<string> {
  const kinds = new Map<string, boolean>();
  for (const w of scenario.wires) {
    const key = `${w.from.gear}.${w.from.port}`;
    kinds.set(key, (kinds.get(key) ?? true) && isBusWire(w));
  }
  return new Set([...kinds].filter(([, busOnly]) => busOnly).map(([key]) => key));
}
