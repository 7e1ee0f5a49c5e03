import { isCborMap } from '../cbor/profile.js';
import { CborWriter, MAJOR_ARRAY, MAJOR_MAP, MAJOR_UINT } from '../cbor/writer.js';
import { CborProfileError, StrictReader, unmarkFloats } from '../cbor/strict.js';
import { UUID_BYTES } from '../fluxmsg/uuid.js';
import { MessageType } from './codes.js';
import { EnvelopeError } from './errors.js';

/** The error item of an envelope. */
export interface EnvelopeErrorInfo {
  code: number;
  message: string;
  data?: unknown;
}

/**
 * A FLUXAR envelope as a plain object. On the wire it is the CBOR array
 * [type, id, ref, target, meta, payload, error], always exactly seven items.
 */
export interface Envelope {
  type: MessageType;
  /** UUID v7 of this envelope, 16 bytes. */
  id: Uint8Array;
  /** The envelope this one answers or continues, or null. */
  ref: Uint8Array | null;
  target: string | null;
  meta: Record<string, unknown> | null;
  payload: unknown;
  error: EnvelopeErrorInfo | null;
}

export const ENVELOPE_ITEMS = 7;
const MAX_TYPE = MessageType.Message;

/** Checks every item's rule; throws EnvelopeError naming the item. Shared by encode and decode. */
export function validateEnvelope(env: Envelope): void {
  const { type, id, ref, target, meta, error } = env;
  if (!Number.isInteger(type) || type < MessageType.Hello || type > MAX_TYPE) {
    throw new EnvelopeError('type', `must be an integer 1..${MAX_TYPE}, got ${String(type)}`);
  }
  if (!(id instanceof Uint8Array) || id.length !== UUID_BYTES) {
    throw new EnvelopeError('id', `must be a ${UUID_BYTES}-byte byte string`);
  }
  if (ref !== null && (!(ref instanceof Uint8Array) || ref.length !== UUID_BYTES)) {
    throw new EnvelopeError('ref', `must be null or a ${UUID_BYTES}-byte byte string`);
  }
  if (target !== null && typeof target !== 'string') throw new EnvelopeError('target', 'must be text or null');
  if (meta !== null && !isCborMap(meta)) throw new EnvelopeError('meta', 'must be a map or null');
  if (error !== null) {
    if (!isCborMap(error)) throw new EnvelopeError('error', 'must be null or a map {code, message, data?}');
    if (!Number.isInteger(error.code) || error.code < 0) throw new EnvelopeError('error', 'code must be an unsigned integer');
    if (typeof error.message !== 'string') throw new EnvelopeError('error', 'message must be text');
  }
}

/** Encodes an envelope. Validates first: an invalid envelope is never written. */
export function encodeEnvelope(env: Envelope): Uint8Array {
  return encodeEnvelopeWithRoom(env, 0);
}

/** The thread's envelope writer: an envelope is written here, then copied out in one piece. */
const scratch = new CborWriter();

/**
 * Encodes an envelope with `room` bytes free in front (for a frame header), into one buffer of
 * its own. Everything is written by the hot-path writer (../cbor/writer.ts); the bytes are what
 * cbor-x writes for the whole array (a property test holds it to that).
 */
export function encodeEnvelopeWithRoom(env: Envelope, room: number): Buffer {
  writeEnvelope(scratch.reset(room), env);
  // The room in front is copied unwritten: the caller fills it.
  return scratch.take();
}

/** Validates `env` and writes it at the writer's position. */
export function writeEnvelope(w: CborWriter, env: Envelope): void {
  validateEnvelope(env);
  w.head(MAJOR_ARRAY, ENVELOPE_ITEMS);
  w.head(MAJOR_UINT, env.type);
  w.bytes(env.id);
  if (env.ref === null) w.null();
  else w.bytes(env.ref);
  if (env.target === null) w.null();
  else w.text(env.target);
  if (env.meta === null) w.null();
  else w.map(env.meta);
  w.value(env.payload ?? null);
  if (env.error === null) w.null();
  else {
    const info: EnvelopeErrorInfo = { code: env.error.code, message: env.error.message };
    if (env.error.data !== undefined) info.data = env.error.data;
    w.map(info as unknown as Record<string, unknown>);
  }
}

export interface DecodeEnvelopeOptions {
  /** Refuse input longer than this many bytes (413 is the transport's business; this is a guard). */
  maxBytes?: number;
  /** Copy byte strings out of the input (for input memory that is reused, like a ring slot). */
  copyBuffers?: boolean;
  /** Receives the number of CBOR items read (also when decoding fails part way). */
  work?: { items: number };
}

