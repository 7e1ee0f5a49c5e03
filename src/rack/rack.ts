import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { pino, type Logger } from 'pino';
import { decodeCbor, encodeCbor } from '../cbor/profile.js';
import { maxRecordBytes, RECORD_HEADER_BYTES } from '../ring/layout.js';
import { FluxrigError } from '../errors.js';
import { ErrorCode } from '../fluxar/codes.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, frameLimits } from '../fluxar/constants.js';
import { parseEndpoint } from '../fluxar/endpoint.js';
import { FluxarListener } from '../fluxar/listener.js';
import { encodeByeFrame } from '../fluxar/session.js';
import type { Transport } from '../fluxar/transport.js';
import { fluxMsgFromValue } from '../fluxmsg/codec.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { type KvStore, MemoryKvStore } from '../gears/kv.js';
import type { WasmGearConfig } from '../gears/wasm/config.js';
import { shortestGuestTimeout } from '../gears/wasm/guest-clock.js';
import { loadModule, type PreparedModule } from '../gears/wasm/loader.js';
import type { ModuleSource } from '../gears/wasm/store.js';
import { NatsKvStore } from '../bus/kv-store.js';
import { ModuleBucket } from '../bus/module-bucket.js';
import type { GearSpec, Scenario } from '../scenario/types.js';
import { GeneratorGear, type Inject, LogGear, type MainGear, NatsGear } from './main-gears.js';
import { type Pausable, WorkerPool, type WorkerReplaced } from '../ring/pool.js';
import { buildRackHandler, type RackHandlerOptions } from './rack-handler.js';
import { RackTag, sendChunked } from './rack-protocol.js';
import { ControlTag, type RecordHandler } from '../ring/pool-protocol.js';

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
  /** NATS KV bucket for the gears' KV when on the bus (default fluxrig-kv). */
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
  logger?: Logger;
}

interface Connection {
  id: number;
  worker: number;
  gear: string;
  transport: Transport;
}

type Listener = { gear: string; listener: FluxarListener };

const MAX_WRITE_BUFFER = 8 * 1024 * 1024;
/** The source of the rack's own control records: nothing to pause. */
const NO_SOURCE: Pausable = { pause() {}, resume() {} };
/** How long the main thread waits past the sessions' drain timeout before cutting connections. */
const DRAIN_GRACE_MS = 1000;
/** Room for a full 1 MiB FLUXAR frame per record, and 1024 small records per ring. */
export const DEFAULT_RING_BYTES = 4 * 1024 * 1024;

/**
 * A rack: the main thread terminates connections and runs the I/O gears; the workers run FLUXAR
 * sessions and the chain of logic gears. The main thread never decodes a frame on the hot path.
 */
export class Rack extends EventEmitter {
  readonly name: string;
  kv: KvStore;
  readonly log: Logger;
  private readonly options: RackOptions;
  private readonly scenario: Scenario;
  private readonly gears: GearSpec[];
  private pool: WorkerPool | undefined;
  private inline: RecordHandler | undefined;
  private readonly bound: Listener[] = [];
  private readonly connections = new Map<number, Connection>();
  private readonly mainGears = new Map<string, MainGear>();
  private nats: NatsConnection | undefined;
  private moduleSource: ModuleSource | undefined;
  private nextConnId = 1;
  private stopping: Promise<void> | undefined;

  constructor(options: RackOptions) {
    super();
    this.options = options;
    this.scenario = options.scenario;
    this.log = options.logger ?? pino({ name: 'fluxrig.rack' });
    const named = this.scenario.racks.filter((r) => r.name !== undefined);
    this.name = options.name ?? (named.length === 1 ? named[0]!.name! : 'rack');
    this.gears = this.scenario.gears.filter((g) => g.deploy === undefined || g.deploy === this.name || this.scenario.racks.length === 0);
    this.kv = new MemoryKvStore();
    this.moduleSource = options.moduleStore;
  }

