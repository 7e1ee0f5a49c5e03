import { isUtf8 } from 'node:buffer';
import { FluxrigError } from '../errors.js';
import { MAX_COLLECTION_ENTRIES, PROTO_KEY_BYTES } from './profile.js';
import { MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NINT, MAJOR_SIMPLE, MAJOR_TAG, MAJOR_TEXT, MAJOR_UINT } from './writer.js';

/**
 * The strict CBOR profile for bytes received from outside the process (FLUXAR envelopes,
 * fluxMsg from guests and the bus). docs/fluxar-spec.md section 1 is its specification.
 *
 * Accepted: every well-formed encoding of a value (RFC 8949 section 3): integers in any width,
 * definite and indefinite lengths, half, single and double floats.
 * Refused, each with a message in our own words that names the byte offset:
 * - anything not well-formed (truncation, reserved additional information, a stray break,
 *   indefinite-length string chunks of another type, trailing bytes);
 * - map keys that are not text, duplicate keys, and the key "__proto__" (under any tag);
 * - text strings that are not valid UTF-8;
 * - nesting deeper than MAX_NESTING;
 * - tags other than TAGS_ALLOWED, and unassigned simple values.
 *
 * Hand-written because cbor-x (used for encoding, and for the records our own threads exchange)
 * has no way to refuse duplicate keys, invalid UTF-8 or non-text keys, and cannot tell 1.0 from
 * 1; a validating pass in front of it would read every byte twice and still could not accept
 * indefinite-length strings, which cbor-x refuses.
 */

/** Arrays, maps and tags nested deeper than this are refused. */
export const MAX_NESTING = 64;
/** A bignum (tags 2 and 3) holds at most this many bytes (a 1024-bit integer). */
export const MAX_BIGNUM_BYTES = 128;

export const Tag = {
  PositiveBignum: 2,
  NegativeBignum: 3,
  /** RFC 8746: a byte string holding uint8 values; read as a plain byte string. */
  Uint8Array: 64,
  /** RFC 8949 3.4.6 self-described CBOR: allowed only around the whole item. */
  SelfDescribed: 55799,
} as const;
export const TAGS_ALLOWED: readonly number[] = [Tag.PositiveBignum, Tag.NegativeBignum, Tag.Uint8Array, Tag.SelfDescribed];

/** Bytes that break the strict profile. `offset` is where the offending item starts. */
export class CborProfileError extends FluxrigError {
  readonly offset: number;
  /** The message without the offset. */
  readonly reason: string;
  constructor(reason: string, offset: number) {
    super(`${reason} (at byte ${offset})`);
    this.reason = reason;
    this.offset = offset;
  }
}

/**
 * A float, kept apart from integers where the caller asked (`markFloats`): CBOR tells 1.0 from 1,
 * JavaScript numbers do not, and fields that must be integers refuse floats.
 */
export class CborFloat {
  constructor(readonly value: number) {}
}

export interface StrictDecodeOptions {
  /** Copy byte strings out of the input (for input memory that is reused, like a ring slot). */
  copyBuffers?: boolean;
  /** Decode floats as CborFloat instead of number. */
  markFloats?: boolean;
  maxNesting?: number;
}

const BREAK = 0xff;
const MAJOR_NAMES = ['unsigned integer', 'negative integer', 'byte string', 'text string', 'array', 'map', 'tag', 'simple value or float'];
const WITH_ARTICLE = ['an unsigned integer', 'a negative integer', 'a byte string', 'a text string', 'an array', 'a map', 'a tag', 'a simple value'];
const TWO_32 = 0x1_0000_0000;
const KEY_CACHE_BITS = 12;
/** Text up to this many bytes goes through the key cache (map keys of any length up to 23 do). */
const CACHED_TEXT_BYTES = 24;
/** Short ASCII text seen recently (map keys, and values up to CACHED_TEXT_BYTES), by a hash of its bytes (process-wide, bounded). */
const keyCache: Array<{ bytes: Uint8Array; key: string } | undefined> = new Array(1 << KEY_CACHE_BITS);
/** An 8-byte argument whose high word is below this is a safe integer. */
const SAFE_HIGH_WORD = 0x20_0000;

