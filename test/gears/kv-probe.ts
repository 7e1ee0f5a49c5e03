// A test gear for KV: writes data.put_key = data.put_value, reads data.get_key into data.got.
import { FluxMsg, kvGetString, kvPutString, ok, processWith, Result, Value } from '@fluxrig/gear-sdk';
export { alloc, free } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  const putKey = msg.getString('put_key');
  if (putKey.length > 0) kvPutString(putKey, msg.getString('put_value'));
  const getKey = msg.getString('get_key');
  if (getKey.length > 0) {
    const got = kvGetString(getKey);
    msg.set('got', got == null ? Value.nil() : Value.text(got));
  }
  return ok(msg);
}
