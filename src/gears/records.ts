import { decodeCbor, encodeCbor } from '../cbor/profile.js';
import { StrictReader } from '../cbor/strict.js';
import { CborWriter, MAJOR_ARRAY, MAJOR_UINT } from '../cbor/writer.js';
import { encodeFluxMsg, fluxMsgFromValue } from '../fluxmsg/codec.js';
import type { Qos } from '../fluxar/pubsub-state.js';
import { type FluxMsg, idHex } from '../fluxmsg/fluxmsg.js';

/**
 * The records the main thread and the workers exchange through the rings, besides a
 * connection's bytes: one tag space, and one encode/decode pair per kind. A record whose tag is
 * >= 1 is the bytes of the connection with that id (received bytes towards a worker, frames to
 * write towards the main thread); every other kind has a negative tag, here.
 *
 * Both ends are our own threads, so the payloads are plain CBOR arrays decoded with cbor-x;
 * nothing from outside the process is ever in them undecoded. The records every message of a
 * busy wire makes (flat kinds, below) are written and read item by item instead.
 */
export const RecordTag = {
  /** worker -> main: a guest wrote a KV key. */
  KvPut: -1,
  /** main -> worker: the store changed (value null: deleted). */
  KvSet: -2,
  /** worker -> main: a message a guest emitted by itself (the gear pool's records). */
  Emit: -3,
  /** worker -> main: a message for a gear on the main thread (log, nats, ...). */
  ToMain: -4,
  /** main -> worker: a main-thread gear's output, into the chain. */
  Inject: -5,
  /** main -> worker: a connection was accepted; its session starts in this worker. */
  ConnOpen: -10,
  /** main -> worker: the socket closed. */
  ConnClosed: -11,
  /** main -> worker: say bye on every session (graceful stop). */
  Drain: -12,
  /** worker -> main: close the socket after what was written. */
  ConnEnd: -13,
  /** main -> worker: bytes that cannot be a FLUXAR frame (a WebSocket text message). */
  ConnInvalid: -14,
  /**
   * main -> worker: the socket's unsent bytes crossed the stream high-water mark (writable
   * false), or drained below it (true). Stream chunks wait for it; credit alone does not suffice.
   */
  ConnWritable: -15,
  /**
   * Both ways: a publication made in one worker, for the subscriptions of the others (the main
   * thread sends it on to every worker; its origin skips it).
   */
  Publication: -16,
  /** main -> worker: the publication of connection `conn`'s publish `key` reached the bus (error: it could not). */
  PublicationAck: -17,
  /**
   * main -> worker: take up the handler options the pool just sent (WorkerPool.reconfigure):
   * the scenario of this version, from the next record on.
   */
  Reconfigure: -18,
  /** worker -> main: the worker runs that version now (error: it could not, and runs the one before). */
  Reconfigured: -19,
  /** main -> worker: the log level changed. */
  LogLevel: -20,
  /** main -> worker: report (and reset) the per-gear counts since the last request. */
  StatsRequest: -21,
  /** worker -> main: its per-gear counts since the last request. */
  Stats: -22,
  /** worker -> main: a message sent along a bus wire (guaranteed, or to another rack). */
  LanePublish: -23,
  /**
   * main -> worker: a message of a bus wire, for its target gear; answered by LaneDone. With
   * token 0, the answer to a call that went along a bus wire, for its fluxar gear (no LaneDone).
   */
  LaneDeliver: -24,
  /** worker -> main: what became of a LaneDeliver (the main thread acks or redelivers it). */
  LaneDone: -25,
} as const;

export interface KvRecord {
  key: string;
  /** Null: the key was deleted. */
  value: Uint8Array | null;
}
export interface GearPortRecord {
  gear: string;
  port: string;
  msg: FluxMsg;
}
/**
 * A message for a main-thread gear, its fluxMsg encoded: a gear that only forwards the bytes (a
 * nats gear publishing) takes them as they are, and the main thread, every message's bottleneck
 * on a busy wire, never decodes and re-encodes it (fluxMsgOf decodes for the gears that read it).
 */
