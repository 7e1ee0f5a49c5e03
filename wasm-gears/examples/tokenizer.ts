// fluxrig: arena (keeps nothing on the heap between messages)
// An "LLM-like" token stream (scenarios/streaming.yaml): splits data.text into words and
// streams them back, one chunk per word (a fan-out: several messages from one), then ends the
// stream with meta fluxar.end and the number of tokens. On a bidi stream each chunk up is
// tokenized as it comes, and the client's end ends the stream. A plain call gets {tokens: n}.
import { fanout, FluxMsg, ok, processWith, Result, Value } from '@fluxrig/gear-sdk';
export { alloc, free, reset } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

function handle(msg: FluxMsg): Result {
  const type = msg.getMeta('fluxar.type');
  const out = new Array<FluxMsg>();
  let count = 0;
  if (type == 'stream' || type == 'chunk' || type == 'call') {
    // A plain string payload arrives as data.payload; a map as its fields.
    const text = msg.has('text') ? msg.getString('text') : msg.getString('payload');
    const words = text.split(' ');
    for (let i = 0; i < words.length; i++) {
      if (words[i].length == 0) continue;
      out.push(token(msg, words[i], count++));
    }
  }
  // A plain call is answered with the count alone.
  if (type == 'call') return ok(reply(msg).setInt('tokens', count));
  // An "out" stream ends with its only message; the others when the client ends its direction.
  if (type == 'end' || (type == 'stream' && msg.getMeta('fluxar.mode') == 'out')) {
    const end = reply(msg);
    if (type == 'stream') end.setInt('tokens', count);
    end.setMeta('fluxar.end', 'true');
    out.push(end);
  }
  return fanout(out);
}

/** A message back to the stream (same meta: conn, fluxar.stream), with empty data. */
function reply(msg: FluxMsg): FluxMsg {
  const m = msg.clone();
  m.data = new Map<string, Value>();
  m.raw = null;
  return m;
}

function token(msg: FluxMsg, word: string, index: i32): FluxMsg {
  const m = reply(msg);
  m.setString('token', word);
  m.setInt('index', index);
  return m;
}