/**
 * A cursor over one CBOR item. The FLUXAR envelope reader drives it item by item (so it can
 * insist on an unsigned integer where one is required); everything else calls value().
 */
export class StrictReader {
  pos = 0;
  /** Items read so far: the measure of decode work that per-connection budgets count. */
  items = 0;
  private readonly bytes: Uint8Array;
  private view: DataView | undefined;
  private readonly copyBuffers: boolean;
  private readonly maxNesting: number;
  markFloats: boolean;

  constructor(bytes: Uint8Array, options: StrictDecodeOptions = {}) {
    this.bytes = bytes;
    this.copyBuffers = options.copyBuffers ?? false;
    this.markFloats = options.markFloats ?? false;
    this.maxNesting = options.maxNesting ?? MAX_NESTING;
  }

  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  fail(message: string, at = this.pos): never {
    throw new CborProfileError(message, at);
  }

  /** Throws unless every byte was read. */
  end(): void {
    if (this.pos !== this.bytes.length) this.fail(`trailing bytes after the CBOR item (${this.remaining} bytes)`);
  }

  /** The major type of the next item, without consuming it; -1 for a break. */
  peekMajor(): number {
    if (this.pos >= this.bytes.length) this.fail('truncated CBOR: an item was expected');
    const b = this.bytes[this.pos]!;
    return b === BREAK ? -1 : b >> 5;
  }

  /** True (and consumed) if the next item is null. */
  nullNext(): boolean {
    if (this.pos < this.bytes.length && this.bytes[this.pos] === 0xf6) {
      this.pos++;
      return true;
    }
    return false;
  }

  // The last head read (fields, not a returned object: no allocation per item).
  private major = 0;
  private info = 0;
  /** The argument; -1 for an indefinite length. */
  private arg = 0;
  /** The argument when it is not a safe integer (8-byte form), else null. */
  private big: bigint | null = null;

  /** Reads the head of an item into major, info, arg and big. */
  private head(): void {
    const start = this.pos;
    if (start >= this.bytes.length) this.fail('truncated CBOR: an item was expected');
    const initial = this.bytes[this.pos++]!;
    const major = initial >> 5;
    const info = initial & 31;
    this.major = major;
    this.info = info;
    this.big = null;
    if (info < 24) {
      this.arg = info;
      return;
    }
    switch (info) {
      case 24:
        this.need(1, start);
        this.arg = this.bytes[this.pos++]!;
        return;
      case 25:
        this.need(2, start);
        this.arg = (this.bytes[this.pos]! << 8) | this.bytes[this.pos + 1]!;
        this.pos += 2;
        return;
      case 26:
        this.need(4, start);
        this.arg = this.u32(this.pos);
        this.pos += 4;
        return;
      case 27: {
        this.need(8, start);
        const high = this.u32(this.pos);
        const low = this.u32(this.pos + 4);
        this.pos += 8;
        // A double: simple() reads it from the bytes. As an argument it would be a bigint for
        // most values, made for every float in a message and thrown away.
        if (major === MAJOR_SIMPLE) this.arg = 0;
        else if (high < SAFE_HIGH_WORD) this.arg = high * TWO_32 + low;
        else {
          this.arg = Number.MAX_SAFE_INTEGER;
          this.big = (BigInt(high) << 32n) | BigInt(low);
        }
        return;
      }
      case 31:
        if (major === MAJOR_UINT || major === MAJOR_NINT || major === MAJOR_TAG)
          this.fail(`indefinite length is not allowed for ${WITH_ARTICLE[major]}`, start);
        this.arg = -1;
        return;
      default:
        this.fail(`reserved additional information ${info} in the initial byte 0x${initial.toString(16)}`, start);
    }
  }

