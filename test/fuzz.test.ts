// Fuzzing a real rack process over real TCP and WebSocket connections. fast-check generates and
// mutates frames (bit flips, truncations, random bytes, random CBOR, wrong item types, deep
// nesting, huge declared counts, tags, flags, length prefixes), sends them before or after the
// handshake, then asserts:
// - the rack process is still running and a canary connection still gets correct answers;
// - a well-formed call sent after the hostile frame is answered, unless the connection was closed;
// - a connection is never closed in silence: a fatal bye with a documented code comes first
//   (or WebSocket close 1009 for a message over the limit);
// - every error the rack sends carries a documented code, and every frame it sends decodes.
// CI runs a fixed seed; `make fuzz` runs 50 times as many cases with a random seed
// (FUZZ_RUNS, FUZZ_SEED). Whatever it finds goes into REGRESSIONS below.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { deflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { encodeCbor } from '../src/cbor/profile.js';
import { decodeEnvelope, encodeEnvelope, ERROR_NAMES, MessageType, type Peer } from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';
import { RawConnection as Raw, type RawKind } from './harness/raw.js';
import { type RackProcess, startCanaryRack } from './harness/rack-process.js';
import { until } from './harness/wait.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_123);
const DOCUMENTED = new Set(Object.keys(ERROR_NAMES).map(Number));
const approved = { amount: 100, merchant: 'm-1', country: 'FR', card_country: 'FR' };

const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

/** Hostile bytes found so far, replayed first on every run (hex of an envelope body, phase). */
const REGRESSIONS: Array<{ name: string; phase: 'pre' | 'post'; body: string }> = [
  {
    name: 'hello offering a 64-bit version',
    phase: 'pre',
    body: '87 01 50 019a4f2c8e1b7c3d9e2f0a1b2c3d4e01 f6 f6 f6 a3 68 76657273696f6e73 81 1b ffffffffffffffff 64 63617073 80 65 6e6f6e6365 50 00000000000000000000000000000000 f6',
  },
  { name: 'call with a bigint in meta', phase: 'post', body: '87 02 50 019a4f2c8e1b7c3d9e2f0a1b2c3d4e02 f6 61 74 a1 61 62 1b 1000000000000000 f6 f6' },
  { name: 'call with a cyclic tag in meta', phase: 'post', body: '87 02 50 019a4f2c8e1b7c3d9e2f0a1b2c3d4e03 f6 61 74 a1 61 62 d8 1c 80 f6 f6' },
  { name: '__proto__ under tag 42', phase: 'post', body: '87 02 50 019a4f2c8e1b7c3d9e2f0a1b2c3d4e04 f6 61 74 f6 d8 2a a1 69 5f5f70726f746f5f5f 01 f6' },
  { name: '100,000 levels of nesting', phase: 'post', body: `87 02 50 019a4f2c8e1b7c3d9e2f0a1b2c3d4e05 f6 61 74 f6 ${'81'.repeat(100_000)}00 f6` },
];

interface Case {
  kind: RawKind;
  phase: 'pre' | 'post';
  deflate: boolean;
  /** A complete frame body and its flags byte, or raw bytes for a byte stream (framing fuzz). */
  body?: Uint8Array;
  flags?: number;
  raw?: Uint8Array;
  /**
   * A stream or a subscription opened first (after the handshake): the body then continues it,
   * with the opener's id where the body has OPENER_REF.
   */
  opener?: Uint8Array;
  continuation?: Uint8Array[];
  label: string;
}

/** Sixteen bytes a continuation carries as its ref, replaced by the opener's id when sent. */
const OPENER_REF = Buffer.from('f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff', 'hex');

function envelopeBytes(type: number, target: string | null, meta: unknown, payload: unknown, ref: Uint8Array | null = null): Uint8Array {
  return encodeCbor([type, uuidv7(), ref, target, meta, payload, null]);
}

const goodCall = () =>
  encodeEnvelope({ type: MessageType.Call, id: uuidv7(), ref: null, target: 'payments.authorize', meta: { trace_id: 'f' }, payload: approved, error: null });
