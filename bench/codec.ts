// For a typical fluxMsg and the FLUXAR homepage envelope, in one run: our CBOR against JSON, and
// the strict profile every received byte goes through against plain cbor-x on the same bytes.
// JSON needs bytes as base64 and int64 as text, so its path does that conversion; the fluxMsg
// CBOR path also validates every field, which the JSON path does not.
import { Bench } from 'tinybench';
import { decodeCbor, encodeCbor } from '../src/cbor/profile.js';
import { decodeEnvelope, encodeEnvelope, type Envelope, MessageType } from '../src/fluxar/mod.js';
import { createFluxMsg, decodeFluxMsg, encodeFluxMsg, entityId, EntityType, type FluxMsg, uuidv7 } from '../src/mod.js';
import { printTable, writeResult } from './harness/report.js';

function typicalMsg(): FluxMsg {
  return createFluxMsg({
    ref_id: uuidv7(),
    trace: '4bf92f3577b34da6a3ce929d0e0e4736',
    src_id: entityId(EntityType.Gear),
    meta: { 'conn.id': 'c-1042', 'fluxar.target': 'payments.authorize', 'peer.ip': '10.1.2.3' },
    data: { amount: 125.5, currency: 'EUR', merchant: 'm-88812', card_bin: '411111' },
    path: [{ g: entityId(EntityType.Gear), p: entityId(EntityType.PortOutput), t: 1_795_000_000_000_000_000n }],
  });
}

const envelope: Envelope = {
  type: MessageType.Call,
  id: uuidv7(),
  ref: null,
  target: 'user.getProfile',
  meta: { trace_id: 'abc123' },
  payload: { id: 42 },
  error: null,
};

const jsonReplacer = (_key: string, value: unknown) =>
  typeof value === 'bigint' ? value.toString() : value instanceof Uint8Array ? Buffer.from(value).toString('base64') : value;

function msgToJson(msg: FluxMsg): string {
  return JSON.stringify(msg, jsonReplacer);
}
function msgFromJson(text: string): FluxMsg {
  const o = JSON.parse(text);
  const b = (s: string | null) => (s === null ? null : Buffer.from(s, 'base64'));
  return {
    ...o,
    id: b(o.id),
    ref_id: b(o.ref_id),
    src_id: b(o.src_id),
    raw: b(o.raw),
    ts: BigInt(o.ts),
    path: o.path.map((h: { g: string; p: string; t: string }) => ({ g: b(h.g), p: b(h.p), t: BigInt(h.t) })),
  };
}
function envToJson(env: Envelope): string {
  return JSON.stringify(env, jsonReplacer);
}
function envFromJson(text: string): Envelope {
  const o = JSON.parse(text);
  return { ...o, id: Buffer.from(o.id, 'base64'), ref: o.ref === null ? null : Buffer.from(o.ref, 'base64') };
}

const msg = typicalMsg();
const msgCbor = encodeFluxMsg(msg);
const msgJson = msgToJson(msg);
const envCbor = encodeEnvelope(envelope);
const envJson = envToJson(envelope);
let sink: unknown;

const bench = new Bench({ time: 700, warmupTime: 200 });
bench
  .add('fluxMsg encode cbor', () => void (sink = encodeFluxMsg(msg)))
  .add('fluxMsg encode json', () => void (sink = Buffer.from(msgToJson(msg))))
  .add('fluxMsg decode cbor', () => void (sink = decodeFluxMsg(msgCbor)))
  .add('fluxMsg decode json', () => void (sink = msgFromJson(msgJson)))
  .add('fluxMsg encode cbor, no validation', () => void (sink = encodeCbor(msg)))
  .add('fluxMsg decode cbor, no validation', () => void (sink = decodeCbor(msgCbor)))
  .add('envelope encode cbor', () => void (sink = encodeEnvelope(envelope)))
  .add('envelope encode json', () => void (sink = Buffer.from(envToJson(envelope))))
  .add('envelope decode cbor', () => void (sink = decodeEnvelope(envCbor)))
  .add('envelope decode cbor-x, no profile checks', () => void (sink = decodeCbor(envCbor)))
  .add('envelope decode json', () => void (sink = envFromJson(envJson)));

await bench.run();
void sink;

const nsPerOp: Record<string, number> = {};
for (const task of bench.tasks) {
  const r = task.result;
  if (r.state !== 'completed') throw new Error(`${task.name}: ${r.state}`);
  nsPerOp[task.name] = r.latency.mean * 1e6;
}
const ns = (name: string) => nsPerOp[name]!;
const ratio = (what: string) => ns(`${what} json`) / ns(`${what} cbor`);

const result = {
  sizes_bytes: {
    fluxmsg_cbor: msgCbor.length,
    fluxmsg_json: Buffer.byteLength(msgJson),
    envelope_cbor: envCbor.length,
    envelope_json: Buffer.byteLength(envJson),
  },
  ns_per_op: nsPerOp,
  // > 1 means cbor is faster than JSON by that factor.
  fluxmsg_encode_cbor_vs_json: ratio('fluxMsg encode'),
  fluxmsg_decode_cbor_vs_json: ratio('fluxMsg decode'),
  envelope_encode_cbor_vs_json: ratio('envelope encode'),
  envelope_decode_cbor_vs_json: ratio('envelope decode'),
  // The strict profile (src/cbor/strict.ts, every received byte) against plain cbor-x on the
  // same bytes; > 1 means the strict decode costs that many times cbor-x's.
  fluxmsg_decode_strict_vs_cborx: ns('fluxMsg decode cbor') / ns('fluxMsg decode cbor, no validation'),
  envelope_decode_strict_vs_cborx: ns('envelope decode cbor') / ns('envelope decode cbor-x, no profile checks'),
};

printTable(bench.tasks.map((t) => ({ task: t.name, 'ns/op': ns(t.name) })));
console.log(
  `sizes: fluxMsg ${msgCbor.length} B cbor / ${result.sizes_bytes.fluxmsg_json} B json; envelope ${envCbor.length} B cbor / ${result.sizes_bytes.envelope_json} B json`,
);
printTable(['fluxMsg encode', 'fluxMsg decode', 'envelope encode', 'envelope decode'].map((w) => ({ operation: w, 'cbor vs json (x faster)': ratio(w) })));
console.log(`wrote ${writeResult('codec', result)}`);