/**
 * Decodes untrusted bytes into an envelope under the strict profile (docs/fluxar-spec.md
 * sections 1 and 2); throws only EnvelopeError (code 400), naming the item at fault.
 *
 * The items are read one by one, so that `type` and `error.code` must be unsigned integers on
 * the wire (a float is refused even when it holds a whole number), and so that the payload of a
 * hello (type 1) keeps its floats apart for the handshake's own checks (CborFloat).
 */
export function decodeEnvelope(bytes: Uint8Array, options: DecodeEnvelopeOptions = {}): Envelope {
  if (options.maxBytes !== undefined && bytes.length > options.maxBytes) {
    throw new EnvelopeError('envelope', `is ${bytes.length} bytes, more than the limit of ${options.maxBytes}`);
  }
  const r = new StrictReader(bytes, { copyBuffers: options.copyBuffers ?? false });
  let field = 'envelope';
  let header: { type: number; id: Uint8Array; ref: Uint8Array | null } | undefined;
  try {
    if (r.peekMajor() !== MAJOR_ARRAY) throw new EnvelopeError('envelope', 'must be a CBOR array');
    const count = r.arrayHead('the envelope');
    if (count !== -1 && count !== ENVELOPE_ITEMS) throw new EnvelopeError('envelope', `must have exactly ${ENVELOPE_ITEMS} items, got ${count}`);
    field = 'type';
    const type = r.uint('type');
    if (typeof type !== 'number' || type < MessageType.Hello || type > MAX_TYPE)
      throw new EnvelopeError('type', `must be an integer 1..${MAX_TYPE}, got ${type}`);
    field = 'id';
    const id = r.idBytes('id');
    if (id.length !== UUID_BYTES) throw new EnvelopeError('id', `must be a ${UUID_BYTES}-byte byte string, got ${id.length} bytes`);
    field = 'ref';
    const ref = r.nullNext() ? null : r.idBytes('ref');
    if (ref !== null && ref.length !== UUID_BYTES) throw new EnvelopeError('ref', `must be null or a ${UUID_BYTES}-byte byte string, got ${ref.length} bytes`);
    header = { type, id, ref };
    field = 'target';
    const target = r.nullNext() ? null : r.textString('target');
    field = 'meta';
    let meta: Record<string, unknown> | null = null;
    if (!r.nullNext()) {
      if (r.peekMajor() !== MAJOR_MAP) throw new EnvelopeError('meta', 'must be a map or null');
      meta = r.value(1) as Record<string, unknown>;
    }
    field = 'payload';
    r.markFloats = type === MessageType.Hello;
    const payload = r.value(1);
    r.markFloats = false;
    field = 'error';
    const error = r.nullNext() ? null : readErrorItem(r);
    field = 'envelope';
    if (count === -1 && !r.breakNext()) throw new EnvelopeError('envelope', `must have exactly ${ENVELOPE_ITEMS} items, got more`);
    r.end();
    return { type: type as MessageType, id, ref, target, meta, payload, error };
  } catch (err) {
    // The envelope ended badly after its header: say which envelope, so it can be answered.
    if (field === 'envelope') header = undefined;
    if (err instanceof EnvelopeError) throw header === undefined ? err : new EnvelopeError(err.field, err.reason, { cause: err.cause, header });
    if (err instanceof CborProfileError) {
      // A typed read names the item itself ("type must be an unsigned integer, got a float").
      const own = err.reason.startsWith(`${field} `) ? err.message.slice(field.length + 1) : `is not valid CBOR: ${err.message}`;
      throw new EnvelopeError(field, own, { cause: err, header });
    }
    throw new EnvelopeError(field, `could not be decoded: ${(err as Error).message}`, { cause: err, header });
  } finally {
    if (options.work !== undefined) options.work.items = r.items;
  }
}

/** {code: uint, message: text, data?: any}; other keys are ignored (spec section 2). */
function readErrorItem(r: StrictReader): EnvelopeErrorInfo {
  if (r.peekMajor() !== MAJOR_MAP) throw new EnvelopeError('error', 'must be null or a map {code, message, data?}');
  r.markFloats = true;
  const map = r.value(1) as Record<string, unknown>;
  r.markFloats = false;
  const { code, message, data } = map;
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 0) throw new EnvelopeError('error', 'code must be an unsigned integer');
  if (typeof message !== 'string') throw new EnvelopeError('error', 'message must be text');
  return data === undefined ? { code, message } : { code, message, data: unmarkFloats(data) };
}
