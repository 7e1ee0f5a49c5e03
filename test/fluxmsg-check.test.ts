// isPlainFluxMsg: the one-pass check that stands in for decoding a fluxMsg whose bytes are passed
// on as they are (a Wasm gear's output). It may answer "ask the decoder" for any message, but
// must never pass one that decodeFluxMsg refuses, and must pass what fluxrig's encoders write.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MAX_NESTING } from '../src/cbor/strict.js';
import { isPlainFluxMsg } from '../src/fluxmsg/check.js';
import { createFluxMsg, decodeFluxMsg, encodeFluxMsg, FluxMsgDecodeError, uuidv7 } from '../src/mod.js';
import { fluxMsgArbitrary } from './harness/arbitraries.js';

/** Whether decodeFluxMsg takes the bytes (it throws nothing but FluxMsgDecodeError otherwise). */
function decodes(bytes: Uint8Array): boolean {
  try {
    decodeFluxMsg(bytes);
    return true;
  } catch (err) {
    assert.ok(err instanceof FluxMsgDecodeError, String(err));
    return false;
  }
}

const ID = `50${'11'.repeat(16)}`;
const TS = '1b 18eae53bd044b8a3';
const text = (s: string) => Buffer.concat([Buffer.from([0x60 + s.length]), Buffer.from(s, 'latin1')]).toString('hex');

/** A message map written by hand: each field's key, then its value as hex. */
function message(fields: Array<[string, string]>): Uint8Array {
  const body = fields.map(([key, value]) => text(key) + value.replace(/\s+/g, '')).join('');
  return Buffer.from((0xa0 + fields.length).toString(16) + body, 'hex');
}

