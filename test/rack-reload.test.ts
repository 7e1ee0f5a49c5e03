// A rack takes up a new scenario without a restart: real sockets, worker threads and Wasm.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { connect, type Peer } from '../src/fluxar/mod.js';
import { Rack, RackError } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { captureLogs } from './harness/logs.js';
import { until } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-reload-'));
const fraudWasm = join(root, 'wasm-gears/build/fraud-scorer.wasm');

function scenario(doc: Record<string, unknown>) {
  const file = join(dir, `s-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(doc));
  return parseScenario(stringify(doc), file);
}

function payments(api: Record<string, unknown>, fraud: Record<string, unknown> = {}, extra: { gears?: unknown[]; wires?: unknown[] } = {}) {
  return scenario({
    meta: { name: 'payments', version: '1' },
    gears: [
      { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'], ...api } },
      { name: 'fraud', type: 'wasm', config: { module: fraudWasm, allow_kv: true, ...fraud } },
      ...(extra.gears ?? []),
    ],
    wires: [{ from: 'api.out', to: 'fraud.in' }, { from: 'fraud.out', to: 'api.in' }, { from: 'fraud.error', to: 'api.in' }, ...(extra.wires ?? [])],
  });
}

const approved = { amount: 100, merchant: 'm-1', country: 'FR', card_country: 'FR' };

/** `total` calls over `peers`, at most `window` in flight per peer; resolves with how they ended. */
async function callMany(peers: Peer[], total: number, window: number, onAnswered?: (n: number) => void) {
  let started = 0;
  let ok = 0;
  const failures: string[] = [];
  await Promise.all(
    peers.map(async (peer) => {
      const lane = async () => {
        while (started < total) {
          started++;
          try {
            const answer = (await peer.call('payments.authorize', approved)) as Record<string, unknown>;
            if (answer.decision === 'approved') ok++;
            else failures.push(JSON.stringify(answer));
          } catch (err) {
            failures.push((err as Error).message);
          }
          onAnswered?.(ok + failures.length);
        }
      };
      await Promise.all(Array.from({ length: window }, lane));
    }),
  );
  return { ok, failures };
}

for (const workers of [2, 0]) {
  describe(`rack reload (workers: ${workers})`, () => {
    let rack: Rack;
    let url: string;
    const log = captureLogs();

    before(async () => {
      rack = new Rack({ scenario: payments({}), workers, logger: log.logger });
      await rack.start();
      url = rack.addresses()[0]!;
    });
    after(() => rack.stop());

    it('answers 10,000 calls across a reload that replaces a gear, with none lost or failed and no connection closed', async () => {
      const peers = await Promise.all([1, 2, 3, 4].map(() => connect(url)));
      let closed = 0;
      for (const p of peers) void p.closed.then(() => closed++);
      let reloaded: Promise<number> | undefined;
      const next = payments({}, { timeout_ms: 250 });
      const result = await callMany(peers, 10_000, 16, (n) => {
        if (n === 2_000) reloaded = rack.reload(next);
      });
      assert.ok(reloaded !== undefined);
      const version = await reloaded;
      assert.deepEqual(result.failures, []);
      assert.equal(result.ok, 10_000);
      assert.equal(closed, 0, 'no connection closed');
      assert.equal(version, rack.running.version);
      assert.equal(rack.running.scenario, next);
      assert.ok(log.lines.some((l) => l.msg === 'scenario reloaded' && (l.kept as string[]).includes('api') && !(l.kept as string[]).includes('fraud')));
      await Promise.all(peers.map((p) => p.close()));
    });

    it('refuses a scenario it cannot run and keeps the one it runs', async () => {
      const before = rack.running.version;
      const bad = payments({}, { module: join(dir, 'missing.wasm') });
      await assert.rejects(rack.reload(bad), (err: Error) => err instanceof RackError && /missing\.wasm/.test(err.message));
      assert.equal(rack.running.version, before);
      const peer = await connect(url);
      assert.equal(((await peer.call('payments.authorize', approved)) as Record<string, unknown>).decision, 'approved');
      await peer.close();
    });

    it('adds and rewires gears: a new log gear on the main thread sees the traffic', async () => {
      const peer = await connect(url);
      const withAudit = payments(
        {},
        { timeout_ms: 250 },
        { gears: [{ name: 'audit', type: 'log', config: {} }], wires: [{ from: 'fraud.out', to: 'audit.in' }] },
      );
      await rack.reload(withAudit);
      await peer.call('payments.authorize', { ...approved, merchant: 'm-audited' });
      await until(() => log.lines.some((l) => l.gear === 'audit' && JSON.stringify(l).includes('m-audited')), 'the audit gear logs the call');
      await peer.close();
    });

    it('moves a changed listener: old sessions are told bye and finish, the new address serves', async () => {
      const peer = await connect(url);
      const pending = peer.call('payments.authorize', approved);
      const moved = payments({ max_in_flight: 512 }, { timeout_ms: 250 });
      await rack.reload(moved);
      assert.equal(((await pending) as Record<string, unknown>).decision, 'approved');
      await peer.closed;
      url = rack.addresses('api')[0]!;
      const fresh = await connect(url);
      assert.equal(((await fresh.call('payments.authorize', approved)) as Record<string, unknown>).decision, 'approved');
      await fresh.close();
    });

    it('reports messages and errors per gear and the p50 and p99 of calls since the last report', async () => {
      await rack.takeStats();
      const peer = await connect(url);
      for (let i = 0; i < 20; i++) await peer.call('payments.authorize', approved);
      await assert.rejects(peer.call('payments.authorize', { amount: 2500, merchant: 'm-9', country: 'FR', card_country: 'US', hour: 3 }));
      const stats = await rack.takeStats();
      assert.equal(stats.gears.fraud!.messages, 21);
      assert.equal(stats.gears.fraud!.errors, 1);
      assert.equal(stats.gears.api!.messages, 21, '20 answers and 1 error reach api.in');
      assert.ok(stats.p50Ms !== null && stats.p99Ms !== null && stats.p50Ms <= stats.p99Ms);
      const again = await rack.takeStats();
      assert.equal(again.gears.fraud!.messages, 0);
      await peer.close();
    });

    it('changes the log level of every thread, and refuses one that does not exist', () => {
      rack.setLogLevel('debug');
      assert.equal(rack.log.level, 'debug');
      assert.throws(() => rack.setLogLevel('loud'), /unknown log level "loud"/);
      rack.setLogLevel('info');
    });
  });
}
