import { encodeCbor, isCborMap } from './profile.js';

export const MAJOR_UINT = 0;
export const MAJOR_NINT = 1;
export const MAJOR_BYTES = 2;
export const MAJOR_TEXT = 3;
export const MAJOR_ARRAY = 4;
export const MAJOR_MAP = 5;
export const MAJOR_TAG = 6;
export const MAJOR_SIMPLE = 7;
const CBOR_FALSE = 0xf4;
const CBOR_TRUE = 0xf5;
const CBOR_NULL = 0xf6;
const CBOR_UNDEFINED = 0xf7;
const FLOAT64 = 0xfb;
const TWO_32 = 0x1_0000_0000;
const TWO_64 = 1n << 64n;
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const BIG_WORD_BYTES = new Uint8Array(8);
const BIG_WORD = new DataView(BIG_WORD_BYTES.buffer);
/** Buffers handOff() remembers as lent, to take back. */
const MAX_LENT = 16;
/** Buffers given back and kept for reuse, at most. */
const MAX_SPARES = 16;
/** Byte strings up to this long are copied in JavaScript (measured cheaper than a native set). */
const RAW_IN_JS = 8;
/** Text up to this many UTF-16 units is checked for ASCII and written in JS: cheaper than a native call. */
const ASCII_IN_JS = 64;

/**
 * A hand-written CBOR encoder for the shapes on the hot path (the FLUXAR envelope, the fluxMsg
 * map, the data of a message): heads, text, numbers, byte strings, arrays and maps written
 * straight into one reusable buffer, in JavaScript with no per-item allocation. Values of any
 * other kind go through cbor-x (./profile.ts) and are spliced in. The bytes are what cbor-x
 * writes for the same value (shortest heads; integers beyond 32 bits as float64 and bigints in
 * the 8-byte form, as cbor-x does; a property test holds it to that), at a fraction of the cost.
 *
 * One writer per thread is enough: encode, use or copy the bytes, then reset.
 */
export class CborWriter {
  buf: Buffer;
  pos = 0;
  /**
   * Values written so far that read back as something else (a bigint a strict decode returns as
   * a number, -0, a lone surrogate, an object cbor-x encodes): only ever counts up, so a caller
   * compares it before and after what it writes.
   */
  inexact = 0;