export interface ToMainRecord {
  gear: string;
  port: string;
  bytes: Uint8Array;
}
export interface ConnOpenRecord {
  id: number;
  gear: string;
  framing: 'stream' | 'message';
  ip: string;
  port: number;
}
export interface ConnReasonRecord {
  id: number;
  reason: string;
}
export interface PublicationRecord {
  /** The worker that took it first (its brokers have it already); 'bus' for another rack's. */
  origin: string;
  topic: string;
  id: Uint8Array;
  qos: Qos;
  payload: unknown;
  /** A client's QoS 1 or 2 publish waits for the bus: its connection and session key (0 and '': none). */
  conn: number;
  key: string;
}
export interface PublicationAckRecord {
  conn: number;
  key: string;
  error: string | null;
}
export interface LanePublishRecord {
  /** The gear and port it left by. */
  gear: string;
  port: string;
  /** The fluxMsg, encoded once in the worker: the main thread publishes these bytes as they are. */
  bytes: Uint8Array;
  /** The message id, hex (laneMessageId makes the Nats-Msg-Id of it). */
  id: string;
  /** The call it belongs to, answered once the bus has the message (0 and '': none). */
  conn: number;
  call: string;
}
/**
 * A message leaving gear.port along a bus wire, with the call it answers once the bus has it.
 * `bytes`: the message already encoded, when it is at hand (a Wasm gear's output).
 */
export function lanePublication(gear: string, port: string, msg: FluxMsg, bytes: Uint8Array = encodeFluxMsg(msg)): LanePublishRecord {
  const call = msg.meta['fluxar.type'] === 'call' ? (msg.meta['fluxar.call'] ?? '') : '';
  return { gear, port, bytes, id: idHex(msg.id), conn: call === '' ? 0 : Number(msg.meta['conn.id'] ?? 0), call };
}

export interface LaneDeliverRecord {
  token: number;
  gear: string;
  port: string;
  bytes: Uint8Array;
}
export const LaneOutcome = {
  /** Every gear it reached has finished with it in this worker. */
  Done: 0,
  /** Some of it went on to the main thread (a main-thread gear, another bus wire). */
  LeftWorker: 1,
  /** A gear rejected it or failed on it: redelivered, or dead-lettered after max_deliver. */
  Failed: 2,
} as const;
export type LaneOutcome = (typeof LaneOutcome)[keyof typeof LaneOutcome];
export interface LaneDoneRecord {
  token: number;
  outcome: LaneOutcome;
  reason: string;
}
export interface ConnEndRecord {
  id: number;
  code: number;
  reason: string;
}

export interface ReconfiguredRecord {
  version: number;
  error: string | null;
}
/** A gear's traffic in one worker since the last StatsRequest. */
export interface GearCounts {
  gear: string;
  messages: number;
  errors: number;
}
export interface StatsRecord {
  gears: GearCounts[];
  /** Call latencies (ms, from a call's frame to its answer) of the fluxar gears, unsorted. */
  latenciesMs: number[];
  /** The same calls counted per fluxar gear in the shared latency buckets (src/telemetry/histogram.ts). */
  calls: Array<{ gear: string; counts: number[]; sumMs: number }>;
}

/** One kind of record: its tag and how its payload is written and read. */
export interface RecordKind<T> {
  readonly tag: number;
  encode(value: T): Uint8Array;
  /** Reads a payload; `bytes` may be a ring slot, so nothing returned refers to it. */
  decode(bytes: Uint8Array): T;
}

function kind<T, A extends unknown[]>(tag: number, toItems: (value: T) => A, fromItems: (items: A) => T): RecordKind<T> {
  return {
    tag,
    encode: (value) => encodeCbor(toItems(value)),
    decode: (bytes) => fromItems(decodeCbor(bytes, true) as A),
  };
}

