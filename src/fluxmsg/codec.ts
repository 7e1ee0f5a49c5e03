import { isCborMap } from '../cbor/profile.js';
import { CborWriter, MAJOR_ARRAY, MAJOR_MAP, MAJOR_UINT } from '../cbor/writer.js';
import { CborProfileError, decodeStrict } from '../cbor/strict.js';
import { FluxMsgDecodeError, FluxMsgValidationError } from './errors.js';
import type { FluxMsg, Hop } from './fluxmsg.js';
import { uuidOrNull } from './fluxmsg.js';
import { fluxMsgLimits } from './limits.js';
import { UUID_BYTES } from './uuid.js';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT32_MAX = 0xffffffff;

function fail(field: string, message: string): never {
  throw new FluxMsgValidationError(field, message);
}

function checkUuid(field: string, value: unknown, nullable: boolean): void {
  if (value === null && nullable) return;
  if (!(value instanceof Uint8Array)) fail(field, `must be a ${UUID_BYTES}-byte UUID${nullable ? ' or null' : ''}`);
  if (value.length !== UUID_BYTES) fail(field, `must be ${UUID_BYTES} bytes, got ${value.length}`);
}

function checkInt64(field: string, value: unknown): void {
  if (typeof value !== 'bigint') fail(field, 'must be an int64 (bigint)');
  if (value < INT64_MIN || value > INT64_MAX) fail(field, 'is outside the int64 range');
}

/**
 * Checks every rule of a fluxMsg except the encoded size (known only once encoded). Throws
 * FluxMsgValidationError naming the first field at fault.
 */
export function validateFluxMsg(msg: FluxMsg): void {
  if (!isCborMap(msg)) fail('(message)', 'must be an object');
  checkUuid('id', msg.id, false);
  checkUuid('ref_id', msg.ref_id, true);
  checkUuid('src_id', msg.src_id, true);
  if (typeof msg.trace !== 'string') fail('trace', 'must be text');
  if (!msg.trace.isWellFormed()) fail('trace', 'is not valid UTF-8 text');
  if (!isCborMap(msg.meta)) fail('meta', 'must be a map of text to text');
  for (const key in msg.meta) {
    const value = msg.meta[key];
    if (!key.isWellFormed()) fail(`meta[${JSON.stringify(key)}]`, 'key is not valid UTF-8 text');
    if (typeof value !== 'string') fail(`meta.${key}`, 'must be text (write binary values as "hex:<hex>")');
    if (!value.isWellFormed()) fail(`meta.${key}`, 'is not valid UTF-8 text (write binary values as "hex:<hex>")');
  }
  if (!isCborMap(msg.data)) fail('data', 'must be a map with text keys');
  for (const key in msg.data) {
    if (!key.isWellFormed()) fail(`data[${JSON.stringify(key)}]`, 'key is not valid UTF-8 text');
  }
  if (!Number.isInteger(msg.flags) || msg.flags < 0 || msg.flags > UINT32_MAX) fail('flags', 'must be a uint32');
  if (msg.raw !== null && !(msg.raw instanceof Uint8Array)) fail('raw', 'must be bytes or null');
  if (!Array.isArray(msg.path)) fail('path', 'must be an array of hops');
  const { maxHops } = fluxMsgLimits();
  if (msg.path.length > maxHops) fail('path', `has ${msg.path.length} hops, more than the limit of ${maxHops}`);
  for (let i = 0; i < msg.path.length; i++) {
    const hop = msg.path[i] as Hop;
    if (!isCborMap(hop)) fail(`path[${i}]`, 'must be a hop {g, p, t}');
    checkUuid(`path[${i}].g`, hop.g, false);
    checkUuid(`path[${i}].p`, hop.p, false);
    checkInt64(`path[${i}].t`, hop.t);
  }
  checkInt64('ts', msg.ts);
}

