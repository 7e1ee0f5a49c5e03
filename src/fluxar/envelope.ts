import { CborDecodeFailure, decodeCbor, encodeCbor, isCborMap } from '../cbor/profile.js';
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

/** Bytes of a CBOR head (major type + argument) for an argument below 2^32. */
function headSize(argument: number): number {
  return argument < 24 ? 1 : argument < 0x100 ? 2 : argument < 0x10000 ? 3 : 5;
}

function writeHead(buf: Buffer, at: number, major: number, argument: number): number {
  const m = major << 5;
  if (argument < 24) {
    buf[at] = m | argument;
    return at + 1;
  }
  if (argument < 0x100) {
    buf[at] = m | 24;
    buf[at + 1] = argument;
    return at + 2;
  }
  if (argument < 0x10000) {
    buf[at] = m | 25;
    buf.writeUInt16BE(argument, at + 1);
    return at + 3;
  }
  buf[at] = m | 26;
  buf.writeUInt32BE(argument, at + 1);
  return at + 5;
}

const CBOR_NULL = 0xf6;
const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;

/**
 * Encodes an envelope with `room` bytes free in front (for a frame header), in one allocation.
 * The fixed part of the envelope (array head, type, id, ref, target, byte-string payloads) is
 * written here; only general CBOR values (meta, structured payloads, error) go through cbor-x.
 * The bytes are exactly what cbor-x writes for the whole array (a property test holds it to that).
 */
export function encodeEnvelopeWithRoom(env: Envelope, room: number): Buffer {
  validateEnvelope(env);
  const targetBytes = env.target === null ? 0 : Buffer.byteLength(env.target, 'utf8');
  const meta = env.meta === null ? null : encodeCbor(env.meta);
  const payload = env.payload ?? null;
  const rawPayload = payload instanceof Uint8Array ? payload : null;
  const encodedPayload = payload === null || rawPayload !== null ? null : encodeCbor(payload);
  let error: Uint8Array | null = null;
  if (env.error !== null) {
    const info: EnvelopeErrorInfo = { code: env.error.code, message: env.error.message };
    if (env.error.data !== undefined) info.data = env.error.data;
    error = encodeCbor(info);
  }
  const size =
    1 + // array(7)
    1 + // type 1..7
    17 + // id: bytes(16)
    (env.ref === null ? 1 : 17) +
    (env.target === null ? 1 : headSize(targetBytes) + targetBytes) +
    (meta === null ? 1 : meta.length) +
    (rawPayload !== null ? headSize(rawPayload.length) + rawPayload.length : encodedPayload !== null ? encodedPayload.length : 1) +
    (error === null ? 1 : error.length);
  const buf = Buffer.allocUnsafe(room + size);
  let at = room;
  buf[at++] = 0x80 | ENVELOPE_ITEMS;
  buf[at++] = env.type;
  buf[at++] = 0x40 | 16;
  buf.set(env.id, at);
  at += 16;
  if (env.ref === null) buf[at++] = CBOR_NULL;
  else {
    buf[at++] = 0x40 | 16;
    buf.set(env.ref, at);
    at += 16;
  }
  if (env.target === null) buf[at++] = CBOR_NULL;
  else {
    at = writeHead(buf, at, MAJOR_TEXT, targetBytes);
    at += buf.write(env.target, at, 'utf8');
  }
  if (meta === null) buf[at++] = CBOR_NULL;
  else {
    buf.set(meta, at);
    at += meta.length;
  }
  if (rawPayload !== null) {
    at = writeHead(buf, at, MAJOR_BYTES, rawPayload.length);
    buf.set(rawPayload, at);
    at += rawPayload.length;
  } else if (encodedPayload !== null) {
    buf.set(encodedPayload, at);
    at += encodedPayload.length;
  } else buf[at++] = CBOR_NULL;
  if (error === null) buf[at++] = CBOR_NULL;
  else buf.set(error, at);
  return buf;
}

export interface DecodeEnvelopeOptions {
  /** Refuse input longer than this many bytes (413 is the transport's business; this is a guard). */
  maxBytes?: number;
  /** Copy byte strings out of the input (for input memory that is reused, like a ring slot). */
  copyBuffers?: boolean;
}

/** Decodes untrusted bytes into an envelope; throws only EnvelopeError (code 400). */
export function decodeEnvelope(bytes: Uint8Array, options: DecodeEnvelopeOptions = {}): Envelope {
  if (options.maxBytes !== undefined && bytes.length > options.maxBytes) {
    throw new EnvelopeError('envelope', `is ${bytes.length} bytes, more than the limit of ${options.maxBytes}`);
  }
  let value: unknown;
  try {
    value = decodeCbor(bytes, options.copyBuffers);
  } catch (err) {
    const message = err instanceof CborDecodeFailure ? err.message : String(err);
    throw new EnvelopeError('envelope', `is not valid CBOR (${message})`, { cause: err });
  }
  if (!Array.isArray(value)) throw new EnvelopeError('envelope', 'must be a CBOR array');
  if (value.length !== ENVELOPE_ITEMS) {
    throw new EnvelopeError('envelope', `must have exactly ${ENVELOPE_ITEMS} items, got ${value.length}`);
  }
  const env: Envelope = {
    type: value[0] as MessageType,
    id: value[1] as Uint8Array,
    ref: value[2] as Uint8Array | null,
    target: value[3] as string | null,
    meta: value[4] as Record<string, unknown> | null,
    payload: value[5],
    error: value[6] as EnvelopeErrorInfo | null,
  };
  validateEnvelope(env);
  return env;
}
