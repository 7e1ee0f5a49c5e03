// The fluxar gear: FLUXAR clients in, answers out. Its main-thread half binds the listeners and
// hands each accepted connection to the rack; its worker half runs the connections' sessions
// (handshake, auth, RPC), turns calls into fluxMsgs on `out`, and answers them from `in`.
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { type AuthOptions, type Principal, secretsEqual, secretTable } from '../fluxar/auth.js';
import { ErrorCode } from '../fluxar/codes.js';
import { DESCRIBE_TARGET, describeRequestError } from '../fluxar/describe.js';
import type { E2eOptions } from '../fluxar/e2e.js';
import { keyFromHex, keyPairFrom } from '../fluxar/noise.js';
import {
  DEFAULT_DECODE_ITEMS_PER_S,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_INFLATE_BYTES_PER_S,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_CONNECTIONS_PER_IP,
  DEFAULT_MAX_FRAME,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_STREAMS,
  DEFAULT_RESUME_BUFFER,
  DEFAULT_RESUME_MS,
  DEFAULT_STREAM_WINDOW,
  DEFAULT_UPGRADE_TIMEOUT_MS,
  MAX_FRAME_CEILING,
  MIN_MAX_FRAME,
  RESUME_ACK_EVERY,
  STREAM_HIGH_WATER_MARK,
} from '../fluxar/constants.js';
import { type DriverHost, SessionDriver } from '../fluxar/driver.js';
import { parseEndpoint } from '../fluxar/endpoint.js';
import { FluxarListener } from '../fluxar/listener.js';
import { FluxarError } from '../fluxar/errors.js';
import { type Framing, idKey, type ResumeRequest, Session, type SessionEvent } from '../fluxar/session.js';
import { rackSessionId } from './session-routing.js';
import type { BrokerLink, PublishOutcome } from '../fluxar/broker.js';
import { isQos, type Qos } from '../fluxar/pubsub-state.js';
import type { StreamMode } from '../fluxar/stream-state.js';
import { topicError } from '../fluxar/topics.js';
import { uuidv7 } from '../fluxmsg/uuid.js';
import { createFluxMsg, type FluxMsg } from '../fluxmsg/fluxmsg.js';
import { sendStreamBytes } from '../ring/lane.js';
import { BYTE_HEX } from '../fluxmsg/uuid.js';
import {
  type CallTrace,
  type ConnectionHost,
  configOf,
  type GearType,
  type MainGear,
  type MainGearContext,
  type MessageEnd,
  type PrepareContext,
  type WorkerGearContext,
  type GearSpec,
} from './gear.js';
import type { GearManifest } from './manifest.js';
import { Records } from './records.js';

const endpointPattern = '^(tcp|tls|ws|wss|unix)://';
const secretRef = 'file:PATH (relative to the scenario) or env:NAME';

