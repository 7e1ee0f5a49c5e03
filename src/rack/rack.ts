import { EventEmitter, once } from 'node:events';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { pino, type Logger } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import { decodeCbor, encodeCbor } from '../cbor/profile.js';
import { maxRecordBytes, RECORD_HEADER_BYTES } from '../ring/layout.js';
import { FluxrigError } from '../errors.js';
import { encodeEnvelope } from '../fluxar/envelope.js';
import { DEFAULT_MAX_FRAME, MAX_FRAME_CEILING } from '../fluxar/constants.js';
import { parseEndpoint } from '../fluxar/endpoint.js';
import { encodeMessageFrame, encodeStreamFrame } from '../fluxar/framing.js';
import { fluxMsgFromValue } from '../fluxmsg/codec.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { uuidv7 } from '../fluxmsg/uuid.js';
import { type KvStore, MemoryKvStore } from '../gears/kv.js';
import type { WasmGearConfig } from '../gears/wasm/config.js';
import { shortestGuestTimeout } from '../gears/wasm/guest-clock.js';
import { loadModule, type PreparedModule } from '../gears/wasm/loader.js';
import type { ModuleSource } from '../gears/wasm/store.js';
import { NatsKvStore } from '../bus/kv-store.js';
import { ModuleBucket } from '../bus/module-bucket.js';
import type { GearSpec, Scenario } from '../scenario/types.js';
import { GeneratorGear, type Inject, LogGear, type MainGear, NatsGear } from './main-gears.js';
import { type Pausable, WorkerPool, type WorkerReplaced } from './pool.js';
import { buildRackHandler, type RackHandlerOptions } from './rack-handler.js';
import { RackTag, sendChunked } from './rack-protocol.js';
import { ControlTag, type RecordHandler } from './worker-protocol.js';

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
  framing: 'stream' | 'message';
  write(bytes: Uint8Array): number;
  end(): void;
  destroy(): void;
}

type Listener = { gear: string; url: string; kind: string; server: NetServer | HttpServer; wss?: WebSocketServer };