/** An item of a flat record: text, an unsigned integer (a safe one) or bytes. */
type FlatItem = 'text' | 'uint' | 'bytes';
type FlatValue = string | number | Uint8Array;
/** This thread's writer for flat records: the bytes are copied out, the buffer reused. */
const flatWriter = new CborWriter(4096);

/**
 * A kind whose items are only text, unsigned integers and bytes, written with fluxrig's CBOR
 * writer and read with its reader, item by item: the same CBOR array cbor-x would make, at a
 * fraction of the cost. cbor-x's generic encode and decode cost a microsecond or two per record,
 * and a message on a guaranteed wire makes three of these on the main thread, its bottleneck.
 */
function flat<T, A extends FlatValue[]>(tag: number, items: readonly FlatItem[], toItems: (value: T) => A, fromItems: (items: A) => T): RecordKind<T> {
  return {
    tag,
    encode: (value) => {
      const w = flatWriter.reset();
      const values = toItems(value);
      w.head(MAJOR_ARRAY, items.length);
      for (let i = 0; i < items.length; i++) {
        const v = values[i]!;
        if (items[i] === 'text') w.text(v as string);
        else if (items[i] === 'uint') w.head(MAJOR_UINT, v as number);
        else w.bytes(v as Uint8Array);
      }
      return w.take();
    },
    decode: (bytes) => {
      // Copies of the byte strings: `bytes` may be a ring slot.
      const r = new StrictReader(bytes, { copyBuffers: true });
      const count = r.arrayHead('a record');
      if (count !== items.length) throw new RangeError(`record ${tag}: ${count} items, expected ${items.length}`);
      const values = new Array<FlatValue>(count);
      for (let i = 0; i < count; i++) {
        if (items[i] === 'text') values[i] = r.textString('a record item');
        else if (items[i] === 'uint') values[i] = Number(r.uint('a record item'));
        else values[i] = r.byteString('a record item');
      }
      r.end();
      return fromItems(values as A);
    },
  };
}

