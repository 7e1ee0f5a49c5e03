// Session resume in a rack (docs/rack.md "Session resume"): the session lives in a worker, so
// the main thread reads the hello of each new connection and sends a resume to the worker whose
// index the session id carries. Cut connections, through a proxy, on both workers.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { ErrorCode } from '../src/fluxar/codes.js';
import { connect, type Peer } from '../src/fluxar/mod.js';
import { Rack } from '../src/rack/rack.js';
import { FirstFrame, rackSessionId, workerOfHello } from '../src/gears/session-routing.js';
import { parseScenario } from '../src/scenario/parse.js';
import { captureLogs } from './harness/logs.js';
import { CuttingProxy } from './harness/proxy.js';
import { RawConnection } from './harness/raw.js';
import { until } from './harness/wait.js';
import { encodeEnvelope, MessageType } from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';

const root = new URL('../../', import.meta.url).pathname;
const fraudWasm = join(root, 'wasm-gears/build/fraud-scorer.wasm');
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-rack-resume-'));
const approved = { amount: 100, merchant: 'm-1', country: 'FR', card_country: 'FR' };

function helloBody(payload: Record<string, unknown>): Uint8Array {
  return encodeEnvelope({ type: MessageType.Hello, id: uuidv7(), ref: null, target: null, meta: null, payload, error: null });
}

describe('rack session routing: the main thread reads the hello only', () => {
  it('a resume hello names the worker written into its session id; anything else names none', () => {
    const id = rackSessionId(1);
    assert.equal(workerOfHello(0, helloBody({ resume: { session: id, token: new Uint8Array(16), pos: 0 } }), 2), 1);
    assert.equal(workerOfHello(0, helloBody({ resume: { session: id } }), 2), 1, 'the clear hint of an end-to-end hello');
    assert.equal(workerOfHello(0, helloBody({ resume: { session: rackSessionId(7) } }), 2), null, 'no such worker');
    assert.equal(workerOfHello(0, helloBody({ versions: [1] }), 2), null);
    assert.equal(workerOfHello(1, helloBody({ resume: { session: id } }), 2), null, 'a compressed frame is no hello');
    assert.equal(workerOfHello(0, Uint8Array.from([0xff, 0x00, 0x13]), 2), null, 'garbage names none, and throws nothing');
  });

  it('the first frame is gathered across pieces, and one too large to be a resume hello is not read', () => {
    const body = helloBody({ resume: { session: rackSessionId(0) } });
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length + 1, 0);
    frame.set(body, 5);
    const first = new FirstFrame('stream');
    assert.equal(first.push(frame.subarray(0, 3)), null);
    assert.equal(first.push(frame.subarray(3, 20)), null);
    const got = first.push(Buffer.concat([frame.subarray(20), Buffer.from('next')]))!;
    assert.deepEqual(Buffer.from(got.frame!.body), Buffer.from(body));
    assert.equal(Buffer.concat(got.pieces).length, frame.length + 4, 'nothing gathered is lost');
    assert.equal(first.push(Buffer.from('later')), null, 'only the first frame');
    const big = new FirstFrame('stream');
    const head = Buffer.alloc(5);
    head.writeUInt32BE(1 << 20, 0);
    assert.equal(big.push(head)!.frame, null);
  });
});

describe('rack session resume', () => {
  let rack: Rack;
  let proxy: CuttingProxy;
  let url: string;

  before(async () => {
    const doc = {
      meta: { name: 'resume', version: '1' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'], resume_ms: 5000 } },
        { name: 'fraud', type: 'wasm', config: { module: fraudWasm, allow_kv: true } },
      ],
      wires: [
        { from: 'api.out', to: 'fraud.in' },
        { from: 'fraud.out', to: 'api.in' },
        { from: 'fraud.error', to: 'api.in' },
      ],
    };
    const file = join(dir, 'resume.yaml');
    writeFileSync(file, stringify(doc));
    rack = new Rack({ scenario: parseScenario(stringify(doc), file), workers: 2, logger: captureLogs().logger });
    await rack.start();
    proxy = new CuttingProxy(Number(rack.addresses()[0]!.split(':').at(-1)));
    url = await proxy.start();
  });

  after(async () => {
    await rack.stop();
    await proxy.close();
  });

  it('pipelined calls cut mid-burst, on connections of both workers, are each answered once after the resume', async () => {
    // Connected first: connection ids 1, 2 and 3 spread over the two workers.
    const peers: Peer[] = [];
    for (let c = 0; c < 3; c++) peers.push(await connect(url, { resume: { minDelayMs: 10 }, caps: [] }));
    for (let c = 0; c < 3; c++) {
      const peer = peers[c]!;
      const worker = peer.session.info!.id[15]!;
      let resumes = 0;
      peer.on('resumed', () => resumes++);
      proxy.cutAfterUp(between(3_000, 30_000), c === 1 ? 'half-open' : 'both');
      const answers = (await Promise.all(Array.from({ length: 500 }, (_, i) => peer.call('payments.authorize', { ...approved, note: `${c}-${i}` })))) as Array<
        Record<string, unknown>
      >;
      assert.deepEqual(
        answers.map((a) => a.note),
        Array.from({ length: 500 }, (_, i) => `${c}-${i}`),
      );
      assert.equal(resumes, 1, `client ${c} resumed once`);
      assert.equal(peer.session.info!.id[15], worker, 'the session stayed with its worker');
    }
    assert.deepEqual(new Set(peers.map((p) => p.session.info!.id[15])), new Set([0, 1]), 'sessions on both workers');
    // The connections the resumes replaced are gone, half-open or not.
    await until(() => rack.connectionCount === 3, 'one connection per session');
    for (const peer of peers) await peer.close();
  });

  it('a resume that names a session no worker has is refused with 404', async () => {
    const raw = await RawConnection.open('tcp', rack.addresses()[0]!);
    const hello = await raw.handshake({ caps: ['resume'], resume: { session: rackSessionId(1), token: new Uint8Array(16), pos: 0 } });
    assert.equal(hello.error?.code, ErrorCode.NotFound);
    await raw.waitClosed();
    raw.close();
  });
});

function between(from: number, to: number): number {
  return from + Math.floor(Math.random() * (to - from));
}
