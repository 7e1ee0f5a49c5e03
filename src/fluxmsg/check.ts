// Whether bytes are a fluxMsg, without decoding them: for bytes passed on as they are (a Wasm
// gear's output, handed to the next hop or back to the caller). Decoding builds every string,
// byte view and object of the message only for them to be thrown away; checking builds none.
//
// The encoding writeFluxMsg and the gear SDKs write (fluxrig's keys, definite lengths, ids as
// 16-byte strings, hops {g, p, t}) is checked in one pass. Anything else (tags, indefinite
// lengths, unknown keys, null where a map goes) is decoded instead, so that what is accepted and
// every error are decodeFluxMsg's own: the pass answers only "certainly valid" or "ask the decoder".
import { argumentEnd, argumentOf } from '../cbor/head.js';
import { PROTO_KEY_BYTES } from '../cbor/profile.js';
import { isUtf8Text, StrictReader } from '../cbor/strict.js';
import { MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NINT, MAJOR_TEXT, MAJOR_UINT } from '../cbor/writer.js';
import { fluxMsgLimits } from './limits.js';
import { UUID_BYTES } from './uuid.js';

/**
 * True when `bytes` certainly decode to a valid fluxMsg (decodeFluxMsg would return it); false
 * when only decodeFluxMsg can tell, for the caller to decode. Never throws.
 */
export function isPlainFluxMsg(bytes: Uint8Array): boolean {
  try {
    return plainlyValid(bytes);
  } catch {
    // A data value broke the CBOR profile: the decoder says where, in its words.
    return false;
  }
}

enum Field {
  Id = 1,
  RefId = 2,
  Trace = 4,
  SrcId = 8,
  Meta = 16,
  Data = 32,
  Flags = 64,
  Raw = 128,
  Path = 256,
  Ts = 512,
}

/** The ten keys as their bytes (each a short ASCII text: its initial byte is 0x60 + length). */
const KEYS: ReadonlyArray<[Uint8Array, Field]> = (
  [
    ['id', Field.Id],
    ['ref_id', Field.RefId],
    ['trace', Field.Trace],
    ['src_id', Field.SrcId],
    ['meta', Field.Meta],
    ['data', Field.Data],
    ['flags', Field.Flags],
    ['raw', Field.Raw],
    ['path', Field.Path],
    ['ts', Field.Ts],
  ] as const
).map(([key, field]) => [Buffer.from(key, 'latin1'), field]);

/** KEYS by length and first byte (length << 8 | byte): one lookup per key. */
const KEY_INDEX: Array<[Uint8Array, Field] | undefined> = [];
for (const entry of KEYS) KEY_INDEX[(entry[0].length << 8) | entry[0][0]!] = entry;

const NULL = 0xf6;
/** A hop as writeFluxMsg writes it: a map of three, keys g, p, t (each 0x61 and the letter). */
const HOP_HEAD = 0xa3;
const KEY_G = 0x67;
const KEY_P = 0x70;
const KEY_T = 0x74;
/** Meta maps up to this size are checked here (keys compared pairwise); bigger ones are decoded. */
const META_ENTRIES = 16;
/** data sits one level inside the message's map: its values are read at this depth, as decodeStrict reads them. */
const DATA_DEPTH = 1;

/** Where each meta key of the message being checked starts and ends (one check at a time per thread). */
const metaKeys = new Int32Array(META_ENTRIES * 2);

/** isPlainFluxMsg, throwing CborProfileError from data's values. */
function plainlyValid(bytes: Uint8Array): boolean {
  const end = bytes.length;
  if (end > fluxMsgLimits().maxBytes || end === 0) return false;
  const fields = bytes[0]! - 0xa0;
  if (fields < 0 || fields > 23) return false;
  let at = 1;
  let seen = 0;
  for (let f = 0; f < fields; f++) {
    if (at >= end) return false;
    const keyLength = bytes[at]! - 0x60;
    if (keyLength < 0 || keyLength > 23 || at + 1 + keyLength > end) return false;
    const field = fieldOf(bytes, at + 1, keyLength);
    if (field === 0 || (seen & field) !== 0) return false;
    seen |= field;
    at += 1 + keyLength;
    if (at >= end) return false;
    at = fieldEnd(bytes, at, field);
    if (at < 0) return false;
  }
  return at === end && (seen & (Field.Id | Field.Ts)) === (Field.Id | Field.Ts);
}

/** The field whose key is at [from, from + length), or 0 for a key fluxMsg does not have. */
function fieldOf(bytes: Uint8Array, from: number, length: number): Field | 0 {
  // No two keys share a length and a first letter: one lookup finds the only candidate.
  const entry = KEY_INDEX[(length << 8) | bytes[from]!];
  if (entry === undefined) return 0;
  const [key, field] = entry;
  for (let i = 1; i < length; i++) if (bytes[from + i] !== key[i]) return 0;
  return field;
}

