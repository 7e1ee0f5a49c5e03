// A guest's output read against its input (src/gears/wasm/appended.ts): the entries a gear
// appended are taken over into the message it was given, and anything else is decoded in full.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CborWriter } from '../src/cbor/writer.js';
import { type FluxMsgLayout, writeFluxMsg } from '../src/fluxmsg/codec.js';
import { createFluxMsg, decodeFluxMsg, encodeFluxMsg, type FluxMsg, uuidv7 } from '../src/mod.js';
import { appendEntries, type Span } from '../src/gears/wasm/appended.js';
import { WasmGear } from '../src/gears/wasm/host.js';
import { prepareModule } from '../src/gears/wasm/loader.js';
import { gearBytes } from './harness/gears.js';

const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 300);

function span(bytes: Uint8Array): Span {
  return { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), at: 0 };
}

function layoutOf(msg: FluxMsg): { input: Uint8Array; layout: FluxMsgLayout } {
  const layout = {} as FluxMsgLayout;
  const w = new CborWriter();
  writeFluxMsg(w, msg, layout);
  return { input: w.take(), layout };
}

/** The message with entries added after its own, encoded as the gear SDK writes it. */
function appended(msg: FluxMsg, meta: Record<string, string>, data: Record<string, unknown>): Uint8Array {
  return encodeFluxMsg({ ...msg, meta: { ...msg.meta, ...meta }, data: { ...msg.data, ...data } });
}

