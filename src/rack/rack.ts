import { EventEmitter } from 'node:events';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';
import { connectRackBus, type RackBus } from '../bus/rack-bus.js';
import { TopicBridge } from '../bus/topic-bridge.js';
import { FluxrigError } from '../errors.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import type { MainGear, MainGearContext } from '../gears/gear.js';
import type { KvStore } from '../gears/kv.js';
import { RecordTag, Records } from '../gears/records.js';
import { gearType } from '../gears/registry.js';
import { wasmConfig } from '../gears/wasm.js';
import { shortestGuestTimeout } from '../gears/wasm/guest-clock.js';
import type { ModuleSource } from '../gears/wasm/store.js';
import { type Pausable, WorkerPool, type WorkerReplaced } from '../ring/pool.js';
import type { GearSpec, Scenario } from '../scenario/types.js';
import { ConnectionTable, type WorkerLink } from './connections.js';
import { RACK_DEFAULTS } from './defaults.js';
import { drain } from './drain.js';
import { preflight } from './preflight.js';
import { buildRackHandler, type RackHandlerOptions } from './rack-handler.js';

/** The rack cannot run this scenario as configured. */
export class RackError extends FluxrigError {}

export interface RackOptions {
  scenario: Scenario;
  /** This rack's name (which gears of the scenario it runs). Default: the only rack, or "rack". */
  name?: string;
  /** Worker threads; 0 runs the gears on the main thread (the baseline the workers must beat). Default: cores. */
  workers?: number;
  natsUrl?: string;
  /** KV entries to start with. */
  kv?: Record<string, string>;
  /** Where urn:wasm: modules come from; with NATS and `moduleBucket`, the bucket instead. */
  moduleStore?: ModuleSource;
  /** NATS KV bucket for the gears' KV when on the bus. */
  kvBucket?: string;
  /** NATS Object Store bucket of gear modules when on the bus. */
  moduleBucket?: string;
  trustedKeys?: string[];
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
}

export const DEFAULT_RING_BYTES = RACK_DEFAULTS.ring_bytes;

/**
 * A rack, assembled: the bus, the gears' preparation, the workers (or the inline baseline), the
 * main-thread gears and the connection table. Each part lives in a module of its own; this is
 * where they are wired together.
 */
export class Rack extends EventEmitter {
  readonly name: string;
  readonly log: Logger;
  private readonly options: RackOptions;
  private readonly scenario: Scenario;
  private readonly gears: GearSpec[];
  private bus: RackBus | undefined;
  private bridge: TopicBridge | undefined;
  private pool: WorkerPool | undefined;
  private link: WorkerLink | undefined;
  private connections: ConnectionTable | undefined;
  private readonly mainGears = new Map<string, MainGear>();
  private stopping: Promise<void> | undefined;

  constructor(options: RackOptions) {
    super();
    this.options = options;
    this.scenario = options.scenario;
    this.log = options.logger ?? pino({ name: 'fluxrig.rack' });
    const named = this.scenario.racks.filter((r) => r.name !== undefined);
    this.name = options.name ?? (named.length === 1 ? named[0]!.name! : 'rack');
    this.gears = this.scenario.gears.filter((g) => g.deploy === undefined || g.deploy === this.name || this.scenario.racks.length === 0);
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
    this.log.info({ rack: this.name, scenario: this.scenario.meta.name, workers: this.workers, listening: this.addresses() }, 'rack started');
  }

  private async startParts(): Promise<void> {
    try {
      this.bus = await connectRackBus({
        rack: this.name,
        natsUrl: this.options.natsUrl,
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
    const { prepared, problems } = await preflight(this.scenario, this.gears, {
      env: this.options.env ?? process.env,
      moduleStore: bus.modules,
      trustedKeys: this.options.trustedKeys,
      ringBytes: this.options.ringBytes,
    });
    if (problems.length > 0) throw new RackError(problems.map((p) => `${p.at}: ${p.message}`).join('\n'));
    const handlerOptions: RackHandlerOptions = {
      gears: this.gears,
      wires: this.scenario.wires,
      prepared,
      kvSnapshot: [...bus.kv.entries()],
      logLevel: this.log.level,
      readableLogs: this.options.readableLogs ?? false,
      drainTimeoutMs: this.drainTimeoutMs,
      onBus: bus.nats !== undefined,
    };
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
    }
    bus.kv.watch((key, value) => this.broadcast(RecordTag.KvSet, Records.kvSet.encode({ key, value: value ?? null })));
    const connections = this.connections;
    const ctx: MainGearContext = {
      logger: this.log,
      inject: (gear, port, msg, key, source) => this.inject(gear, port, msg, key, source),
      nats: bus.nats,
      baseDir: dirname(this.scenario.file),
      accept: (gear, transport) => connections.accept(gear, transport),
    };
    for (const spec of this.gears) {
      const type = gearType(spec);
      if (type.main === undefined) continue;
      try {
        this.mainGears.set(spec.name, type.main(spec, ctx));
      } catch (err) {
        throw new RackError(`${spec.at}: ${(err as Error).message}`, { cause: err });
      }
    }
    for (const [name, gear] of this.mainGears) {
      try {
        await gear.start();
      } catch (err) {
        const spec = this.gears.find((g) => g.name === name)!;
        throw new RackError(`${spec.at}: gear ${name}: ${(err as Error).message}`, { cause: err });
      }
    }
  }

  /** The worker pool, or with workers: 0 the same handler called on the main thread. */
  private startWorkers(handlerOptions: RackHandlerOptions): WorkerLink {
    const onOutput = (tag: number, bytes: Uint8Array, start: number, length: number) => this.onOutput(tag, bytes, start, length);
    if (this.options.workers === 0) {
      const inline = buildRackHandler(
        handlerOptions,
        { send: (tag, payload) => onOutput(tag, payload, 0, payload.length), maxRecordBytes: Infinity },
        undefined,
        Date.now(),
        this.log,
      );
      const deliver = (tag: number, payload: Uint8Array) => inline(tag, payload, 0, payload.length);
      return {
        send: (_worker, tag, payload) => deliver(tag, payload),
        trySend: (_worker, tag, payload) => {
          deliver(tag, payload);
          return true;
        },
        broadcast: deliver,
        workerFor: () => 0,
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
      guestNames: this.gears.map((g) => g.name),
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
      this.emit('worker-replaced', event);
    });
    this.pool = pool;
    return {
      send: (worker, tag, payload, source) => pool.sendOrPause(worker, tag, payload, source),
      trySend: (worker, tag, payload) => pool.send(worker, tag, payload),
      broadcast: (tag, payload) => pool.broadcast(tag, payload),
      workerFor: (key) => pool.workerFor(key),
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
      await drain({
        mainGears: [...this.mainGears.values()],
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
        const { gear, port, msg } = Records.toMain.decode(payload);
        return this.mainGears.get(gear)?.receive(port, msg);
      }
      case RecordTag.KvPut: {
        const { key, value } = Records.kvPut.decode(payload);
        if (value === null) this.bus?.kv.delete(key);
        else this.bus?.kv.put(key, value);
        return;
      }
    }
  }
}
