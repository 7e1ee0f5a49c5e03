// The rack's work inside a worker (or inline on the main thread for the baseline): FLUXAR
// sessions of the connections pinned here, fed by raw socket bytes from the ring, and the
// scenario's chain of logic gears. Outputs go back as frames tagged with their connection.
import type { Logger } from 'pino';
import { pino } from 'pino';
import { decodeCbor, encodeCbor } from '../cbor/profile.js';
import { fluxMsgFromValue } from '../fluxmsg/codec.js';
import { createFluxMsg, type FluxMsg } from '../fluxmsg/fluxmsg.js';
import { BYTE_HEX } from '../fluxmsg/uuid.js';
import { type Principal, secretTable } from '../fluxar/auth.js';
import { ErrorCode } from '../fluxar/codes.js';
import { type Framing, Session, type SessionEvent } from '../fluxar/session.js';
import { KvReplica } from '../gears/kv.js';
import type { WasmGearConfig } from '../gears/wasm/config.js';
import { guestClock, shortestGuestTimeout } from '../gears/wasm/guest-clock.js';
import type { PreparedModule } from '../gears/wasm/loader.js';
import type { GearSpec, WireSpec } from '../scenario/types.js';
import { GearChain } from './chain.js';
import { readableLogStream } from './log-format.js';
import { type Lane, RackTag, sendChunked } from './rack-protocol.js';
import { ControlTag, type HandlerFactory, type RecordHandler } from '../ring/pool-protocol.js';

export interface RackHandlerOptions {
  gears: GearSpec[];
  wires: WireSpec[];
  modules: Record<string, PreparedModule>;
  kvSnapshot: Array<[string, Uint8Array]>;
  logLevel: string;
  readableLogs: boolean;
  /** How long a session waits for its calls after bye before it closes with a 503 bye. */
  drainTimeoutMs: number;
}

interface Conn {
  id: number;
  gear: GearSpec;
  framing: Framing;
  session: Session;
  ip: string;
  port: string;
}

const TICK_MS = 20;
/** A rejected message is answered with this FLUXAR code (the caller is not allowed this). */
export const REJECT_CODE = ErrorCode.Forbidden;

/** A session key (one char per id byte) as the hex text meta fluxar.call carries. */
function keyToHex(key: string): string {
  let hex = '';
  for (let i = 0; i < key.length; i++) hex += BYTE_HEX[key.charCodeAt(i)]!;
  return hex;
}

