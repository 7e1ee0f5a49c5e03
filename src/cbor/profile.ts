import { Decoder, Encoder, setSizeLimits } from 'cbor-x';

/**
 * The one CBOR profile every fluxrig wire format uses (fluxMsg, the FLUXAR envelope):
 * - plain RFC 8949 maps and arrays (no cbor-x record extension, no tag 259 on maps), so any
 *   CBOR implementation in any language reads what we write;
 * - Uint8Array as a plain byte string (major type 2), never a typed-array tag;
 * - minimal map headers (variableMapSize), which is what keeps small envelopes small.
 */
// useTag259ForMaps is honoured by cbor-x but missing from its type declarations.
type ProfileOptions = ConstructorParameters<typeof Encoder>[0] & { useTag259ForMaps?: boolean };
const encoderOptions: ProfileOptions = {
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
  useTag259ForMaps: false,
  variableMapSize: true,
};
const encoder = new Encoder(encoderOptions);

const decoderOptions = { useRecords: false, mapsAsObjects: true } as const;
const viewingDecoder = new Decoder(decoderOptions);
// Byte strings decoded from memory that will be reused (a ring slot) must not stay views into it.
const copyingDecoder = new Decoder({ ...decoderOptions, copyBuffers: true });

/**
 * Collection limits for untrusted input. A CBOR header can claim 2^32 entries in a 10-byte
 * message; without these caps cbor-x would try to honour it. No fluxrig message needs more than
 * a million entries in one array or map (the whole message is capped at a few MiB anyway).
 * cbor-x keeps these limits process-wide.
 */
export const MAX_COLLECTION_ENTRIES = 1 << 20;
setSizeLimits({
  maxArraySize: MAX_COLLECTION_ENTRIES,
  maxMapSize: MAX_COLLECTION_ENTRIES,
  maxObjectSize: MAX_COLLECTION_ENTRIES,
});

export function encodeCbor(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/** The CBOR text string "__proto__" as it appears on the wire: header 0x69 then 9 bytes. */
export const PROTO_KEY_BYTES = new Uint8Array([0x69, 0x5f, 0x5f, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x5f, 0x5f]);
const mapDecoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export class CborDecodeFailure extends Error {}

/**
 * For records our own threads wrote (ring records between the main thread and the workers).
 * Bytes from outside the process go through decodeStrict (./strict.ts) instead.
 *
 * Decodes exactly one CBOR item spanning all of `bytes`. Throws CborDecodeFailure on anything
 * else: truncated input, trailing bytes, over-limit collections, and maps keyed "__proto__"
 * (cbor-x would silently rename such a key; we refuse the message instead of altering it).
 */
export function decodeCbor(bytes: Uint8Array, copyBuffers = false): unknown {
  let value: unknown;
  try {
    value = (copyBuffers ? copyingDecoder : viewingDecoder).decode(bytes);
  } catch (err) {
    throw new CborDecodeFailure(describeDecodeError(err), { cause: err });
  }
  // The byte pattern is rare; only when it shows up do we pay for an exact check, decoding into
  // Maps so that a "__proto__" key is seen as what it is rather than renamed.
  if (Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(PROTO_KEY_BYTES) >= 0) {
    if (hasProtoKey(mapDecoder.decode(bytes), 0)) {
      throw new CborDecodeFailure('map key "__proto__" is not allowed');
    }
  }
  return value;
}

function hasProtoKey(value: unknown, depth: number): boolean {
  if (depth > 256 || value === null || typeof value !== 'object') return false;
  if (value instanceof Map) {
    for (const [k, v] of value) {
      if (k === '__proto__' || hasProtoKey(v, depth + 1)) return true;
    }
    return false;
  }
  if (Array.isArray(value)) return value.some((v) => hasProtoKey(v, depth + 1));
  return false;
}

function describeDecodeError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof RangeError && /call stack/i.test(message)) return 'CBOR nesting too deep';
  if (/end of buffer not reached/.test(message)) return 'trailing bytes after the CBOR item';
  if (/Unexpected end of CBOR data|outside the bounds/.test(message)) return 'truncated CBOR (unexpected end of data)';
  return `invalid CBOR: ${message}`;
}

/** True for a decoded CBOR map (a plain object under this profile). */
export function isCborMap(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
