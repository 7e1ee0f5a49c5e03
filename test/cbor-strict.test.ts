// The strict CBOR profile for received bytes (docs/fluxar-spec.md section 1): every valid
// encoding accepted, every forbidden one refused in our own words, nothing else ever thrown.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Decoder } from 'cbor-x';
import fc from 'fast-check';
import { encodeCbor } from '../src/cbor/profile.js';
import { CborFloat, CborProfileError, decodeStrict, MAX_NESTING, StrictReader } from '../src/cbor/strict.js';
import { decodeEnvelope, EnvelopeError } from '../src/fluxar/mod.js';

const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');
/** What the encoder writes, and the same with one byte changed: the inputs of the properties below. */
const valid = fc.jsonValue({ maxDepth: 4 }).map((v) => encodeCbor(v));
const mutated = fc.tuple(valid, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([bytes, at, b]) => {
  const copy = Buffer.from(bytes);
  if (copy.length > 0) copy[at % copy.length] = b;
  return copy;
});

function refusal(bytes: Uint8Array): CborProfileError {
  try {
    decodeStrict(bytes);
  } catch (err) {
    assert.ok(err instanceof CborProfileError, `expected CborProfileError, got ${String(err)}`);
    return err;
  }
  assert.fail(`accepted ${Buffer.from(bytes).toString('hex')}`);
}

