// The gears' KV through the Mixer, as an operator changes it with `fluxrig kv`: a rack on the bus
// runs the quickstart's fraud gear, and a merchant put on the blocklist with the CLI is scored
// as blocked by the rack's next calls, with no restart; deleted, it is not. Every change is in
// the audit trail. A real nats-server, Mixer API, rack with a worker, and the CLI as a process.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import { stringify } from 'yaml';
import { connect, type Peer } from '../src/fluxar/mod.js';
import { buildMixerApi } from '../src/mixer/api.js';
import { Mixer } from '../src/mixer/mixer.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { captureLogs } from './harness/logs.js';
import { NatsServerProcess } from './harness/nats.js';
import { untilAsync } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const execFileAsync = promisify(execFile);
const TOKEN = 'kv-test-token';
const ACTOR = 'ops@test';

describe("the gears' KV through the Mixer (fluxrig kv)", () => {
  const dir = mkdtempSync(join(tmpdir(), 'fluxrig-fleet-kv-'));
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  let mixer: Mixer;
  let api: FastifyInstance;
  let base: string;
  let rack: Rack;
  let peer: Peer;

  /** `fluxrig kv ...` as an operator runs it; resolves with its exit code and output. */
  async function kv(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await execFileAsync(process.execPath, [cli, 'kv', ...args, '--api', base, '--token', TOKEN], {
        env: { ...process.env, FLUXRIG_ACTOR: ACTOR },
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  const payment = { merchant: 'm-42', amount: 100 };
  const score = async () => ((await peer.call('payments.authorize', payment)) as { fraud_score: number }).fraud_score;

  before(async () => {
    nats = await NatsServerProcess.start();
    nc = await natsConnect({ servers: nats.url, maxReconnectAttempts: -1 });
    mixer = new Mixer({ nats: nc, logger: captureLogs().logger });
    await mixer.start();
    api = await buildMixerApi({ mixer, token: TOKEN, version: 'test' });
    base = await api.listen({ host: '127.0.0.1', port: 0 });
    const doc = {
      meta: { name: 'kv', version: '1' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        { name: 'fraud', type: 'wasm', config: { module: join(root, 'wasm-gears/build/fraud-scorer.wasm'), allow_kv: true } },
      ],
      wires: [
        { from: 'api.out', to: 'fraud.in' },
        { from: 'fraud.out', to: 'api.in' },
        { from: 'fraud.error', to: 'api.in' },
      ],
    };
    const file = join(dir, 'kv.yaml');
    writeFileSync(file, stringify(doc));
    rack = new Rack({ scenario: parseScenario(stringify(doc), file), name: 'edge', natsUrl: nats.url, workers: 1, logger: captureLogs().logger });
    await rack.start();
    peer = await connect(rack.addresses()[0]!);
  });

  after(async () => {
    await peer.close();
    await rack.stop();
    await api.close();
    await mixer.close();
    await nc.close();
    await nats.stop();
  });

  it("puts a blocklist the rack's gear reads at once, lists and reads it, deletes it", async () => {
    assert.equal(await score(), 0);
    const put = await kv('put', 'fraud/blocklist', 'm-7, m-42');
    assert.equal(put.code, 0, put.stderr);
    assert.match(put.stdout, /^fraud\/blocklist = 9 bytes, revision \d+$/m);
    await untilAsync(async () => (await score()) === 60, 'the rack scores m-42 as blocked');

    const got = await kv('get', 'fraud/blocklist');
    assert.equal(got.stdout, 'm-7, m-42\n');
    const listed = await kv('ls');
    assert.match(listed.stdout, /^KEY +BYTES +REVISION +UPDATED$/m);
    assert.match(listed.stdout, /^fraud\/blocklist +9 +\d+ +\d{4}-\d\d-\d\dT/m);

    const del = await kv('del', 'fraud/blocklist');
    assert.equal(del.code, 0, del.stderr);
    await untilAsync(async () => (await score()) === 0, 'the rack no longer finds m-42 on a blocklist');
    const again = await kv('del', 'fraud/blocklist');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no key "fraud\/blocklist" in the gears' KV/);
    const missing = await kv('get', 'fraud/blocklist');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no key "fraud\/blocklist"/);

    const trail = (await (await fetch(`${base}/audit?target=fraud/blocklist`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as Array<{
      actor: string;
      action: string;
      ok: boolean;
    }>;
    const actions = trail.map((e) => `${e.action} ${e.actor} ${e.ok ? 'ok' : 'failed'}`).sort();
    assert.deepEqual(actions, [`kv-delete ${ACTOR} failed`, `kv-delete ${ACTOR} ok`, `kv-put ${ACTOR} ok`]);
  });

  it('keeps bytes as bytes, and refuses a bad key or a missing value with a clear message', async () => {
    const file = join(dir, 'blob');
    writeFileSync(file, Buffer.from([0xff, 0x00, 0xfe]));
    assert.equal((await kv('put', 'blob/v=1', '--file', file)).code, 0);
    const text = await kv('get', 'blob/v=1');
    assert.equal(text.code, 1);
    assert.match(text.stderr, /3 bytes that are not UTF-8 text; use --base64 or --out FILE/);
    assert.equal((await kv('get', 'blob/v=1', '--base64')).stdout, '/wD+\n');
    const out = join(dir, 'blob.out');
    assert.equal((await kv('get', 'blob/v=1', '--out', out)).code, 0);
    assert.deepEqual(readFileSync(out), Buffer.from([0xff, 0x00, 0xfe]));

    const bad = await kv('put', '.hidden', 'x');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /fluxrig: ".hidden" is not a KV key: 1-512 letters, digits and _ - \/ = \. \(not starting or ending with a dot\)/);
    const neither = await kv('put', 'k');
    assert.equal(neither.code, 2);
    assert.match(neither.stderr, /usage: fluxrig kv/);
    const huge = await fetch(`${base}/kv/huge`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ base64: Buffer.alloc(1024 * 1024).toString('base64') }),
    });
    assert.equal(huge.status, 413);
    assert.match(((await huge.json()) as { error: string }).error, /a KV value of at most \d+ bytes/);
  });
});
