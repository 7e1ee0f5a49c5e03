// The host's services, as typed functions. A gear imports only what it calls; the host grants
// kv and http only when the gear's config allows them (a module importing an ungranted
// function is refused at load).
import { MAJOR_MAP, Reader, Writer } from './cbor';
import { encodeFluxMsg, FluxMsg } from './fluxmsg';
import { Kind, Value } from './value';

@external('env', 'log')
declare function host_log(level: i32, ptr: usize, len: i32): void;
@external('env', 'flux_kv_get')
declare function host_kv_get(keyPtr: usize, keyLen: i32): i64;
@external('env', 'flux_kv_put')
declare function host_kv_put(keyPtr: usize, keyLen: i32, valuePtr: usize, valueLen: i32): i32;
@external('env', 'flux_emit')
declare function host_emit(ptr: usize, len: i32): i32;
@external('env', 'flux_req_http')
declare function host_http(ptr: usize, len: i32): i64;

export enum Level {
  Debug = 1,
  Info = 2,
  Warn = 3,
  Error = 4,
}

/** Logs through the rack's logger, under the gear's name (rate-limited by the host). */
export function log(level: Level, message: string): void {
  const bytes = String.UTF8.encode(message);
  host_log(level, changetype<usize>(bytes), bytes.byteLength);
}
export function logDebug(message: string): void {
  log(Level.Debug, message);
}
export function logInfo(message: string): void {
  log(Level.Info, message);
}
export function logWarn(message: string): void {
  log(Level.Warn, message);
}
export function logError(message: string): void {
  log(Level.Error, message);
}

/** Takes ownership of a host-allocated buffer returned as ptr << 32 | len. */
function takeHostBuffer(packed: i64): Uint8Array {
  const ptr = <usize>(packed >>> 32);
  const len = <i32>(packed & 0xffffffff);
  const out = new Uint8Array(len);
  memory.copy(out.dataStart, ptr, len);
  __unpin(ptr); // the host allocated it through our alloc(), which pinned it
  return out;
}

/** Reads a key from the rack's KV store (a local replica: synchronous). Null when absent. */
export function kvGet(key: string): Uint8Array | null {
  const k = String.UTF8.encode(key);
  const packed = host_kv_get(changetype<usize>(k), k.byteLength);
  if (packed == 0) return null;
  return takeHostBuffer(packed);
}

export function kvGetString(key: string): string | null {
  const v = kvGet(key);
  if (v == null) return null;
  return String.UTF8.decodeUnsafe(v.dataStart, v.length);
}

/** Writes a key; it reaches the store and every worker's replica. */
export function kvPut(key: string, value: Uint8Array): bool {
  const k = String.UTF8.encode(key);
  return host_kv_put(changetype<usize>(k), k.byteLength, value.dataStart, value.length) == 0;
}

export function kvPutString(key: string, value: string): bool {
  return kvPut(key, Uint8Array.wrap(String.UTF8.encode(value)));
}

/** Sends a message out of the gear now, besides what process() returns. */
export function emit(msg: FluxMsg): bool {
  const w = new Writer();
  encodeFluxMsg(msg, w);
  return host_emit(w.buf.dataStart, w.pos) == 0;
}

export class HttpResponse {
  status: i32 = 0;
  body: Uint8Array = new Uint8Array(0);
  /** Set when the request did not complete (refused host, timeout, network). */
  error: string = '';
}

/** A synchronous HTTP request, to hosts on the gear's allow-list only. */
export function httpRequest(method: string, url: string, body: Uint8Array | null = null): HttpResponse {
  const w = new Writer();
  w.head(MAJOR_MAP, body == null ? 2 : 3);
  w.text('method');
  w.text(method);
  w.text('url');
  w.text(url);
  if (body != null) {
    w.text('body');
    w.bytes(body);
  }
  const packed = host_http(w.buf.dataStart, w.pos);
  const res = new HttpResponse();
  if (packed == 0) {
    res.error = 'no response';
    return res;
  }
  const r = new Reader(takeHostBuffer(packed));
  const v = Value.read(r);
  if (!r.ok || v.kind != Kind.Map) {
    res.error = 'malformed response from host';
    return res;
  }
  const m = v.map!;
  if (m.has('status')) res.status = <i32>m.get('status').asInt();
  if (m.has('body') && m.get('body').kind == Kind.Bytes) res.body = m.get('body').bin!;
  if (m.has('error')) res.error = m.get('error').asString();
  return res;
}