describe('strict CBOR profile', () => {
  describe('accepts every valid encoding', () => {
    const cases: Array<[string, string, unknown]> = [
      ['indefinite-length text', '7f 62 6865 63 6c6c6f ff', 'hello'],
      ['indefinite-length bytes', '5f 42 0102 41 03 ff', Buffer.from([1, 2, 3])],
      ['empty indefinite text', '7f ff', ''],
      ['indefinite array', '9f 01 02 ff', [1, 2]],
      ['indefinite map', 'bf 61 61 01 ff', { a: 1 }],
      ['1 in one byte', '18 01', 1],
      ['1 in two bytes', '19 0001', 1],
      ['1 in four bytes', '1a 00000001', 1],
      ['1 in eight bytes', '1b 0000000000000001', 1],
      ['2^53-1 in eight bytes', '1b 001fffffffffffff', Number.MAX_SAFE_INTEGER],
      ['2^53 stays exact as a bigint', '1b 0020000000000000', 2n ** 53n],
      ['2^64-1', '1b ffffffffffffffff', 2n ** 64n - 1n],
      ['-1 in eight bytes', '3b 0000000000000000', -1],
      ['-2^64', '3b ffffffffffffffff', -(2n ** 64n)],
      ['bignum tag 2, small', 'c2 42 0100', 256],
      ['bignum tag 3, small', 'c3 41 00', -1],
      ['bignum tag 2, large', 'c2 49 010000000000000000', 2n ** 64n],
      ['tag 64 bytes', 'd8 40 42 0102', Buffer.from([1, 2])],
      ['self-described CBOR around the item', 'd9 d9f7 01', 1],
      ['half float', 'f9 3c00', 1],
      ['single float', 'fa 3fc00000', 1.5],
      ['double float', 'fb 3ff8000000000000', 1.5],
      ['half-float infinity', 'f9 7c00', Infinity],
      ['undefined', 'f7', undefined],
      ['multi-byte UTF-8', '62 c3a9', 'é'],
      ['nesting at the limit', `${'81'.repeat(MAX_NESTING)}00`, JSON.parse(`${'['.repeat(MAX_NESTING)}0${']'.repeat(MAX_NESTING)}`)],
    ];
    for (const [name, bytes, expected] of cases) {
      it(name, () => assert.deepEqual(decodeStrict(hex(bytes)), expected));
    }
  });

  describe('refuses, saying what and where', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['a duplicate key', 'a2 61 61 01 61 61 02', /duplicate map key "a" \(at byte 4\)/],
      ['a duplicate key whose first value was undefined', 'a2 61 61 f7 61 61 02', /duplicate map key "a"/],
      ['a duplicate key in an indefinite map', 'bf 61 61 01 61 61 02 ff', /duplicate map key "a"/],
      ['a duplicate key spelt with an indefinite string', 'a2 61 61 01 7f 61 61 ff 02', /duplicate map key "a"/],
      ['an integer key', 'a1 01 02', /map keys must be text strings, got an unsigned integer/],
      ['a byte-string key', 'a1 41 61 02', /map keys must be text strings, got a byte string/],
      ['invalid UTF-8 (lone continuation byte)', '61 80', /invalid UTF-8/],
      ['invalid UTF-8 (overlong)', '62 c0af', /invalid UTF-8/],
      ['invalid UTF-8 (surrogate)', '63 eda080', /invalid UTF-8/],
      ['invalid UTF-8 in a long string', `78 40 ${'61'.repeat(63)}ff`, /invalid UTF-8/],
      ['invalid UTF-8 in a chunk', '7f 61 c3 61 a9 ff', /invalid UTF-8 in a text string chunk/],
      ['a "__proto__" key', 'a1 69 5f5f70726f746f5f5f 01', /"__proto__" is not allowed/],
      ['a "__proto__" key under tag 42', 'd8 2a a1 69 5f5f70726f746f5f5f 01', /tag 42 is not allowed/],
      ['a "__proto__" key in an indefinite map deep inside', '81 bf 69 5f5f70726f746f5f5f 01 ff', /"__proto__" is not allowed/],
      ['cyclic-structure tag 28', 'd8 1c 81 d8 1d 00', /tag 28 is not allowed/],
      ['a date tag', 'c1 1a 5f5e1000', /tag 1 is not allowed/],
      ['self-described CBOR inside', '81 d9 d9f7 01', /55799.*only around the whole item/],
      ['tag 2 around text', 'c2 61 61', /must be a byte string, got a text string/],
      ['a bignum over 128 bytes', `c2 58 81 ${'01'.repeat(129)}`, /bignum of 129 bytes exceeds the limit of 128/],
      ['nesting over the limit', `${'81'.repeat(MAX_NESTING + 1)}00`, /nesting deeper than 64 levels/],
      ['200,000 levels of nesting', `${'81'.repeat(200_000)}00`, /nesting deeper than 64 levels/],
      ['truncated', '82 01', /truncated/],
      ['a huge declared array', '9b 0000000100000000', /exceeds the limit/],
      ['a declared array longer than the bytes', '9a 00010000 00', /truncated CBOR: 65536 entries declared/],
      ['a declared string longer than the bytes', '5a 00010000 00', /truncated CBOR: a string of 65536 bytes declared/],
      ['an 8-byte string length over the input', '5b 0000000100000000 00', /truncated CBOR: a string of 4294967296 bytes/],
      ['trailing bytes', '01 02', /trailing bytes/],
      ['a stray break', 'ff', /unexpected break/],
      ['reserved additional information', '1c', /reserved additional information 28/],
      ['an indefinite integer', '1f', /indefinite length is not allowed for an unsigned integer/],
      ['a text chunk in indefinite bytes', '5f 61 61 ff', /chunk of an indefinite-length byte string must be a definite-length byte string/],
      ['a nested indefinite chunk', '7f 7f ff ff', /must be a definite-length text string/],
      ['an unassigned simple value', 'f0', /unassigned simple value 16/],
      ['a two-byte simple value under 32', 'f8 10', /not well-formed/],
      ['an empty input', '', /truncated/],
    ];
    for (const [name, bytes, pattern] of cases) {
      it(name, () => {
        const err = refusal(hex(bytes));
        assert.match(err.message, pattern);
        assert.doesNotMatch(err.message, /Cannot|undefined|property|stack/);
      });
    }
  });

  it('keeps floats apart from integers when asked (markFloats)', () => {
    assert.deepEqual(decodeStrict(hex('82 01 f9 3c00'), { markFloats: true }), [1, new CborFloat(1)]);
  });

  it('does not pollute prototypes, whatever the keys', () => {
    const value = decodeStrict(encodeCbor({ constructor: 1, toString: 2, hasOwnProperty: 3 })) as Record<string, unknown>;
    assert.equal(value.constructor, 1);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('makes objects by shape for repeated key sequences, whatever the key text', () => {
    // Quotes, backslashes, braces and code-like text in keys reach the shape's generated
    // literal only as JSON string literals: the second decode (by shape) equals the first.
    const tricky = { 'a"b': 1, 'c\\d': 2, '}': 3, __proto: 4, "'); x(": 5, 'v[0]': 6, '': 7, '1': 8, constructor: 9 };
    const bytes = encodeCbor(tricky);
    const first = decodeStrict(bytes);
    const second = decodeStrict(bytes);
    const third = decodeStrict(bytes);
    assert.deepEqual(first, tricky);
    assert.deepEqual(second, tricky);
    assert.deepEqual(third, tricky);
    assert.equal(Object.getPrototypeOf(third), Object.prototype);
    // Far more key sequences than the shape table holds: the overflow is made key by key, alike.
    for (let i = 0; i < 5000; i++) {
      const value = { [`k${i}`]: i, [`j${i % 7}`]: 'x', nested: { [`n${i}`]: [i] } };
      const b = encodeCbor(value);
      assert.deepEqual(decodeStrict(b), value);
      assert.deepEqual(decodeStrict(b), value);
    }
  });

  it('decodes what the encoder writes exactly as cbor-x does (property)', () => {
    const reference = new Decoder({ useRecords: false, mapsAsObjects: true });
    const json = fc.jsonValue({ maxDepth: 6 });
    fc.assert(
      fc.property(json, (value) => {
        const bytes = encodeCbor(value);
        // cbor-x renames a "__proto__" key; the profile refuses it.
        if (JSON.stringify(value).includes('"__proto__":')) assert.throws(() => decodeStrict(bytes), CborProfileError);
        else assert.deepEqual(decodeStrict(bytes), reference.decode(bytes));
      }),
      { numRuns: 2000, seed: 9 },
    );
  });

  it('throws nothing but CborProfileError on random and mutated bytes (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 256 }), mutated), (bytes) => {
        try {
          decodeStrict(bytes);
        } catch (err) {
          assert.ok(err instanceof CborProfileError, String(err));
        }
      }),
      { numRuns: 20_000, seed: 11 },
    );
  });

  describe('skip(): stepping over an item without building it', () => {
    /** What reading the bytes does: the error's words, or where the item ends. */
    function outcome(bytes: Uint8Array, read: (r: StrictReader) => void): string {
      const reader = new StrictReader(bytes);
      try {
        read(reader);
        reader.end();
        return `ok, ${reader.pos} bytes`;
      } catch (err) {
        assert.ok(err instanceof CborProfileError, String(err));
        return err.message;
      }
    }
    const same = (bytes: Uint8Array) =>
      assert.equal(
        outcome(bytes, (r) => r.skip()),
        outcome(bytes, (r) => r.value()),
        Buffer.from(bytes).toString('hex'),
      );

    it('takes and refuses what value() does, at the same byte, in the same words: the cases above', () => {
      for (const bytes of ['a2 61 61 01 61 61 02', 'a1 69 5f5f70726f746f5f5f 01', 'bf 61 61 01 61 61 02 ff', 'a1 78 01 61 01', 'a2 61 61 01 78 01 61 02'])
        same(hex(bytes));
      // A map bigger than the ones compared key by key, with a key repeated at its end.
      const big = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i]));
      const bytes = Buffer.from(encodeCbor(big));
      same(bytes);
      bytes[bytes.lastIndexOf(Buffer.from('k39'))! + 2] = 0x30; // k39 becomes k30
      same(bytes);
    });

    it('takes and refuses what value() does, at the same byte, in the same words (property)', () => {
      fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 256 }), valid, mutated), same), { numRuns: 20_000, seed: 13 });
    });
  });

  describe('in the envelope', () => {
    const id = '50 0102030405060708090a0b0c0d0e0f10';
    it('accepts an 8-byte type and an indefinite-length target', () => {
      const env = decodeEnvelope(hex(`87 1b0000000000000002 ${id} f6 7f 62 7573 62 6572 ff f6 f6 f6`));
      assert.equal(env.type, 2);
      assert.equal(env.target, 'user');
    });
    it('accepts an 8-byte error code', () => {
      const env = decodeEnvelope(hex(`87 02 ${id} ${id} f6 f6 f6 a2 64 636f6465 1b0000000000000194 67 6d657373616765 61 78`));
      assert.equal(env.error?.code, 404);
    });
    it('refuses a float type, even a whole one', () => {
      assert.throws(
        () => decodeEnvelope(hex(`87 f9 4000 ${id} f6 f6 f6 f6 f6`)),
        (err: unknown) => err instanceof EnvelopeError && err.field === 'type' && /unsigned integer, got a float/.test(err.message),
      );
    });
    it('refuses a float error code, even a whole one', () => {
      assert.throws(() => decodeEnvelope(hex(`87 02 ${id} ${id} f6 f6 f6 a2 64 636f6465 f9 5e50 67 6d657373616765 61 78`)), /code must be an unsigned integer/);
    });
    it('says which request a bad payload belongs to, so it can be answered', () => {
      try {
        decodeEnvelope(hex(`87 02 ${id} f6 61 74 f6 a2 61 61 01 61 61 02 f6`));
        assert.fail('accepted');
      } catch (err) {
        assert.ok(err instanceof EnvelopeError);
        assert.equal(err.field, 'payload');
        assert.equal(err.header?.type, 2);
        assert.deepEqual([...err.header!.id], [...hex(id).subarray(1)]);
        assert.match(err.message, /duplicate map key "a"/);
      }
    });
  });
});
