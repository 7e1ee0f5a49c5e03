// A test and benchmark gear: logs data.log_lines warn lines per message, then answers with it.
import { FluxMsg, logWarn, ok, processWith, Result } from '@fluxrig/gear-sdk';
export { alloc, free } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  const n = <i32>msg.getInt('log_lines', 0);
  for (let i = 0; i < n; i++) logWarn('chatty line ' + i.toString());
  return ok(msg);
}
