// A guest's output read against the message the host gave it. Most gears return the message
// they got with a few meta and data entries added, and the gear SDK writes it that way: every
// byte it received, in place, with the new entries after the received ones. Everything but the
// new entries is then bytes the host wrote and checked itself a moment before, so it is compared
// instead of decoded and checked again item by item (which was a fifth of a worker's time per
// call), and read straight from guest memory, without copying it out first.
import { StrictReader } from '../../cbor/strict.js';
import type { FluxMsgLayout } from '../../fluxmsg/codec.js';
import type { FluxMsg } from '../../fluxmsg/fluxmsg.js';

/** Depth of a data entry's value: inside the message map and the data map (as a full decode counts it). */
const DATA_VALUE_DEPTH = 2;

/** Bytes with a DataView over the same memory, and where in it they start. */
export interface Span {
  bytes: Uint8Array;
  view: DataView;
  /** Where bytes[0] is in view. */
  at: number;
}

/**
 * The entries a guest added (key, value, key, value...), gathered before any is applied. The
 * arrays are reused; `length = 0` on them costs a call into the engine.
 */
const addedMeta: unknown[] = [];
const addedData: unknown[] = [];

/**
 * When `output` is `input` (laid out as `layout` says) with entries appended to meta and data,
 * adds those entries to `msg` (the message `input` encodes) and returns true. Returns false,
 * with `msg` untouched, for any other output, valid or not: the caller decodes that in full,
 * which is also where an invalid output gets its error. Nothing returned refers to `output`'s
 * memory (byte strings are copied).
 */
export function appendEntries(msg: FluxMsg, input: Span, layout: FluxMsgLayout, output: Span): boolean {
  const out = output.bytes;
  // The message's own objects stand for what a decode of the output would give: only when they
  // are exactly that (no bigint that would come back a number, say).
  if (!layout.exact || out.length < layout.end) return false;
  // id, ref_id, trace, src_id (and the map's head and keys) as they went in.
  if (!same(input, 0, output, 0, layout.metaHead)) return false;
  let metaAdded: number;
  let dataAdded: number;
  try {
    const reader = new StrictReader(out, { copyBuffers: true });
    reader.pos = layout.metaHead;
    const metaNew = appendedAt(reader, input, output, layout.metaEntries, layout.metaEnd, layout.metaCount);
    if (metaNew < 0) return false;
    metaAdded = readAdded(reader, metaNew, msg.meta, addedMeta, true);
    if (metaAdded < 0) return false;
    // The data key, as it went in.
    const dataKey = layout.dataHead - layout.metaEnd;
    if (reader.pos + dataKey > out.length || !same(input, layout.metaEnd, output, reader.pos, dataKey)) return false;
    reader.pos += dataKey;
    const dataNew = appendedAt(reader, input, output, layout.dataEntries, layout.dataEnd, layout.dataCount);
    if (dataNew < 0) return false;
    dataAdded = readAdded(reader, dataNew, msg.data, addedData, false);
    if (dataAdded < 0) return false;
    // flags, raw, path and ts as they went in, and nothing after them.
    const tail = layout.end - layout.dataEnd;
    if (out.length - reader.pos !== tail || !same(input, layout.dataEnd, output, reader.pos, tail)) return false;
  } catch {
    return false;
  }
  for (let i = 0; i < metaAdded; i += 2) msg.meta[addedMeta[i] as string] = addedMeta[i + 1] as string;
  for (let i = 0; i < dataAdded; i += 2) {
    msg.data[addedData[i] as string] = addedData[i + 1];
    addedData[i + 1] = undefined; // not kept alive by this array
  }
  return true;
}

/**
 * Reads `count` entries at the reader into `added` (key, value, key, value...): each key new to
 * `existing` and to those before it; a meta value is text, a data value anything. Returns how
 * many items it put there, or -1 at a key the full decode would refuse as repeated.
 */
function readAdded(reader: StrictReader, count: number, existing: Record<string, unknown>, added: unknown[], meta: boolean): number {
  let n = 0;
  for (let i = 0; i < count; i++) {
    const key = reader.textString(meta ? 'a meta key' : 'a data key');
    if (!newKey(key, existing, added, n)) return -1;
    added[n++] = key;
    added[n++] = meta ? reader.textString('a meta value') : reader.value(DATA_VALUE_DEPTH);
  }
  return n;
}

/**
 * Reads a map's head and checks that its first entries are the input's (input[entries, end),
 * `count` of them). Returns how many entries follow them, with the reader past the input's
 * entries, or -1 when the map is anything else.
 */
function appendedAt(reader: StrictReader, input: Span, output: Span, entries: number, end: number, count: number): number {
  const total = reader.mapHead('a map');
  if (total < count) return -1; // fewer entries, or indefinite length
  const length = end - entries;
  if (reader.pos + length > output.bytes.length || !same(input, entries, output, reader.pos, length)) return -1;
  reader.pos += length;
  return total - count;
}

/** Whether a[aFrom, aFrom + n) and b[bFrom, bFrom + n) hold the same bytes (both in range). */
function same(a: Span, aFrom: number, b: Span, bFrom: number, n: number): boolean {
  // Four bytes at a time through DataViews: a third of the cost of a byte loop or Buffer.compare.
  const av = a.view;
  const bv = b.view;
  const ai = a.at + aFrom;
  const bi = b.at + bFrom;
  let i = 0;
  for (; i + 4 <= n; i += 4) if (av.getUint32(ai + i) !== bv.getUint32(bi + i)) return false;
  for (; i < n; i++) if (av.getUint8(ai + i) !== bv.getUint8(bi + i)) return false;
  return true;
}

/** A key that is neither in the message nor added already (the full decode refuses a repeated key). */
function newKey(key: string, existing: Record<string, unknown>, added: unknown[], count: number): boolean {
  if (key === '__proto__' || Object.hasOwn(existing, key)) return false;
  for (let i = 0; i < count; i += 2) if (added[i] === key) return false;
  return true;
}
