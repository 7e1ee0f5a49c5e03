import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeCbor } from '../src/cbor/profile.js';
import { decodeStrict } from '../src/cbor/strict.js';
import { CborWriter } from '../src/cbor/writer.js';

const key = fc.string({ maxLength: 12 }).filter((k) => k !== '__proto__');
const leaf = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 80 }),
  fc.string({ maxLength: 300 }),
  fc.integer(),
  fc.maxSafeInteger(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n - 1n }),
  fc.bigInt(),
  fc.uint8Array({ maxLength: 40 }),
);
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('tree'), { maxLength: 5 }), fc.dictionary(key, tie('tree'), { maxKeys: 6 })),
}));

describe('CborWriter (the hot-path encoder)', () => {
  it('writes the bytes cbor-x writes for any value a message holds', () => {
    const w = new CborWriter(8); // small, so growing is exercised too
    fc.assert(
      fc.property(tree, (value) => {
        w.reset();
        w.value(value);
        assert.equal(w.view().toString('hex'), Buffer.from(encodeCbor(value)).toString('hex'));
      }),
      { numRuns: 2000 },
    );
  });

  it('writes what the strict decoder reads back', () => {
    const w = new CborWriter();
    fc.assert(
      fc.property(fc.dictionary(key, tree, { maxKeys: 8 }), (map) => {
        w.reset();
        w.map(map);
        assert.deepEqual(decodeStrict(w.take()), encodeThenDecode(map));
      }),
      { numRuns: 500 },
    );
  });

  it('writes the edges of the 64-bit range as cbor-x does', () => {
    const w = new CborWriter();
    for (const v of [-(2n ** 64n), -(2n ** 64n) + 1n, -(2n ** 63n), 2n ** 64n - 1n, 2n ** 64n, -1n, 0n]) {
      w.reset();
      w.value(v);
      assert.equal(w.view().toString('hex'), Buffer.from(encodeCbor(v)).toString('hex'), String(v));
    }
  });

  it('leaves room in front and copies out only what was written', () => {
    const w = new CborWriter(4);
    w.reset(5);
    w.text('a longer text than the buffer');
    const out = w.take();
    assert.equal(out.length, 5 + 2 + 29); // a text of 29 bytes has a 2-byte head
    assert.equal(out.subarray(5).toString('hex'), Buffer.from(encodeCbor('a longer text than the buffer')).toString('hex'));
  });
});

function encodeThenDecode(value: unknown): unknown {
  return decodeStrict(encodeCbor(value));
}

describe('CborWriter buffers handed off', () => {
  it('takes back only buffers it handed off, and continues in them', () => {
    const w = new CborWriter(1024);
    const flush = (fill: number) => {
      w.raw(new Uint8Array(20_000).fill(fill));
      return w.handOff(1024 * 1024);
    };
    flush(1); // the first buffer grew to fit; from here on, buffers are sized in powers of two
    const lent = flush(2);
    // Buffers it did not hand off are never taken: a pooled one shares its memory with others.
    w.recycle(Buffer.from('not ours'));
    w.recycle(Buffer.allocUnsafe(64 * 1024));
    const next = flush(3);
    assert.ok(next.buffer !== lent.buffer, 'a lent buffer is not written while lent');
    assert.equal(lent[0], 2);
    w.recycle(lent);
    w.recycle(lent); // twice: taken back once
    flush(4); // the buffer being written when it came back
    const reused = flush(5);
    assert.ok(reused.buffer === lent.buffer, 'the buffer given back is the one after');
    assert.equal(reused[0], 5);
    assert.ok(flush(6).buffer !== lent.buffer, 'and only once');
  });
});
