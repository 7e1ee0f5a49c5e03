// fluxrig: arena (keeps nothing on the heap between messages)
// Adds fields: a risk band from the amount, the gear's stamp in meta, and a normalised currency.
import { FluxMsg, ok, processWith, Result } from '@fluxrig/gear-sdk';
export { alloc, free, reset } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  const amount = msg.getFloat('amount');
  msg.setString('risk_band', amount >= 1000 ? 'high' : amount >= 100 ? 'medium' : 'low');
  msg.setString('currency', msg.getString('currency', 'EUR').toUpperCase());
  msg.setBool('enriched', true);
  msg.setMeta('enrich.version', '1');
  return ok(msg);
}