  /** The URLs each fluxar gear is serving on (ports picked for port 0 filled in). */
  addresses(gear?: string): string[] {
    // A wildcard bind is reached through loopback from this machine.
    return this.bound
      .filter((l) => gear === undefined || l.gear === gear)
      .map(({ listener }) => listener.address.replace(/\/\/(0\.0\.0\.0|\[::\]):/, '//127.0.0.1:'));
  }

  get workers(): number {
    return this.pool?.size ?? 0;
  }

  async start(): Promise<void> {
    this.checkLanes();
    this.checkFrameSizes();
    await this.connectBus();
    const modules = await this.prepareModules();
    const natsGears = this.gears.filter((g) => g.type === 'nats');
    if (this.nats === undefined) {
      if (natsGears.length > 0) {
        throw new RackError(
          `gear ${natsGears[0]!.name} (nats) needs NATS: start the rack with --nats URL (or FLUXRIG_NATS_URL, or nats.url in the rack config)`,
        );
      }
      this.log.info({ rack: this.name }, 'standalone: no NATS configured; the rack runs alone (hot lanes only, KV in memory)');
    }
    const handlerOptions: RackHandlerOptions = {
      gears: this.gears,
      wires: this.scenario.wires,
      modules,
      kvSnapshot: [...this.kv.entries()],
      logLevel: this.log.level,
      readableLogs: this.options.readableLogs ?? false,
      drainTimeoutMs: this.drainTimeoutMs,
    };
    const workers = this.options.workers;
    if (workers === 0) {
      // The baseline: the same handler, called directly on the main thread.
      this.inline = buildRackHandler(
        handlerOptions,
        { send: (tag, payload) => this.onOutput(0, tag, payload, 0, payload.length), maxRecordBytes: Infinity },
        undefined,
        Date.now(),
        this.log,
      );
    } else {
      this.pool = new WorkerPool({
        handler: new URL('./rack-handler.js', import.meta.url),
        handlerOptions,
        size: workers,
        ringCapacity: this.options.ringBytes ?? DEFAULT_RING_BYTES,
        laneQueueSize: this.options.laneQueueSize,
        laneSendTimeoutMs: this.options.laneSendTimeoutMs,
        guestTimeoutMs: shortestGuestTimeout(this.gears.filter((g) => g.type === 'wasm').map((g) => g.config as unknown as WasmGearConfig)),
        batchDoorbells: true,
        logger: this.log,
        onOutput: (worker, tag, bytes, start, length) => this.onOutput(worker, tag, bytes, start, length),
      });
      this.pool.on('worker-replaced', (event: WorkerReplaced) => this.onWorkerReplaced(event));
      await this.pool.start();
    }
    this.kv.watch((key, value) => this.broadcast(ControlTag.KvSet, encodeCbor([key, value ?? null])));
    const inject: Inject = (gear, port, msg, key, source) => this.inject(gear, port, msg, key, source);
    for (const gear of this.gears) {
      let main: MainGear | undefined;
      if (gear.type === 'log') main = new LogGear(gear, this.log);
      else if (gear.type === 'generator') main = new GeneratorGear(gear, inject);
      else if (gear.type === 'nats') main = new NatsGear(gear, this.nats!, inject, this.log);
      if (main !== undefined) this.mainGears.set(gear.name, main);
    }
    for (const gear of this.gears.filter((g) => g.type === 'fluxar')) await this.listen(gear);
    for (const main of this.mainGears.values()) await main.start();
    this.log.info({ rack: this.name, scenario: this.scenario.meta.name, workers: this.workers, listening: this.addresses() }, 'rack started');
  }

  /**
   * Graceful stop: no new connections, every session says bye and finishes its calls (up to
   * drain_timeout), outputs are delivered, workers finish their rings, then everything closes.
   */
  stop(): Promise<void> {
    this.stopping ??= this.drainAndStop();
    return this.stopping;
  }