  private u32(at: number): number {
    const b = this.bytes;
    return b[at]! * 0x100_0000 + ((b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!);
  }

  private need(n: number, start: number): void {
    if (this.bytes.length - this.pos < n) this.fail(`truncated CBOR: the item needs ${n} more bytes, ${this.remaining} remain`, start);
  }

  /** An unsigned integer (major type 0, any width). Floats and other types are refused. */
  uint(what: string): number | bigint {
    const start = this.pos;
    this.head();
    if (this.major !== MAJOR_UINT) this.fail(`${what} must be an unsigned integer, got ${this.describe(this.major, this.info)}`, start);
    return this.big ?? this.arg;
  }

  /**
   * A byte string meant to be a 16-byte id: a definite one of 16 bytes comes back as a copy in a
   * plain Uint8Array (cheaper than a Buffer view: two per envelope add up); anything else as
   * byteString() reads it, for the caller to refuse.
   */
  idBytes(what: string): Uint8Array {
    const start = this.pos;
    const b = this.bytes;
    if (b[start] === 0x50 && b.length - start > 16) {
      const id = new Uint8Array(16);
      for (let i = 0; i < 16; i++) id[i] = b[start + 1 + i]!;
      this.pos = start + 17;
      return id;
    }
    return this.byteString(what);
  }

  /** A byte string (definite or indefinite length). */
  byteString(what: string): Uint8Array {
    const start = this.pos;
    this.head();
    if (this.major !== MAJOR_BYTES) this.fail(`${what} must be a byte string, got ${this.describe(this.major, this.info)}`, start);
    return this.stringBody(this.arg, this.big, MAJOR_BYTES, start) as Uint8Array;
  }

  /** A text string (definite or indefinite length, valid UTF-8). */
  textString(what: string): string {
    const start = this.pos;
    this.head();
    if (this.major !== MAJOR_TEXT) this.fail(`${what} must be a text string, got ${this.describe(this.major, this.info)}`, start);
    return this.stringBody(this.arg, this.big, MAJOR_TEXT, start) as string;
  }

  /** The head of an array: its length, or -1 for indefinite length (ended by a break). */
  arrayHead(what: string): number {
    const start = this.pos;
    this.head();
    if (this.major !== MAJOR_ARRAY) this.fail(`${what} must be an array, got ${this.describe(this.major, this.info)}`, start);
    return this.checkCount(this.arg, this.big, 1, start);
  }

  /** The head of a map: its entry count, or -1 for indefinite length (ended by a break). */
  mapHead(what: string): number {
    const start = this.pos;
    this.head();
    if (this.major !== MAJOR_MAP) this.fail(`${what} must be a map, got ${this.describe(this.major, this.info)}`, start);
    return this.checkCount(this.arg, this.big, 2, start);
  }

  /** Consumes a break if one is next. */
  breakNext(): boolean {
    if (this.pos < this.bytes.length && this.bytes[this.pos] === BREAK) {
      this.pos++;
      return true;
    }
    return false;
  }

  /** Any item under the profile's rules. */
  value(depth = 0): unknown {
    const start = this.pos;
    this.items++;
    this.head();
    switch (this.major) {
      case MAJOR_UINT:
        return this.big ?? this.arg;
      case MAJOR_NINT: {
        if (this.big !== null) return -1n - this.big;
        const n = -1 - this.arg;
        return Number.isSafeInteger(n) ? n : -1n - BigInt(this.arg);
      }
      case MAJOR_BYTES:
      case MAJOR_TEXT:
        return this.stringBody(this.arg, this.big, this.major, start);
      case MAJOR_ARRAY:
        return this.array(this.checkCount(this.arg, this.big, 1, start), depth + 1, start);
      case MAJOR_MAP:
        return this.map(this.checkCount(this.arg, this.big, 2, start), depth + 1, start);
      case MAJOR_TAG:
        return this.tagged(this.big ?? this.arg, depth + 1, start);
      default:
        return this.simple(this.info, this.arg, start);
    }
  }

  /**
   * Steps over one item under value()'s rules, building nothing but its map keys: for a caller
   * that passes the bytes on as they are and needs only to know they are sound. Throws exactly
   * where value() would.
   */
  skip(depth = 0): void {
    const start = this.pos;
    this.items++;
    this.head();
    switch (this.major) {
      case MAJOR_UINT:
      case MAJOR_NINT:
        return;
      case MAJOR_BYTES:
      case MAJOR_TEXT:
        this.skipString(this.arg, this.big, this.major, start);
        return;
      case MAJOR_ARRAY: {
        const count = this.checkCount(this.arg, this.big, 1, start);
        this.nesting(depth + 1, start);
        if (count >= 0) for (let i = 0; i < count; i++) this.skip(depth + 1);
        else
          for (let n = 0; !this.breakNext(); n++) {
            if (n >= MAX_COLLECTION_ENTRIES) this.tooMany(start);
            this.skip(depth + 1);
          }
        return;
      }
      case MAJOR_MAP: {
        const count = this.checkCount(this.arg, this.big, 2, start);
        this.nesting(depth + 1, start);
        if (count >= 0 && count <= SMALL_MAP && this.skipAsciiKeyedMap(count, depth)) return;
        const keys = (skippedKeys[depth] ??= []);
        let seen: Set<string> | undefined;
        for (let n = 0; count < 0 || n < count; n++) {
          if (count < 0) {
            if (this.breakNext()) break;
            if (n >= MAX_COLLECTION_ENTRIES) this.tooMany(start);
          }
          seen = this.uniqueKey(keys, n, seen);
          this.skip(depth + 1);
        }
        // Only the first SMALL_MAP keys are compared against; a big map's others are not kept alive.
        if (keys.length > SMALL_MAP) keys.length = SMALL_MAP;
        return;
      }
      case MAJOR_TAG:
        // Tags are few and small (bignums, tag 64): reading them is as cheap as stepping over.
        this.tagged(this.big ?? this.arg, depth + 1, start);
        return;
      default:
        // A float's bytes are all read by head(); only the other simple values can be refused.
        if (this.info < 25 || this.info > 27) this.simple(this.info, this.arg, start);
    }
  }

  /**
   * Steps over a small map's entries whose keys are all short ASCII text (nearly every map),
   * comparing keys as bytes: no key string is made. False, with nothing consumed, at the first
   * key of another form, for the caller to read the map with key strings.
   */
  private skipAsciiKeyedMap(count: number, depth: number): boolean {
    const b = this.bytes;
    const entries = this.pos;
    const keyHeads = (skippedKeyHeads[depth] ??= new Int32Array(SMALL_MAP));
    for (let n = 0; n < count; n++) {
      const keyAt = this.pos;
      // Past the end (truncated), the map is read with key strings, which says so in its words.
      const length = keyAt < b.length ? b[keyAt]! - 0x60 : -1;
      if (length < 0 || length >= 24 || keyAt + 1 + length > b.length || !isAscii(b, keyAt + 1, keyAt + 1 + length)) {
        this.pos = entries;
        return false;
      }
      if (sameText(b, keyAt, PROTO_KEY_BYTES, 0)) this.fail('map key "__proto__" is not allowed', keyAt);
      for (let j = 0; j < n; j++)
        if (sameText(b, keyAt, b, keyHeads[j]!)) this.fail(`duplicate map key ${JSON.stringify(this.ascii(keyAt + 1, length))}`, keyAt);
      keyHeads[n] = keyAt;
      this.pos = keyAt + 1 + length;
      this.skip(depth + 1);
    }
    return true;
  }

  /** Past a string's body; text is checked to be UTF-8. */
  private skipString(length: number, big: bigint | null, major: number, start: number): void {
    if (length === -1) {
      this.indefiniteString(major, start);
      return;
    }
    if (big !== null || length > this.remaining) this.fail(`truncated CBOR: a string of ${big ?? length} bytes declared, ${this.remaining} remain`, start);
    const from = this.pos;
    this.pos += length;
    if (major === MAJOR_TEXT && !isUtf8Text(this.bytes, from, from + length)) this.fail('invalid UTF-8 in a text string', start);
  }

  /**
   * Reads the next map key into keys[n], refusing "__proto__" and a key already among keys[0..n).
   * Small maps (nearly all) are checked by comparing; a big one by the set returned, which the
   * caller hands back for the next key.
   */
  private uniqueKey(keys: string[], n: number, seen: Set<string> | undefined): Set<string> | undefined {
    const keyAt = this.pos;
    const key = this.mapKey(keyAt);
    if (key === '__proto__') this.fail('map key "__proto__" is not allowed', keyAt);
    if (n < SMALL_MAP) {
      for (let j = 0; j < n; j++) if (keys[j] === key) this.fail(`duplicate map key ${JSON.stringify(key)}`, keyAt);
    } else {
      seen ??= new Set(keys.slice(0, n));
      if (seen.has(key)) this.fail(`duplicate map key ${JSON.stringify(key)}`, keyAt);
      seen.add(key);
    }
    keys[n] = key;
    return seen;
  }

  /** What an item is, with its article: "a float", "an unsigned integer". */
  private describe(major: number, info: number): string {
    if (major === MAJOR_SIMPLE) {
      if (info >= 25 && info <= 27) return 'a float';
      return info === 20 || info === 21 ? 'a boolean' : info === 22 ? 'null' : info === 31 ? 'a break' : 'a simple value';
    }
    return WITH_ARTICLE[major]!;
  }

  /** A declared count must fit in the bytes that remain (each entry takes at least one byte). */
  private checkCount(arg: number, big: bigint | null, bytesPerEntry: number, start: number): number {
    if (arg === -1) return -1;
    if (big !== null || arg > MAX_COLLECTION_ENTRIES) this.fail(`a collection of ${big ?? arg} entries exceeds the limit of ${MAX_COLLECTION_ENTRIES}`, start);
    if (arg * bytesPerEntry > this.remaining) this.fail(`truncated CBOR: ${arg} entries declared, only ${this.remaining} bytes remain`, start);
    return arg;
  }

  /** An indefinite-length collection past MAX_COLLECTION_ENTRIES entries. */
  private tooMany(start: number): never {
    return this.fail(`a collection of more than ${MAX_COLLECTION_ENTRIES} entries exceeds the limit`, start);
  }

  private nesting(depth: number, start: number): void {
    if (depth > this.maxNesting) this.fail(`nesting deeper than ${this.maxNesting} levels`, start);
  }

  private array(count: number, depth: number, start: number): unknown[] {
    this.nesting(depth, start);
    if (count >= 0) {
      const out = new Array<unknown>(count);
      for (let i = 0; i < count; i++) out[i] = this.value(depth);
      return out;
    }
    const out: unknown[] = [];
    while (!this.breakNext()) {
      if (out.length >= MAX_COLLECTION_ENTRIES) this.tooMany(start);
      out.push(this.value(depth));
    }
    return out;
  }

  /** Reads a map into a plain object; `start` is where the map starts (for messages). */
  private map(count: number, depth: number, start: number): Record<string, unknown> {
    this.nesting(depth, start);
    // Keys and values are gathered first and the object made in one step (see objectOf). Small
    // maps reuse this level's arrays; a big one gets its own, so none stay alive afterwards.
    const reuse = count >= 0 && count <= SMALL_MAP;
    const entries = reuse ? (mapEntries[depth] ??= { keys: [], values: [] }) : { keys: [] as string[], values: [] as unknown[] };
    const { keys, values } = entries;
    let seen: Set<string> | undefined;
    let n = 0;
    // A hash of the key sequence, from the key cache's slots; no shape once a key is not from it.
    let shape = 0;
    let shapeable = true;
    for (let i = 0; count < 0 || i < count; i++) {
      if (count < 0) {
        if (this.breakNext()) break;
        if (i >= MAX_COLLECTION_ENTRIES) this.tooMany(start);
      }
      seen = this.uniqueKey(keys, n, seen);
      if (this.keySlot < 0) shapeable = false;
      shape = (Math.imul(shape, 31) + this.keySlot) | 0;
      values[n] = this.value(depth);
      n++;
    }
    const out = objectOf(keys, values, n, shapeable ? shape : null);
    if (reuse) for (let i = 0; i < n; i++) values[i] = undefined; // not kept alive past this map
    return out;
  }

  /** The key cache's slot of the last key mapKey read, or -1 when it did not come from there. */
  private keySlot = -1;

  /** A map key: text only. */
  private mapKey(keyAt: number): string {
    this.keySlot = -1;
    const initial = this.bytes[keyAt];
    // Short definite keys (nearly all) come from the key cache: the same string object each
    // time, which is what makes the shape lookup in objectOf cheap.
    if (initial !== undefined && initial >= 0x60 && initial < 0x60 + 24 && keyAt + 1 + (initial - 0x60) <= this.bytes.length) {
      const key = this.cachedKey(keyAt + 1, initial - 0x60);
      if (key !== undefined) {
        this.pos = keyAt + 1 + (initial - 0x60);
        return key;
      }
    }
    if (this.peekMajor() !== MAJOR_TEXT)
      this.fail(`map keys must be text strings, got ${this.describe(this.bytes[this.pos]! >> 5, this.bytes[this.pos]! & 31)}`);
    return this.textString('a map key');
  }

  private tagged(tag: number | bigint, depth: number, start: number): unknown {
    this.nesting(depth, start);
    switch (tag) {
      case Tag.PositiveBignum:
      case Tag.NegativeBignum: {
        const magnitude = this.byteString(`the content of tag ${tag} (bignum)`);
        if (magnitude.length > MAX_BIGNUM_BYTES) this.fail(`a bignum of ${magnitude.length} bytes exceeds the limit of ${MAX_BIGNUM_BYTES}`, start);
        let n = 0n;
        for (const b of magnitude) n = (n << 8n) | BigInt(b);
        if (tag === Tag.NegativeBignum) n = -1n - n;
        return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
      }
      case Tag.Uint8Array:
        return this.byteString('the content of tag 64 (uint8 array)');
      case Tag.SelfDescribed:
        if (start !== 0) this.fail('tag 55799 (self-described CBOR) is allowed only around the whole item', start);
        return this.value(depth);
      default:
        return this.fail(`tag ${tag} is not allowed (allowed: ${TAGS_ALLOWED.join(', ')})`, start);
    }
  }

  private simple(info: number, arg: number, start: number): unknown {
    switch (info) {
      case 20:
        return false;
      case 21:
        return true;
      case 22:
        return null;
      case 23:
        return undefined;
      case 25:
        return this.float(halfToNumber(arg));
      case 26:
        this.view ??= new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
        return this.float(this.view.getFloat32(this.pos - 4));
      case 27:
        this.view ??= new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
        return this.float(this.view.getFloat64(this.pos - 8));
      case 31:
        return this.fail('unexpected break outside an indefinite-length item', start);
      case 24:
        if (arg < 32) this.fail(`simple value ${arg} in the two-byte form is not well-formed`, start);
        return this.fail(`unassigned simple value ${arg}`, start);
      default:
        return this.fail(`unassigned simple value ${info}`, start);
    }
  }

  /** The key at [from, from + length) from the cache, or undefined if it is not ASCII. */
  private cachedKey(from: number, length: number): string | undefined {
    const b = this.bytes;
    // FNV-1a over every byte: keys that share a length and ends (fluxar.type, fluxar.call)
    // must not keep evicting each other.
    let h = 0x811c9dc5;
    for (let i = from; i < from + length; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
    const slot = h >>> (32 - KEY_CACHE_BITS);
    const entry = keyCache[slot];
    this.keySlot = slot;
    if (entry !== undefined && entry.bytes.length === length) {
      let same = true;
      for (let i = 0; i < length; i++) {
        if (entry.bytes[i] !== b[from + i]) {
          same = false;
          break;
        }
      }
      if (same) return entry.key;
    }
    let key = this.ascii(from, length);
    if (key !== undefined) {
      key = internalized(key);
      keyCache[slot] = { bytes: b.slice(from, from + length), key };
    } else this.keySlot = -1;
    return key;
  }

  /** The text at [from, from + length) built in JS when it is all ASCII, else undefined. */
  private ascii(from: number, length: number): string | undefined {
    const b = this.bytes;
    let s = '';
    for (let i = from; i < from + length; i++) {
      const c = b[i]!;
      if (c >= 0x80) return undefined;
      s += String.fromCharCode(c);
    }
    return s;
  }

  private float(value: number): number | CborFloat {
    return this.markFloats ? new CborFloat(value) : value;
  }

  private stringBody(length: number, big: bigint | null, major: number, start: number): Uint8Array | string {
    if (length === -1) return this.indefiniteString(major, start);
    if (big !== null || length > this.remaining) this.fail(`truncated CBOR: a string of ${big ?? length} bytes declared, ${this.remaining} remain`, start);
    const from = this.pos;
    this.pos += length;
    if (major === MAJOR_BYTES) {
      // Buffers, as cbor-x gives, but made directly: subarray goes through the species
      // constructor, which cost a tenth of a fluxMsg decode.
      const view = Buffer.from(this.bytes.buffer, this.bytes.byteOffset + from, length);
      return this.copyBuffers ? Buffer.from(view) : view;
    }
    return this.text(from, length, start);
  }

  /** Chunks of definite length and the same major type, up to a break. */
  private indefiniteString(major: number, start: number): Uint8Array | string {
    const chunks: Uint8Array[] = [];
    let total = 0;
    while (!this.breakNext()) {
      const chunkAt = this.pos;
      this.head();
      const length = this.arg;
      if (this.major !== major || length === -1)
        this.fail(`a chunk of an indefinite-length ${MAJOR_NAMES[major]} must be a definite-length ${MAJOR_NAMES[major]}`, chunkAt);
      if (this.big !== null || length > this.remaining)
        this.fail(`truncated CBOR: a chunk of ${this.big ?? length} bytes declared, ${this.remaining} remain`, chunkAt);
      chunks.push(this.bytes.subarray(this.pos, this.pos + length));
      total += length;
      this.pos += length;
    }
    const joined = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      joined.set(c, at);
      at += c.length;
    }
    if (major === MAJOR_BYTES) return Buffer.from(joined.buffer, 0, total);
    // RFC 8949 3.2.3: each chunk of a text string is itself valid UTF-8.
    for (const c of chunks) if (!isUtf8(c)) this.fail('invalid UTF-8 in a text string chunk', start);
    return Buffer.from(joined.buffer, 0, total).toString('utf8');
  }

  private text(from: number, length: number, start: number): string {
    // Short ASCII text (targets, countries, addresses, most values) repeats from message to
    // message: the cache hands back the same string without building it.
    if (length <= CACHED_TEXT_BYTES) return this.cachedKey(from, length) ?? this.utf8(from, length, start);
    return this.utf8(from, length, start);
  }

  private utf8(from: number, length: number, start: number): string {
    // One Buffer view of the input per reader; a string is then one native call, without a
    // view of its own. Text that is all ASCII (ids in hex, names) needs no UTF-8 check.
    const all = (this.buffer ??= Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength));
    const to = from + length;
    if (isAscii(all, from, to)) return all.toString('latin1', from, to);
    if (!isUtf8(all.subarray(from, to))) this.fail('invalid UTF-8 in a text string', start);
    return all.toString('utf8', from, to);
  }
  private buffer: Buffer | undefined;
}

