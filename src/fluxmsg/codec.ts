import { encodeCbor, isCborMap } from '../cbor/profile.js';
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

/**
 * Encodes a fluxMsg as a CBOR map with fluxrig's ten keys, in fluxrig's order. Validates first;
 * throws FluxMsgValidationError, never writes an invalid message.
 */
export function encodeFluxMsg(msg: FluxMsg): Uint8Array {
  validateFluxMsg(msg);
  const bytes = encodeCbor({
    id: msg.id,
    ref_id: msg.ref_id,
    trace: msg.trace,
    src_id: msg.src_id,
    meta: msg.meta,
    data: msg.data,
    flags: msg.flags,
    raw: msg.raw,
    path: msg.path,
    ts: msg.ts,
  });
  const { maxBytes } = fluxMsgLimits();
  if (bytes.length > maxBytes) fail('(message)', `encodes to ${bytes.length} bytes, more than the limit of ${maxBytes}`);
  return bytes;
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