/** Byte strings as plain arrays: a decode gives Buffers where the message may hold Uint8Arrays. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: [...value] };
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

const key = fc.string({ maxLength: 10 }).filter((k) => k !== '__proto__');
const leaf = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 10 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.uint8Array({ maxLength: 20 }),
);
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('tree'), { maxLength: 4 }), fc.dictionary(key, tie('tree'), { maxKeys: 4 })),
}));
const metaText = fc.string({ unit: 'grapheme', maxLength: 20 });
// An added key that looks like an array index would be enumerated first by JavaScript, not
// appended: such an output is another shape (left to the full decode), not what these build.
const addedKey = key.filter((k) => !/^(0|[1-9]\d*)$/.test(k));

describe('a guest output read against its input', () => {
  it('entries appended to meta and data: taken over, equal to what a full decode gives', () => {
    fc.assert(
      fc.property(
        fc.dictionary(key, metaText, { maxKeys: 6 }),
        fc.dictionary(key, tree, { maxKeys: 6 }),
        fc.dictionary(addedKey, metaText, { maxKeys: 3 }),
        fc.dictionary(addedKey, tree, { maxKeys: 3 }),
        (meta, data, addMeta, addData) => {
          const msg = createFluxMsg({ meta, data, trace: 't', ref_id: uuidv7() });
          for (const k of Object.keys(addMeta)) if (k in meta) delete addMeta[k];
          for (const k of Object.keys(addData)) if (k in data) delete addData[k];
          const { input, layout } = layoutOf(msg);
          const output = appended(msg, addMeta, addData);
          const expected = decodeFluxMsg(output);
          const before = plain(msg);
          const taken = appendEntries(msg, span(input), layout, span(output));
          // Taken over exactly when the message's own values are what a decode gives back.
          assert.equal(taken, layout.exact);
          if (!taken) return assert.deepEqual(plain(msg), before, 'a message not taken over is untouched');
          assert.deepEqual(plain(msg.meta), plain(expected.meta));
          assert.deepEqual(plain(msg.data), plain(expected.data));
          assert.deepEqual(Object.keys(msg.data), Object.keys(expected.data), 'appended entries come after the received ones');
        },
      ),
      { numRuns: FUZZ_RUNS },
    );
  });

  it('any other output is left to the full decode, the message untouched', () => {
    const msg = createFluxMsg({ meta: { a: 'b', c: 'd' }, data: { amount: 5, merchant: 'm-1' }, ref_id: uuidv7() });
    const { input, layout } = layoutOf(msg);
    const before = plain(msg);
    const cases: Record<string, Uint8Array> = {
      'a received meta value replaced': encodeFluxMsg({ ...msg, meta: { a: 'x', c: 'd' } }),
      'a received data entry removed': encodeFluxMsg({ ...msg, data: { amount: 5 } }),
      'another id': encodeFluxMsg({ ...msg, id: uuidv7() }),
      'another ts': encodeFluxMsg({ ...msg, ts: msg.ts + 1n }),
      'a path added': encodeFluxMsg({ ...msg, path: [{ g: uuidv7(), p: uuidv7(), t: 1n }] }),
      'bytes after the message': Buffer.concat([appended(msg, { e: 'f' }, {}), Buffer.from([0])]),
      'cut short': appended(msg, { e: 'f' }, {}).subarray(0, input.length + 2),
    };
    // A key appended that the message has already: a repeated key, which the full decode refuses.
    const repeated = Buffer.from(appended(msg, { e: 'f' }, {}));
    repeated.set(Buffer.from('a'), repeated.indexOf(Buffer.from('ae', 'latin1')) + 1);
    cases['a repeated meta key'] = repeated;
    const notText = Buffer.from(appended(msg, { e: 'f' }, {}));
    notText[notText.indexOf(Buffer.from('ae', 'latin1'))] = 0x41; // the key becomes bytes
    cases['a meta key that is not text'] = notText;
    for (const [name, output] of Object.entries(cases)) {
      assert.equal(appendEntries(msg, span(input), layout, span(output)), false, name);
      assert.deepEqual(plain(msg), before, `${name}: the message is untouched`);
    }
    assert.throws(() => decodeFluxMsg(repeated), /duplicate map key "a"/);
  });

  describe('in the Wasm host', () => {
    const probe = () => new WasmGear('probe', prepareModule(gearBytes('probe'), 'probe', { module: 'probe' }), { module: 'probe' }, {});

    it('a gear that adds entries answers with the message it was given', () => {
      const input = createFluxMsg({ meta: { 'conn.id': 'c1' }, data: { amount: 12.5, s: 'héllo' } });
      const outcome = probe().process(input);
      assert.equal(outcome.status, 'ok');
      if (outcome.status !== 'ok') return;
      assert.equal(outcome.msgs[0], input);
      assert.deepEqual(input.meta, { 'conn.id': 'c1', probe: 'seen' });
    });

    it('a message with values that decode as something else is decoded in full (a safe bigint comes back a number)', () => {
      const input = createFluxMsg({ data: { big: 2n ** 40n } });
      const outcome = probe().process(input);
      assert.equal(outcome.status, 'ok');
      if (outcome.status !== 'ok') return;
      assert.notEqual(outcome.msgs[0], input);
      assert.equal(outcome.msgs[0]!.data.big, 2 ** 40);
    });

    it('a guest whose emitted message ran through another gear first still gets its own output read right', () => {
      const inner = probe();
      const seen: FluxMsg[] = [];
      const outer = new WasmGear(
        'probe',
        prepareModule(gearBytes('probe'), 'probe', { module: 'probe' }),
        { module: 'probe' },
        {
          // Another gear on this thread runs inside the call, writing its own input in the host's scratch buffer.
          emit: (m) => {
            const o = inner.process(m);
            if (o.status === 'ok') seen.push(...o.msgs);
          },
        },
      );
      const input = createFluxMsg({ meta: { 'conn.id': 'c1' }, data: { action: 'emit', count: 2, n: 1 } });
      const outcome = outer.process(input);
      assert.equal(outcome.status, 'ok');
      if (outcome.status !== 'ok') return;
      assert.deepEqual(outcome.msgs[0]!.data, { action: 'emit', count: 2, n: 1 });
      assert.deepEqual(outcome.msgs[0]!.meta, { 'conn.id': 'c1' });
      assert.deepEqual(
        seen.map((m) => m.data.emitted),
        [0, 1],
      );
    });
  });
});
