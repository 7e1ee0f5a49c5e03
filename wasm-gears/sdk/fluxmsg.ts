// fluxrig's message, field for field, and its CBOR form (the same map fluxrig-ts and fluxrig write).
import { MAJOR_ARRAY, MAJOR_MAP, MAJOR_TEXT, Reader, Writer } from './cbor';
import { readMapInto, Value, writeMap } from './value';

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
   * Meta and data stay the CBOR they arrived as until something asks for the whole map: most
   * gears read a few fields and add one or two, and decoding every entry into strings and
   * values (and writing them all back) was most of a gear's cost per message. `metaWire` and
   * `dataWire` are the map items as received; get() and getMeta() find one entry in them;
   * entries set meanwhile wait in `metaAdded` / `dataAdded` and are written after the received
   * ones. Reading `meta` or `data` (the whole map) decodes it once, and from then on it is an
   * ordinary Map.
   */
  metaWire: Uint8Array | null = null;
  metaAdded: Map<string, string> | null = null;
  private metaMap: Map<string, string> | null;
  private metaIndex: WireIndex | null = null;
  dataWire: Uint8Array | null = null;
  dataAdded: Map<string, Value> | null = null;
  private dataMap: Map<string, Value> | null;
  private dataIndex: WireIndex | null = null;
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
    this.metaMap = blank ? null : new Map<string, string>();
    this.dataMap = blank ? null : new Map<string, Value>();
    this.path = new Array<Hop>();
  }

  /** The meta entries, decoded from the wire on first use. */
  get meta(): Map<string, string> {
    let m = this.metaMap;
    if (m != null) return m;
    m = new Map<string, string>();
    const wire = this.metaWire;
    if (wire != null) {
      const r = new Reader(wire);
      const n = r.head();
      for (let i: u64 = 0; i < n && r.ok; i++) {
        const k = r.text();
        m.set(k, r.text());
      }
    }
    const added = this.metaAdded;
    if (added != null) {
      const keys = added.keys();
      for (let i = 0; i < keys.length; i++) m.set(keys[i], added.get(keys[i]));
    }
    this.metaMap = m;
    this.metaWire = null;
    this.metaIndex = null;
    this.metaAdded = null;
    return m;
  }
  set meta(m: Map<string, string>) {
    this.metaMap = m;
    this.metaWire = null;
    this.metaIndex = null;
    this.metaAdded = null;
  }
  /** Whether meta is still (partly) the bytes it arrived as. */
  get metaOnWire(): bool {
    return this.metaMap == null;
  }

  /** The data fields, decoded from the wire on first use. */
  get data(): Map<string, Value> {
    let m = this.dataMap;
    if (m != null) return m;
    m = new Map<string, Value>();
    const wire = this.dataWire;
    if (wire != null) readMapInto(new Reader(wire), m, 0);
    const added = this.dataAdded;
    if (added != null) {
      const keys = added.keys();
      for (let i = 0; i < keys.length; i++) m.set(keys[i], added.get(keys[i]));
    }
    this.dataMap = m;
    this.dataWire = null;
    this.dataIndex = null;
    this.dataAdded = null;
    return m;
  }
  set data(m: Map<string, Value>) {
    this.dataMap = m;
    this.dataWire = null;
    this.dataIndex = null;
    this.dataAdded = null;
  }
  /** Whether data is still (partly) the bytes it arrived as. */
  get dataOnWire(): bool {
    return this.dataMap == null;
  }

  /** The value of data field `key`, or null when there is none: one entry read, not the map. */
  private lookup(key: string): Value | null {
    const map = this.dataMap;
    if (map != null) return map.has(key) ? map.get(key) : null;
    const added = this.dataAdded;
    if (added != null && added.has(key)) return added.get(key);
    const index = this.dataWireIndex;
    if (index == null) return null;
    const at = index.find(key);
    if (at < 0) return null;
    const r = new Reader(index.wire);
    r.pos = at;
    return Value.read(r, 1);
  }

  /** The index of data still on the wire (built on first use), or null. */
  get dataWireIndex(): WireIndex | null {
    let index = this.dataIndex;
    if (index == null && this.dataMap == null && this.dataWire != null) {
      index = new WireIndex(this.dataWire!);
      this.dataIndex = index;
    }
    return index;
  }

  /** The index of meta still on the wire (built on first use), or null. */
  get metaWireIndex(): WireIndex | null {
    let index = this.metaIndex;
    if (index == null && this.metaMap == null && this.metaWire != null) {
      index = new WireIndex(this.metaWire!);
      this.metaIndex = index;
    }
    return index;
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
    return this.lookup(key) != null;
  }
  get(key: string): Value {
    const v = this.lookup(key);
    return v == null ? Value.nil() : v;
  }
  getFloat(key: string, fallback: f64 = 0): f64 {
    const v = this.lookup(key);
    return v == null ? fallback : v.asFloat(fallback);
  }
  getInt(key: string, fallback: i64 = 0): i64 {
    const v = this.lookup(key);
    return v == null ? fallback : v.asInt(fallback);
  }
  getString(key: string, fallback: string = ''): string {
    const v = this.lookup(key);
    return v == null ? fallback : v.asString(fallback);
  }
  getBool(key: string, fallback: bool = false): bool {
    const v = this.lookup(key);
    return v == null ? fallback : v.asBool(fallback);
  }
  set(key: string, value: Value): FluxMsg {
    if (this.dataMap == null) {
      let added = this.dataAdded;
      if (added == null) {
        added = new Map<string, Value>();
        this.dataAdded = added;
      }
      added.set(key, value);
    } else this.dataMap!.set(key, value);
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
    const map = this.metaMap;
    if (map != null) return map.has(key) ? map.get(key) : fallback;
    const added = this.metaAdded;
    if (added != null && added.has(key)) return added.get(key);
    const index = this.metaWireIndex;
    if (index == null) return fallback;
    const at = index.find(key);
    if (at < 0) return fallback;
    const r = new Reader(index.wire);
    r.pos = at;
    return r.text();
  }
  setMeta(key: string, v: string): FluxMsg {
    if (this.metaMap == null) {
      let added = this.metaAdded;
      if (added == null) {
        added = new Map<string, string>();
        this.metaAdded = added;
      }
      added.set(key, v);
    } else this.metaMap!.set(key, v);
    return this;
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
  if (!writeMetaWire(msg, w)) {
    const meta = msg.meta;
    const mk = meta.keys();
    w.head(MAJOR_MAP, <u64>mk.length);
    for (let i = 0; i < mk.length; i++) {
      w.text(mk[i]);
      w.text(meta.get(mk[i]));
    }
  }
  w.rawBytes(K_DATA, 5);
  if (!writeDataWire(msg, w)) writeMap(w, msg.data);
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

/** Whether the UTF-8 bytes at `ptr` spell `key` (compared char by char while ASCII). */
function keyIs(ptr: usize, len: i32, key: string): bool {
  const n = key.length;
  if (n > len) return false;
  for (let i = 0; i < n; i++) {
    const c = <u32>key.charCodeAt(i);
    if (c >= 0x80) {
      const encoded = String.UTF8.encode(key);
      return encoded.byteLength == len && memory.compare(ptr, changetype<usize>(encoded), len) == 0;
    }
    if (<u32>load<u8>(ptr + i) != c) return false;
  }
  return n == len;
}

/**
 * The entries of a map item as received: where each key's bytes are and where its value starts,
 * found in one pass, so that looking up several fields reads the map once. The map came from
 * the host, which checked it (text keys, no key twice).
 */
class WireIndex {
  keyAt: Array<i32> = new Array<i32>();
  keyLen: Array<i32> = new Array<i32>();
  valueAt: Array<i32> = new Array<i32>();

  constructor(public wire: Uint8Array) {
    const r = new Reader(wire);
    const n = r.head();
    for (let i: u64 = 0; i < n && r.ok; i++) {
      const len = <i32>r.head();
      this.keyAt.push(r.pos);
      this.keyLen.push(len);
      r.pos += len;
      this.valueAt.push(r.pos);
      r.skip();
    }
  }

  /** Where the value of `key` starts, or -1 when the key is not there. */
  find(key: string): i32 {
    const base = this.wire.dataStart;
    for (let i = 0; i < this.keyAt.length; i++) {
      if (keyIs(base + <usize>unchecked(this.keyAt[i]), unchecked(this.keyLen[i]), key)) return unchecked(this.valueAt[i]);
    }
    return -1;
  }
}

/**
 * Starts writing a map still on the wire with `added` entries after the received ones: the head
 * and the received entries. False (nothing written) when an added key is among the received
 * ones; the caller then writes the decoded map.
 */
function spliceWire(w: Writer, index: WireIndex, added: Array<string>): bool {
  for (let k = 0; k < added.length; k++) if (index.find(added[k]) >= 0) return false;
  const wire = index.wire;
  const r = new Reader(wire);
  const n = r.head();
  w.head(MAJOR_MAP, n + <u64>added.length);
  w.rawBytes(wire.dataStart + r.pos, wire.length - r.pos);
  return true;
}

/** Writes meta still on the wire, with the entries set since; false when it must be decoded. */
function writeMetaWire(msg: FluxMsg, w: Writer): bool {
  if (!msg.metaOnWire) return false;
  const wire = msg.metaWire;
  const added = msg.metaAdded;
  const keys = added == null ? new Array<string>(0) : added.keys();
  if (wire == null) {
    if (keys.length > 0) return false;
    w.head(MAJOR_MAP, 0);
    return true;
  }
  if (keys.length == 0) {
    w.rawBytes(wire.dataStart, wire.length);
    return true;
  }
  if (!spliceWire(w, msg.metaWireIndex!, keys)) return false;
  for (let k = 0; k < keys.length; k++) {
    w.text(keys[k]);
    w.text(added!.get(keys[k]));
  }
  return true;
}

/** Writes data still on the wire, with the fields set since; false when it must be decoded. */
function writeDataWire(msg: FluxMsg, w: Writer): bool {
  if (!msg.dataOnWire) return false;
  const wire = msg.dataWire;
  const added = msg.dataAdded;
  const keys = added == null ? new Array<string>(0) : added.keys();
  if (wire == null) {
    if (keys.length > 0) return false;
    w.head(MAJOR_MAP, 0);
    return true;
  }
  if (keys.length == 0) {
    w.rawBytes(wire.dataStart, wire.length);
    return true;
  }
  if (!spliceWire(w, msg.dataWireIndex!, keys)) return false;
  for (let k = 0; k < keys.length; k++) {
    w.text(keys[k]);
    added!.get(keys[k]).write(w);
  }
  return true;
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
      msg.metaWire = r.buf.subarray(at, r.pos);
    } else if (field == F_DATA) {
      if (r.nil()) continue;
      if (r.peekMajor() != MAJOR_MAP) r.fail('data must be a map');
      else {
        const at = r.pos;
        r.skip();
        msg.dataWire = r.buf.subarray(at, r.pos);
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
