import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeEnvelope, encodeEnvelope, type Envelope, EnvelopeError, FluxarError, MessageType } from '../src/fluxar/mod.js';
import { encodeCbor } from '../src/cbor/profile.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';

const FIXED_ID = Uint8Array.from(Buffer.from('019a4f2c8e1b7c3d9e2f0a1b2c3d4e5f', 'hex'));

/** The call from the FLUXAR homepage. */
function homepageExample(): Envelope {
  return {
    type: MessageType.Call,
    id: FIXED_ID,
    ref: null,
    target: 'user.getProfile',
    meta: { trace_id: 'abc123' },
    payload: { id: 42 },
    error: null,
  };
}

function rejection(bytes: Uint8Array): EnvelopeError {
  try {
    decodeEnvelope(bytes);
  } catch (err) {
    assert.ok(err instanceof EnvelopeError, `expected EnvelopeError, got ${String(err)}`);
    assert.ok(err instanceof FluxarError);
    assert.equal(err.code, 400);
    return err;
  }
  assert.fail('decode should have failed');
}

describe('FLUXAR envelope', () => {
  it('encodes the homepage example in 60 bytes, byte for byte', (t) => {
    const bytes = encodeEnvelope(homepageExample());
    const json = JSON.stringify({ ...homepageExample(), id: Buffer.from(FIXED_ID).toString('hex') });
    t.diagnostic(`CBOR ${bytes.length} bytes vs JSON ${Buffer.byteLength(json)} bytes: ${json}`);
    console.log(`homepage example: CBOR ${bytes.length} bytes, JSON ${Buffer.byteLength(json)} bytes (${json})`);
    assert.equal(bytes.length, 60);
    assert.equal(
      Buffer.from(bytes).toString('hex'),
      '87' + // array(7)
        '02' + // type: call
        '50' +
        '019a4f2c8e1b7c3d9e2f0a1b2c3d4e5f' + // id: bytes(16)
        'f6' + // ref: null
        '6f' +
        Buffer.from('user.getProfile').toString('hex') + // target: text(15)
        'a1' +
        '68' +
        Buffer.from('trace_id').toString('hex') +
        '66' +
        Buffer.from('abc123').toString('hex') + // meta
        'a1' +
        '62' +
        Buffer.from('id').toString('hex') +
        '182a' + // payload {id: 42}
        'f6', // error: null
    );
  });

  it('round-trips every type, with payload bytes staying bytes', () => {
    for (const type of Object.values(MessageType)) {
      const env: Envelope = {
        type,
        id: uuidv7(),
        ref: uuidv7(),
        target: 'svc.method',
        meta: { deadline_ms: 250, tags: ['a'] },
        payload: new Uint8Array([1, 2, 3]),
        error: { code: 404, message: 'no such target', data: { target: 'svc.method' } },
      };
      const back = decodeEnvelope(encodeEnvelope(env));
      assert.equal(back.type, type);
      assert.deepEqual([...back.id], [...env.id]);
      assert.deepEqual([...back.ref!], [...env.ref!]);
      assert.equal(back.target, 'svc.method');
      assert.deepEqual(back.meta, env.meta);
      assert.ok(back.payload instanceof Uint8Array);
      assert.deepEqual([...(back.payload as Uint8Array)], [1, 2, 3]);
      assert.deepEqual(back.error, env.error);
    }
  });

  it('writes exactly the bytes a general CBOR encoder writes for the same array (property)', () => {
    const bytes16 = fc.uint8Array({ minLength: 16, maxLength: 16 });
    const value = fc.oneof(
      fc.constant(null),
      fc.string({ maxLength: 300 }),
      fc.integer(),
      fc.boolean(),
      fc.uint8Array({ maxLength: 70_000 }),
      fc.dictionary(
        fc.string({ maxLength: 8 }).filter((k) => k !== '__proto__'),
        fc.oneof(fc.string(), fc.integer(), fc.uint8Array({ maxLength: 8 })),
      ),
    );
    fc.assert(
      fc.property(
        fc.record({
          type: fc.integer({ min: 1, max: 7 }),
          id: bytes16,
          ref: fc.option(bytes16, { nil: null }),
          target: fc.option(fc.string({ unit: 'grapheme', maxLength: 300 }), { nil: null }),
          meta: fc.option(
            fc.dictionary(
              fc.string({ maxLength: 8 }).filter((k) => k !== '__proto__'),
              fc.oneof(fc.string(), fc.integer()),
            ),
            { nil: null },
          ),
          payload: value,
          error: fc.option(fc.record({ code: fc.nat({ max: 70_000 }), message: fc.string() }), { nil: null }),
        }),
        (env) => {
          const ours = encodeEnvelope(env as Envelope);
          const reference = encodeCbor([env.type, env.id, env.ref, env.target, env.meta, env.payload, env.error]);
          assert.equal(Buffer.from(ours).toString('hex'), Buffer.from(reference).toString('hex'));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('writes an undefined payload as null and omits absent error data', () => {
    const bytes = encodeEnvelope({ ...homepageExample(), payload: undefined, error: { code: 500, message: 'boom' } });
    const back = decodeEnvelope(bytes);
    assert.equal(back.payload, null);
    assert.deepEqual(back.error, { code: 500, message: 'boom' });
  });

  it('refuses to encode an invalid envelope', () => {
    assert.throws(() => encodeEnvelope({ ...homepageExample(), type: 9 as MessageType }), /type must be an integer 1..7, got 9/);
    assert.throws(() => encodeEnvelope({ ...homepageExample(), id: new Uint8Array(8) }), /id must be a 16-byte/);
  });

  describe('decoding rejects, naming the item', () => {
    const id = Buffer.from(FIXED_ID);
    const valid = [2, id, null, 't', null, null, null];
    const with_ = (index: number, value: unknown) => encodeCbor(valid.map((v, i) => (i === index ? value : v)));
    const cases: Array<[string, Uint8Array, string, RegExp]> = [
      ['not CBOR', Buffer.from('ff', 'hex'), 'envelope', /must be a CBOR array/],
      ['truncated', encodeEnvelope(homepageExample()).subarray(0, 30), 'target', /truncated/],
      ['trailing bytes', Buffer.concat([encodeEnvelope(homepageExample()), Buffer.from([0xf6])]), 'envelope', /trailing/],
      ['not an array', encodeCbor({ type: 2 }), 'envelope', /must be a CBOR array/],
      ['six items', encodeCbor(valid.slice(0, 6)), 'envelope', /exactly 7 items, got 6/],
      ['eight items', encodeCbor([...valid, null]), 'envelope', /exactly 7 items, got 8/],
      ['type 0', with_(0, 0), 'type', /got 0/],
      ['type 8', with_(0, 8), 'type', /got 8/],
      ['type as text', with_(0, 'call'), 'type', /must be an unsigned integer, got a text string/],
      ['type as float', with_(0, 2.5), 'type', /must be an unsigned integer, got a float/],
      ['id of 15 bytes', with_(1, id.subarray(0, 15)), 'id', /16-byte/],
      ['id as text', with_(1, 'x'.repeat(16)), 'id', /must be a byte string, got a text string/],
      ['id null', with_(1, null), 'id', /must be a byte string, got null/],
      ['ref of 4 bytes', with_(2, Buffer.alloc(4)), 'ref', /null or a 16-byte/],
      ['target as number', with_(3, 7), 'target', /must be a text string, got an unsigned integer/],
      ['target as bytes', with_(3, Buffer.from('t')), 'target', /must be a text string, got a byte string/],
      ['meta as array', with_(4, [1]), 'meta', /map or null/],
      ['meta as text', with_(4, 'm'), 'meta', /map or null/],
      ['error as text', with_(6, 'bad'), 'error', /null or a map/],
      ['error code negative', with_(6, { code: -1, message: 'x' }), 'error', /unsigned integer/],
      ['error code text', with_(6, { code: '404', message: 'x' }), 'error', /unsigned integer/],
      ['error without message', with_(6, { code: 404 }), 'error', /message must be text/],
      ['__proto__ in meta', encodeCbor([2, id, null, 't', new Map([['__proto__', 1]]), null, null]), 'meta', /__proto__/],
    ];
    for (const [name, bytes, field, pattern] of cases) {
      it(name, () => {
        const err = rejection(bytes);
        assert.equal(err.field, field);
        assert.match(err.message, pattern);
      });
    }

    it('over the byte limit', () => {
      const err = rejection.call(null, new Uint8Array(0)); // sanity: empty input is a rejection too
      assert.equal(err.field, 'envelope');
      assert.throws(() => decodeEnvelope(encodeEnvelope(homepageExample()), { maxBytes: 59 }), /60 bytes, more than the limit of 59/);
    });

    it('random bytes raise only EnvelopeError (property)', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 128 }), (bytes) => {
          try {
            decodeEnvelope(bytes);
          } catch (err) {
            assert.ok(err instanceof EnvelopeError, String(err));
          }
        }),
        { numRuns: 3000 },
      );
    });
  });
});