/** Where the value of `field` at `at` ends, or -1 when it is not in the plain form. */
function fieldEnd(bytes: Uint8Array, at: number, field: Field): number {
  switch (field) {
    case Field.Id:
      return uuidEnd(bytes, at);
    case Field.RefId:
    case Field.SrcId:
      return bytes[at] === NULL ? at + 1 : uuidEnd(bytes, at);
    case Field.Trace:
      return textEnd(bytes, at);
    case Field.Meta:
      return metaEnd(bytes, at);
    case Field.Data: {
      if (bytes[at]! >> 5 !== MAJOR_MAP) return -1;
      const reader = new StrictReader(bytes);
      reader.pos = at;
      reader.skip(DATA_DEPTH);
      return reader.pos;
    }
    case Field.Flags:
      // Up to four bytes of argument: every value fits a uint32.
      return bytes[at]! >> 5 === MAJOR_UINT ? argumentEnd(bytes, at, 4) : -1;
    case Field.Raw:
      return bytes[at] === NULL ? at + 1 : stringEnd(bytes, at, MAJOR_BYTES);
    case Field.Path:
      return pathEnd(bytes, at);
    case Field.Ts:
      return int64End(bytes, at);
  }
}

function uuidEnd(bytes: Uint8Array, at: number): number {
  return bytes[at] === 0x40 + UUID_BYTES && at + 1 + UUID_BYTES <= bytes.length ? at + 1 + UUID_BYTES : -1;
}

/** Past a definite-length string of `major` (text is checked to be UTF-8); -1 otherwise. */
function stringEnd(bytes: Uint8Array, at: number, major: number): number {
  if (bytes[at]! >> 5 !== major) return -1;
  const from = argumentEnd(bytes, at, 4);
  if (from < 0) return -1;
  const to = from + argumentOf(bytes, at);
  if (to > bytes.length) return -1;
  return major === MAJOR_TEXT && !isUtf8Text(bytes, from, to) ? -1 : to;
}

function textEnd(bytes: Uint8Array, at: number): number {
  return stringEnd(bytes, at, MAJOR_TEXT);
}

/** Meta: text to text, no key twice, no "__proto__". */
function metaEnd(bytes: Uint8Array, at: number): number {
  if (bytes[at]! >> 5 !== MAJOR_MAP) return -1;
  let next = argumentEnd(bytes, at, 1);
  if (next < 0) return -1;
  const count = argumentOf(bytes, at);
  if (count > META_ENTRIES) return -1;
  for (let i = 0; i < count; i++) {
    const keyEnd = next < bytes.length ? textEnd(bytes, next) : -1;
    if (keyEnd < 0) return -1;
    // The key's text starts after its head: its length is what is left to keyEnd.
    const keyFrom = argumentEnd(bytes, next, 4);
    if (sameBytes(bytes, keyFrom, keyEnd, PROTO_KEY_BYTES, 1, PROTO_KEY_BYTES.length)) return -1;
    for (let j = 0; j < i; j++) if (sameBytes(bytes, keyFrom, keyEnd, bytes, metaKeys[2 * j]!, metaKeys[2 * j + 1]!)) return -1;
    metaKeys[2 * i] = keyFrom;
    metaKeys[2 * i + 1] = keyEnd;
    next = keyEnd < bytes.length ? textEnd(bytes, keyEnd) : -1;
    if (next < 0) return -1;
  }
  return next;
}

function sameBytes(a: Uint8Array, aFrom: number, aTo: number, b: Uint8Array, bFrom: number, bTo: number): boolean {
  if (aTo - aFrom !== bTo - bFrom) return false;
  for (let i = 0; i < aTo - aFrom; i++) if (a[aFrom + i] !== b[bFrom + i]) return false;
  return true;
}

/** Path: up to maxHops hops, each {g: uuid, p: uuid, t: int64} in that order. */
function pathEnd(bytes: Uint8Array, at: number): number {
  if (bytes[at]! >> 5 !== MAJOR_ARRAY) return -1;
  let next = argumentEnd(bytes, at, 2);
  if (next < 0) return -1;
  const hops = argumentOf(bytes, at);
  if (hops > fluxMsgLimits().maxHops) return -1;
  for (let i = 0; i < hops; i++) {
    if (next + 3 > bytes.length || bytes[next] !== HOP_HEAD || bytes[next + 1] !== 0x61 || bytes[next + 2] !== KEY_G) return -1;
    next = uuidEnd(bytes, next + 3);
    if (next < 0 || next + 2 > bytes.length || bytes[next] !== 0x61 || bytes[next + 1] !== KEY_P) return -1;
    next = uuidEnd(bytes, next + 2);
    if (next < 0 || next + 2 > bytes.length || bytes[next] !== 0x61 || bytes[next + 1] !== KEY_T) return -1;
    next = int64End(bytes, next + 2);
    if (next < 0) return -1;
  }
  return next;
}

/** An integer of either sign within int64 (an 8-byte argument below 2^63), as toInt64 takes it. */
function int64End(bytes: Uint8Array, at: number): number {
  if (at >= bytes.length) return -1;
  const major = bytes[at]! >> 5;
  if (major !== MAJOR_UINT && major !== MAJOR_NINT) return -1;
  if ((bytes[at]! & 31) === 27) return at + 9 <= bytes.length && bytes[at + 1]! < 0x80 ? at + 9 : -1;
  return argumentEnd(bytes, at, 4);
}
