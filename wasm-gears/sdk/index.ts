// The fluxrig gear SDK for AssemblyScript. A gear's entry file:
//
//   import { FluxMsg, Result, ok, processWith } from '../../sdk';
//   export { alloc, free } from '../../sdk';
//   export function process(ptr: usize, len: i32): i64 { return processWith(ptr, len, handle); }
//   function handle(msg: FluxMsg): Result { return ok(msg); }
import { MAJOR_ARRAY, MAJOR_MAP, Reader, Writer } from './cbor';
import { decodeFluxMsg, encodeFluxMsg, FluxMsg } from './fluxmsg';

export { Hop, FluxMsg, decodeFluxMsg, encodeFluxMsg } from './fluxmsg';
export { Kind, Value } from './value';
export { Reader, Writer } from './cbor';
export * from './host';

export const STATUS_OK: i32 = 0;
export const STATUS_REJECT: i32 = 1;
export const STATUS_DROP: i32 = 2;

/** What handle() decides for a message. */
export class Result {
  constructor(
    public status: i32,
    public msgs: Array<FluxMsg>,
    public reason: string = '',
  ) {}
}

/** Pass the (possibly changed) message on. */
export function ok(msg: FluxMsg): Result {
  return new Result(STATUS_OK, [msg]);
}
/** Refuse it: it goes to the gear's error port with the reason (a FLUXAR caller gets the reason). */
export function reject(reason: string): Result {
  return new Result(STATUS_REJECT, [], reason);
}
/** Drop it silently (counted by the host). */
export function drop(): Result {
  return new Result(STATUS_DROP, []);
}
/** Send several messages on. */
export function fanout(msgs: Array<FluxMsg>): Result {
  return new Result(STATUS_OK, msgs);
}

/** Host ABI: a buffer of `len` bytes for the host to write into; pinned until free(). */
export function alloc(len: i32): usize {
  const buf = __new(<usize>len, idof<ArrayBuffer>());
  __pin(buf);
  return buf;
}

/** Host ABI: releases a buffer from alloc(), or the output of process(). */
export function free(ptr: usize, len: i32): void {
  __unpin(ptr);
}

/**
 * Host ABI (optional): called by the host before each message. For a gear built with the arena
 * runtime (`// fluxrig: arena` in its source: AssemblyScript's stub runtime) it discards
 * everything the previous message allocated in one step, which halves the SDK's cost per
 * message. Such a gear must keep no heap objects between messages (no module-level arrays,
 * maps or buffers; numbers are fine). With any other runtime it does nothing.
 */
export function reset(): void {
  if (ASC_RUNTIME == 0) __reset();
}

/** With the minimal runtime nothing is collected unless asked: do it between batches. */
const COLLECT_EVERY: i32 = 256;
let sinceCollect: i32 = 0;

/** Hands the writer's own buffer to the host (no copy); pinned until the host calls free(). */
function pinned(w: Writer): i64 {
  const ptr = changetype<usize>(w.buf.buffer);
  __pin(ptr);
  return (<i64>ptr << 32) | <i64>w.pos;
}

/**
 * The entry point's body: decodes the message at ptr, runs `handle`, and returns the output as
 * ptr << 32 | len (0 = drop). A single ok() message is written as a plain fluxMsg map (fluxrig's
 * plain ABI); anything else as {status, reason, msgs}.
 */
export function processWith(ptr: usize, len: i32, handle: (msg: FluxMsg) => Result): i64 {
  if (ASC_RUNTIME == 1 && ++sinceCollect >= COLLECT_EVERY) {
    sinceCollect = 0;
    __collect();
  }
  const input = Uint8Array.wrap(changetype<ArrayBuffer>(ptr), 0, len);
  const r = new Reader(input);
  const msg = decodeFluxMsg(r);
  const w = new Writer(len + 64);
  if (!r.ok) {
    writeStatus(w, STATUS_REJECT, 'gear could not read the message: ' + r.error!.message, []);
    return pinned(w);
  }
  const result = handle(msg);
  if (result.status == STATUS_DROP) return 0;
  if (result.status == STATUS_OK && result.msgs.length == 1) {
    encodeFluxMsg(result.msgs[0], w);
    return pinned(w);
  }
  writeStatus(w, result.status, result.reason, result.msgs);
  return pinned(w);
}

function writeStatus(w: Writer, status: i32, reason: string, msgs: Array<FluxMsg>): void {
  w.head(MAJOR_MAP, 3);
  w.text('status');
  w.int(status);
  w.text('reason');
  w.text(reason);
  w.text('msgs');
  w.head(MAJOR_ARRAY, <u64>msgs.length);
  for (let i = 0; i < msgs.length; i++) encodeFluxMsg(msgs[i], w);
}
