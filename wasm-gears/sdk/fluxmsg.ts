// fluxrig's message, field for field, and its CBOR form (the same map fluxrig-ts and fluxrig write).
import { MAJOR_ARRAY, MAJOR_MAP, MAJOR_TEXT, Reader, Writer } from './cbor';
import { Value } from './value';
import { WireMap } from './wire-map';

export class Hop {
  constructor(
    public g: Uint8Array,
    public p: Uint8Array,
    public t: i64,
  ) {}
}

export class FluxMsg {
  id: Uint8Array;
  refId: Uint8Array | null = null;
  trace: string = '';
  srcId: Uint8Array | null = null;
  /**
   * Meta and data stay the CBOR they arrived as until something asks for the whole map (see
   * WireMap): most gears read a few fields and add one or two.
   */
  private metaEntries: WireMap<string>;
  private dataEntries: WireMap<Value>;
  flags: u32 = 0;
  raw: Uint8Array | null = null;
  path: Array<Hop>;
  ts: i64 = 0;

  /**
   * A new, empty message. The decoder passes `blank` to skip allocations it would replace at
   * once (allocation is most of a gear's cost per message).
   */
  constructor(blank: bool = false) {
    this.id = new Uint8Array(blank ? 0 : 16);
    this.metaEntries = new WireMap<string>(blank);
    this.dataEntries = new WireMap<Value>(blank);
    this.path = new Array<Hop>();
  }

  /** The meta entries, decoded from the wire on first use. */
  get meta(): Map<string, string> {
    return this.metaEntries.all();
  }
  set meta(m: Map<string, string>) {
    this.metaEntries.replace(m);
  }

  /** The data fields, decoded from the wire on first use. */
  get data(): Map<string, Value> {
    return this.dataEntries.all();
  }
  set data(m: Map<string, Value>) {
    this.dataEntries.replace(m);
  }

  /** Meta as received, for the decoder: the map item, not yet read. */
  receiveMeta(wire: Uint8Array): void {
    this.metaEntries.receive(wire);
  }
  /** Data as received, for the decoder: the map item, not yet read. */
  receiveData(wire: Uint8Array): void {
    this.dataEntries.receive(wire);
  }

  /** A copy sharing nothing mutable with this message (for fan-out). */
  clone(): FluxMsg {
    const m = new FluxMsg();
    m.id = this.id.slice();
    m.refId = this.refId;
    m.trace = this.trace;
    m.srcId = this.srcId;
    const mk = this.meta.keys();
    for (let i = 0; i < mk.length; i++) m.meta.set(mk[i], this.meta.get(mk[i]));
    const dk = this.data.keys();
    for (let i = 0; i < dk.length; i++) m.data.set(dk[i], this.data.get(dk[i]));
    m.flags = this.flags;
    m.raw = this.raw;
    m.path = this.path.slice();
    m.ts = this.ts;
    return m;
  }

  // Convenience accessors for data fields.
  has(key: string): bool {
    return this.dataEntries.get(key) != null;
  }
  get(key: string): Value {
    const v = this.dataEntries.get(key);
    return v == null ? Value.nil() : v;
  }
  getFloat(key: string, fallback: f64 = 0): f64 {
    const v = this.dataEntries.get(key);
    return v == null ? fallback : v.asFloat(fallback);
  }
  getInt(key: string, fallback: i64 = 0): i64 {
    const v = this.dataEntries.get(key);
    return v == null ? fallback : v.asInt(fallback);
  }
  getString(key: string, fallback: string = ''): string {
    const v = this.dataEntries.get(key);
    return v == null ? fallback : v.asString(fallback);
  }
  getBool(key: string, fallback: bool = false): bool {
    const v = this.dataEntries.get(key);
    return v == null ? fallback : v.asBool(fallback);
  }
  set(key: string, value: Value): FluxMsg {
    this.dataEntries.set(key, value);
    return this;
  }
  setFloat(key: string, v: f64): FluxMsg {
    return this.set(key, Value.float(v));
  }
  setInt(key: string, v: i64): FluxMsg {
    return this.set(key, Value.int(v));
  }
  setString(key: string, v: string): FluxMsg {
    return this.set(key, Value.text(v));
  }
  setBool(key: string, v: bool): FluxMsg {
    return this.set(key, Value.bool(v));
  }
  getMeta(key: string, fallback: string = ''): string {
    const v = this.metaEntries.get(key);
    return v == null ? fallback : v;
  }
  setMeta(key: string, v: string): FluxMsg {
    this.metaEntries.set(key, v);
    return this;
  }
  /** Writes meta and data, for encodeFluxMsg. */
  writeMeta(w: Writer): void {
    this.metaEntries.write(w);
  }
  writeData(w: Writer): void {
    this.dataEntries.write(w);
  }
}