const MAX_WRITE_BUFFER = 8 * 1024 * 1024;
/** The source of the rack's own control records: nothing to pause. */
const NO_SOURCE: Pausable = { pause() {}, resume() {} };
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
    return this.bound
      .filter((l) => gear === undefined || l.gear === gear)
      .map(({ kind, server, url }) => {
        if (kind === 'unix') return url;
        const a = server.address() as AddressInfo;
        const path = kind === 'ws' || kind === 'wss' ? parseEndpoint(url).path : '';
        return `${kind}://${a.address === '0.0.0.0' || a.address === '::' ? '127.0.0.1' : a.address}:${a.port}${path === '/' ? '' : path}`;
      });
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
        throw new RackError(`gear ${natsGears[0]!.name} (nats) needs NATS: start the rack with --nats URL (or FLUXRIG_NATS_URL, or nats.url in the rack config)`);
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
    };
    const workers = this.options.workers;
    if (workers === 0) {
      // The baseline: the same handler, called directly on the main thread.
      this.inline = buildRackHandler(handlerOptions, { send: (tag, payload) => this.onOutput(0, tag, payload, 0, payload.length), maxRecordBytes: Infinity }, undefined, Date.now(), this.log);
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
    for (const l of this.bound) {
      l.wss?.close();
      l.server.close();
    }
    for (const main of this.mainGears.values()) if (main instanceof GeneratorGear) await main.stop();
    this.broadcast(RackTag.Drain, new Uint8Array(0));
    const deadline = Date.now() + (this.options.drainTimeoutMs ?? 10_000);
    while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const conn of this.connections.values()) conn.destroy();
    this.connections.clear();
    await this.pool?.close();
    for (const main of this.mainGears.values()) await main.stop();
    if (this.kv instanceof NatsKvStore) this.kv.stop();
    await this.nats?.drain();
    for (const l of this.bound) if (l.kind === 'unix') await rm(parseEndpoint(l.url).path, { force: true });
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
      const list = needBus.map((w) => `  ${w.at}: ${w.from.gear}.${w.from.port} -> ${w.to.gear}.${w.to.port} (${w.crossRack ? 'across racks' : 'lane: guaranteed'})`).join('\n');
      throw new RackError(`these wires need the snake bus (NATS JetStream lanes), which this rack does not provide yet; only hot lanes within one rack run today:\n${list}`);
    }
  }

  /** A WebSocket frame travels as one ring record: the largest frame must fit in half a ring. */
  private checkFrameSizes(): void {
    const ringBytes = this.options.ringBytes ?? DEFAULT_RING_BYTES;
    const maxRecord = maxRecordBytes(ringBytes);
    for (const gear of this.gears.filter((g) => g.type === 'fluxar')) {
      const maxFrame = (gear.config.max_frame as number | undefined) ?? DEFAULT_MAX_FRAME;
      if (maxFrame + 1 > maxRecord) {
        throw new RackError(`${gear.at}: gear ${gear.name}: max_frame ${maxFrame} does not fit the rack's rings (ring_bytes ${ringBytes} takes records up to ${maxRecord} bytes); raise rack.ring_bytes to at least ${2 * (maxFrame + 1 + RECORD_HEADER_BYTES)} or lower max_frame`);
      }
    }
  }

  private async prepareModules(): Promise<Record<string, PreparedModule>> {
    const modules: Record<string, PreparedModule> = {};
    for (const gear of this.gears.filter((g) => g.type === 'wasm')) {
      const config = gear.config as unknown as WasmGearConfig;
      try {
        modules[gear.name] = await loadModule(config, { baseDir: dirname(this.scenario.file), store: this.moduleSource, trustedKeys: this.options.trustedKeys });
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
      const queued = conn.write(Buffer.from(bytes.subarray(start, start + length)));
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
          conn.end();
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
    conn.destroy();
    this.send(conn.worker, RackTag.ConnClosed, encodeCbor([conn.id]), NO_SOURCE);
  }

  /** Sessions lived in the replaced worker: their clients get a clean 503 bye, not a hang. */
  private onWorkerReplaced(event: WorkerReplaced): void {
    const reason = event.timedOutTag !== undefined ? `a gear timed out and the worker serving this connection was restarted (${event.reason})` : `the worker serving this connection was restarted (${event.reason})`;
    const bye = encodeEnvelope({ type: 1, id: uuidv7(), ref: null, target: 'bye', meta: null, payload: null, error: { code: 503, message: reason } });
    for (const conn of [...this.connections.values()]) {
      if (conn.worker !== event.index) continue;
      this.connections.delete(conn.id);
      conn.write(conn.framing === 'stream' ? encodeStreamFrame(0, bye) : encodeMessageFrame(0, bye));
      conn.end();
    }
    this.emit('worker-replaced', event);
  }

  private async listen(gear: GearSpec): Promise<void> {
    const certFile = gear.config.tls_cert as string | undefined;
    const keyFile = gear.config.tls_key as string | undefined;
    const base = dirname(this.scenario.file);
    const read = (f: string) => readFileSync(f.startsWith('/') ? f : `${base}/${f}`);
    for (const url of gear.config.listen as string[]) {
      const endpoint = parseEndpoint(url);
      const tlsOptions = () => {
        if (certFile === undefined || keyFile === undefined) throw new RackError(`${gear.at}: ${url} needs tls_cert and tls_key`);
        return { cert: read(certFile), key: read(keyFile), minVersion: 'TLSv1.3' as const };
      };
      let listener: Listener;
      switch (endpoint.kind) {
        case 'tcp':
        case 'unix':
        case 'tls': {
          const onSocket = (socket: Socket) => this.acceptSocket(gear, socket, endpoint.kind);
          const server = endpoint.kind === 'tls' ? createTlsServer(tlsOptions(), onSocket) : createNetServer(onSocket);
          listener = { gear: gear.name, url, kind: endpoint.kind, server };
          break;
        }
        case 'ws':
        case 'wss': {
          const server = endpoint.kind === 'wss' ? createHttpsServer(tlsOptions()) : createHttpServer();
          server.on('request', (_req, res) => res.writeHead(426).end('FLUXAR: upgrade to WebSocket\n'));
          const maxPayload = Math.min((gear.config.max_frame as number | undefined) ?? MAX_FRAME_CEILING, MAX_FRAME_CEILING) + 1;
          const wss = new WebSocketServer({ server, path: endpoint.path, maxPayload });
          wss.on('connection', (ws, req) => this.acceptWebSocket(gear, ws, req.socket));
          listener = { gear: gear.name, url, kind: endpoint.kind, server, wss };
          break;
        }
      }
      if (endpoint.kind === 'unix') await rm(endpoint.path, { force: true });
      const listening = once(listener.server, 'listening');
      const failed = once(listener.server, 'error').then(([err]) => {
        throw new RackError(`${gear.at}: gear ${gear.name} cannot listen on ${url}: ${(err as Error).message}`);
      });
      if (endpoint.kind === 'unix') listener.server.listen(endpoint.path);
      else listener.server.listen(endpoint.port, endpoint.host);
      await Promise.race([listening, failed]);
      this.bound.push(listener);
    }
  }

  private open(gear: GearSpec, framing: 'stream' | 'message', ip: string | undefined, port: number | undefined, conn: Omit<Connection, 'id' | 'worker' | 'gear' | 'framing'>): Connection {
    const id = this.nextConnId;
    this.nextConnId = this.nextConnId >= 0x7ffffff0 ? 1 : this.nextConnId + 1;
    const worker = this.pool?.workerFor(id) ?? 0;
    const connection: Connection = { id, worker, gear: gear.name, framing, ...conn };
    this.connections.set(id, connection);
    this.send(worker, RackTag.ConnOpen, encodeCbor([id, gear.name, framing, ip ?? '', port ?? 0]), NO_SOURCE);
    return connection;
  }

  private acceptSocket(gear: GearSpec, socket: Socket, kind: string): void {
    if (kind !== 'unix') socket.setNoDelay(true);
    const conn = this.open(gear, 'stream', socket.remoteAddress, socket.remotePort, {
      write: (bytes) => {
        socket.write(bytes);
        return socket.writableLength;
      },
      end: () => socket.end(),
      destroy: () => socket.destroy(),
    });
    // Bytes go to the owning worker's ring as they came (cut to the ring's record size): the
    // main thread does not parse frames.
    const lane = { send: (tag: number, bytes: Uint8Array) => this.send(conn.worker, tag, bytes, socket), maxRecordBytes: this.pool?.maxRecordBytes ?? Infinity };
    socket.on('data', (chunk) => sendChunked(lane, conn.id, chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.connections.delete(conn.id)) this.send(conn.worker, RackTag.ConnClosed, encodeCbor([conn.id]), socket);
    });
  }

  private acceptWebSocket(gear: GearSpec, ws: WebSocket, socket: Socket): void {
    const conn = this.open(gear, 'message', socket.remoteAddress, socket.remotePort, {
      write: (bytes) => {
        ws.send(bytes, { binary: true });
        return ws.bufferedAmount;
      },
      end: () => ws.close(1000),
      destroy: () => ws.terminate(),
    });
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        ws.close(1003, 'FLUXAR frames are binary');
        return;
      }
      this.send(conn.worker, conn.id, data as Buffer, ws);
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      if (this.connections.delete(conn.id)) this.send(conn.worker, RackTag.ConnClosed, encodeCbor([conn.id]), ws);
    });
  }
}
