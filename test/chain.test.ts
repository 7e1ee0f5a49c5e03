// The gear chain of a worker, with real compiled Wasm gears: a bus delivery handed over as bytes
// reaches a Wasm gear and the main thread without being decoded and encoded on the way, and
// what comes out is what the decoded path gives.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { CborWriter, MAJOR_MAP } from '../src/cbor/writer.js';
import { isPlainFluxMsg } from '../src/fluxmsg/check.js';
import { createFluxMsg, decodeFluxMsg, encodeFluxMsg, type FluxMsg } from '../src/mod.js';
import { KvReplica } from '../src/gears/kv.js';
import { prepareModule } from '../src/gears/wasm/loader.js';
import { type ChainEnv, GearChain } from '../src/rack/chain.js';
import { RackTopics } from '../src/rack/topics.js';
import type { GearSpec, WireSpec } from '../src/scenario/types.js';
import { fluxMsgArbitrary } from './harness/arbitraries.js';
import { gearBytes } from './harness/gears.js';

interface Sent {
  toMain: Array<{ gear: string; port: string; msg: FluxMsg }>;
  toLane: Array<{ gear: string; port: string; msg: FluxMsg; bytes: Uint8Array | undefined }>;
}

function wire(from: string, to: string, lane: WireSpec['lane'] = 'hot'): WireSpec {
  const end = (text: string) => {
    const [gear, port] = text.split('.') as [string, string];
    return { rack: undefined, gear, port };
  };
  return { from: end(from), to: end(to), lane, crossRack: false, at: 'test' };
}

const gear = (name: string, type: string, config: Record<string, unknown>): GearSpec => ({ name, type, deploy: undefined, config, labels: {}, at: 'test' });

/** probe (Wasm) -> out (a main-thread nats gear); more wires as given. */
function chainOf(wires: WireSpec[], gears: GearSpec[] = []): { chain: GearChain; sent: Sent } {
  const sent: Sent = { toMain: [], toLane: [] };
  const logger = pino({ level: 'silent' });
  const lane = { send() {}, maxRecordBytes: Number.POSITIVE_INFINITY };
  const all = [gear('probe', 'wasm', { module: 'probe' }), gear('out', 'nats', { subject: 'x', mode: 'publish' }), ...gears];
  const prepared = Object.fromEntries(
    all.filter((g) => g.type === 'wasm').map((g) => [g.name, prepareModule(gearBytes('probe'), g.name, { module: 'probe' })]),
  );
  const env: ChainEnv = {
    logger,
    lane,
    kv: new KvReplica([], () => {}),
    http: () => {
      throw new Error('no HTTP in this test');
    },
    guestClock: undefined,
    claimConnection() {},
    releaseConnection() {},
    drainTimeoutMs: 1000,
    workerIndex: 0,
    topics: new RackTopics(lane, false, logger),
    // What crosses to the main thread is bytes: decoded here to see what arrives.
    toMain: (gear, port, bytes) => sent.toMain.push({ gear, port, msg: decodeFluxMsg(bytes) }),
    toLane: (gear, port, msg, bytes) => sent.toLane.push({ gear, port, msg: decodeFluxMsg(encodeFluxMsg(msg)), bytes }),
  };
  const chain = new GearChain({ gears: all, wires, prepared, fingerprints: {}, guestNames: all.map((g) => g.name) }, env);
  return { chain, sent };
}

const ACTIONS = ['ok', 'reject', 'drop', 'fanout', 'meta'] as const;