/**
 * The engine's own copy of a string (the one its property names use): comparing two of them is
 * comparing pointers, and a built-up string stops being a chain of pieces. For the key cache.
 */
function internalized(s: string): string {
  return Object.keys({ [s]: 0 })[0] ?? s;
}

/** Maps up to this many entries look for a repeated key by comparing; bigger ones use a set. */
const SMALL_MAP = 16;
/** The keys and values of the map being read at each nesting level, reused from map to map. */
const mapEntries: Array<{ keys: string[]; values: unknown[] }> = [];
/** The keys of the map being stepped over at each nesting level (skip()), reused likewise. */
const skippedKeys: string[][] = [];
/** Where the keys of the small map being stepped over at each nesting level start (skipAsciiKeyedMap). */
const skippedKeyHeads: Int32Array[] = [];

/** Whether bytes [from, to) are all 7-bit ASCII. */
function isAscii(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i]! >= 0x80) return false;
  return true;
}

/** Whether bytes [from, to) are UTF-8: ASCII (nearly all text) by a loop, the rest by isUtf8. */
export function isUtf8Text(b: Uint8Array, from: number, to: number): boolean {
  return isAscii(b, from, to) || isUtf8(b.subarray(from, to));
}

/** Whether the short text items (heads 0x60 to 0x77) at a[aAt] and b[bAt] are the same: head and bytes. */
function sameText(a: Uint8Array, aAt: number, b: Uint8Array, bAt: number): boolean {
  const end = a[aAt]! - 0x60;
  if (b[bAt] !== a[aAt]) return false;
  for (let i = 1; i <= end; i++) if (a[aAt + i] !== b[bAt + i]) return false;
  return true;
}

