// A test gear: data.action says what to do with the message.
import { drop, emit, fanout, FluxMsg, logInfo, ok, processWith, reject, Result, Value } from '@fluxrig/gear-sdk';
export { alloc, free } from '@fluxrig/gear-sdk';

const hoard = new Array<Uint8Array>();

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  const action = msg.getString('action', 'ok');
  if (action == 'reject') return reject(msg.getString('reason', 'no reason'));
  if (action == 'drop') return drop();
  if (action == 'fanout') {
    const out = new Array<FluxMsg>();
    const n = <i32>msg.getInt('count', 3);
    for (let i = 0; i < n; i++) out.push(msg.clone().set('part', Value.int(i)));
    return fanout(out);
  }
  if (action == 'emit') {
    const n = <i32>msg.getInt('count', 2);
    for (let i = 0; i < n; i++) emit(msg.clone().set('emitted', Value.int(i)));
    return ok(msg);
  }
  if (action == 'log') {
    const n = <i32>msg.getInt('count', 1);
    for (let i = 0; i < n; i++) logInfo('probe line ' + i.toString());
    return ok(msg);
  }
  if (action == 'hog') {
    // Keeps 1 MiB blocks alive until memory runs out.
    const n = <i32>msg.getInt('count', 64);
    for (let i = 0; i < n; i++) hoard.push(new Uint8Array(1 << 20));
    return ok(msg.setInt('held_mib', hoard.length));
  }
  if (action == 'spin') {
    let x: i64 = 0;
    while (x >= 0) x = (x + 1) & 0xffff; // never ends
    return ok(msg);
  }
  if (action == 'whoami') return ok(msg.setString('principal', msg.getMeta('peer.principal')));
  if (action == 'meta') {
    // Meta as gears use it: replace an entry, read one back, add one, in the order data.steps says.
    const steps = msg.getString('steps');
    for (let i = 0; i < steps.length; i++) {
      const step = steps.charAt(i);
      if (step == 'r') msg.setMeta('a', 'replaced');
      else if (step == 'g') msg.setString('got', msg.getMeta('a', 'none') + '/' + msg.getMeta('added', 'none'));
      else if (step == 'n') msg.setMeta('added', 'new');
      else if (step == 'm') msg.setInt('entries', msg.meta.size);
    }
    return ok(msg);
  }
  if (action == 'abort') {
    throw new Error('probe asked to abort');
  }
  msg.setMeta('probe', 'seen');
  return ok(msg);
}