const goodHello = () => envelopeBytes(1, null, null, { versions: [1], caps: ['deflate'], nonce: new Uint8Array(16), max_frame: 1 << 20 });
const bases = [
  goodCall,
  goodHello,
  () => envelopeBytes(1, 'ping', null, null),
  () => envelopeBytes(1, 'bye', null, null),
  () => envelopeBytes(6, 'prices.eur', null, new Uint8Array([1, 2])),
  () => envelopeBytes(2, 'cancel', null, null, uuidv7()),
];

const cborValue = fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }), fc.uint8Array({ maxLength: 40 }));

const bodies: fc.Arbitrary<{ body: Uint8Array; label: string }> = fc.oneof(
  fc.tuple(fc.constantFrom(...bases), fc.array(fc.nat(), { minLength: 1, maxLength: 8 })).map(([base, flips]) => {
    const b = Buffer.from(base());
    for (const f of flips) b[f % b.length]! ^= 1 << (f % 8);
    return { body: b, label: 'bit flips' };
  }),
  fc.tuple(fc.constantFrom(...bases), fc.nat()).map(([base, at]) => {
    const b = base();
    return { body: b.subarray(0, at % b.length), label: 'truncated' };
  }),
  fc.uint8Array({ maxLength: 300 }).map((body) => ({ body, label: 'random bytes' })),
  cborValue.map((v) => ({ body: encodeCbor(v), label: 'random CBOR' })),
  fc
    .tuple(cborValue, cborValue, cborValue, cborValue, cborValue, cborValue, cborValue)
    .map((items) => ({ body: encodeCbor(items), label: 'seven random items' })),
  fc.tuple(fc.integer({ min: 1, max: 7 }), cborValue, cborValue, fc.option(cborValue)).map(([type, meta, payload, err]) => ({
    body: encodeCbor([type, uuidv7(), null, 'payments.authorize', meta, payload, err]),
    label: 'wrong item types',
  })),
  fc.tuple(fc.integer({ min: 30, max: 3000 }), fc.constantFrom(0x81, 0xa1)).map(([depth, head]) => {
    const open = head === 0x81 ? Buffer.alloc(depth, 0x81) : Buffer.concat(Array.from({ length: depth }, () => hex('a1 61 6b')));
    return { body: Buffer.concat([hex('87 02 50'), uuidv7(), hex('f6 61 74 f6'), open, hex('00 f6')]), label: 'deep nesting' };
  }),
  fc.tuple(fc.constantFrom('9a', '9b 00000000', 'ba', '5a', '7a', 'bb 0000ffff'), fc.integer({ min: 0, max: 0xffffffff })).map(([head, n]) => {
    const count = Buffer.alloc(4);
    count.writeUInt32BE(n, 0);
    return { body: Buffer.concat([hex('87 02 50'), uuidv7(), hex('f6 61 74 f6'), hex(head), count, hex('00 00 f6')]), label: 'huge declared count' };
  }),
  fc.integer({ min: 1, max: 2 * 1024 * 1024 }).map((extra) => ({ body: Buffer.alloc(1024 * 1024 + extra, 0x41), label: 'oversize' })),
  fc.tuple(fc.integer({ min: 0, max: 0xffff }), cborValue).map(([tag, v]) => {
    const inner = encodeCbor(v);
    const t = Buffer.alloc(3);
    t[0] = 0xd9;
    t.writeUInt16BE(tag, 1);
    return { body: Buffer.concat([hex('87 02 50'), uuidv7(), hex('f6 61 74 f6'), t, inner, hex('f6')]), label: `tag ${tag}` };
  }),
);

/** Whether an envelope's bytes are a bye carrying an error (a fatal close by its sender). */
function isFatalBye(body: Uint8Array): boolean {
  try {
    const env = decodeEnvelope(body);
    return env.type === MessageType.Hello && env.target === 'bye' && env.error !== null;
  } catch {
    return false;
  }
}

