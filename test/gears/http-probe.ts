// A test gear for HTTP: GETs data.url, reports status, body and error in data.
import { FluxMsg, httpRequest, ok, processWith, Result } from '@fluxrig/gear-sdk';
export { alloc, free } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  const res = httpRequest('GET', msg.getString('url'));
  msg.setInt('http_status', res.status);
  msg.setString('http_body', String.UTF8.decodeUnsafe(res.body.dataStart, res.body.length));
  msg.setString('http_error', res.error);
  return ok(msg);
}