describe('isPlainFluxMsg', () => {
  it('passes every message encodeFluxMsg writes (property)', () => {
    fc.assert(
      fc.property(fluxMsgArbitrary, (msg) => isPlainFluxMsg(encodeFluxMsg(msg))),
      { numRuns: 1000, seed: 5 },
    );
  });

  it('never passes bytes decodeFluxMsg refuses: messages mutated, cut short or extended (property)', () => {
    let passedChanged = 0;
    let refused = 0;
    const edit = fc.tuple(fc.constantFrom('set', 'cut', 'extend'), fc.nat(), fc.nat({ max: 255 }));
    fc.assert(
      fc.property(fluxMsgArbitrary, fc.array(edit, { minLength: 1, maxLength: 3 }), (msg, edits) => {
        let bytes = Buffer.from(encodeFluxMsg(msg));
        const original = Buffer.from(bytes);
        for (const [how, at, byte] of edits) {
          if (how === 'set') bytes[at % bytes.length] = byte;
          else if (how === 'cut') bytes = bytes.subarray(0, at % bytes.length);
          else bytes = Buffer.concat([bytes, Buffer.from([byte])]);
          if (bytes.length === 0) return;
        }
        const valid = decodes(bytes);
        if (isPlainFluxMsg(bytes)) {
          assert.ok(valid, `passed bytes decodeFluxMsg refuses: ${bytes.toString('hex')}`);
          if (!bytes.equals(original)) passedChanged++;
        }
        if (!valid) refused++;
      }),
      { numRuns: 20_000, seed: 7 },
    );
    // Both sides were reached: changes the decoder takes (a byte of text, an id), and refusals.
    assert.ok(passedChanged > 100, `only ${passedChanged} changed messages passed`);
    assert.ok(refused > 1000, `only ${refused} changed messages were refusals`);
  });

  describe('asks the decoder about valid messages in another encoding', () => {
    const cases: Array<[string, Array<[string, string]>]> = [
      [
        'an unknown key',
        [
          ['id', ID],
          ['ts', TS],
          ['extra', '01'],
        ],
      ],
      [
        'null meta',
        [
          ['id', ID],
          ['meta', 'f6'],
          ['ts', TS],
        ],
      ],
      [
        'an indefinite-length trace',
        [
          ['id', ID],
          ['trace', '7f 6161 ff'],
          ['ts', TS],
        ],
      ],
      [
        'an id in tag 64',
        [
          ['id', `d840 ${ID}`],
          ['ts', TS],
        ],
      ],
      [
        'flags in eight bytes',
        [
          ['id', ID],
          ['flags', '1b 0000000000000001'],
          ['ts', TS],
        ],
      ],
      [
        'a hop with its keys in another order',
        [
          ['id', ID],
          ['path', `81 a3 6170 ${ID} 6167 ${ID} 6174 01`],
          ['ts', TS],
        ],
      ],
    ];
    for (const [name, fields] of cases) {
      it(name, () => {
        const bytes = message(fields);
        assert.ok(decodes(bytes), 'the decoder takes it');
        assert.equal(isPlainFluxMsg(bytes), false);
      });
    }
    it('the same message in the plain encoding passes', () => {
      assert.ok(
        isPlainFluxMsg(
          message([
            ['id', ID],
            ['trace', '6161'],
            ['flags', '01'],
            ['path', `81 a3 6167 ${ID} 6170 ${ID} 6174 01`],
            ['ts', TS],
          ]),
        ),
      );
    });
  });

  describe('refuses what the decoder refuses', () => {
    const deep = `${'81'.repeat(MAX_NESTING)}00`;
    const cases: Array<[string, Array<[string, string]>]> = [
      ['no id', [['ts', TS]]],
      ['no ts', [['id', ID]]],
      [
        'a key twice',
        [
          ['id', ID],
          ['ts', TS],
          ['id', ID],
        ],
      ],
      [
        'a meta key twice',
        [
          ['id', ID],
          ['meta', `a2 ${text('k')}${text('a')} ${text('k')}${text('b')}`],
          ['ts', TS],
        ],
      ],
      [
        'a meta key "__proto__"',
        [
          ['id', ID],
          ['meta', `a1 ${text('__proto__')}${text('a')}`],
          ['ts', TS],
        ],
      ],
      [
        'a meta value that is not text',
        [
          ['id', ID],
          ['meta', `a1 ${text('k')}01`],
          ['ts', TS],
        ],
      ],
      [
        'invalid UTF-8 in the trace',
        [
          ['id', ID],
          ['trace', '62 c328'],
          ['ts', TS],
        ],
      ],
      [
        'invalid UTF-8 in a meta value',
        [
          ['id', ID],
          ['meta', `a1 ${text('k')}62 c328`],
          ['ts', TS],
        ],
      ],
      [
        'invalid UTF-8 deep in data',
        [
          ['id', ID],
          ['data', `a1 ${text('k')}81 a1 ${text('x')}62 c328`],
          ['ts', TS],
        ],
      ],
      [
        'a data key twice, nested',
        [
          ['id', ID],
          ['data', `a1 ${text('k')}a2 ${text('x')}01 ${text('x')}02`],
          ['ts', TS],
        ],
      ],
      [
        'a data key "__proto__"',
        [
          ['id', ID],
          ['data', `a1 ${text('__proto__')}01`],
          ['ts', TS],
        ],
      ],
      [
        'data nested past the limit',
        [
          ['id', ID],
          ['data', `a1 ${text('k')}${deep}`],
          ['ts', TS],
        ],
      ],
      [
        'data that is not a map',
        [
          ['id', ID],
          ['data', '01'],
          ['ts', TS],
        ],
      ],
      [
        'an id of 15 bytes',
        [
          ['id', `4f${'11'.repeat(15)}`],
          ['ts', TS],
        ],
      ],
      [
        'ts past int64',
        [
          ['id', ID],
          ['ts', '1b 8000000000000000'],
        ],
      ],
      [
        'a float ts',
        [
          ['id', ID],
          ['ts', 'fb 3ff8000000000000'],
        ],
      ],
      [
        'flags past uint32',
        [
          ['id', ID],
          ['flags', '1b 0000000100000000'],
          ['ts', TS],
        ],
      ],
      [
        'more hops than the limit',
        [
          ['id', ID],
          ['path', `98 41 ${`a3 6167 ${ID} 6170 ${ID} 6174 01`.repeat(65)}`],
          ['ts', TS],
        ],
      ],
    ];
    for (const [name, fields] of cases) {
      it(name, () => {
        const bytes = message(fields);
        assert.equal(decodes(bytes), false, 'the decoder refuses it');
        assert.equal(isPlainFluxMsg(bytes), false);
      });
    }
    it('a byte cut off or one too many', () => {
      const good = encodeFluxMsg(createFluxMsg({ ref_id: uuidv7(), data: { a: 1 } }));
      assert.ok(isPlainFluxMsg(good));
      assert.equal(isPlainFluxMsg(good.subarray(0, good.length - 1)), false);
      assert.equal(isPlainFluxMsg(Buffer.concat([good, Buffer.from([0])])), false);
    });
  });
});
