import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import {
  addHop,
  createFluxMsg,
  decodeFluxMsg,
  DEFAULT_MAX_HOPS,
  DEFAULT_MAX_MESSAGE_BYTES,
  encodeFluxMsg,
  entityId,
  EntityType,
  type FluxMsg,
  FluxMsgDecodeError,
  FluxMsgValidationError,
  metaValueFromBytes,
  metaValueToBytes,
  setFluxMsgLimits,
  uuidv7,
} from '../src/mod.js';
import { encodeCbor } from '../src/cbor/profile.js';
import { fluxMsgArbitrary } from './harness/arbitraries.js';

/** Plain arrays for bytes and tagged strings for bigints, so deepEqual compares values only. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: [...value] };
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

function sample(): FluxMsg {
  const msg = createFluxMsg({
    ref_id: uuidv7(),
    trace: '4bf92f3577b34da6a3ce929d0e0e4736',
    src_id: entityId(EntityType.Gear),
    meta: { 'conn.id': 'c-17', 'peer.ip': '127.0.0.1' },
    data: { amount: 125.5, currency: 'EUR', card: { bin: '411111', last4: '1111' }, tags: ['a', 1, null, true] },
    flags: 1,
    raw: new Uint8Array([0xde, 0xad, 0xbe, 0xef]),
  });
  addHop(msg, entityId(EntityType.Gear), entityId(EntityType.PortOutput));
  return msg;
}

/** Re-encodes a wire map with some keys changed, to forge messages the encoder would refuse. */
function forge(overrides: Record<string, unknown>, drop: string[] = []): Uint8Array {
  const m = sample();
  const wire: Record<string, unknown> = { ...m, ...overrides };
  for (const k of drop) delete wire[k];
  return encodeCbor(wire);
}

function decodeError(bytes: Uint8Array): FluxMsgDecodeError {
  try {
    decodeFluxMsg(bytes);
  } catch (err) {
    assert.ok(err instanceof FluxMsgDecodeError, `expected FluxMsgDecodeError, got ${String(err)}`);
    return err;
  }
  assert.fail('decode should have failed');
}

