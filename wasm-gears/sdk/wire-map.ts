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
  /** Per entry: where its key's bytes start, their length, where its value starts. */
  private slots: StaticArray<i32>;
  private entries: i32 = 0;

  constructor(public wire: Uint8Array) {
    const r = new Reader(wire);
    const n = r.head();
    // Sized once from the head (an entry takes at least two bytes): no growing arrays.
    const most = <i32>min<u64>(n, <u64>(wire.length >> 1));
    const slots = new StaticArray<i32>(most * 3);
    let i = 0;
    for (; i < most && r.ok; i++) {
      const len = <i32>r.head();
      unchecked((slots[i * 3] = r.pos));
      unchecked((slots[i * 3 + 1] = len));
      r.pos += len;
      unchecked((slots[i * 3 + 2] = r.pos));
      r.skip();
    }
    this.slots = slots;
    this.entries = i;
  }

  /** Where the value of `key` starts, or -1 when the key is not there. */
  find(key: string): i32 {
    const base = this.wire.dataStart;
    const slots = this.slots;
    for (let i = 0; i < this.entries; i++) {
      if (keyIs(base + <usize>unchecked(slots[i * 3]), unchecked(slots[i * 3 + 1]), key)) return unchecked(slots[i * 3 + 2]);
    }
    return -1;
  }
}

/** Whether the map item `wire` has `key`: one pass over it, for a map not indexed. */
function wireHas(wire: Uint8Array, key: string): bool {
  const r = new Reader(wire);
  const n = r.head();
  const base = wire.dataStart;
  for (let i: u64 = 0; i < n && r.ok; i++) {
    const len = <i32>r.head();
    if (keyIs(base + <usize>r.pos, len, key)) return true;
    r.pos += len;
    r.skip();
  }
  return false;
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
    // An entry set that replaces a received one: the map is written whole. A map not read
    // yet is looked through once per new key rather than indexed (most gears add one or two).
    const index = this.index;
    for (let k = 0; k < keys.length; k++) {
      if (index != null ? index.find(keys[k]) >= 0 : wireHas(wire, keys[k])) return false;
    }
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
