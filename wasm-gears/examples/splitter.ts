// fluxrig: arena (keeps nothing on the heap between messages)
// Fans a batch out: one message per element of data.items, each carrying its index and the
// batch's meta; a message without items passes unchanged.
import { fanout, FluxMsg, Kind, ok, processWith, Result, Value } from '@fluxrig/gear-sdk';
export { alloc, free, reset } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  const items = msg.get('items');
  if (items.kind != Kind.Array) return ok(msg);
  const list = items.arr!;
  const out = new Array<FluxMsg>();
  for (let i = 0; i < list.length; i++) {
    const part = msg.clone();
    part.data.delete('items');
    part.set('item', list[i]);
    part.set('index', Value.int(i));
    part.set('count', Value.int(list.length));
    out.push(part);
  }
  return fanout(out);
}