/** The ten keys of the fluxMsg map, in fluxrig's order, each as encoded text. */
const KEYS = Object.fromEntries(
  ['id', 'ref_id', 'trace', 'src_id', 'meta', 'data', 'flags', 'raw', 'path', 'ts', 'g', 'p', 't'].map((k) => {
    const w = new CborWriter(16);
    w.text(k);
    return [k, w.take()];
  }),
) as Record<string, Buffer>;
const FLUXMSG_FIELDS = 10;
const HOP_FIELDS = 3;

/**
 * Where meta and data sit in a message writeFluxMsg wrote: offsets from the message's first
 * byte. A Wasm gear's output is read against it (gears/wasm/appended.ts).
 */
export interface FluxMsgLayout {
  /** The meta map's head; the bytes before it are id, ref_id, trace, src_id and their keys. */
  metaHead: number;
  /** The first meta entry (just past the head). */
  metaEntries: number;
  metaCount: number;
  /** Just past the meta map; the data key follows. */
  metaEnd: number;
  dataHead: number;
  dataEntries: number;
  dataCount: number;
  /** Just past the data map; flags, raw, path and ts follow. */
  dataEnd: number;
  /** The message's length. */
  end: number;
  /**
   * Whether meta and data read back as the very values written (see CborWriter.inexact): only
   * then may a reader keep the written objects in place of what it would decode.
   */
  exact: boolean;
}

/**
 * Writes a fluxMsg as a CBOR map with fluxrig's ten keys, in fluxrig's order, into `w`. Validates
 * first; throws FluxMsgValidationError, never writes an invalid message. `layout`, if given, is
 * filled in with where meta and data were written.
 */
export function writeFluxMsg(w: CborWriter, msg: FluxMsg, layout?: FluxMsgLayout): void {
  validateFluxMsg(msg);
  const start = w.pos;
  w.head(MAJOR_MAP, FLUXMSG_FIELDS);
  w.raw(KEYS.id!);
  w.bytes(msg.id);
  w.raw(KEYS.ref_id!);
  if (msg.ref_id === null) w.null();
  else w.bytes(msg.ref_id);
  w.raw(KEYS.trace!);
  w.text(msg.trace);
  w.raw(KEYS.src_id!);
  if (msg.src_id === null) w.null();
  else w.bytes(msg.src_id);
  w.raw(KEYS.meta!);
  const inexact = w.inexact;
  const metaHead = w.pos;
  const metaCount = w.map(msg.meta);
  const metaEnd = w.pos;
  w.raw(KEYS.data!);
  const dataHead = w.pos;
  const dataCount = w.map(msg.data);
  const dataEnd = w.pos;
  const exact = w.inexact === inexact;
  w.raw(KEYS.flags!);
  w.head(MAJOR_UINT, msg.flags);
  w.raw(KEYS.raw!);
  if (msg.raw === null) w.null();
  else w.bytes(msg.raw);
  w.raw(KEYS.path!);
  w.head(MAJOR_ARRAY, msg.path.length);
  for (const hop of msg.path) {
    w.head(MAJOR_MAP, HOP_FIELDS);
    w.raw(KEYS.g!);
    w.bytes(hop.g);
    w.raw(KEYS.p!);
    w.bytes(hop.p);
    w.raw(KEYS.t!);
    w.bigint(hop.t);
  }
  w.raw(KEYS.ts!);
  w.bigint(msg.ts);
  const { maxBytes } = fluxMsgLimits();
  if (w.pos - start > maxBytes) fail('(message)', `encodes to ${w.pos - start} bytes, more than the limit of ${maxBytes}`);
  if (layout !== undefined) {
    layout.metaHead = metaHead - start;
    layout.metaEntries = metaHead - start + CborWriter.headBytes(metaCount);
    layout.metaCount = metaCount;
    layout.metaEnd = metaEnd - start;
    layout.dataHead = dataHead - start;
    layout.dataEntries = dataHead - start + CborWriter.headBytes(dataCount);
    layout.dataCount = dataCount;
    layout.dataEnd = dataEnd - start;
    layout.end = w.pos - start;
    layout.exact = exact;
  }
}

