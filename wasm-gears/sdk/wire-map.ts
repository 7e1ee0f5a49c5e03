// A map of a fluxMsg (meta: text to text; data: text to Value) that stays the CBOR it arrived
// as until something asks for the whole map. Most gears read a few fields and add one or two;
// decoding every entry into strings and values (and writing them all back) was most of a
// gear's cost per message.
import { MAJOR_MAP, Reader, Writer } from './cbor';
import { readMapInto, Value, writeMap } from './value';

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
 * `wire` is the map item as received; get() finds one entry in it (through an index built on
 * first use); entries set meanwhile wait in `added` and are written after the received ones.
 * all() decodes the whole map once, and from then on it is an ordinary Map. V is string (meta)
 * or Value (data).
 */
export class WireMap<V> {
  private map: Map<string, V> | null;
  private wire: Uint8Array | null = null;
  private index: WireIndex | null = null;
  private added: Map<string, V> | null = null;

  /** `onWire`: the map will come from receive() (a decoded message); else it starts empty. */
  constructor(onWire: bool) {
    this.map = onWire ? null : new Map<string, V>();
  }

  receive(wire: Uint8Array): void {
    this.wire = wire;
  }

  /** The value of `key`, or null when there is none: one entry read, not the map. */
  get(key: string): V | null {
    const map = this.map;
    if (map != null) return map.has(key) ? map.get(key) : null;
    const added = this.added;
    if (added != null && added.has(key)) return added.get(key);
    const index = this.wireIndex();
    if (index == null) return null;
    const at = index.find(key);
    if (at < 0) return null;
    const r = new Reader(index.wire);
    r.pos = at;
    if (isString<V>()) return changetype<V>(r.text());
    return changetype<V>(Value.read(r, 1));
  }

  set(key: string, value: V): void {
    const map = this.map;
    if (map != null) {
      map.set(key, value);
      return;
    }
    let added = this.added;
    if (added == null) {
      added = new Map<string, V>();
      this.added = added;
    }
    added.set(key, value);
  }

  /** The whole map, decoded from the wire on first use. */
  all(): Map<string, V> {
    let m = this.map;
    if (m != null) return m;
    m = new Map<string, V>();
    const wire = this.wire;
    if (wire != null) {
      const r = new Reader(wire);
      if (isString<V>()) {
        const n = r.head();
        for (let i: u64 = 0; i < n && r.ok; i++) {
          const k = r.text();
          m.set(k, changetype<V>(r.text()));
        }
      } else readMapInto(r, changetype<Map<string, Value>>(m), 0);
    }
    const added = this.added;
    if (added != null) {
      const keys = added.keys();
      for (let i = 0; i < keys.length; i++) m.set(keys[i], added.get(keys[i]));
    }
    this.replace(m);
    return m;
  }

  replace(m: Map<string, V>): void {
    this.map = m;
    this.wire = null;
    this.index = null;
    this.added = null;
  }

  /**
   * Writes the map: the received bytes as they came with the entries set since after them, or,
   * when it was decoded (or an entry set since replaces a received one), the decoded map.
   */
  write(w: Writer): void {
    if (this.map == null && this.writeWire(w)) return;
    const m = this.all();
    if (isString<V>()) {
      const keys = m.keys();
      w.head(MAJOR_MAP, <u64>keys.length);
      for (let i = 0; i < keys.length; i++) {
        w.text(keys[i]);
        w.text(changetype<string>(m.get(keys[i])));
      }
    } else writeMap(w, changetype<Map<string, Value>>(m));
  }

  private writeWire(w: Writer): bool {
    const wire = this.wire;
    const added = this.added;
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
    const index = this.wireIndex()!;
    for (let k = 0; k < keys.length; k++) if (index.find(keys[k]) >= 0) return false;
    const r = new Reader(wire);
    const n = r.head();
    w.head(MAJOR_MAP, n + <u64>keys.length);
    w.rawBytes(wire.dataStart + r.pos, wire.length - r.pos);
    for (let k = 0; k < keys.length; k++) {
      w.text(keys[k]);
      const v = added!.get(keys[k]);
      if (isString<V>()) w.text(changetype<string>(v));
      else changetype<Value>(v).write(w);
    }
    return true;
  }

  /** The index of the received map (built on first use), or null once decoded or when absent. */
  private wireIndex(): WireIndex | null {
    let index = this.index;
    if (index == null && this.map == null && this.wire != null) {
      index = new WireIndex(this.wire!);
      this.index = index;
    }
    return index;
  }
}