export const manifest: GearManifest = {
  type: 'fluxar',
  summary: 'FLUXAR I/O: serves clients (server mode) over tcp/tls/ws/wss/unix; calls become fluxMsgs',
  placement: 'main',
  inputs: ['in'],
  outputs: ['out'],
  config: {
    type: 'object',
    description: 'FLUXAR gear',
    properties: {
      listen: {
        type: 'array',
        description: 'endpoints to serve: tcp://host:port, tls://, ws://host:port/path, wss://, unix:///path',
        items: { type: 'string', description: 'endpoint URL', pattern: endpointPattern },
        minItems: 1,
      },
      tls_cert: { type: 'string', description: 'PEM certificate file for tls:// and wss://' },
      tls_key: { type: 'string', description: 'PEM key file for tls:// and wss://' },
      tls_ca: { type: 'string', description: 'PEM file of the CAs trusted for client certificates' },
      require_client_cert: { type: 'boolean', description: 'refuse TLS clients without a certificate signed by tls_ca', default: false },
      auth: {
        type: 'object',
        description: 'verifiers per scheme (spec section 9); each table is read at start from a file or an environment variable',
        properties: {
          bearer: { type: 'string', description: `${secretRef} holding a map: token -> principal id` },
          api_key: { type: 'string', description: `${secretRef} holding a map: key -> principal id` },
          credentials: { type: 'string', description: `${secretRef} holding a map: username -> password` },
          custom: {
            type: 'object',
            description: 'custom schemes by name',
            properties: {},
            additionalProperties: { type: 'string', description: `${secretRef} holding a map: data (text) -> principal id` },
          },
          allow_anonymous: { type: 'boolean', description: 'accept clients that present no credentials (default: only when no verifier is set)' },
        },
      },
      bearer_tokens: {
        type: 'object',
        description: 'inline bearer tokens and the principal id each stands for (for tests; use auth.bearer for real secrets)',
        properties: {},
        additionalProperties: { type: 'string', description: 'principal id' },
      },
      psk: { type: 'string', description: `${secretRef} holding the pre-shared key (spec section 10)` },
      e2e: {
        type: 'object',
        description: 'end-to-end encryption (spec section 19); clients that ask for it get it (NN, NNpsk0) without this',
        properties: {
          static_key: {
            type: 'string',
            description: `${secretRef} holding the X25519 private key (64 hex digits), for clients that pin the rack's key (NK, IK)`,
          },
          require: { type: 'boolean', description: 'refuse clients that do not encrypt end to end (400)', default: false },
        },
      },
      max_frame: {
        type: 'integer',
        description: 'largest frame accepted, bytes',
        minimum: MIN_MAX_FRAME,
        maximum: MAX_FRAME_CEILING,
        default: DEFAULT_MAX_FRAME,
      },
      max_in_flight: { type: 'integer', description: 'calls in flight per connection before 429', minimum: 1, default: DEFAULT_MAX_IN_FLIGHT },
      max_streams: { type: 'integer', description: 'streams a client may open at once per connection before 429', minimum: 1, default: DEFAULT_MAX_STREAMS },
      stream_window: {
        type: 'integer',
        description: "chunks a client may stream up ahead of the scenario (credit granted at a time); none while the client's down chunks wait",
        minimum: 1,
        default: DEFAULT_STREAM_WINDOW,
      },
      heartbeat_ms: { type: 'integer', description: 'heartbeat interval announced to clients', minimum: 0, default: DEFAULT_HEARTBEAT_MS },
      resume_ms: {
        type: 'integer',
        description: 'how long a session whose connection dropped waits for its client to resume it (spec section 20); 0 offers no resume',
        minimum: 0,
        default: DEFAULT_RESUME_MS,
      },
      resume_buffer: {
        type: 'integer',
        description: 'envelopes a session retains for resume until the client acknowledges them; while full, nothing new is sent',
        minimum: 2 * RESUME_ACK_EVERY,
        default: DEFAULT_RESUME_BUFFER,
      },
      max_connections: {
        type: 'integer',
        description: 'connections held at once per listener; more are refused with a 503 bye (HTTP 503 on ws)',
        minimum: 1,
        default: DEFAULT_MAX_CONNECTIONS,
      },
      max_connections_per_ip: {
        type: 'integer',
        description: 'connections held at once from one client address, per listener',
        minimum: 1,
        default: DEFAULT_MAX_CONNECTIONS_PER_IP,
      },
      upgrade_timeout_ms: {
        type: 'integer',
        description: 'ws/wss: time for the HTTP upgrade (and TLS handshake) to complete',
        minimum: 100,
        default: DEFAULT_UPGRADE_TIMEOUT_MS,
      },
      inflate_bytes_per_s: {
        type: 'integer',
        description: 'per-connection budget of bytes inflated from compressed frames per second (429 bye past it)',
        minimum: 1024,
        default: DEFAULT_INFLATE_BYTES_PER_S,
      },
      decode_items_per_s: {
        type: 'integer',
        description: 'per-connection budget of CBOR items decoded per second (429 bye past it)',
        minimum: 1000,
        default: DEFAULT_DECODE_ITEMS_PER_S,
      },
      describe: {
        type: 'boolean',
        description: `answer ${DESCRIBE_TARGET} with the targets the scenario routes and the topics wired in (false: 404)`,
        default: true,
      },
    },
    required: ['listen'],
  },
  notes: [
    "A call from a client becomes a fluxMsg on `out`: meta carries conn.id, fluxar.type, fluxar.target, fluxar.call, peer.ip, peer.port, peer.principal (the authenticated id) and the call's own meta as text; the payload goes into data when it is a map, data.payload otherwise, raw when it is bytes.",
    'A message on `in` with conn.id and fluxar.call is the answer to that call: its data goes back as the payload. A message that carries error.reason (a rejection) is answered with FLUXAR error 403 and the reason as the message.',
    'Secrets (auth tables, psk) come from files or environment variables, read once at start: auth.bearer: file:secrets/tokens.yaml, psk: env:FLUXAR_PSK.',
    'The connection lives on the main thread; its FLUXAR session (handshake, auth, RPC) runs in the worker that owns the connection.',
    'A stream (spec section 13) becomes messages on `out` with meta fluxar.stream (the stream id) and fluxar.type: "stream" for the opening (data from its payload; fluxar.mode says out, in or bidi), "chunk" for each chunk up (fluxar.seq from 0), "end" when the client ends its direction.',
    'A message on `in` with fluxar.stream is a chunk down; with meta fluxar.end = "true" it ends the stream, its data (if any) being the final payload; with error.reason it fails the stream. A fan-out is several chunks. Chunks wait for the client\'s credit and for its socket; while they wait, the client gets no credit to stream up, so a slow client stops the chunks at the gear.',
  ],
};

export interface FluxarConfig {
  listen: string[];
  tls_cert?: string;
  tls_key?: string;
  tls_ca?: string;
  require_client_cert: boolean;
  auth?: { bearer?: string; api_key?: string; credentials?: string; custom?: Record<string, string>; allow_anonymous?: boolean };
  bearer_tokens?: Record<string, string>;
  psk?: string;
  e2e?: { static_key?: string; require: boolean };
  max_frame: number;
  max_in_flight: number;
  max_streams: number;
  stream_window: number;
  heartbeat_ms: number;
  resume_ms: number;
  resume_buffer: number;
  max_connections: number;
  max_connections_per_ip: number;
  upgrade_timeout_ms: number;
  inflate_bytes_per_s: number;
  decode_items_per_s: number;
  describe: boolean;
}

/** The gear's secrets, read on the main thread at start and handed to every worker. */
export interface FluxarSecrets {
  bearer?: Record<string, string>;
  api_key?: Record<string, string>;
  credentials?: Record<string, string>;
  custom?: Record<string, Record<string, string>>;
  allowAnonymous?: boolean;
  psk?: string;
  /** The X25519 private key for end-to-end encryption, as 64 hex digits. */
  e2eKey?: string;
}

/** A rejected message is answered with this FLUXAR code (the caller is not allowed this). */
export const REJECT_CODE = ErrorCode.Forbidden;

function resolvePath(baseDir: string, file: string): string {
  return isAbsolute(file) ? file : join(baseDir, file);
}