  constructor(initialBytes = 16 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  /** Starts over, leaving `room` bytes free at the front (for a frame header). */
  reset(room = 0): this {
    this.pos = room;
    return this;
  }

  /** The bytes written so far (a view: valid until the next reset). */
  view(from = 0): Buffer {
    return this.buf.subarray(from, this.pos);
  }

  /** A copy of the bytes written so far, in a buffer of its own (small ones from Node's pool). */
  take(from = 0): Buffer {
    const out = Buffer.allocUnsafe(this.pos - from);
    this.buf.copy(out, 0, from, this.pos);
    return out;
  }

  /**
   * The bytes written so far, handed over without a copy. The writer continues in a new buffer
   * sized for a flush like this one, up to `maxBytes` (a burst does not keep a large buffer).
   */
  handOff(maxBytes: number): Buffer {
    const out = this.buf.subarray(0, this.pos);
    // Sizes in powers of two, so that a buffer given back fits the next flush of its kind.
    const want = Math.min(2 ** Math.ceil(Math.log2(this.pos + (this.pos >>> 2))), maxBytes);
    this.lent.push(this.buf.buffer as ArrayBuffer);
    if (this.lent.length > MAX_LENT) this.lent.shift();
    // A buffer given back is reused: no new external memory for the GC to chase, pages mapped.
    let spare = this.spares.pop();
    while (spare !== undefined && spare.length < want) spare = this.spares.pop();
    this.buf = spare ?? Buffer.allocUnsafe(want);
    this.pos = 0;
    return out;
  }

  /**
   * Gives back a buffer handOff() returned, once whoever took it is done with it (a socket wrote
   * it): the next handOff continues in it. Anything else is ignored.
   */
  recycle(bytes: Uint8Array): void {
    const at = this.lent.indexOf(bytes.buffer as ArrayBuffer);
    if (at === -1) return;
    this.lent.splice(at, 1);
    if (this.spares.length < MAX_SPARES) this.spares.push(Buffer.from(bytes.buffer, 0, bytes.buffer.byteLength));
  }

  /** Lets go of the spare buffers (a burst is over: an idle connection holds none). */
  dropSpares(): void {
    this.spares.length = 0;
  }

  /**
   * Buffers handed off and not given back yet (the most recent MAX_LENT: as many as a socket's
   * backlog holds flushes): only these are taken back.
   */
  private readonly lent: ArrayBuffer[] = [];
  private readonly spares: Buffer[] = [];

  /** Leaves `n` bytes unwritten (filled in later through `buf`); returns where they start. */
  skip(n: number): number {
    this.ensure(n);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  /** How many bytes head() writes for `argument`. */
  static headBytes(argument: number): number {
    return argument < 24 ? 1 : argument < 0x100 ? 2 : argument < 0x10000 ? 3 : argument < TWO_32 ? 5 : 9;
  }

  /** A head: major type and argument (a non-negative safe integer). */
  head(major: number, argument: number): void {
    this.ensure(9);
    const b = this.buf;
    const m = major << 5;
    if (argument < 24) b[this.pos++] = m | argument;
    else if (argument < 0x100) {
      b[this.pos++] = m | 24;
      b[this.pos++] = argument;
    } else if (argument < 0x10000) {
      b[this.pos++] = m | 25;
      b[this.pos++] = argument >>> 8;
      b[this.pos++] = argument & 0xff;
    } else if (argument < TWO_32) {
      b[this.pos++] = m | 26;
      b.writeUInt32BE(argument, this.pos);
      this.pos += 4;
    } else {
      b[this.pos++] = m | 27;
      b.writeUInt32BE(Math.floor(argument / TWO_32), this.pos);
      b.writeUInt32BE(argument % TWO_32, this.pos + 4);
      this.pos += 8;
    }
  }

  null(): void {
    this.ensure(1);
    this.buf[this.pos++] = CBOR_NULL;
  }

  /** A bigint that fits 64 bits, signed or not (an int64 timestamp, say): always the 8-byte form, as cbor-x writes it. */
  bigint(n: bigint): void {
    if (n <= -TWO_64 || n >= TWO_64) throw new RangeError(`${n} does not fit a CBOR integer head`);
    this.ensure(9);
    const b = this.buf;
    b[this.pos++] = ((n >= 0n ? MAJOR_UINT : MAJOR_NINT) << 5) | 27;
    // Through a DataView and a copy: Buffer's writeBigUInt64BE costs several times more, and
    // every message has a ts.
    BIG_WORD.setBigUint64(0, n >= 0n ? n : -1n - n);
    let at = this.pos;
    for (let i = 0; i < 8; i++) b[at++] = BIG_WORD_BYTES[i]!;
    this.pos = at;
  }

  text(s: string): void {
    const length = s.length;
    if (length <= ASCII_IN_JS) {
      // Written as ASCII (nearly every key and short value: the length is the byte count) in
      // one pass that checks as it goes; a character past ASCII sends it to the UTF-8 path.
      const headAt = this.pos;
      this.head(MAJOR_TEXT, length);
      this.ensure(length);
      const b = this.buf;
      let at = this.pos;
      let bits = 0;
      for (let i = 0; i < length; i++) {
        const unit = s.charCodeAt(i);
        bits |= unit;
        b[at++] = unit;
      }
      if (bits < 0x80) {
        this.pos = at;
        return;
      }
      this.pos = headAt;
    }
    // A lone surrogate is written as U+FFFD: it reads back as another string.
    if (!s.isWellFormed()) this.inexact++;
    const bytes = Buffer.byteLength(s, 'utf8');
    this.head(MAJOR_TEXT, bytes);
    this.ensure(bytes);
    this.pos += this.buf.write(s, this.pos, bytes, 'utf8');
  }

  bytes(b: Uint8Array): void {
    this.head(MAJOR_BYTES, b.length);
    this.raw(b);
  }

  /** Bytes that are already CBOR, spliced in as they are. */
  raw(b: Uint8Array): void {
    const n = b.length;
    this.ensure(n);
    // A native copy costs a call; a few bytes (a map key, an id) are cheaper copied here.
    if (n <= RAW_IN_JS) {
      const buf = this.buf;
      let at = this.pos;
      for (let i = 0; i < n; i++) buf[at++] = b[i]!;
    } else this.buf.set(b, this.pos);
    this.pos += n;
  }

  /**
   * Any value. Text, numbers, booleans, null, bigints of 64 bits, byte strings, arrays and plain
   * maps (what a message's data holds) are written here, as cbor-x would write them; anything
   * else is encoded by cbor-x and spliced in.
   */
  value(v: unknown): void {
    switch (typeof v) {
      case 'string':
        return this.text(v);
      case 'number':
        // Integers of 32 bits as integers, everything else as a float64: what cbor-x writes.
        if (Number.isInteger(v) && v >= -TWO_32 && v < TWO_32) {
          if (v === 0 && 1 / v < 0) this.inexact++; // -0 is written as 0
          return v >= 0 ? this.head(MAJOR_UINT, v === 0 ? 0 : v) : this.head(MAJOR_NINT, -1 - v);
        }
        this.ensure(9);
        this.buf[this.pos++] = FLOAT64;
        this.buf.writeDoubleBE(v, this.pos);
        this.pos += 8;
        return;
      case 'boolean':
        this.ensure(1);
        this.buf[this.pos++] = v ? CBOR_TRUE : CBOR_FALSE;
        return;
      case 'undefined':
        this.ensure(1);
        this.buf[this.pos++] = CBOR_UNDEFINED;
        return;
      case 'bigint':
        if (v > -TWO_64 && v < TWO_64) {
          // A strict decode gives back a number when the value is a safe integer.
          if (v >= MIN_SAFE && v <= MAX_SAFE) this.inexact++;
          return this.bigint(v);
        }
        break;
      case 'object':
        if (v === null) return this.null();
        if (v instanceof Uint8Array) return this.bytes(v);
        if (Array.isArray(v)) {
          this.head(MAJOR_ARRAY, v.length);
          for (let i = 0; i < v.length; i++) this.value(v[i]);
          return;
        }
        if (isCborMap(v)) {
          this.map(v);
          return;
        }
        break;
    }
    this.inexact++;
    this.raw(encodeCbor(v));
  }

  /** A plain object as a map with text keys, in the object's key order. Returns its entry count. */
  map(m: Record<string, unknown>): number {
    let entries = 0;
    for (const _ in m) entries++;
    this.head(MAJOR_MAP, entries);
    for (const key in m) {
      this.text(key);
      this.value(m[key]);
    }
    return entries;
  }
}