/** Continuations of a stream or a subscription the case opened: the state machines' hostile input. */
const continuations: fc.Arbitrary<Case> = fc
  .record({
    kind: fc.constantFrom<RawKind>('tcp', 'ws'),
    opener: fc.oneof(
      fc.record({ stream: fc.constantFrom('out', 'in', 'bidi', 'sideways'), credit: fc.oneof(fc.integer({ min: 0, max: 8 }), cborValue) }).map((meta) => ({
        type: MessageType.Call as number,
        target: 'payments.authorize',
        meta: meta as Record<string, unknown>,
      })),
      fc.record({ qos: fc.oneof(fc.integer({ min: 0, max: 2 }), cborValue), max_in_flight: fc.option(cborValue) }).map((meta) => ({
        type: MessageType.Subscribe as number,
        target: 'fuzz.>',
        meta: meta as Record<string, unknown>,
      })),
    ),
    steps: fc.array(
      fc.tuple(
        fc.integer({ min: 1, max: 7 }),
        fc.constantFrom(null, 'resume', 'pause', 'end', 'cancel', 'ack', 'nack', 'fuzz.topic', 'bye'),
        fc.option(cborValue),
        cborValue,
        fc.option(fc.record({ code: fc.integer({ min: 0, max: 600 }), message: fc.string() })),
        fc.boolean(),
      ),
      { minLength: 1, maxLength: 6 },
    ),
  })
  .map(({ kind, opener, steps }) => ({
    kind,
    phase: 'post' as const,
    deflate: false,
    opener: encodeEnvelope({
      type: opener.type as MessageType,
      id: uuidv7(),
      ref: null,
      target: opener.target,
      meta: opener.meta,
      payload: approved,
      error: null,
    }),
    continuation: steps.map(([type, target, meta, payload, err, refOpener]) =>
      encodeCbor([type, uuidv7(), refOpener ? OPENER_REF : null, target, meta, payload, err]),
    ),
    label: `continuations of a ${opener.type === MessageType.Call ? 'stream' : 'subscription'} (${steps.map((s) => `${s[0]}/${s[1]}`).join(' ')})`,
  }));