/**
 * Objects are made by shape. Adding keys one by one to `{}` makes V8 look each one up in its
 * transition tree through a megamorphic store (about 60 ns a key, most of a fluxMsg's decode);
 * an object literal with the same keys is one allocation (about 25 ns for 8 keys). So a sequence
 * of keys seen twice gets a small function returning that literal, found by a hash of the key
 * cache's slots and confirmed key by key. The table and the number of functions are bounded,
 * since the keys come from outside; past the bounds objects are made key by key as before. Key
 * names reach the function's source only through JSON.stringify (a string literal), and
 * "__proto__" never reaches it (map() refuses it).
 */
interface Shape {
  keys: string[];
  make: ((values: unknown[]) => Record<string, unknown>) | undefined;
}
const MAX_SHAPE_KEYS = 32;
const SHAPE_BITS = 12;
const MAX_SHAPES = 1024;
const shapeTable: Array<Shape | undefined> = new Array(1 << SHAPE_BITS);
let shapesMade = 0;

/** `hash` identifies the key sequence; null when it has no shape to look up. */
function objectOf(keys: string[], values: unknown[], n: number, hash: number | null): Record<string, unknown> {
  if (n === 0) return {};
  if (hash !== null && n <= MAX_SHAPE_KEYS) {
    const slot = Math.imul(hash, 2654435761) >>> (32 - SHAPE_BITS);
    const shape = shapeTable[slot];
    let same = shape !== undefined && shape.keys.length === n;
    for (let i = 0; same && i < n; i++) same = shape!.keys[i] === keys[i];
    if (same) {
      if (shape!.make !== undefined) return shape!.make(values);
      if (shapesMade < MAX_SHAPES) {
        shapesMade++;
        const fields = shape!.keys.map((k, i) => `${JSON.stringify(k)}: v[${i}]`);
        try {
          shape!.make = new Function('v', `return { ${fields.join(', ')} };`) as Shape['make'];
          return shape!.make!(values);
        } catch {
          // Code generation is off in this process (--disallow-code-generation-from-strings):
          // objects are made key by key from now on.
          shapesMade = MAX_SHAPES;
        }
      }
    } else shapeTable[slot] = { keys: keys.slice(0, n), make: undefined };
  }
  const out: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) out[keys[i]!] = values[i];
  return out;
}

