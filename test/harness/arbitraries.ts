// fast-check arbitraries for fluxrig's values, shared by the property tests.
import fc from 'fast-check';
import type { FluxMsg } from '../../src/mod.js';

const uuid = fc.uint8Array({ minLength: 16, maxLength: 16 });
/** A UUID that is not the nil one (a nil ref_id or src_id reads back as none). */
const someUuid = uuid.filter((u) => u.some((b) => b !== 0));
const text = fc.string({ unit: 'grapheme', maxLength: 20 });
const key = text.filter((k) => k !== '__proto__');
// cbor-x writes -0 as the integer 0 (documented in docs/fluxmsg.md), so -0 is left out here.
const double = fc.double({ noNaN: true }).filter((d) => !Object.is(d, -0));
const value = fc.oneof(text, fc.integer(), double, fc.boolean(), fc.constant(null));
const int64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });

/** Any valid fluxMsg: every field, text in any script, data nested two levels. */
export const fluxMsgArbitrary: fc.Arbitrary<FluxMsg> = fc.record({
  id: uuid,
  ref_id: fc.option(someUuid, { nil: null }),
  trace: text,
  src_id: fc.option(someUuid, { nil: null }),
  meta: fc.dictionary(key, text),
  data: fc.dictionary(key, fc.oneof(value, fc.array(value, { maxLength: 4 }), fc.dictionary(key, value))),
  flags: fc.nat({ max: 0xffffffff }),
  raw: fc.option(fc.uint8Array({ maxLength: 64 }), { nil: null }),
  path: fc.array(fc.record({ g: uuid, p: uuid, t: int64 }), { maxLength: 5 }),
  ts: int64,
});
