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
  validateEnvelope(env);
  let error: EnvelopeErrorInfo | null = null;
  if (env.error !== null) {
    error = { code: env.error.code, message: env.error.message };
    if (env.error.data !== undefined) error.data = env.error.data;
  }
  return encodeCbor([env.type, env.id, env.ref, env.target, env.meta, env.payload ?? null, error]);
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
