// CBOR (RFC 8949) reading and writing for gears: definite lengths, shortest heads.

export const MAJOR_UINT: u8 = 0;
export const MAJOR_NEGINT: u8 = 1;
export const MAJOR_BYTES: u8 = 2;
export const MAJOR_TEXT: u8 = 3;
export const MAJOR_ARRAY: u8 = 4;
export const MAJOR_MAP: u8 = 5;
export const MAJOR_TAG: u8 = 6;
export const MAJOR_SIMPLE: u8 = 7;

/** Set when a Reader met bytes it cannot read; the reader then returns empty values. */
export class CborError {
  constructor(public message: string) {}
}

/** A growable output buffer. */
export class Writer {
  buf: Uint8Array;
  pos: i32 = 0;

  constructor(capacity: i32 = 256) {
    this.buf = new Uint8Array(capacity);
  }

  private ensure(extra: i32): void {
    if (this.pos + extra <= this.buf.length) return;
    let size = this.buf.length << 1;
    while (size < this.pos + extra) size <<= 1;
    const next = new Uint8Array(size);
    memory.copy(next.dataStart, this.buf.dataStart, this.pos);
    this.buf = next;
  }

  byte(b: u8): void {
    this.ensure(1);
    unchecked((this.buf[this.pos++] = b));
  }

  head(major: u8, arg: u64): void {
    const m = major << 5;
    this.ensure(9);
    const p = this.buf.dataStart + this.pos;
    if (arg < 24) {
      store<u8>(p, m | <u8>arg);
      this.pos += 1;
    } else if (arg < 0x100) {
      store<u8>(p, m | 24);
      store<u8>(p + 1, <u8>arg);
      this.pos += 2;
    } else if (arg < 0x10000) {
      store<u8>(p, m | 25);
      store<u16>(p + 1, bswap<u16>(<u16>arg));
      this.pos += 3;
    } else if (arg < 0x100000000) {
      store<u8>(p, m | 26);
      store<u32>(p + 1, bswap<u32>(<u32>arg));
      this.pos += 5;
    } else {
      store<u8>(p, m | 27);
      store<u64>(p + 1, bswap<u64>(arg));
      this.pos += 9;
    }
  }

  int(v: i64): void {
    if (v >= 0) this.head(MAJOR_UINT, <u64>v);
    else this.head(MAJOR_NEGINT, <u64>(-1 - v));
  }

  float(v: f64): void {
    this.ensure(9);
    const p = this.buf.dataStart + this.pos;
    store<u8>(p, 0xfb);
    store<u64>(p + 1, bswap<u64>(reinterpret<u64>(v)));
    this.pos += 9;
  }

  bool(v: bool): void {
    this.byte(v ? 0xf5 : 0xf4);
  }

  nil(): void {
    this.byte(0xf6);
  }

  rawBytes(ptr: usize, len: i32): void {
    this.ensure(len);
    memory.copy(this.buf.dataStart + this.pos, ptr, len);
    this.pos += len;
  }

  bytes(b: Uint8Array): void {
    this.head(MAJOR_BYTES, <u64>b.length);
    this.rawBytes(b.dataStart, b.length);
  }

  text(s: string): void {
    const len = String.UTF8.byteLength(s);
    this.head(MAJOR_TEXT, <u64>len);
    this.ensure(len);
    String.UTF8.encodeUnsafe(changetype<usize>(s), s.length, this.buf.dataStart + this.pos);
    this.pos += len;
  }

  /** The written bytes, in a buffer of their own. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** Reads CBOR items from a buffer. Errors are recorded, not thrown (AssemblyScript has no catch). */
export class Reader {
  pos: i32 = 0;
  error: CborError | null = null;

  constructor(public buf: Uint8Array) {}

  fail(message: string): void {
    if (this.error == null) this.error = new CborError(message);
    this.pos = this.buf.length;
  }

  get ok(): bool {
    return this.error == null;
  }

  atEnd(): bool {
    return this.pos >= this.buf.length;
  }

  peekMajor(): u8 {
    if (this.pos >= this.buf.length) return 0xff;
    return unchecked(this.buf[this.pos]) >> 5;
  }

  peekByte(): u8 {
    if (this.pos >= this.buf.length) return 0xff;
    return unchecked(this.buf[this.pos]);
  }

  /** The argument of the head at pos (major in `lastMajor`); advances past the head. */
  lastMajor: u8 = 0;
  lastInfo: u8 = 0;
  head(): u64 {
    if (this.pos >= this.buf.length) {
      this.fail('truncated CBOR');
      return 0;
    }
    const first = unchecked(this.buf[this.pos++]);
    this.lastMajor = first >> 5;
    const info = first & 0x1f;
    this.lastInfo = info;
    if (info < 24) return <u64>info;
    let n: i32 = 0;
    if (info == 24) n = 1;
    else if (info == 25) n = 2;
    else if (info == 26) n = 4;
    else if (info == 27) n = 8;
    else {
      this.fail(info == 31 ? 'indefinite-length CBOR is not supported' : 'reserved CBOR head');
      return 0;
    }
    if (this.pos + n > this.buf.length) {
      this.fail('truncated CBOR');
      return 0;
    }
    const p = this.buf.dataStart + this.pos;
    this.pos += n;
    if (n == 1) return <u64>load<u8>(p);
    if (n == 2) return <u64>bswap<u16>(load<u16>(p));
    if (n == 4) return <u64>bswap<u32>(load<u32>(p));
    return bswap<u64>(load<u64>(p));
  }

  /** Length of a byte or text string whose head was just read, checked against the buffer. */
  private span(arg: u64): i32 {
    if (arg > <u64>(this.buf.length - this.pos)) {
      this.fail('truncated CBOR string');
      return 0;
    }
    return <i32>arg;
  }

  text(): string {
    const arg = this.head();
    if (this.lastMajor != MAJOR_TEXT) {
      this.fail('expected text');
      return '';
    }
    const len = this.span(arg);
    const s = String.UTF8.decodeUnsafe(this.buf.dataStart + this.pos, len);
    this.pos += len;
    return s;
  }

  bytes(): Uint8Array {
    const arg = this.head();
    if (this.lastMajor != MAJOR_BYTES) {
      this.fail('expected bytes');
      return new Uint8Array(0);
    }
    const len = this.span(arg);
    const out = this.buf.slice(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  /** An integer (major 0 or 1). */
  int(): i64 {
    const arg = this.head();
    if (this.lastMajor == MAJOR_UINT) return <i64>arg;
    if (this.lastMajor == MAJOR_NEGINT) return -1 - <i64>arg;
    this.fail('expected an integer');
    return 0;
  }

  /** True (and consumed) when the next item is null or undefined. */
  nil(): bool {
    const b = this.peekByte();
    if (b == 0xf6 || b == 0xf7) {
      this.pos++;
      return true;
    }
    return false;
  }

  /** Skips one whole item. */
  skip(): void {
    const arg = this.head();
    if (!this.ok) return;
    const major = this.lastMajor;
    if (major == MAJOR_BYTES || major == MAJOR_TEXT) this.pos += this.span(arg);
    else if (major == MAJOR_ARRAY) for (let i: u64 = 0; i < arg && this.ok; i++) this.skip();
    else if (major == MAJOR_MAP) for (let i: u64 = 0; i < arg * 2 && this.ok; i++) this.skip();
    else if (major == MAJOR_TAG) this.skip();
  }
}
