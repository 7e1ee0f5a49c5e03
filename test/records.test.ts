// The records a rack's threads exchange through the rings. The flat kinds (every message of a
// busy wire makes them) are written by fluxrig's own writer: they must read back as written and
// stay the plain CBOR arrays any decoder reads.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeCbor } from '../src/cbor/profile.js';
import { LaneOutcome, Records } from '../src/gears/records.js';

const text = fc.string({ unit: 'grapheme', maxLength: 40 });
const bytes = fc.uint8Array({ maxLength: 300 });
const uint = fc.nat({ max: Number.MAX_SAFE_INTEGER });
const outcome = fc.constantFrom(LaneOutcome.Done, LaneOutcome.LeftWorker, LaneOutcome.Failed);
/**
 * Bytes as plain arrays (a Buffer and a Uint8Array alike) and integers as numbers (cbor-x reads
 * every 8-byte integer as a bigint), so deepEqual compares values only.
 */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return [...value];
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

describe('ring records', () => {
  const cases = {
    toMain: fc.record({ gear: text, port: text, bytes }),
    lanePublish: fc.record({ gear: text, port: text, bytes, id: text, conn: uint, call: text }),
    laneDeliver: fc.record({ token: uint, gear: text, port: text, bytes }),
    laneDone: fc.record({ token: uint, outcome, reason: text }),
  } as const;
  for (const [name, arbitrary] of Object.entries(cases)) {
    it(`${name}: reads back as written, as the CBOR array cbor-x reads (property)`, () => {
      const kind = Records[name as keyof typeof cases] as { encode(v: unknown): Uint8Array; decode(b: Uint8Array): unknown };
      fc.assert(
        fc.property(arbitrary, (record) => {
          const encoded = kind.encode(record);
          assert.deepEqual(plain(kind.decode(encoded)), plain(record));
          assert.deepEqual(plain(decodeCbor(encoded)), plain(Object.values(record)));
        }),
        { numRuns: 300, seed: 3 },
      );
    });
  }

  it('a flat record decoded from a slot that is then overwritten keeps its bytes', () => {
    const slot = new Uint8Array(new SharedArrayBuffer(256));
    const encoded = Records.laneDeliver.encode({ token: 7, gear: 'g', port: 'in', bytes: Uint8Array.of(1, 2, 3) });
    slot.set(encoded);
    const record = Records.laneDeliver.decode(slot.subarray(0, encoded.length));
    slot.fill(0xff);
    assert.deepEqual([...record.bytes], [1, 2, 3]);
    assert.equal(record.gear, 'g');
  });

  it('refuses a record of another kind: items of other types, or another number of them', () => {
    const toMain = Records.toMain.encode({ gear: 'g', port: 'p', bytes: new Uint8Array(0) });
    assert.throws(() => Records.laneDone.decode(toMain), /must be an unsigned integer, got a text string/);
    const deliver = Records.laneDeliver.encode({ token: 1, gear: 'g', port: 'p', bytes: new Uint8Array(0) });
    assert.throws(() => Records.laneDone.decode(deliver), /4 items, expected 3/);
  });
});