  private async drainAndStop(): Promise<void> {
    const closing = this.bound.map(({ listener }) => listener.close());
    for (const main of this.mainGears.values()) if (main instanceof GeneratorGear) await main.stop();
    this.broadcast(RackTag.Drain, new Uint8Array(0));
    // Each session closes itself at its drain timeout, with the 503 bye the spec asks for; the
    // main thread waits a little longer than that before it cuts what is left.
    const deadline = Date.now() + this.drainTimeoutMs + DRAIN_GRACE_MS;
    while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const conn of this.connections.values()) conn.transport.destroy();
    this.connections.clear();
    await Promise.all(closing);
    await this.pool?.close();
    for (const main of this.mainGears.values()) await main.stop();
    if (this.kv instanceof NatsKvStore) this.kv.stop();
    await this.nats?.drain();
    this.log.info({ rack: this.name }, 'rack stopped');
  }

  /** On the bus: NATS for nats gears, a KV bucket for the gears' KV, optionally a module bucket. */
  private async connectBus(): Promise<void> {
    if (this.options.natsUrl === undefined) {
      for (const [k, v] of Object.entries(this.options.kv ?? {})) this.kv.put(k, Buffer.from(v));
      return;
    }
    try {
      this.nats = await natsConnect({ servers: this.options.natsUrl, name: `fluxrig-rack-${this.name}` });
      const bucket = this.options.kvBucket ?? 'fluxrig-kv';
      this.kv = await NatsKvStore.open(this.nats, bucket, this.log);
      // Config entries seed the bucket; values already there (set by others) are kept.
      for (const [k, v] of Object.entries(this.options.kv ?? {})) if (this.kv.get(k) === undefined) this.kv.put(k, Buffer.from(v));
      if (this.options.moduleBucket !== undefined) this.moduleSource = await ModuleBucket.open(this.nats, this.options.moduleBucket);
      this.log.info({ rack: this.name, nats: this.options.natsUrl, kv_bucket: bucket, module_bucket: this.options.moduleBucket }, 'connected to NATS');
    } catch (err) {
      throw new RackError(`cannot use NATS at ${this.options.natsUrl}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Hot lanes only until the bus lands: say so instead of pretending. */
  private checkLanes(): void {
    const needBus = this.scenario.wires.filter((w) => w.lane === 'guaranteed' || w.crossRack);
    if (needBus.length > 0) {
      const list = needBus
        .map((w) => `  ${w.at}: ${w.from.gear}.${w.from.port} -> ${w.to.gear}.${w.to.port} (${w.crossRack ? 'across racks' : 'lane: guaranteed'})`)
        .join('\n');
      throw new RackError(
        `these wires need the snake bus (NATS JetStream lanes), which this rack does not provide yet; only hot lanes within one rack run today:\n${list}`,
      );
    }
  }

  /**
   * A WebSocket message travels as one ring record: the largest one the listener lets through
   * (frameLimits: the flags byte and max_frame) must fit in half a ring.
   */
  private checkFrameSizes(): void {
    const ringBytes = this.options.ringBytes ?? DEFAULT_RING_BYTES;
    const maxRecord = maxRecordBytes(ringBytes);
    for (const gear of this.gears.filter((g) => g.type === 'fluxar')) {
      const { maxFrame, maxMessage } = frameLimits(gear.config.max_frame as number | undefined);
      if (maxMessage > maxRecord) {
        throw new RackError(
          `${gear.at}: gear ${gear.name}: max_frame ${maxFrame} does not fit the rack's rings (ring_bytes ${ringBytes} takes records up to ${maxRecord} bytes); raise rack.ring_bytes to at least ${2 * (maxMessage + RECORD_HEADER_BYTES)} or lower max_frame`,
        );
      }
    }
  }

  private get drainTimeoutMs(): number {
    return this.options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
  }

  private async prepareModules(): Promise<Record<string, PreparedModule>> {
    const modules: Record<string, PreparedModule> = {};
    for (const gear of this.gears.filter((g) => g.type === 'wasm')) {
      const config = gear.config as unknown as WasmGearConfig;
      try {
        modules[gear.name] = await loadModule(config, {
          baseDir: dirname(this.scenario.file),
          store: this.moduleSource,
          trustedKeys: this.options.trustedKeys,
        });
      } catch (err) {
        throw new RackError(`${gear.at}: gear ${gear.name}: ${(err as Error).message}`, { cause: err });
      }
    }
    return modules;
  }

  private send(worker: number, tag: number, payload: Uint8Array, source: Pausable): void {
    if (this.inline !== undefined) this.inline(tag, payload, 0, payload.length);
    else this.pool!.sendOrPause(worker, tag, payload, source);
  }

  private broadcast(tag: number, payload: Uint8Array): void {
    if (this.inline !== undefined) this.inline(tag, payload, 0, payload.length);
    else this.pool?.broadcast(tag, payload);
  }

  private inject(gear: string, port: string, msg: FluxMsg, key: number, source?: Pausable): void {
    const payload = encodeCbor([gear, port, msg]);
    if (this.inline !== undefined) return this.inline(RackTag.Inject, payload, 0, payload.length);
    const worker = this.pool!.workerFor(key);
    if (source !== undefined) this.pool!.sendOrPause(worker, RackTag.Inject, payload, source);
    else if (!this.pool!.send(worker, RackTag.Inject, payload)) this.log.warn({ gear }, 'lane full: message from a main-thread gear dropped');
  }

  private onOutput(_worker: number, tag: number, bytes: Uint8Array, start: number, length: number): void {
    if (tag > 0) {
      const conn = this.connections.get(tag);
      if (conn === undefined) return;
      // The ring slot is reused after this call; the socket may hold the buffer until it flushes.
      const queued = conn.transport.write([Buffer.from(bytes.subarray(start, start + length))]);
      if (queued > (this.options.maxWriteBuffer ?? MAX_WRITE_BUFFER)) {
        this.log.warn({ conn: tag, queued }, 'client is not reading; disconnecting');
        this.closeConnection(conn);
      }
      return;
    }
    const payload = bytes.subarray(start, start + length);
    switch (tag) {
      case RackTag.ConnEnd: {
        const [id] = decodeCbor(payload, true) as [number];
        const conn = this.connections.get(id);
        if (conn !== undefined) {
          this.connections.delete(id);
          conn.transport.end();
        }
        return;
      }
      case RackTag.ToMain: {
        const [gear, port, value] = decodeCbor(payload, true) as [string, string, unknown];
        this.mainGears.get(gear)?.receive(port, fluxMsgFromValue(value));
        return;
      }
      case ControlTag.KvPut: {
        const [key, value] = decodeCbor(payload, true) as [string, Uint8Array];
        this.kv.put(key, value);
        return;
      }
    }
  }

  private closeConnection(conn: Connection): void {
    this.connections.delete(conn.id);
    conn.transport.destroy();
    this.send(conn.worker, RackTag.ConnClosed, encodeCbor([conn.id]), NO_SOURCE);
  }

  /** Sessions lived in the replaced worker: their clients get a clean 503 bye, not a hang. */
  private onWorkerReplaced(event: WorkerReplaced): void {
    const reason =
      event.timedOutTag !== undefined
        ? `a gear timed out and the worker serving this connection was restarted (${event.reason})`
        : `the worker serving this connection was restarted (${event.reason})`;
    for (const conn of [...this.connections.values()]) {
      if (conn.worker !== event.index) continue;
      this.connections.delete(conn.id);
      conn.transport.write([encodeByeFrame(conn.transport.framing, ErrorCode.Unavailable, reason)]);
      conn.transport.end();
    }
    this.emit('worker-replaced', event);
  }

  private async listen(gear: GearSpec): Promise<void> {
    const c = gear.config;
    const base = dirname(this.scenario.file);
    const read = (f: string) => readFileSync(f.startsWith('/') ? f : `${base}/${f}`);
    const certFile = c.tls_cert as string | undefined;
    const keyFile = c.tls_key as string | undefined;
    for (const url of c.listen as string[]) {
      const endpoint = parseEndpoint(url);
      if ((endpoint.kind === 'tls' || endpoint.kind === 'wss') && (certFile === undefined || keyFile === undefined)) {
        throw new RackError(`${gear.at}: ${url} needs tls_cert and tls_key`);
      }
      const tls = certFile !== undefined && keyFile !== undefined ? { cert: read(certFile), key: read(keyFile) } : undefined;
      const listener = new FluxarListener(
        endpoint,
        {
          tls,
          maxFrame: c.max_frame as number | undefined,
          maxConnections: c.max_connections as number | undefined,
          maxConnectionsPerIp: c.max_connections_per_ip as number | undefined,
          upgradeTimeoutMs: c.upgrade_timeout_ms as number | undefined,
          logger: this.log,
        },
        (transport) => this.accept(gear, transport),
      );
      try {
        await listener.start();
      } catch (err) {
        throw new RackError(`${gear.at}: gear ${gear.name}: ${(err as Error).message}`, { cause: err });
      }
      this.bound.push({ gear: gear.name, listener });
    }
  }

  /**
   * A new connection: its session is opened in the worker that owns it, and from then on its
   * bytes go to that worker's ring as they came (cut to the ring's record size on a byte
   * stream): the main thread parses no frame.
   */
  private accept(gear: GearSpec, transport: Transport): void {
    const id = this.nextConnId;
    this.nextConnId = this.nextConnId >= 0x7ffffff0 ? 1 : this.nextConnId + 1;
    const worker = this.pool?.workerFor(id) ?? 0;
    const conn: Connection = { id, worker, gear: gear.name, transport };
    this.connections.set(id, conn);
    this.send(worker, RackTag.ConnOpen, encodeCbor([id, gear.name, transport.framing, transport.remoteAddress ?? '', transport.remotePort ?? 0]), NO_SOURCE);
    const maxRecord = this.pool?.maxRecordBytes ?? Infinity;
    const lane = { send: (tag: number, bytes: Uint8Array) => this.send(worker, tag, bytes, transport), maxRecordBytes: maxRecord };
    transport.onData((bytes) => {
      try {
        if (transport.framing === 'stream') return sendChunked(lane, id, bytes);
        // The listener's message limit keeps WebSocket frames within a record (checkFrameSizes).
        if (bytes.length > maxRecord) return this.invalid(conn, `message of ${bytes.length} bytes is over the limit`);
        this.send(worker, id, bytes, transport);
      } catch (err) {
        this.failConnection(conn, err);
      }
    });
    transport.onInvalid((reason) => {
      try {
        this.invalid(conn, reason);
      } catch (err) {
        this.failConnection(conn, err);
      }
    });
    transport.onClose(() => {
      if (this.connections.delete(id)) this.send(worker, RackTag.ConnClosed, encodeCbor([id]), NO_SOURCE);
    });
  }

  /** Handling this connection's bytes failed (a bug): it alone is closed, with a 500 bye. */
  private failConnection(conn: Connection, err: unknown): void {
    this.log.error({ err, conn: conn.id, gear: conn.gear }, 'connection handling failed; closing the connection');
    if (!this.connections.delete(conn.id)) return;
    conn.transport.write([encodeByeFrame(conn.transport.framing, ErrorCode.Internal, 'internal error')]);
    conn.transport.end();
    try {
      this.send(conn.worker, RackTag.ConnClosed, encodeCbor([conn.id]), NO_SOURCE);
    } catch {
      // The worker's session times out on its own.
    }
  }

  /** Bytes that cannot be a FLUXAR frame: the connection's session refuses them with a 400 bye. */
  private invalid(conn: Connection, reason: string): void {
    if (!this.connections.has(conn.id)) return;
    this.send(conn.worker, RackTag.ConnInvalid, encodeCbor([conn.id, reason]), NO_SOURCE);
  }
}