// fluxMsg's keys as ready CBOR text items (head + UTF-8), in static memory: they are written and
// recognised by bytes, never turned into strings.
const K_ID = memory.data<u8>([0x62, 0x69, 0x64]);
const K_REF_ID = memory.data<u8>([0x66, 0x72, 0x65, 0x66, 0x5f, 0x69, 0x64]);
const K_TRACE = memory.data<u8>([0x65, 0x74, 0x72, 0x61, 0x63, 0x65]);
const K_SRC_ID = memory.data<u8>([0x66, 0x73, 0x72, 0x63, 0x5f, 0x69, 0x64]);
const K_META = memory.data<u8>([0x64, 0x6d, 0x65, 0x74, 0x61]);
const K_DATA = memory.data<u8>([0x64, 0x64, 0x61, 0x74, 0x61]);
const K_FLAGS = memory.data<u8>([0x65, 0x66, 0x6c, 0x61, 0x67, 0x73]);
const K_RAW = memory.data<u8>([0x63, 0x72, 0x61, 0x77]);
const K_PATH = memory.data<u8>([0x64, 0x70, 0x61, 0x74, 0x68]);
const K_TS = memory.data<u8>([0x62, 0x74, 0x73]);
const K_G = memory.data<u8>([0x61, 0x67]);
const K_P = memory.data<u8>([0x61, 0x70]);
const K_T = memory.data<u8>([0x61, 0x74]);

const F_UNKNOWN = -1;
const F_ID = 0;
const F_REF_ID = 1;
const F_TRACE = 2;
const F_SRC_ID = 3;
const F_META = 4;
const F_DATA = 5;
const F_FLAGS = 6;
const F_RAW = 7;
const F_PATH = 8;
const F_TS = 9;

@inline
function isKey(r: Reader, key: usize, size: i32): bool {
  return r.pos + size <= r.buf.length && memory.compare(r.buf.dataStart + r.pos, key, size) == 0;
}

/** Which fluxMsg field the text item at the reader is; consumes it. */
function readField(r: Reader): i32 {
  const b = r.peekByte();
  const size = <i32>(b & 0x1f) + 1;
  if (b >> 5 == 3 && size <= 7) {
    let field = F_UNKNOWN;
    if (size == 3) field = isKey(r, K_ID, 3) ? F_ID : isKey(r, K_TS, 3) ? F_TS : F_UNKNOWN;
    else if (size == 4) field = isKey(r, K_RAW, 4) ? F_RAW : F_UNKNOWN;
    else if (size == 5) field = isKey(r, K_META, 5) ? F_META : isKey(r, K_DATA, 5) ? F_DATA : isKey(r, K_PATH, 5) ? F_PATH : F_UNKNOWN;
    else if (size == 6) field = isKey(r, K_TRACE, 6) ? F_TRACE : isKey(r, K_FLAGS, 6) ? F_FLAGS : F_UNKNOWN;
    else if (size == 7) field = isKey(r, K_REF_ID, 7) ? F_REF_ID : isKey(r, K_SRC_ID, 7) ? F_SRC_ID : F_UNKNOWN;
    if (field != F_UNKNOWN) {
      r.pos += size;
      return field;
    }
  }
  r.text(); // some other key (or not text: the reader records the error)
  return F_UNKNOWN;
}

function writeUuid(w: Writer, id: Uint8Array | null): void {
  if (id == null) w.nil();
  else w.bytes(id);
}

