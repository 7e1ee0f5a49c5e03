// fluxrig: arena (keeps nothing on the heap between messages)
// Passes every message on unchanged.
import { FluxMsg, ok, processWith, Result } from '@fluxrig/gear-sdk';
export { alloc, free, reset } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  return ok(msg);
}
