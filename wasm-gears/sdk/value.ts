// Any CBOR value a fluxMsg's data may hold.
import { MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGINT, MAJOR_SIMPLE, MAJOR_TAG, MAJOR_TEXT, MAJOR_UINT, Reader, Writer } from './cbor';

export enum Kind {
  Null,
  Bool,
  Int,
  Float,
  Text,
  Bytes,
  Array,
  Map,
}

const MAX_DEPTH = 64;

export class Value {
  kind: Kind = Kind.Null;
  b: bool = false;
  i: i64 = 0;
  f: f64 = 0;
  s: string = '';
  bin: Uint8Array | null = null;
  arr: Array<Value> | null = null;
  map: Map<string, Value> | null = null;

  static nil(): Value {
    return new Value();
  }
  static bool(v: bool): Value {
    const x = new Value();
    x.kind = Kind.Bool;
    x.b = v;
    return x;
  }
  static int(v: i64): Value {
    const x = new Value();
    x.kind = Kind.Int;
    x.i = v;
    return x;
  }
  static float(v: f64): Value {
    const x = new Value();
    x.kind = Kind.Float;
    x.f = v;
    return x;
  }
  static text(v: string): Value {
    const x = new Value();
    x.kind = Kind.Text;
    x.s = v;
    return x;
  }
  static bytes(v: Uint8Array): Value {
    const x = new Value();
    x.kind = Kind.Bytes;
    x.bin = v;
    return x;
  }
  static array(v: Array<Value>): Value {
    const x = new Value();
    x.kind = Kind.Array;
    x.arr = v;
    return x;
  }
  static map(v: Map<string, Value>): Value {
    const x = new Value();
    x.kind = Kind.Map;
    x.map = v;
    return x;
  }

  get isNull(): bool {
    return this.kind == Kind.Null;
  }

  /** Numbers as f64 (integers converted); `fallback` for anything else. */
  asFloat(fallback: f64 = 0): f64 {
    if (this.kind == Kind.Float) return this.f;
    if (this.kind == Kind.Int) return <f64>this.i;
    return fallback;
  }

  /** Integers, and floats truncated; `fallback` for anything else. */
  asInt(fallback: i64 = 0): i64 {
    if (this.kind == Kind.Int) return this.i;
    if (this.kind == Kind.Float) return <i64>this.f;
    return fallback;
  }

  asString(fallback: string = ''): string {
    return this.kind == Kind.Text ? this.s : fallback;
  }

  asBool(fallback: bool = false): bool {
    return this.kind == Kind.Bool ? this.b : fallback;
  }

  write(w: Writer): void {
    switch (this.kind) {
      case Kind.Null:
        w.nil();
        break;
      case Kind.Bool:
        w.bool(this.b);
        break;
      case Kind.Int:
        w.int(this.i);
        break;
      case Kind.Float:
        w.float(this.f);
        break;
      case Kind.Text:
        w.text(this.s);
        break;
      case Kind.Bytes:
        w.bytes(this.bin!);
        break;
      case Kind.Array: {
        const a = this.arr!;
        w.head(MAJOR_ARRAY, <u64>a.length);
        for (let i = 0; i < a.length; i++) unchecked(a[i]).write(w);
        break;
      }
      case Kind.Map: {
        writeMap(w, this.map!);
        break;
      }
    }
  }

  static read(r: Reader, depth: i32 = 0): Value {
    if (depth > MAX_DEPTH) {
      r.fail('CBOR nested too deep');
      return Value.nil();
    }
    const first = r.peekByte();
    const major = first >> 5;
    if (major == MAJOR_SIMPLE) {
      r.pos++;
      const info = first & 0x1f;
      if (info == 20) return Value.bool(false);
      if (info == 21) return Value.bool(true);
      if (info == 22 || info == 23) return Value.nil();
      const p = r.buf.dataStart + r.pos;
      if (info == 25 && r.pos + 2 <= r.buf.length) {
        r.pos += 2;
        return Value.float(halfToF64(bswap<u16>(load<u16>(p))));
      }
      if (info == 26 && r.pos + 4 <= r.buf.length) {
        r.pos += 4;
        return Value.float(<f64>reinterpret<f32>(bswap<u32>(load<u32>(p))));
      }
      if (info == 27 && r.pos + 8 <= r.buf.length) {
        r.pos += 8;
        return Value.float(reinterpret<f64>(bswap<u64>(load<u64>(p))));
      }
      r.fail('unsupported CBOR simple value');
      return Value.nil();
    }
    if (major == MAJOR_UINT || major == MAJOR_NEGINT) return Value.int(r.int());
    if (major == MAJOR_BYTES) return Value.bytes(r.bytes());
    if (major == MAJOR_TEXT) return Value.text(r.text());
    if (major == MAJOR_TAG) {
      r.head();
      return Value.read(r, depth + 1); // tags are read through: their content is the value
    }
    const start = r.pos;
    const n = r.head();
    if (major == MAJOR_ARRAY) {
      if (n > <u64>(r.buf.length - r.pos)) {
        r.fail('CBOR array longer than its buffer');
        return Value.nil();
      }
      const a = new Array<Value>();
      for (let i: u64 = 0; i < n && r.ok; i++) a.push(Value.read(r, depth + 1));
      return Value.array(a);
    }
    // MAJOR_MAP: the head is read again by readMapInto.
    r.pos = start;
    const m = new Map<string, Value>();
    readMapInto(r, m, depth);
    return Value.map(m);
  }
}

/** Reads a CBOR map with text keys into `m`. */
export function readMapInto(r: Reader, m: Map<string, Value>, depth: i32): void {
  const n = r.head();
  if (r.lastMajor != MAJOR_MAP) {
    r.fail('expected a map');
    return;
  }
  if (n > <u64>(r.buf.length - r.pos)) {
    r.fail('CBOR map longer than its buffer');
    return;
  }
  for (let i: u64 = 0; i < n && r.ok; i++) {
    const k = r.text();
    m.set(k, Value.read(r, depth + 1));
  }
}

export function writeMap(w: Writer, m: Map<string, Value>): void {
  const keys = m.keys();
  w.head(MAJOR_MAP, <u64>keys.length);
  for (let i = 0; i < keys.length; i++) {
    const k = unchecked(keys[i]);
    w.text(k);
    m.get(k).write(w);
  }
}

function halfToF64(h: u16): f64 {
  const exp = (h >> 10) & 0x1f;
  const mant = <f64>(h & 0x3ff);
  let v: f64;
  if (exp == 0) v = mant * Math.pow(2, -24);
  else if (exp != 31) v = (mant + 1024) * Math.pow(2, <f64>exp - 25);
  else v = mant == 0 ? Infinity : NaN;
  return h & 0x8000 ? -v : v;
}

export { MAJOR_BYTES, MAJOR_TEXT };