/** The session key of a call id written as hex in meta fluxar.call. */
function callKey(hex: string): string {
  let key = '';
  for (let i = 0; i < hex.length; i += 2) key += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  return key;
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

/** The answer's payload: the message's data (all of it), or its raw bytes when it has no data. */
function answerPayload(msg: FluxMsg): unknown {
  for (const _ in msg.data) return msg.data;
  return msg.raw ?? msg.data;
}

export function buildRackHandler(options: RackHandlerOptions, lane: Lane, control?: Int32Array, epochMs = Date.now(), log?: Logger): RecordHandler {
  const logger = log ?? pino({ name: 'fluxrig.rack.worker', level: options.logLevel }, options.readableLogs ? readableLogStream() : undefined);
  const conns = new Map<number, Conn>();
  const dirty = new Set<Conn>();
  const replica = new KvReplica(options.kvSnapshot, (key, value) => lane.send(ControlTag.KvPut, encodeCbor([key, value])));
  const verifiers = new Map<string, (token: string) => Principal | null>();
  let currentTag = 0;

  const guestTimeout = shortestGuestTimeout(options.gears.filter((g) => g.type === 'wasm').map((g) => g.config as unknown as WasmGearConfig));
  const clock = control === undefined || guestTimeout === undefined ? undefined : guestClock(control, epochMs, guestTimeout, () => currentTag);

  const chain = new GearChain(options.gears, options.wires, options.modules, {
    logger,
    toMain: (gear, port, msg) => lane.send(RackTag.ToMain, encodeCbor([gear, port, msg])),
    toFluxar: (_gear, msg) => answer(msg),
    services: (gear) => ({
      logger,
      kv: (gear.config as unknown as WasmGearConfig).allow_kv ? replica : undefined,
      emit: (msg) => chain.emit(gear.name, 'out', msg),
      guestClock: clock,
    }),
  });

  function verifierFor(gear: GearSpec): ((token: string) => Principal | null) | undefined {
    const tokens = gear.config.bearer_tokens as Record<string, string> | undefined;
    if (tokens === undefined) return undefined;
    let v = verifiers.get(gear.name);
    if (v === undefined) {
      v = secretTable(Object.fromEntries(Object.entries(tokens).map(([token, id]) => [token, { id }])));
      verifiers.set(gear.name, v);
    }
    return v;
  }

  function write(conn: Conn, frames: Uint8Array[]): void {
    if (conn.framing === 'stream') sendChunked(lane, conn.id, frames.length === 1 ? frames[0]! : Buffer.concat(frames));
    // A WebSocket frame is one message: it must fit one record (the rack checks max_frame at start).
    else for (const frame of frames) lane.send(conn.id, frame);
  }

  function pump(conn: Conn): void {
    for (;;) {
      const out = conn.session.takeOutput();
      if (out.length > 0) write(conn, out);
      const events = conn.session.takeEvents();
      if (events.length === 0) return;
      for (const event of events) {
        // Each event on its own: one that fails answers for itself, never for the ones after it.
        try {
          onEvent(conn, event);
        } catch (err) {
          logger.error({ err, event: event.type, conn: conn.id, gear: conn.gear.name }, 'FLUXAR event handling failed');
          if (event.type === 'call') conn.session.fail(event.key, ErrorCode.Internal, 'internal error');
          else conn.session.abort(ErrorCode.Internal, 'internal error');
        }
      }
    }
  }

  function onEvent(conn: Conn, event: SessionEvent): void {
    switch (event.type) {
      case 'authenticate': {
        const verify = verifierFor(conn.gear);
        if (verify === undefined) return conn.session.accept({ id: 'anonymous' });
        const creds = event.credentials;
        const principal = creds?.scheme === 'bearer' ? verify(creds.token) : null;
        if (principal === null) conn.session.reject(ErrorCode.Unauthenticated, 'unauthenticated');
        else conn.session.accept(principal);
        return;
      }
      case 'call':
        return onCall(conn, event.key, event.target, event.payload, event.meta);
      case 'fault':
        logger.error({ err: event.error, conn: conn.id, gear: conn.gear.name }, 'FLUXAR session fault');
        return;
      case 'closed':
        conns.delete(conn.id);
        dirty.delete(conn);
        lane.send(RackTag.ConnEnd, encodeCbor([conn.id, event.code, event.reason]));
        return;
      default:
        return;
    }
  }

  function onCall(conn: Conn, key: string, target: string, payload: unknown, callMeta: Record<string, unknown> | null): void {
    if (!chain.hasRoute(conn.gear.name, 'out')) {
      conn.session.fail(key, ErrorCode.NotFound, `nothing is wired from ${conn.gear.name}.out`);
      return;
    }
    const meta: Record<string, string> = {};
    if (callMeta !== null) for (const [k, v] of Object.entries(callMeta)) meta[k] = metaText(v);
    meta['conn.id'] = String(conn.id);
    meta['fluxar.type'] = 'call';
    meta['fluxar.target'] = target;
    meta['fluxar.call'] = keyToHex(key);
    meta['peer.ip'] = conn.ip;
    meta['peer.port'] = conn.port;
    let data: Record<string, unknown> = {};
    let raw: Uint8Array | null = null;
    if (payload instanceof Uint8Array) raw = payload;
    else if (payload !== null && typeof payload === 'object' && !Array.isArray(payload)) data = payload as Record<string, unknown>;
    else if (payload !== null && payload !== undefined) data = { payload };
    const trace = typeof callMeta?.trace_id === 'string' ? callMeta.trace_id : '';
    const msg = createFluxMsg({ meta, data, raw, trace });
    try {
      chain.emit(conn.gear.name, 'out', msg);
    } catch (err) {
      logger.error({ err, gear: conn.gear.name }, 'gear chain failed');
      conn.session.fail(key, ErrorCode.Internal, `the rack failed to process the call: ${(err as Error).message}`);
    }
  }

  /** A message on a fluxar gear's `in` port: the answer to one of our connections' calls. */
  function answer(msg: FluxMsg): void {
    const conn = conns.get(Number(msg.meta['conn.id']));
    const call = msg.meta['fluxar.call'];
    if (conn === undefined || call === undefined) return;
    const key = callKey(call);
    const reason = msg.meta['error.reason'];
    if (reason !== undefined) conn.session.fail(key, REJECT_CODE, reason, { gear: msg.meta['error.gear'] ?? null });
    else {
      try {
        conn.session.respond(key, answerPayload(msg));
      } catch (err) {
        conn.session.fail(key, (err as { code?: number }).code ?? ErrorCode.Internal, (err as Error).message);
      }
    }
    dirty.add(conn);
  }

  function open(payload: Uint8Array): void {
    const [id, gearName, framing, ip, port] = decodeCbor(payload, true) as [number, string, Framing, string, number];
    const gear = options.gears.find((g) => g.name === gearName)!;
    const session = new Session({
      role: 'server',
      framing,
      copyBuffers: true,
      maxFrame: gear.config.max_frame as number | undefined,
      maxInFlight: gear.config.max_in_flight as number | undefined,
      heartbeatMs: gear.config.heartbeat_ms as number | undefined,
      inflateBytesPerSecond: gear.config.inflate_bytes_per_s as number | undefined,
      decodeItemsPerSecond: gear.config.decode_items_per_s as number | undefined,
      drainTimeoutMs: options.drainTimeoutMs,
    });
    conns.set(id, { id, gear, framing, session, ip, port: String(port) });
  }

  const ticker = setInterval(() => {
    for (const conn of conns.values()) {
      conn.session.tick();
      if (conn.session.hasWork()) pump(conn);
    }
  }, TICK_MS);
  ticker.unref();

  return (tag, bytes, start, length) => {
    currentTag = tag;
    if (tag > 0) {
      const conn = conns.get(tag);
      if (conn === undefined) return;
      conn.session.receive(bytes.subarray(start, start + length));
      pump(conn);
    } else {
      const payload = bytes.subarray(start, start + length);
      switch (tag) {
        case RackTag.ConnOpen:
          open(payload);
          break;
        case RackTag.ConnClosed: {
          const [id] = decodeCbor(payload, true) as [number];
          const conn = conns.get(id);
          if (conn !== undefined) {
            conn.session.transportClosed('connection closed by the peer');
            pump(conn);
          }
          break;
        }
        case RackTag.ConnInvalid: {
          const [id, reason] = decodeCbor(payload, true) as [number, string];
          const conn = conns.get(id);
          if (conn !== undefined) {
            conn.session.abort(ErrorCode.BadRequest, reason);
            pump(conn);
          }
          break;
        }
        case RackTag.Drain:
          for (const conn of conns.values()) {
            conn.session.close();
            pump(conn);
          }
          break;
        case RackTag.Inject: {
          const [gear, port, value] = decodeCbor(payload, true) as [string, string, unknown];
          chain.emit(gear, port, fluxMsgFromValue(value));
          break;
        }
        case ControlTag.KvSet: {
          const [key, value] = decodeCbor(payload, true) as [string, Uint8Array | null];
          replica.apply(key, value ?? undefined);
          break;
        }
      }
    }
    for (const conn of dirty) pump(conn);
    dirty.clear();
  };
}

export const createHandler: HandlerFactory = ({ options, out, control, epochMs }) => buildRackHandler(options as RackHandlerOptions, out, control, epochMs);