const cases: fc.Arbitrary<Case> = fc.oneof(
  { weight: 2, arbitrary: continuations },
  {
    weight: 6,
    arbitrary: fc
      .record({
        kind: fc.constantFrom<RawKind>('tcp', 'ws'),
        phase: fc.constantFrom<'pre' | 'post'>('pre', 'post'),
        deflate: fc.boolean(),
        b: bodies,
        flags: fc.oneof(
          { weight: 6, arbitrary: fc.constant(0) },
          { weight: 1, arbitrary: fc.constant(1) },
          { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
        ),
      })
      .map(({ kind, phase, deflate, b, flags }) => ({
        kind,
        phase,
        deflate,
        body: flags === 1 ? deflateRawSync(b.body) : b.body,
        flags,
        label: `${b.label}, flags ${flags}`,
      })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({ phase: fc.constantFrom<'pre' | 'post'>('pre', 'post'), raw: fc.uint8Array({ minLength: 1, maxLength: 64 }) })
      .map(({ phase, raw }) => ({ kind: 'tcp' as const, phase, deflate: false, raw, label: 'raw stream bytes' })),
  },
);

describe('fuzzing a rack over real sockets', { timeout: Math.max(120_000, RUNS * 400) }, () => {
  let rack: RackProcess;
  let canary: Peer;
  let tcp: string;
  let ws: string;
  const tally = new Map<string, number>();

  before(async () => {
    ({ rack, canary, tcp, ws } = await startCanaryRack());
  });
  after(async () => {
    await canary.close();
    assert.equal(await rack.stop(), 0, 'the rack stops cleanly after the fuzzing');
    const summary = [...tally].map(([k, v]) => `${k}: ${v}`).join(', ');
    console.log(`fuzz: ${RUNS} cases, seed ${SEED}; outcomes: ${summary}`);
  });

  async function stillHealthy(label: string): Promise<void> {
    assert.equal(rack.exitCode(), null, `the rack process died on: ${label}`);
    const answer = (await canary.call('payments.authorize', approved, { timeoutMs: 10_000 })) as Record<string, unknown>;
    assert.equal(answer.decision, 'approved', `the canary after: ${label}`);
  }

  /** Runs one case; returns how it ended, after asserting everything the rules say. */
  async function run(c: Case): Promise<string> {
    const conn = await Raw.open(c.kind, c.kind === 'tcp' ? tcp : ws);
    try {
      if (c.phase === 'post') {
        const hello = await conn.handshake(c.deflate ? { caps: ['deflate'] } : {});
        assert.equal(hello.error, null);
      }
      if (c.raw !== undefined) {
        // Framing fuzz: a stream cut anywhere may leave the rack waiting for the rest, which is
        // right; only liveness is asserted, and the connection is dropped.
        conn.sendRaw(c.raw);
        return 'raw bytes sent';
      }
      if (c.opener !== undefined) {
        // Open the stream or subscription, then its continuations, with the opener's id as ref
        // where a continuation says OPENER_REF.
        const openerId = decodeEnvelope(c.opener).id;
        conn.sendFrame(c.opener, 0);
        for (const body of c.continuation ?? []) {
          const frame = Buffer.from(body);
          const at = frame.indexOf(OPENER_REF);
          if (at !== -1) frame.set(openerId, at);
          conn.sendFrame(frame, 0);
        }
      } else conn.sendFrame(c.body!, c.flags);
      let goodId: Uint8Array | undefined;
      if (c.phase === 'post') goodId = conn.call('payments.authorize', approved);
      else {
        // Before the handshake the frame is either refused (bye) or, mutated into a valid hello,
        // answered with a server hello; then a good call must work.
        const first = await conn.waitFor((e) => e.type === MessageType.Hello, 'the answer to a first frame').catch(() => undefined);
        if (first !== undefined && first.error === null && first.target === null) goodId = conn.call('payments.authorize', approved);
      }
      await until(() => conn.closed || (goodId !== undefined && conn.answerTo(goodId) !== undefined), `an answer or a close after ${c.label}`);
      assert.deepEqual(conn.garbage, [], 'every frame the rack sent decodes');
      for (const e of conn.received) if (e.error !== null) assert.ok(DOCUMENTED.has(e.error.code), `undocumented code ${e.error.code}: ${e.error.message}`);
      if (goodId !== undefined && conn.answerTo(goodId) !== undefined) {
        const answer = conn.answerTo(goodId)!;
        assert.equal(answer.error, null, `the good call after ${c.label} failed: ${answer.error?.message}`);
        return 'answered';
      }
      // Closed: never in silence. A graceful bye is right when the hostile frame was itself a bye
      // (calls sent after one's own bye are not served: spec section 11).
      if (conn.closeCode === 1009) return 'ws 1009';
      // A bye with an error from the client is its own fatal close: the rack closes, saying nothing.
      if (c.continuation?.some(isFatalBye)) return 'closed after the client fatal bye';
      const bye = conn.fatalBye ?? conn.received.find((e) => e.type === MessageType.Hello && (e.error !== null || e.target === 'bye'));
      assert.ok(bye !== undefined, `closed without a bye after ${c.label}`);
      return bye.error === null ? 'closed by a graceful bye' : `closed ${bye.error.code}`;
    } finally {
      conn.close();
    }
  }

  it('replays every hostile input found so far', async () => {
    for (const r of REGRESSIONS) {
      for (const kind of ['tcp', 'ws'] as const) {
        await run({ kind, phase: r.phase, deflate: false, body: hex(r.body), flags: 0, label: r.name });
        await stillHealthy(r.name);
      }
    }
  });

  it(`survives ${RUNS} generated cases (seed ${SEED})`, async () => {
    await fc.assert(
      fc.asyncProperty(cases, async (c) => {
        const outcome = await run(c);
        tally.set(outcome, (tally.get(outcome) ?? 0) + 1);
        await stillHealthy(c.label);
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
  });
});