export const Records = {
  kvPut: kind<KvRecord, [string, Uint8Array | null]>(
    RecordTag.KvPut,
    (r) => [r.key, r.value],
    ([key, value]) => ({ key, value }),
  ),
  kvSet: kind<KvRecord, [string, Uint8Array | null]>(
    RecordTag.KvSet,
    (r) => [r.key, r.value],
    ([key, value]) => ({ key, value }),
  ),
  emit: kind<{ gear: string; msg: FluxMsg }, [string, unknown]>(
    RecordTag.Emit,
    (r) => [r.gear, r.msg],
    ([gear, msg]) => ({ gear, msg: fluxMsgFromValue(msg) }),
  ),
  toMain: flat<ToMainRecord, [string, string, Uint8Array]>(
    RecordTag.ToMain,
    ['text', 'text', 'bytes'],
    (r) => [r.gear, r.port, r.bytes],
    ([gear, port, bytes]) => ({ gear, port, bytes }),
  ),
  inject: kind<GearPortRecord, [string, string, unknown]>(
    RecordTag.Inject,
    (r) => [r.gear, r.port, r.msg],
    ([gear, port, msg]) => ({ gear, port, msg: fluxMsgFromValue(msg) }),
  ),
  connOpen: kind<ConnOpenRecord, [number, string, 'stream' | 'message', string, number]>(
    RecordTag.ConnOpen,
    (r) => [r.id, r.gear, r.framing, r.ip, r.port],
    ([id, gear, framing, ip, port]) => ({ id, gear, framing, ip, port }),
  ),
  connClosed: kind<{ id: number }, [number]>(
    RecordTag.ConnClosed,
    (r) => [r.id],
    ([id]) => ({ id }),
  ),
  connInvalid: kind<ConnReasonRecord, [number, string]>(
    RecordTag.ConnInvalid,
    (r) => [r.id, r.reason],
    ([id, reason]) => ({ id, reason }),
  ),
  drain: kind<Record<string, never>, []>(
    RecordTag.Drain,
    () => [],
    () => ({}),
  ),
  connWritable: kind<{ id: number; writable: boolean }, [number, boolean]>(
    RecordTag.ConnWritable,
    (r) => [r.id, r.writable],
    ([id, writable]) => ({ id, writable }),
  ),
  publication: kind<PublicationRecord, [string, string, Uint8Array, Qos, unknown, number, string]>(
    RecordTag.Publication,
    (r) => [r.origin, r.topic, r.id, r.qos, r.payload, r.conn, r.key],
    ([origin, topic, id, qos, payload, conn, key]) => ({ origin, topic, id, qos, payload, conn, key }),
  ),
  publicationAck: kind<PublicationAckRecord, [number, string, string | null]>(
    RecordTag.PublicationAck,
    (r) => [r.conn, r.key, r.error],
    ([conn, key, error]) => ({ conn, key, error }),
  ),
  reconfigure: kind<{ version: number }, [number]>(
    RecordTag.Reconfigure,
    (r) => [r.version],
    ([version]) => ({ version }),
  ),
  reconfigured: kind<ReconfiguredRecord, [number, string | null]>(
    RecordTag.Reconfigured,
    (r) => [r.version, r.error],
    ([version, error]) => ({ version, error }),
  ),
  logLevel: kind<{ level: string; telemetryLevel: string }, [string, string]>(
    RecordTag.LogLevel,
    (r) => [r.level, r.telemetryLevel],
    ([level, telemetryLevel]) => ({ level, telemetryLevel }),
  ),
  statsRequest: kind<Record<string, never>, []>(
    RecordTag.StatsRequest,
    () => [],
    () => ({}),
  ),
  stats: kind<StatsRecord, [Array<[string, number, number]>, number[], Array<[string, number[], number]>]>(
    RecordTag.Stats,
    (r) => [r.gears.map((g) => [g.gear, g.messages, g.errors]), r.latenciesMs, r.calls.map((c) => [c.gear, c.counts, c.sumMs])],
    ([gears, latenciesMs, calls]) => ({
      gears: gears.map(([gear, messages, errors]) => ({ gear, messages, errors })),
      latenciesMs,
      calls: calls.map(([gear, counts, sumMs]) => ({ gear, counts, sumMs })),
    }),
  ),
  lanePublish: flat<LanePublishRecord, [string, string, Uint8Array, string, number, string]>(
    RecordTag.LanePublish,
    ['text', 'text', 'bytes', 'text', 'uint', 'text'],
    (r) => [r.gear, r.port, r.bytes, r.id, r.conn, r.call],
    ([gear, port, bytes, id, conn, call]) => ({ gear, port, bytes, id, conn, call }),
  ),
  laneDeliver: flat<LaneDeliverRecord, [number, string, string, Uint8Array]>(
    RecordTag.LaneDeliver,
    ['uint', 'text', 'text', 'bytes'],
    (r) => [r.token, r.gear, r.port, r.bytes],
    ([token, gear, port, bytes]) => ({ token, gear, port, bytes }),
  ),
  laneDone: flat<LaneDoneRecord, [number, LaneOutcome, string]>(
    RecordTag.LaneDone,
    ['uint', 'uint', 'text'],
    (r) => [r.token, r.outcome, r.reason],
    ([token, outcome, reason]) => ({ token, outcome, reason }),
  ),
  connEnd: kind<ConnEndRecord, [number, number, string]>(
    RecordTag.ConnEnd,
    (r) => [r.id, r.code, r.reason],
    ([id, code, reason]) => ({ id, code, reason }),
  ),
} as const;

/** A fluxMsg our own worker encoded (a ToMainRecord's bytes): decoded without the strict checks of bytes from outside. */
export function fluxMsgOf(bytes: Uint8Array): FluxMsg {
  return fluxMsgFromValue(decodeCbor(bytes));
}