/** The text behind `file:PATH` or `env:NAME`. */
function readSecret(ref: string, ctx: PrepareContext, what: string): string {
  if (ref.startsWith('env:')) {
    const value = ctx.env[ref.slice(4)];
    if (value === undefined) throw new Error(`${what}: environment variable ${ref.slice(4)} is not set`);
    return value;
  }
  if (ref.startsWith('file:')) {
    const path = resolvePath(ctx.baseDir, ref.slice(5));
    try {
      // One trailing newline is what editors add; it is not part of the secret.
      return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new Error(`${what}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  throw new Error(`${what} must be file:PATH or env:NAME (secrets are not written in the scenario)`);
}

/** A secret holding a map of text to text (YAML or JSON). */
function readTable(ref: string, ctx: PrepareContext, what: string): Record<string, string> {
  const doc = parseYaml(readSecret(ref, ctx, what)) as unknown;
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${what}: ${ref} must hold a map`);
  const table: Record<string, string> = {};
  for (const [k, v] of Object.entries(doc)) {
    if (typeof v !== 'string' && typeof v !== 'number') throw new Error(`${what}: ${ref}: the value of each entry must be text`);
    table[k] = String(v);
  }
  return table;
}

async function prepare(spec: GearSpec, ctx: PrepareContext): Promise<FluxarSecrets> {
  const config = configOf<FluxarConfig>(spec, manifest);
  const where = (key: string) => `gear ${spec.name}: ${key}`;
  for (const url of config.listen) {
    const endpoint = parseEndpoint(url);
    if ((endpoint.kind === 'tls' || endpoint.kind === 'wss') && (config.tls_cert === undefined || config.tls_key === undefined))
      throw new Error(`${url} needs tls_cert and tls_key`);
    for (const file of [config.tls_cert, config.tls_key, config.tls_ca]) {
      if (file !== undefined && !existsSync(resolvePath(ctx.baseDir, file))) throw new Error(`${where('TLS')}: no such file ${resolvePath(ctx.baseDir, file)}`);
    }
  }
  const secrets: FluxarSecrets = {};
  const a = config.auth ?? {};
  if (a.bearer !== undefined || config.bearer_tokens !== undefined) {
    secrets.bearer = { ...config.bearer_tokens, ...(a.bearer === undefined ? {} : readTable(a.bearer, ctx, where('auth.bearer'))) };
  }
  if (a.api_key !== undefined) secrets.api_key = readTable(a.api_key, ctx, where('auth.api_key'));
  if (a.credentials !== undefined) secrets.credentials = readTable(a.credentials, ctx, where('auth.credentials'));
  if (a.custom !== undefined) {
    secrets.custom = {};
    for (const [name, ref] of Object.entries(a.custom)) secrets.custom[name] = readTable(ref, ctx, where(`auth.custom.${name}`));
  }
  if (a.allow_anonymous !== undefined) secrets.allowAnonymous = a.allow_anonymous;
  if (config.psk !== undefined) secrets.psk = readSecret(config.psk, ctx, where('psk'));
  if (config.e2e?.static_key !== undefined) {
    const key = readSecret(config.e2e.static_key, ctx, where('e2e.static_key'));
    if (keyFromHex(key) === null)
      throw new Error(`${where('e2e.static_key')}: expected an X25519 private key as 64 hex digits (fluxrig e2e keygen writes one)`);
    secrets.e2eKey = key;
  }
  return secrets;
}

const principalTable = (table: Record<string, string>) => secretTable(Object.fromEntries(Object.entries(table).map(([secret, id]) => [secret, { id }])));

/** The verifiers a session runs, from the gear's secret tables (all compared in constant time). */
export function authFromSecrets(secrets: FluxarSecrets): AuthOptions {
  const auth: AuthOptions = {};
  if (secrets.bearer !== undefined) {
    const verify = principalTable(secrets.bearer);
    auth.bearer = ({ token }) => verify(token);
  }
  if (secrets.api_key !== undefined) {
    const verify = principalTable(secrets.api_key);
    auth.api_key = ({ key }) => verify(key);
  }
  if (secrets.credentials !== undefined) {
    const users = secrets.credentials;
    auth.credentials = ({ username, password }) => {
      // An unknown user costs the same comparison, so timing does not tell who exists.
      const known = Object.hasOwn(users, username);
      const ok = secretsEqual(known ? users[username]! : '\u0000unknown', password);
      return known && ok ? ({ id: username } satisfies Principal) : null;
    };
  }
  if (secrets.custom !== undefined) {
    auth.custom = {};
    for (const [name, table] of Object.entries(secrets.custom)) {
      const verify = principalTable(table);
      auth.custom[name] = ({ data }) => (typeof data === 'string' ? verify(data) : null);
    }
  }
  if (secrets.allowAnonymous !== undefined) auth.allowAnonymous = secrets.allowAnonymous;
  return auth;
}

/** Main thread: the listeners. Accepted connections go to the rack; nothing here parses a frame. */
class FluxarListeners implements MainGear {
  private readonly listeners: FluxarListener[] = [];
  private closing: Promise<unknown> | undefined;

  constructor(
    private readonly spec: GearSpec,
    private readonly ctx: MainGearContext,
  ) {}

  async start(): Promise<void> {
    const c = configOf<FluxarConfig>(this.spec, manifest);
    const read = (file: string) => readFileSync(resolvePath(this.ctx.baseDir, file));
    const tls =
      c.tls_cert !== undefined && c.tls_key !== undefined
        ? { cert: read(c.tls_cert), key: read(c.tls_key), ca: c.tls_ca === undefined ? undefined : read(c.tls_ca), requireClientCert: c.require_client_cert }
        : undefined;
    for (const url of c.listen) {
      const endpoint = parseEndpoint(url);
      if ((endpoint.kind === 'tls' || endpoint.kind === 'wss') && tls === undefined) throw new Error(`${url} needs tls_cert and tls_key`);
      const listener = new FluxarListener(
        endpoint,
        {
          tls,
          maxFrame: c.max_frame,
          maxConnections: c.max_connections,
          maxConnectionsPerIp: c.max_connections_per_ip,
          upgradeTimeoutMs: c.upgrade_timeout_ms,
          logger: this.ctx.logger,
        },
        (transport) => this.ctx.accept(this.spec.name, transport),
      );
      await listener.start();
      this.listeners.push(listener);
    }
  }

  addresses(): string[] {
    // A wildcard bind is reached through loopback from this machine.
    return this.listeners.map((l) => l.address.replace(/\/\/(0\.0\.0\.0|\[::\]):/, '//127.0.0.1:'));
  }

  receive(): void {}

  async quiesce(): Promise<void> {
    // Stops accepting now; the promise settles once every accepted connection has closed.
    this.closing ??= Promise.all(this.listeners.map((l) => l.close()));
  }

  async stop(): Promise<void> {
    await this.quiesce();
    await this.closing;
  }
}

interface Conn {
  /** The connection that opened the session: its identity in meta conn.id and in answers on their way to it. */
  id: number;
  /** The connection the session speaks over now (a resume moves it; id until then). */
  wire: number;
  /** Where the session's output and events go: what a resumed connection's driver is handed. */
  host: DriverHost;
  driver: SessionDriver;
  ip: string;
  port: string;
  /** Streams the client opened, by session key. */
  streams: Map<string, RackStream>;
  /** The socket is over the stream high-water mark (main thread's word): chunks wait. */
  blocked: boolean;
  /** The connection as the worker's broker sees it. */
  link: BrokerLink;
}

/** A client's stream, as the worker bridges it to the scenario's messages. */
interface RackStream {
  key: string;
  mode: StreamMode;
  /** Meta every message of the stream starts from: the connection's, the opening's, fluxar.stream. */
  meta: Record<string, string>;
  trace: string;
  /** Chunks down that wait for credit or for the socket, in order. */
  pending: unknown[];
  /** The final payload, waiting behind `pending` (undefined: not ended yet). */
  final: { payload: unknown } | undefined;
  /** Messages for this stream that reached `in`: tells whether a message was answered. */
  answered: number;
  /** Chunks up granted in all, and taken into the scenario: what may be ahead is the difference. */
  granted: number;
  taken: number;
}

/** Chunks down that may wait for one stream, a safety net past which the stream fails (429). */
const MAX_PENDING_CHUNKS = 100_000;

/** A session key (one char per id byte) as the hex text meta fluxar.call carries. */
function keyToHex(key: string): string {
  let hex = '';
  for (let i = 0; i < key.length; i++) hex += BYTE_HEX[key.charCodeAt(i)]!;
  return hex;
}

/** The value of each hex digit by its char code (-1: not a hex digit). */
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX_VALUE['0123456789abcdef'.charCodeAt(i)] = i;
  HEX_VALUE['0123456789ABCDEF'.charCodeAt(i)] = i;
}
const keyUnits: number[] = [];

/** The session key of a call id written as hex in meta fluxar.call ('' when it is not hex). */
function callKey(hex: string): string {
  if (hex.length % 2 !== 0) return '';
  keyUnits.length = hex.length / 2;
  for (let i = 0; i < hex.length; i += 2) {
    const high = HEX_VALUE[hex.charCodeAt(i)] ?? -1;
    const low = HEX_VALUE[hex.charCodeAt(i + 1)] ?? -1;
    if (high < 0 || low < 0) return '';
    keyUnits[i / 2] = (high << 4) | low;
  }
  return String.fromCharCode.apply(null, keyUnits);
}

/**
 * A call's meta value as fluxMsg meta text: text as is, numbers (bigints too) and booleans
 * written out, byte strings as hex, maps and arrays as JSON with the same rules inside.
 */
export function metaText(value: unknown): string {
  if (typeof value === 'string') return value;
  return (
    JSON.stringify(value, (_k, v: unknown) =>
      typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex') : v,
    ) ?? 'null'
  );
}

/** A call's trace id (meta trace_id), carried by the messages it starts. */
function traceOf(callMeta: Record<string, unknown> | null): string {
  return typeof callMeta?.trace_id === 'string' ? callMeta.trace_id : '';
}

/** A call's or chunk's payload as fluxMsg body: a map is the data, bytes are raw, anything else data.payload. */
function bodyOf(payload: unknown): { data: Record<string, unknown>; raw: Uint8Array | null } {
  if (payload instanceof Uint8Array) return { data: {}, raw: payload };
  if (payload !== null && typeof payload === 'object' && !Array.isArray(payload)) return { data: payload as Record<string, unknown>, raw: null };
  if (payload !== null && payload !== undefined) return { data: { payload }, raw: null };
  return { data: {}, raw: null };
}

/** The answer's payload: the message's data (all of it), or its raw bytes when it has no data. */
function answerPayload(msg: FluxMsg): unknown {
  for (const _ in msg.data) return msg.data;
  return msg.raw ?? msg.data;
}

/** Worker: the sessions of this gear's connections owned by this worker. */
export class FluxarSessions implements ConnectionHost {
  /** By connection id: a resumed session under both its first connection's id and its current one's. */
  private readonly conns = new Map<number, Conn>();
  /** Sessions a client may resume, by session id. */
  private readonly bySession = new Map<string, Conn>();
  private readonly config: FluxarConfig;
  private readonly auth: AuthOptions;
  private readonly e2e: E2eOptions;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  /** Answers that came for calls no longer waiting for one. */
  extraAnswers = 0;
  private lastExtraLog = 0;

  constructor(
    private readonly spec: GearSpec,
    private readonly secrets: FluxarSecrets,
    private readonly ctx: WorkerGearContext,
  ) {
    this.config = configOf<FluxarConfig>(spec, manifest);
    this.auth = authFromSecrets(secrets);
    // The worker that owns a session holds its keys: the main thread moves sealed bytes only.
    this.e2e = {
      staticKey: secrets.e2eKey === undefined ? undefined : keyPairFrom(keyFromHex(secrets.e2eKey)!),
      require: this.config.e2e?.require ?? false,
    };
  }

  open(id: number, framing: Framing, ip: string, port: number): void {
    const c = this.config;
    const session = new Session({
      role: 'server',
      framing,
      copyBuffers: true,
      psk: this.secrets.psk,
      e2e: this.e2e,
      maxFrame: c.max_frame,
      maxInFlight: c.max_in_flight,
      maxStreams: c.max_streams,
      heartbeatMs: c.heartbeat_ms,
      inflateBytesPerSecond: c.inflate_bytes_per_s,
      decodeItemsPerSecond: c.decode_items_per_s,
      drainTimeoutMs: this.ctx.drainTimeoutMs,
      resumeMs: c.resume_ms,
      resumeBuffer: c.resume_buffer,
      // The main thread routes a resume hello by this id to this worker (session-routing.ts).
      newSessionId: () => rackSessionId(this.ctx.workerIndex),
    });
    const lane = this.ctx.lane;
    // To the connection the session speaks over now: a resume moves it to a new one.
    const toMain = (piece: Uint8Array) => lane.send(conn.wire, piece);
    const host: DriverHost = {
      write: (frames) => {
        // A WebSocket frame is one message: it must fit one record (the rack checks max_frame
        // at start). The frames of a byte stream leave together, cut to the record size.
        if (framing === 'message') for (const frame of frames) toMain(frame);
        else {
          sendStreamBytes(frames.length === 1 ? frames[0]! : Buffer.concat(frames), lane.maxRecordBytes, toMain);
          // The ring has its copy: the session's outbox may write into these bytes again.
          for (const frame of frames) conn.driver.session.recycleOutput(frame);
        }
      },
      onEvent: (event) => this.onEvent(conn, event),
      schedule: (at) => this.schedule(at),
      resume: (request) => this.resume(conn, request),
    };
    const driver = new SessionDriver(session, host, { auth: this.auth, logger: this.ctx.logger, label: { conn: id, gear: this.spec.name } });
    // Events only arrive once bytes do, after conn exists.
    let flushing = false;
    const conn: Conn = {
      id,
      wire: id,
      host,
      ip,
      port: String(port),
      driver,
      streams: new Map(),
      blocked: false,
      link: {
        get session() {
          return conn.driver.session;
        },
        // The socket is on the main thread: over the mark is all this worker knows of it.
        // A full resume buffer holds producers back too.
        transportBacklog: () => (conn.blocked || conn.driver.session.resumeBufferFull ? STREAM_HIGH_WATER_MARK : 0),
        // Deliveries made outside a pump (a publication from another worker) leave together.
        scheduleFlush: () => {
          if (flushing) return;
          flushing = true;
          queueMicrotask(() => {
            flushing = false;
            conn.driver.pump();
          });
        },
      },
    };
    this.conns.set(id, conn);
    this.ctx.claimConnection(id, this);
    conn.driver.pump();
  }

  /**
   * The session connection `id` speaks over, if it speaks over it now: the records of a
   * connection a resume replaced (its close, its last bytes) concern nobody.
   */
  private current(id: number): Conn | undefined {
    const conn = this.conns.get(id);
    return conn?.wire === id ? conn : undefined;
  }

  receive(id: number, bytes: Uint8Array): void {
    this.current(id)?.driver.receive(bytes);
  }

  closed(id: number): void {
    const conn = this.current(id);
    if (conn === undefined) return;
    conn.driver.session.transportClosed('connection closed by the peer');
    conn.driver.pump();
  }

  invalid(id: number, reason: string): void {
    const conn = this.current(id);
    if (conn === undefined) return;
    conn.driver.session.abort(ErrorCode.BadRequest, reason);
    conn.driver.pump();
  }

  writable(id: number, writable: boolean): void {
    const conn = this.current(id);
    if (conn === undefined) return;
    conn.blocked = !writable;
    if (writable) for (const s of conn.streams.values()) this.flushStream(conn, s);
    conn.driver.pump();
  }

  drain(): void {
    for (const conn of this.conns.values()) {
      conn.driver.session.close();
      conn.driver.pump();
    }
  }

  /**
   * A client asks connection `fresh` to resume a session (spec section 20.2). The main thread
   * routed it here by the session's id; the session, its streams, subscriptions and answers on
   * their way stay with their Conn, which now speaks over `fresh`'s connection. The connection
   * it had (half-open, or already closed) is ended first.
   */
  private resume(fresh: Conn, request: ResumeRequest): void {
    const owner = this.bySession.get(idKey(request.session));
    const halfOpen = owner !== undefined && !owner.driver.session.detached;
    if (!fresh.driver.session.acceptResume(owner?.driver.session)) return;
    const live = owner!;
    if (halfOpen) this.ctx.lane.send(Records.connEnd.tag, Records.connEnd.encode({ id: live.wire, code: 0, reason: 'replaced by a resumed connection' }));
    if (live.wire !== live.id && this.conns.get(live.wire) === live) {
      this.conns.delete(live.wire);
      this.ctx.releaseConnection(live.wire);
    }
    live.wire = fresh.wire;
    live.blocked = false;
    live.driver = fresh.driver;
    live.driver.rehost(live.host, { conn: live.id, wire: live.wire, gear: this.spec.name });
    this.conns.set(fresh.wire, live);
    // The pump that delivered the request goes on with the session's own host.
  }

  /** One timer for all of this worker's sessions, armed for the earliest deadline among them. */
  private schedule(at: number): void {
    if (at >= this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.tick(), Math.max(0, at - Date.now()));
    this.timer.unref();
  }

  private tick(): void {
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    let next = Number.POSITIVE_INFINITY;
    for (const conn of this.conns.values()) {
      const at = conn.driver.session.nextDeadline();
      if (at <= now) conn.driver.tick();
      else if (at < next) next = at;
    }
    if (next < Number.POSITIVE_INFINITY) this.schedule(next);
  }

  private onEvent(conn: Conn, event: Exclude<SessionEvent, { type: 'authenticate' } | { type: 'resume' } | { type: 'fault' }>): void {
    switch (event.type) {
      case 'call':
        return this.onCall(conn, event.key, event.target, event.payload, event.meta);
      case 'stream':
        return this.onStreamOpen(conn, event.key, event.target, event.mode, event.payload, event.meta);
      case 'chunk': {
        const s = conn.streams.get(event.key);
        if (s === undefined) return;
        s.taken++;
        this.emitStream(conn, s, 'chunk', event.payload, String(event.seq));
        return;
      }
      case 'end': {
        const s = conn.streams.get(event.key);
        if (s !== undefined) this.emitStream(conn, s, 'end', null, undefined);
        return;
      }
      case 'credit': {
        const s = conn.streams.get(event.key);
        if (s !== undefined) this.flushStream(conn, s);
        return;
      }
      case 'cancel':
        // A stream's: what waited for the client is dropped; a call's needs nothing.
        conn.streams.delete(event.key);
        return;
      case 'subscribe':
        return this.ctx.topics.broker.subscribe(conn.link, event.key, event.pattern, event.options);
      case 'unsubscribe':
        return this.ctx.topics.broker.unsubscribe(conn.link, event.key);
      case 'delivery-ack':
        return this.ctx.topics.broker.ack(conn.link, event.key, event.ok);
      case 'publish':
        return this.onPublish(conn, event.key, event.id, event.topic, event.qos, event.payload, event.meta);
      case 'open':
        if (event.info.resumeMs > 0) this.bySession.set(idKey(event.info.id), conn);
        return;
      case 'resumed':
      case 'writable':
        // Chunks that waited for the connection, or for room in the resume buffer, go on.
        for (const s of conn.streams.values()) this.flushStream(conn, s);
        return;
      case 'detached':
        // Silent for 3 heartbeats: the socket may still be open on the main thread.
        this.ctx.lane.send(Records.connEnd.tag, Records.connEnd.encode({ id: conn.wire, code: 0, reason: event.reason }));
        return;
      case 'closed': {
        this.ctx.topics.broker.linkClosed(conn.link);
        for (const pending of this.awaitingBus.keys()) if (pending.startsWith(`${conn.id}:`)) this.awaitingBus.delete(pending);
        for (const id of new Set([conn.id, conn.wire])) {
          if (this.conns.get(id) === conn) this.conns.delete(id);
          this.ctx.releaseConnection(id);
        }
        const info = conn.driver.session.info;
        if (info !== null && this.bySession.get(idKey(info.id)) === conn) this.bySession.delete(idKey(info.id));
        this.ctx.lane.send(Records.connEnd.tag, Records.connEnd.encode({ id: conn.wire, code: event.code, reason: event.reason }));
        return;
      }
      default:
        return;
    }
  }

  private onCall(conn: Conn, key: string, target: string, payload: unknown, callMeta: Record<string, unknown> | null): void {
    const gear = this.spec.name;
    const session = conn.driver.session;
    if (target === DESCRIBE_TARGET && this.config.describe) return this.describe(session, key, payload);
    if (!this.outWired(session, key)) return;
    const meta = this.baseMeta(conn, callMeta, target);
    meta['fluxar.type'] = 'call';
    meta['fluxar.call'] = keyToHex(key);
    const trace = traceOf(callMeta);
    const msg = createFluxMsg({ meta, ...bodyOf(payload), trace });
    const started = performance.now();
    let sent: CallTrace;
    try {
      sent = this.ctx.emitTracked(gear, 'out', msg);
    } catch (err) {
      this.ctx.logger.error({ err, gear }, 'gear chain failed');
      session.fail(key, ErrorCode.Internal, `the rack failed to process the call: ${(err as Error).message}`);
      return;
    }
    // Answered already (the usual case), or on its way through the main thread: nothing to do.
    if (!session.isPending(key)) return this.ctx.callTimed(gear, performance.now() - started);
    if (sent.leftWorker) return;
    this.answerEnded(session, key, sent.ends);
  }

  /** fluxar.describe (spec section 17), answered by the gear from the scenario running now. */
  private describe(session: Session, key: string, payload: unknown): void {
    const refused = describeRequestError(payload);
    if (refused !== null) session.fail(key, refused.code, refused.message);
    else session.respond(key, this.ctx.describe(this.spec.name));
  }

  /** Whether anything is wired from `out`; a call or stream that would go nowhere is answered 404. */
  private outWired(session: Session, key: string): boolean {
    if (this.ctx.hasRoute(this.spec.name, 'out')) return true;
    session.fail(key, ErrorCode.NotFound, `nothing is wired from ${this.spec.name}.out`);
    return false;
  }

  /** The meta every message from this connection's calls and streams starts from. */
  private baseMeta(conn: Conn, callMeta: Record<string, unknown> | null, target: string): Record<string, string> {
    const meta: Record<string, string> = {};
    if (callMeta !== null) for (const [k, v] of Object.entries(callMeta)) meta[k] = metaText(v);
    meta['conn.id'] = String(conn.id);
    meta['fluxar.target'] = target;
    meta['peer.ip'] = conn.ip;
    meta['peer.port'] = conn.port;
    meta['peer.principal'] = conn.driver.session.principal?.id ?? '';
    return meta;
  }

  // ---- pub/sub (spec section 14) -----------------------------------------------------------

  /**
   * A client's publish. With nothing wired from `out` it goes to the rack's subscribers at once.
   * With `out` wired, the scenario decides: the publication becomes a message on `out` (meta
   * fluxar.type "publish", fluxar.topic, fluxar.qos, fluxar.publication), and what reaches `in`
   * with fluxar.topic is published. A QoS 1 or 2 publish is answered once its message has gone
   * through the worker: acked with how many subscriptions took what it became, or nacked with
   * the reason of a reject.
   */
  private onPublish(conn: Conn, key: string, id: Uint8Array, topic: string, qos: Qos, payload: unknown, pubMeta: Record<string, unknown> | null): void {
    const session = conn.driver.session;
    const gear = this.spec.name;
    if (!this.ctx.hasRoute(gear, 'out')) {
      if (qos > 0 && this.ctx.topics.bridged) {
        // On the bus, the ack waits until the other racks can have it (publicationAcked).
        const outcome = this.ctx.topics.publish(id, topic, qos, payload, { conn: conn.id, key });
        this.awaitingBus.set(`${conn.id}:${key}`, outcome);
        return;
      }
      const outcome = this.ctx.topics.publish(id, topic, qos, payload);
      if (qos > 0) session.answerPublish(key, outcome);
      return;
    }
    const meta = this.baseMeta(conn, pubMeta, topic);
    delete meta.qos;
    meta['fluxar.type'] = 'publish';
    meta['fluxar.topic'] = topic;
    meta['fluxar.qos'] = String(qos);
    meta['fluxar.publication'] = keyToHex(idKey(id));
    const msg = createFluxMsg({ meta, ...bodyOf(payload) });
    const before = this.scenarioPublished;
    let sent: CallTrace;
    try {
      sent = this.ctx.emitTracked(gear, 'out', msg);
    } catch (err) {
      this.ctx.logger.error({ err, gear }, 'gear chain failed');
      if (qos > 0) session.failPublish(key, ErrorCode.Internal, `the rack failed to process the publication: ${(err as Error).message}`);
      return;
    }
    if (qos === 0) return;
    const failed = sent.ends.find((e) => e.why === 'rejected' || e.why === 'failed');
    if (failed !== undefined) return session.failPublish(key, failed.code ?? ErrorCode.Internal, failed.reason ?? 'failed');
    // Dropped, published, or gone on to the main thread: taken by the rack.
    session.answerPublish(key, { duplicate: false, subscribers: this.scenarioPublished - before });
  }

  /** Publishes waiting for the bus, by connection and key, with what this rack did with them. */
  private readonly awaitingBus = new Map<string, PublishOutcome>();

  publicationAcked(id: number, key: string, error: string | null): void {
    const outcome = this.awaitingBus.get(`${id}:${key}`);
    this.awaitingBus.delete(`${id}:${key}`);
    const conn = this.conns.get(id);
    if (outcome === undefined || conn === undefined) return;
    if (error === null) conn.driver.session.answerPublish(key, outcome);
    else conn.driver.session.failPublish(key, ErrorCode.Unavailable, error);
    conn.driver.pump();
  }

  /** Subscriptions that took the publications gears made (counted for the QoS answer above). */
  private scenarioPublished = 0;

  /** A message on `in` with fluxar.topic and no call or stream: the scenario publishes it. */
  private publishFromScenario(msg: FluxMsg): void {
    const topic = msg.meta['fluxar.topic']!;
    const bad = topicError(topic);
    const qos = Number(msg.meta['fluxar.qos'] ?? 0);
    if (bad !== null || !isQos(qos)) {
      this.unpublishable++;
      this.ctx.logger.warn(
        { gear: this.spec.name, topic, qos: msg.meta['fluxar.qos'], reason: bad ?? 'fluxar.qos must be 0, 1 or 2' },
        'a message for a topic could not be published',
      );
      return;
    }
    const publication = msg.meta['fluxar.publication'];
    const key = publication === undefined ? '' : callKey(publication);
    const id = key.length === 16 ? Buffer.from(key, 'latin1') : uuidv7();
    this.scenarioPublished += this.ctx.topics.publish(id, topic, qos, answerPayload(msg)).subscribers;
  }

  /** Messages for a topic that could not be published (a bad topic or QoS), logged and counted. */
  unpublishable = 0;

  // ---- streams (spec section 13) -----------------------------------------------------------

  private onStreamOpen(conn: Conn, key: string, target: string, mode: StreamMode, payload: unknown, callMeta: Record<string, unknown> | null): void {
    const session = conn.driver.session;
    if (!this.outWired(session, key)) return;
    const meta = this.baseMeta(conn, callMeta, target);
    delete meta.stream;
    delete meta.credit;
    meta['fluxar.stream'] = keyToHex(key);
    meta['fluxar.mode'] = mode;
    const trace = traceOf(callMeta);
    const s: RackStream = { key, mode, meta, trace, pending: [], final: undefined, answered: 0, granted: 0, taken: 0 };
    conn.streams.set(key, s);
    if (mode !== 'out') {
      session.grantCredit(key, this.config.stream_window);
      s.granted = this.config.stream_window;
    }
    this.emitStream(conn, s, 'stream', payload, undefined);
  }

  /**
   * One message of a stream into the scenario. When it stops in this worker without anything
   * reaching `in` for the stream, the stream is answered where an answer is due: a rejection or
   * failure fails it; the opening of an "out" stream and the end of the client's chunks are
   * answered as a call would be (a drop ends the stream with no final payload).
   */
  private emitStream(conn: Conn, s: RackStream, type: 'stream' | 'chunk' | 'end', payload: unknown, seq: string | undefined): void {
    const meta: Record<string, string> = { ...s.meta, 'fluxar.type': type };
    if (seq !== undefined) meta['fluxar.seq'] = seq;
    const msg = createFluxMsg({ meta, ...bodyOf(payload), trace: s.trace });
    const session = conn.driver.session;
    const answered = s.answered;
    let sent: CallTrace;
    try {
      sent = this.ctx.emitTracked(this.spec.name, 'out', msg);
    } catch (err) {
      this.ctx.logger.error({ err, gear: this.spec.name }, 'gear chain failed');
      this.endStream(conn, s, new FluxarError(ErrorCode.Internal, `the rack failed to process the stream: ${(err as Error).message}`));
      return;
    }
    // Ended already, or gone on to a main-thread gear (whose fate is decided there).
    if (!session.isPending(s.key) || s.final !== undefined || !conn.streams.has(s.key) || sent.leftWorker) return this.topUp(conn, s);
    const nothingCame = s.answered === answered;
    const failed = sent.ends.find((e) => e.why === 'rejected' || e.why === 'failed');
    if (failed !== undefined) {
      conn.streams.delete(s.key);
      return this.answerEnded(session, s.key, sent.ends);
    }
    // The opening of an "out" stream, or the client's end, has been through every gear of this
    // worker: gears answer synchronously, so nothing more can come for the stream. It ends, after
    // the chunks that came back (a gear that knows no streams answered with chunks but no end),
    // or as a call would be answered when nothing came back (a drop: null; wired to nothing: 500).
    if (type === 'end' || (type === 'stream' && s.mode === 'out')) {
      if (!nothingCame) return this.finishStream(conn, s, null);
      conn.streams.delete(s.key);
      return this.answerEnded(session, s.key, sent.ends);
    }
    this.topUp(conn, s);
  }

  /**
   * Grants the client more chunks up, only while nothing waits to go down: a client that does
   * not read gets no credit to write, so the scenario is not fed faster than it is drained.
   */
  private topUp(conn: Conn, s: RackStream): void {
    if (s.mode === 'out' || s.pending.length > 0 || conn.blocked || !conn.streams.has(s.key)) return;
    const window = this.config.stream_window;
    // Counted here, not from the session's window: the session has already counted chunks
    // whose events are still on their way to this gear.
    const ahead = s.granted - s.taken;
    if (ahead > window / 2) return;
    conn.driver.session.grantCredit(s.key, window - ahead);
    s.granted += window - ahead;
  }

  /** A message on `in` for one of this connection's streams: a chunk down, or its end. */
  private streamAnswer(conn: Conn, msg: FluxMsg, hex: string): void {
    const s = conn.streams.get(callKey(hex));
    if (s === undefined) return this.secondAnswer(conn, hex);
    s.answered++;
    const reason = msg.meta['error.reason'];
    if (reason !== undefined) {
      const code = Number(msg.meta['error.code'] ?? REJECT_CODE);
      const err = new FluxarError(Number.isInteger(code) ? code : REJECT_CODE, reason, { data: { gear: msg.meta['error.gear'] ?? null } });
      return this.endStream(conn, s, err);
    }
    if (msg.meta['fluxar.end'] === 'true') {
      // An end without data or raw bytes carries no final payload.
      const empty = msg.raw === null && Object.keys(msg.data).length === 0;
      return this.finishStream(conn, s, empty ? null : answerPayload(msg));
    }
    if (s.pending.length >= MAX_PENDING_CHUNKS) {
      return this.endStream(conn, s, new FluxarError(ErrorCode.Overloaded, `the client does not read: ${MAX_PENDING_CHUNKS} chunks wait for it`));
    }
    s.pending.push(answerPayload(msg));
    this.flushStream(conn, s);
  }

  /** Sends what waits while the client's credit and socket allow; then the end, if it came. */
  private flushStream(conn: Conn, s: RackStream): void {
    const session = conn.driver.session;
    let sent = 0;
    while (sent < s.pending.length && !conn.blocked && !session.resumeBufferFull && session.streamCredit(s.key) > 0) {
      try {
        session.sendChunk(s.key, s.pending[sent]);
      } catch (err) {
        s.pending.length = 0;
        return this.endStream(conn, s, err instanceof FluxarError ? err : new FluxarError(ErrorCode.Internal, (err as Error).message));
      }
      sent++;
    }
    if (sent > 0) s.pending.splice(0, sent);
    if (s.pending.length === 0) {
      if (s.final !== undefined) return this.finishStream(conn, s, s.final.payload);
      this.topUp(conn, s);
    }
    conn.driver.pump();
  }

  /** The scenario ended the stream: after the chunks that wait, the final payload. */
  private finishStream(conn: Conn, s: RackStream, payload: unknown): void {
    if (s.pending.length > 0) {
      s.final = { payload };
      return;
    }
    conn.streams.delete(s.key);
    const session = conn.driver.session;
    try {
      session.respond(s.key, payload);
    } catch (err) {
      session.fail(s.key, (err as { code?: number }).code ?? ErrorCode.Internal, (err as Error).message);
    }
    conn.driver.pump();
  }

  /** The stream failed: at once, ahead of chunks that still wait (they are dropped). */
  private endStream(conn: Conn, s: RackStream, err: FluxarError): void {
    conn.streams.delete(s.key);
    conn.driver.session.fail(s.key, err.code, err.message, err.data);
    conn.driver.pump();
  }

  /**
   * The call's message stopped in this worker without reaching a gear that answers: answer now,
   * rather than leave the caller waiting for its deadline. A deliberate drop is answered with a
   * null payload; a reject with its code and reason; anything else is a 500 that says where the
   * message stopped.
   */
  private answerEnded(session: Session, key: string, ends: MessageEnd[]): void {
    const end = ends.find((e) => e.why === 'rejected' || e.why === 'failed') ?? ends.find((e) => e.why === 'unrouted') ?? ends[0];
    if (end === undefined) return session.fail(key, ErrorCode.Internal, 'the gear chain ended without an answer');
    switch (end.why) {
      case 'dropped':
        return session.respond(key, null);
      case 'rejected':
      case 'failed':
        return session.fail(key, end.code ?? ErrorCode.Internal, end.reason ?? 'failed', { gear: end.gear });
      case 'unrouted':
        return session.fail(key, ErrorCode.Internal, `the message reached ${end.gear}.${end.port}, which is wired to nothing`, { gear: end.gear });
    }
  }

  /** A message on the gear's `in` port: the answer to one of our connections' calls. */
  answer(msg: FluxMsg): void {
    const stream = msg.meta['fluxar.stream'];
    const call = msg.meta['fluxar.call'];
    if (stream === undefined && call === undefined && msg.meta['fluxar.topic'] !== undefined) return this.publishFromScenario(msg);
    const conn = this.conns.get(Number(msg.meta['conn.id']));
    if (conn === undefined) return;
    if (stream !== undefined) return this.streamAnswer(conn, msg, stream);
    if (call === undefined) return;
    const key = callKey(call);
    const session = conn.driver.session;
    if (!session.isPending(key)) return this.secondAnswer(conn, call);
    const reason = msg.meta['error.reason'];
    if (reason !== undefined) {
      const code = Number(msg.meta['error.code'] ?? REJECT_CODE);
      session.fail(key, Number.isInteger(code) ? code : REJECT_CODE, reason, { gear: msg.meta['error.gear'] ?? null });
    } else {
      try {
        session.respond(key, answerPayload(msg));
      } catch (err) {
        session.fail(key, (err as { code?: number }).code ?? ErrorCode.Internal, (err as Error).message);
      }
    }
    conn.driver.pump();
  }

  /**
   * A call answered (or cancelled, or timed out) already gets another answer: a fan-out wired
   * back to this gear, say. It is discarded, counted, and logged naming where it came from.
   */
  private secondAnswer(conn: Conn, call: string): void {
    this.extraAnswers++;
    const now = Date.now();
    if (now - this.lastExtraLog < EXTRA_ANSWER_LOG_INTERVAL_MS) return;
    this.lastExtraLog = now;
    const from = this.ctx.lastHop();
    this.ctx.logger.warn(
      { gear: this.spec.name, from: `${from.gear}.${from.port}`, conn: conn.id, call, discarded: this.extraAnswers },
      `a second answer to a call reached ${this.spec.name}.in from ${from.gear}.${from.port}; discarded`,
    );
  }
}

/** Second answers are logged at most this often per gear and worker (all are counted). */
const EXTRA_ANSWER_LOG_INTERVAL_MS = 1000;

export const fluxarGear: GearType = {
  manifest,
  prepare,
  main: (spec, ctx) => new FluxarListeners(spec, ctx),
  worker: (spec, prepared, ctx) => {
    const sessions = new FluxarSessions(spec, prepared as FluxarSecrets, ctx);
    return { input: (_port, msg) => sessions.answer(msg), connections: sessions };
  },
};