/** IEEE 754 half precision (RFC 8949 appendix D). */
function halfToNumber(half: number): number {
  const exp = (half >> 10) & 0x1f;
  const mant = half & 0x3ff;
  let value: number;
  if (exp === 0) value = mant * 2 ** -24;
  else if (exp !== 31) value = (mant + 1024) * 2 ** (exp - 25);
  else value = mant === 0 ? Infinity : NaN;
  return half & 0x8000 ? -value : value;
}

/** Decodes exactly one item spanning all of `bytes` under the strict profile. */
export function decodeStrict(bytes: Uint8Array, options?: StrictDecodeOptions): unknown {
  const reader = new StrictReader(bytes, options);
  const value = reader.value();
  reader.end();
  return value;
}

/** A value decoded with markFloats, with its floats turned back into numbers. */
export function unmarkFloats(value: unknown): unknown {
  if (value instanceof CborFloat) return value.value;
  if (Array.isArray(value)) return value.map(unmarkFloats);
  if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = unmarkFloats(v);
    return out;
  }
  return value;
}

/** A decoded value in a few words, for error messages: never throws (bigints, cycles, bytes). */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}...` : value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value === null || value === undefined) return String(value);
  if (value instanceof CborFloat) return `float ${value.value}`;
  if (value instanceof Uint8Array) return `bytes(${value.length})`;
  if (Array.isArray(value)) return `[${value.slice(0, 8).map(describeValue).join(', ')}${value.length > 8 ? ', ...' : ''}]`;
  return 'a map';
}