export function encodeFluxMsg(msg: FluxMsg, w: Writer): void {
  w.head(MAJOR_MAP, 10);
  w.rawBytes(K_ID, 3);
  w.bytes(msg.id);
  w.rawBytes(K_REF_ID, 7);
  writeUuid(w, msg.refId);
  w.rawBytes(K_TRACE, 6);
  w.text(msg.trace);
  w.rawBytes(K_SRC_ID, 7);
  writeUuid(w, msg.srcId);
  w.rawBytes(K_META, 5);
  msg.writeMeta(w);
  w.rawBytes(K_DATA, 5);
  msg.writeData(w);
  w.rawBytes(K_FLAGS, 6);
  w.int(<i64>msg.flags);
  w.rawBytes(K_RAW, 4);
  const raw = msg.raw;
  if (raw == null) w.nil();
  else w.bytes(raw);
  w.rawBytes(K_PATH, 5);
  w.head(MAJOR_ARRAY, <u64>msg.path.length);
  for (let i = 0; i < msg.path.length; i++) {
    const hop = msg.path[i];
    w.head(MAJOR_MAP, 3);
    w.rawBytes(K_G, 2);
    w.bytes(hop.g);
    w.rawBytes(K_P, 2);
    w.bytes(hop.p);
    w.rawBytes(K_T, 2);
    w.int(hop.t);
  }
  w.rawBytes(K_TS, 3);
  w.int(msg.ts);
}

/** Skips a map of text to text (fluxMsg meta), checking each entry's types. */
function skipTextMap(r: Reader): void {
  const n = r.head();
  if (r.lastMajor != MAJOR_MAP) {
    r.fail('meta must be a map');
    return;
  }
  for (let j: u64 = 0; j < n * 2 && r.ok; j++) {
    if (r.peekMajor() != MAJOR_TEXT) r.fail('meta must map text to text');
    else r.skip();
  }
}

function isNilUuid(b: Uint8Array): bool {
  for (let i = 0; i < b.length; i++) if (unchecked(b[i]) != 0) return false;
  return true;
}

function readUuid(r: Reader): Uint8Array | null {
  if (r.nil()) return null;
  const b = r.bytes();
  if (b.length != 16) r.fail('a UUID must be 16 bytes');
  return isNilUuid(b) ? null : b;
}

/** Decodes a fluxMsg map; problems are recorded on the reader (check r.ok). */
export function decodeFluxMsg(r: Reader): FluxMsg {
  const msg = new FluxMsg(true);
  const n = r.head();
  if (r.lastMajor != MAJOR_MAP) {
    r.fail('a fluxMsg must be a CBOR map');
    return msg;
  }
  for (let i: u64 = 0; i < n && r.ok; i++) {
    const field = readField(r);
    if (field == F_ID) {
      const id = r.bytes();
      if (id.length != 16) r.fail('id must be 16 bytes');
      msg.id = id;
    } else if (field == F_REF_ID) msg.refId = readUuid(r);
    else if (field == F_SRC_ID) msg.srcId = readUuid(r);
    else if (field == F_TRACE) msg.trace = r.nil() ? '' : r.text();
    else if (field == F_META) {
      if (r.nil()) continue;
      const at = r.pos;
      skipTextMap(r);
      msg.receiveMeta(r.buf.subarray(at, r.pos));
    } else if (field == F_DATA) {
      if (r.nil()) continue;
      if (r.peekMajor() != MAJOR_MAP) r.fail('data must be a map');
      else {
        const at = r.pos;
        r.skip();
        msg.receiveData(r.buf.subarray(at, r.pos));
      }
    } else if (field == F_FLAGS) msg.flags = <u32>r.int();
    else if (field == F_RAW) msg.raw = r.nil() ? null : r.bytes();
    else if (field == F_PATH) {
      if (r.nil()) continue;
      const count = r.head();
      if (r.lastMajor != MAJOR_ARRAY) r.fail('path must be an array');
      for (let j: u64 = 0; j < count && r.ok; j++) {
        const fields = r.head();
        let g = new Uint8Array(16);
        let p = new Uint8Array(16);
        let t: i64 = 0;
        for (let k: u64 = 0; k < fields && r.ok; k++) {
          if (isKey(r, K_G, 2)) {
            r.pos += 2;
            g = r.bytes();
          } else if (isKey(r, K_P, 2)) {
            r.pos += 2;
            p = r.bytes();
          } else if (isKey(r, K_T, 2)) {
            r.pos += 2;
            t = r.int();
          } else {
            r.text();
            r.skip();
          }
        }
        msg.path.push(new Hop(g, p, t));
      }
    } else if (field == F_TS) msg.ts = r.int();
    else r.skip(); // newer fields: ignored
  }
  return msg;
}