describe('GearChain: a bus delivery as bytes', () => {
  it('gives what the decoded message gives: the same outputs, error-port messages and ends (property)', () => {
    const wires = [wire('probe.out', 'out.in'), wire('probe.error', 'out.err')];
    fc.assert(
      fc.property(fluxMsgArbitrary, fc.constantFrom(...ACTIONS), (msg, action) => {
        msg.data = { ...msg.data, action, reason: 'not today', count: 2, steps: 'rnm' };
        const bytes = encodeFluxMsg(msg);
        const byObject = chainOf(wires);
        const byBytes = chainOf(wires);
        const objectTrace = byObject.chain.deliverTracked('probe', 'in', decodeFluxMsg(bytes));
        const objectEnds = objectTrace.ends.map((e) => ({ ...e }));
        const objectLeft = objectTrace.leftWorker;
        const bytesTrace = byBytes.chain.deliverTracked('probe', 'in', bytes);
        assert.deepEqual(byBytes.sent.toMain, byObject.sent.toMain);
        assert.deepEqual(bytesTrace.ends, objectEnds);
        assert.equal(bytesTrace.leftWorker, objectLeft);
        if (action === 'drop') assert.deepEqual(bytesTrace.ends, [{ gear: 'probe', why: 'dropped' }]);
        else assert.ok(byBytes.sent.toMain.length > 0);
      }),
      { numRuns: 150 },
    );
  });

  it('takes bytes in any valid encoding, and throws what is wrong with bytes that are no fluxMsg', () => {
    const msg = createFluxMsg({ meta: { k: 'v' }, data: { n: 1 } });
    // The same message with meta as an indefinite-length map: valid, but not the plain form.
    const w = new CborWriter();
    w.head(MAJOR_MAP, 6);
    for (const [key, value] of [
      ['id', msg.id],
      ['trace', msg.trace],
      ['data', msg.data],
    ] as const) {
      w.text(key);
      w.value(value);
    }
    w.text('meta');
    w.raw(Uint8Array.of(0xbf, 0x61, 0x6b, 0x61, 0x76, 0xff));
    w.text('ts');
    w.value(msg.ts);
    w.text('path');
    w.value([]);
    const indefinite = w.take();
    assert.equal(isPlainFluxMsg(indefinite), false);
    assert.deepEqual(decodeFluxMsg(indefinite).meta, { k: 'v' });
    const { chain, sent } = chainOf([wire('probe.out', 'out.in')]);
    chain.deliverTracked('probe', 'in', indefinite);
    assert.equal(sent.toMain.length, 1);
    assert.deepEqual(sent.toMain[0]!.msg.data, { n: 1 });
    assert.deepEqual(sent.toMain[0]!.msg.meta, { k: 'v', probe: 'seen' });

    assert.throws(() => chain.deliverTracked('probe', 'in', Uint8Array.of(0xa1, 0x62, 0x69, 0x64, 0x01)), /cannot decode fluxMsg/);
    assert.equal(sent.toMain.length, 1);
  });

  it('passes one output along every wire of a fan-out: the main thread, a bus wire and another Wasm gear', () => {
    const second = gear('second', 'wasm', { module: 'probe' });
    const { chain, sent } = chainOf(
      [wire('probe.out', 'out.in'), wire('probe.out', 'elsewhere.in', 'guaranteed'), wire('probe.out', 'second.in'), wire('second.out', 'out.second')],
      [second],
    );
    const msg = createFluxMsg({ data: { n: 7 } });
    const trace = chain.deliverTracked('probe', 'in', encodeFluxMsg(msg));
    assert.equal(trace.leftWorker, true);
    assert.deepEqual(
      sent.toMain.map((s) => [s.port, s.msg.data.n, s.msg.meta.probe]),
      [
        ['in', 7, 'seen'],
        ['second', 7, 'seen'],
      ],
    );
    assert.equal(sent.toLane.length, 1);
    assert.deepEqual([sent.toLane[0]!.gear, sent.toLane[0]!.port, sent.toLane[0]!.msg.data.n], ['probe', 'out', 7]);
    assert.deepEqual(Buffer.from(sent.toLane[0]!.msg.id), Buffer.from(msg.id));
    // The guest's bytes are published as they are: they are the message the bus wire was given.
    assert.deepEqual(decodeFluxMsg(sent.toLane[0]!.bytes!), sent.toLane[0]!.msg);
  });
});