/** This thread's writer for encodeFluxMsg: the bytes are copied out, the buffer reused. */
const scratch = new CborWriter();

/**
 * Encodes a fluxMsg as a CBOR map with fluxrig's ten keys, in fluxrig's order. Validates first;
 * throws FluxMsgValidationError, never writes an invalid message.
 */
export function encodeFluxMsg(msg: FluxMsg): Uint8Array {
  writeFluxMsg(scratch.reset(), msg);
  return scratch.take();
}

export interface DecodeFluxMsgOptions {
  /**
   * Copy byte strings (id, raw, ...) out of the input instead of viewing it. Required when the
   * input memory is reused after decoding, as a ring slot is.
   */
  copyBuffers?: boolean;
}

/** int64 fields arrive as number when small and bigint when the encoder used 8 bytes. */
function toInt64(field: string, value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  throw new FluxMsgValidationError(field, 'must be an integer');
}

/**
 * Decodes untrusted bytes into a fluxMsg. Whatever the input, the only error thrown is
 * FluxMsgDecodeError (with `field` set when one field is to blame and the cause attached).
 * Absent or null optional fields take their empty values; unknown keys are ignored so that newer
 * peers can add fields.
 */
export function decodeFluxMsg(bytes: Uint8Array, options: DecodeFluxMsgOptions = {}): FluxMsg {
  const { maxBytes } = fluxMsgLimits();
  if (!(bytes instanceof Uint8Array)) throw new FluxMsgDecodeError('input must be a Uint8Array');
  if (bytes.length > maxBytes) {
    throw new FluxMsgDecodeError(`${bytes.length} bytes, more than the limit of ${maxBytes}`);
  }
  let value: unknown;
  try {
    value = decodeStrict(bytes, { copyBuffers: options.copyBuffers ?? false });
  } catch (err) {
    throw new FluxMsgDecodeError(err instanceof CborProfileError ? err.message : String(err), { cause: err });
  }
  return fluxMsgFromValue(value);
}

/**
 * Builds and validates a fluxMsg from an already-decoded CBOR map (for instance one item of a
 * larger structure). Throws only FluxMsgDecodeError.
 */
export function fluxMsgFromValue(value: unknown): FluxMsg {
  if (!isCborMap(value)) throw new FluxMsgDecodeError('top level is not a CBOR map');
  try {
    if (value.id === undefined) throw new FluxMsgValidationError('id', 'is required');
    if (value.ts === undefined) throw new FluxMsgValidationError('ts', 'is required');
    const path = value.path ?? [];
    if (Array.isArray(path)) {
      for (let i = 0; i < path.length; i++) {
        const hop = path[i];
        if (isCborMap(hop)) hop.t = toInt64(`path[${i}].t`, hop.t);
      }
    }
    const msg: FluxMsg = {
      id: value.id as Uint8Array,
      ref_id: uuidOrNull((value.ref_id ?? null) as Uint8Array | null),
      trace: (value.trace ?? '') as string,
      src_id: uuidOrNull((value.src_id ?? null) as Uint8Array | null),
      meta: (value.meta ?? {}) as Record<string, string>,
      data: (value.data ?? {}) as Record<string, unknown>,
      flags: (value.flags ?? 0) as number,
      raw: (value.raw ?? null) as Uint8Array | null,
      path: path as Hop[],
      ts: toInt64('ts', value.ts),
    };
    validateFluxMsg(msg);
    return msg;
  } catch (err) {
    if (err instanceof FluxMsgValidationError) {
      throw new FluxMsgDecodeError(err.message.replace(/^fluxMsg /, ''), { cause: err, field: err.field });
    }
    throw new FluxMsgDecodeError(String(err), { cause: err });
  }
}
