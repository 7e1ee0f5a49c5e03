// fluxrig: arena (keeps nothing on the heap between messages)
// Drops test traffic and zero or negative amounts; passes the rest.
import { drop, FluxMsg, ok, processWith, Result } from '@fluxrig/gear-sdk';
export { alloc, free, reset } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  if (msg.getBool('test') || msg.getMeta('traffic') == 'test') return drop();
  if (msg.getFloat('amount') <= 0) return drop();
  return ok(msg);
}