describe('fluxMsg codec', () => {
  after(() => setFluxMsgLimits({ maxHops: DEFAULT_MAX_HOPS, maxBytes: DEFAULT_MAX_MESSAGE_BYTES }));

  it('round-trips every field', () => {
    const msg = sample();
    const back = decodeFluxMsg(encodeFluxMsg(msg));
    assert.deepEqual(plain(back), plain(msg));
    assert.equal(typeof back.ts, 'bigint');
    assert.equal(typeof back.path[0]!.t, 'bigint');
  });

  it('writes the ten fluxrig keys in order, UUIDs and raw as plain byte strings', () => {
    const bytes = Buffer.from(encodeFluxMsg(sample()));
    assert.equal(bytes[0], 0xaa, 'a map of 10 entries');
    const keys = ['id', 'ref_id', 'trace', 'src_id', 'meta', 'data', 'flags', 'raw', 'path', 'ts'];
    let at = 0;
    for (const key of keys) {
      const pos = bytes.indexOf(Buffer.concat([Buffer.from([0x60 + key.length]), Buffer.from(key)]), at);
      assert.ok(pos > at, `key ${key} out of order`);
      at = pos;
    }
    // "id" then 0x50: a 16-byte byte string, no tag 64 (0xd8 0x40) anywhere.
    assert.equal(bytes[bytes.indexOf(Buffer.from('626964', 'hex')) + 3], 0x50);
    assert.equal(bytes.indexOf(Buffer.from('d840', 'hex')), -1);
  });

  it('round-trips arbitrary messages (property)', () => {
    fc.assert(
      fc.property(fluxMsgArbitrary, (msg) => {
        const back = decodeFluxMsg(encodeFluxMsg(msg));
        assert.deepEqual(plain(back), plain(msg));
      }),
      { numRuns: 300 },
    );
  });

  it('treats a nil UUID on the wire as none', () => {
    const msg = decodeFluxMsg(forge({ ref_id: new Uint8Array(16), src_id: new Uint8Array(16) }));
    assert.equal(msg.ref_id, null);
    assert.equal(msg.src_id, null);
  });

  it('fills absent optional fields with empty values and ignores unknown keys', () => {
    const bytes = encodeCbor({ id: uuidv7(), ts: 5n, future_field: 'x' });
    const msg = decodeFluxMsg(bytes);
    assert.deepEqual(msg.meta, {});
    assert.deepEqual(msg.data, {});
    assert.deepEqual(msg.path, []);
    assert.equal(msg.raw, null);
    assert.equal(msg.flags, 0);
    assert.equal(msg.ts, 5n);
    assert.equal('future_field' in msg, false);
  });

  it('copies byte strings out of the input when asked', () => {
    const bytes = encodeFluxMsg(sample());
    const viewed = decodeFluxMsg(bytes);
    const copied = decodeFluxMsg(bytes, { copyBuffers: true });
    const id = Buffer.from(copied.id);
    bytes.fill(0);
    assert.ok(
      viewed.id.every((b) => b === 0),
      'a view sees the input change',
    );
    assert.deepEqual(Buffer.from(copied.id), id, 'a copy does not');
  });

  describe('validation names the field', () => {
    const cases: Array<[string, (m: FluxMsg) => void, string]> = [
      ['id', (m) => (m.id = new Uint8Array(15)), 'id'],
      ['ref_id', (m) => (m.ref_id = 'x' as never), 'ref_id'],
      ['src_id', (m) => (m.src_id = new Uint8Array(17)), 'src_id'],
      ['trace', (m) => (m.trace = 7 as never), 'trace'],
      ['meta value type', (m) => (m.meta = { a: 1 as never }), 'meta.a'],
      ['meta value UTF-8', (m) => (m.meta = { a: 'x\ud800' }), 'meta.a'],
      // biome-ignore lint/complexity/useLiteralKeys: a lone surrogate reads clearer as a computed key
      ['meta key UTF-8', (m) => (m.meta = { ['\udc00']: 'v' }), 'meta["\\udc00"]'],
      // biome-ignore lint/complexity/useLiteralKeys: a lone surrogate reads clearer as a computed key
      ['data key UTF-8', (m) => (m.data = { ['\ud800k']: 1 }), 'data["\\ud800k"]'],
      ['flags', (m) => (m.flags = 2 ** 32), 'flags'],
      ['negative flags', (m) => (m.flags = -1), 'flags'],
      ['raw', (m) => (m.raw = [1, 2] as never), 'raw'],
      ['hop gear', (m) => (m.path = [{ g: new Uint8Array(3), p: uuidv7(), t: 0n }]), 'path[0].g'],
      ['hop time', (m) => (m.path = [{ g: uuidv7(), p: uuidv7(), t: 2n ** 63n }]), 'path[0].t'],
      ['ts type', (m) => (m.ts = 5 as never), 'ts'],
    ];
    for (const [name, mutate, field] of cases) {
      it(name, () => {
        const msg = sample();
        mutate(msg);
        assert.throws(
          () => encodeFluxMsg(msg),
          (err: unknown) => err instanceof FluxMsgValidationError && err.field === field && err.message.includes(field),
        );
      });
    }
  });

  it('refuses more than 64 hops, and the limit is configurable', () => {
    const msg = sample();
    msg.path = Array.from({ length: 64 }, () => ({ g: uuidv7(), p: uuidv7(), t: 1n }));
    encodeFluxMsg(msg);
    msg.path.push({ g: uuidv7(), p: uuidv7(), t: 1n });
    assert.throws(() => encodeFluxMsg(msg), /path: has 65 hops, more than the limit of 64/);
    assert.equal(decodeError(forge({ path: msg.path })).field, 'path');
    setFluxMsgLimits({ maxHops: 100 });
    assert.equal(decodeFluxMsg(encodeFluxMsg(msg)).path.length, 65);
    setFluxMsgLimits({ maxHops: DEFAULT_MAX_HOPS });
  });

  it('refuses messages over 2 MiB, and the limit is configurable', () => {
    const msg = sample();
    msg.raw = new Uint8Array(DEFAULT_MAX_MESSAGE_BYTES);
    assert.throws(() => encodeFluxMsg(msg), /more than the limit of 2097152/);
    assert.match(decodeError(forge({ raw: msg.raw })).message, /more than the limit of 2097152/);
    setFluxMsgLimits({ maxBytes: 4 * 1024 * 1024 });
    assert.equal(decodeFluxMsg(encodeFluxMsg(msg)).raw!.length, DEFAULT_MAX_MESSAGE_BYTES);
    setFluxMsgLimits({ maxBytes: DEFAULT_MAX_MESSAGE_BYTES });
    assert.throws(() => setFluxMsgLimits({ maxHops: 0 }), RangeError);
  });

  it('writes binary meta values as hex:<hex>', () => {
    assert.equal(metaValueFromBytes(Buffer.from('héllo')), 'héllo');
    assert.equal(metaValueFromBytes(new Uint8Array([0xff, 0x00, 0x80])), 'hex:ff0080');
    assert.deepEqual([...metaValueToBytes('hex:ff0080')], [0xff, 0x00, 0x80]);
    assert.deepEqual(Buffer.from(metaValueToBytes('plain')).toString(), 'plain');
  });

  describe('untrusted bytes raise only FluxMsgDecodeError', () => {
    const good = encodeFluxMsg(sample());
    const cases: Array<[string, Uint8Array, RegExp, string?]> = [
      ['empty input', new Uint8Array(0), /truncated|unexpected end/i],
      ['truncated', good.subarray(0, good.length - 3), /truncated/],
      ['trailing bytes', Buffer.concat([good, Buffer.from([0x00])]), /trailing bytes/],
      ['not a map', encodeCbor([1, 2, 3]), /not a CBOR map/],
      ['missing id', forge({}, ['id']), /id: is required/, 'id'],
      ['missing ts', forge({}, ['ts']), /ts: is required/, 'ts'],
      ['id as text', forge({ id: 'abc' }), /id: must be a 16-byte UUID/, 'id'],
      ['ts as float', forge({ ts: 1.5 }), /ts: must be an integer/, 'ts'],
      ['meta value not text', forge({ meta: { a: 1 } }), /meta\.a/, 'meta.a'],
      ['flags too large', forge({ flags: 2 ** 33 }), /flags: must be a uint32/, 'flags'],
      ['hop missing time', forge({ path: [{ g: uuidv7(), p: uuidv7() }] }), /path\[0\]\.t/, 'path[0].t'],
      // A map header claiming 2^32-1 entries in a 6-byte message.
      ['absurd map size', Buffer.from('bafffffffff0', 'hex'), /invalid CBOR|truncated|exceeds/],
      ['absurd array size', Buffer.from('a1616e9affffffff', 'hex'), /invalid CBOR|truncated|exceeds/],
      ['deep nesting', Buffer.concat([Buffer.alloc(200_000, 0x81), Buffer.from([0x00])]), /nesting deeper than 64 levels/],
      [
        '__proto__ key',
        encodeCbor(
          new Map<string, unknown>([
            ['id', uuidv7()],
            ['ts', 1n],
            ['data', new Map([['__proto__', { polluted: true }]])],
          ]),
        ),
        /__proto__/,
      ],
    ];
    for (const [name, bytes, pattern, field] of cases) {
      it(name, () => {
        const err = decodeError(bytes);
        assert.match(err.message, pattern);
        if (field !== undefined) assert.equal(err.field, field);
      });
    }

    it('does not pollute prototypes', () => {
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });

    it('accepts "__proto__" inside text and bytes (only keys are refused)', () => {
      const msg = sample();
      msg.data = { note: 'i__proto__' };
      msg.raw = Buffer.from('i__proto__');
      assert.equal(decodeFluxMsg(encodeFluxMsg(msg)).data.note, 'i__proto__');
    });

    it('never throws anything else on random bytes (property)', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
          try {
            decodeFluxMsg(bytes);
          } catch (err) {
            assert.ok(err instanceof FluxMsgDecodeError, String(err));
          }
        }),
        { numRuns: 2000 },
      );
    });

    it('never throws anything else on mutated valid messages (property)', () => {
      fc.assert(
        fc.property(fc.nat({ max: good.length - 1 }), fc.nat({ max: 255 }), (at, byte) => {
          const bytes = Uint8Array.from(good);
          bytes[at] = byte;
          try {
            decodeFluxMsg(bytes);
          } catch (err) {
            assert.ok(err instanceof FluxMsgDecodeError, String(err));
          }
        }),
        { numRuns: 2000 },
      );
    });
  });
});
