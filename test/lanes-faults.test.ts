// Guaranteed wires under faults, each with 20,000 messages from rack A's fluxar gear to rack B's
// probe gear, checking exactly which ones arrived in rack B's output stream: nats-server killed
// and restarted, rack B killed and restarted, rack A killed, a worker of rack B lost, and the
// leader of an R3 stream killed on a 3-node cluster.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { laneStreamName } from '../src/bus/lanes.js';
import { connect, type Peer } from '../src/fluxar/mod.js';
import { callMany, type LaneScenarioOptions, laneRack, laneScenario, makeOutStream, OUT_STREAM, readStream, tally, withRackPair } from './harness/lanes.js';
import { NatsServerProcess } from './harness/nats.js';
import { freePort } from './harness/ports.js';
import { type RackProcess, startRackProcess } from './harness/rack-process.js';
import { until, untilAsync } from './harness/wait.js';

const COUNT = 20_000;
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-lane-faults-'));

function rackProcess(name: string, natsUrl: string, doc: Record<string, unknown>): Promise<RackProcess> {
  return startRackProcess(doc, { name }, { nats: { url: natsUrl } });
}

async function outCount(nc: NatsConnection): Promise<number> {
  return (await (await jetstreamManager(nc)).streams.info(OUT_STREAM)).state.messages;
}

/** COUNT calls through `peer`; once a quarter are answered, `fault` strikes. The answers, once it is over. */
async function callsWithFault(peer: Peer, fault: () => unknown): Promise<unknown[]> {
  let struck: unknown;
  const answers = await callMany(
    peer,
    COUNT,
    () => ({}),
    256,
    (answered) => {
      if (answered === COUNT / 4) struck = fault();
    },
  );
  await struck;
  return answers;
}

/**
 * Which of the accepted calls arrived, how often, and what arrived that nobody was told of:
 * every accepted one must arrive exactly once.
 */
async function checkArrivals(nc: NatsConnection, answers: unknown[], what: string, diagnose?: () => Promise<unknown>) {
  const accepted = answers.flatMap((a, n) => (a instanceof Error ? [] : [n]));
  try {
    await untilAsync(async () => (await outCount(nc)) >= accepted.length, `${what}: every accepted message in the output stream`, 60_000);
  } catch (err) {
    const state = await diagnose?.().catch((e: Error) => e.message);
    throw new Error(`${(err as Error).message}: ${await outCount(nc).catch(() => '?')} of ${accepted.length} arrived; ${JSON.stringify(state)}`);
  }
  const counts = tally((await readStream(nc, OUT_STREAM)).map((m) => m.n));
  const missing = accepted.filter((n) => counts.get(n) !== 1);
  assert.deepEqual(missing.slice(0, 10), [], `${what}: accepted messages that did not arrive exactly once`);
  const duplicates = [...counts.values()].filter((c) => c > 1).length;
  assert.equal(duplicates, 0, `${what}: duplicates in the output stream`);
  return { accepted: accepted.length, failed: answers.length - accepted.length, arrived: counts.size };
}

describe('guaranteed wires under faults', { timeout: 600_000 }, () => {
  describe('on one nats-server', () => {
    let nats: NatsServerProcess;
    let nc: NatsConnection;
    before(async () => {
      nats = await NatsServerProcess.start();
      nc = await natsConnect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    });
    after(async () => {
      await nc.close();
      await nats.stop();
    });

    async function fresh(options: LaneScenarioOptions): Promise<Record<string, unknown>> {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(OUT_STREAM).catch(() => {});
      await makeOutStream(nc);
      return laneScenario(options);
    }

    it('nats-server killed (SIGKILL) and restarted mid-flow: nothing acknowledged to the caller is lost', async () => {
      const doc = await fresh({ name: 'faults-nats' });
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ a, b, peer }) => {
        const answers = await callsWithFault(peer, () => nats.restart());
        const figures = await checkArrivals(nc, answers, 'nats-server restart');
        assert.ok(figures.accepted > COUNT / 4, `${figures.accepted} accepted`);
        console.log(`# nats-server restart: ${JSON.stringify({ ...figures, retries: a.laneCounts?.publishRetries, redelivered: b.laneCounts?.redelivered })}`);
      });
    });

    it('rack B killed (SIGKILL) mid-flow and restarted: its unacked messages are redelivered, and arrive once', async () => {
      const doc = await fresh({ name: 'faults-b', ackWaitMs: 1000 });
      const a = laneRack('a', nats.url, doc);
      await a.start();
      let b = await rackProcess('b', nats.url, doc);
      const peer = await connect(a.addresses()[0]!);
      try {
        const calls = callMany(peer, COUNT, () => ({}));
        await untilAsync(async () => (await outCount(nc)) >= COUNT / 4, 'rack B to pass on a quarter');
        b.child.kill('SIGKILL');
        await until(() => b.exitCode() !== null || b.child.signalCode !== null, 'rack B to die');
        const answers = await calls;
        b = await rackProcess('b', nats.url, doc);
        const figures = await checkArrivals(nc, answers, 'rack B killed');
        assert.equal(figures.failed, 0, 'rack A took every call while rack B was down');
        console.log(`# rack B killed: ${JSON.stringify(figures)}`);
      } finally {
        await peer.close();
        await a.stop();
        await b.stop();
      }
    });

    it('rack A killed mid-flow: what it had acknowledged is delivered; its caller hears of the rest as failed', async () => {
      const doc = await fresh({ name: 'faults-a' });
      const a = await rackProcess('a', nats.url, doc);
      const b = laneRack('b', nats.url, doc);
      await b.start();
      const peer = await connect(a.addresses[0]!);
      try {
        const answers = await callsWithFault(peer, () => a.child.kill('SIGKILL'));
        const figures = await checkArrivals(nc, answers, 'rack A killed');
        assert.ok(figures.failed > 0 && figures.accepted >= COUNT / 4, JSON.stringify(figures));
        for (const err of answers.filter((x) => x instanceof Error) as Error[]) assert.match(err.message, /clos|lost|reset|ECONN|EPIPE|end/i);
        console.log(`# rack A killed: ${JSON.stringify(figures)}`);
      } finally {
        await peer.close().catch(() => {});
        await b.stop();
      }
    });

    it('a worker of rack B lost (a gear that never returns): its in-flight messages are redelivered; the culprit is dead-lettered', async () => {
      const doc = await fresh({ name: 'faults-worker', ackWaitMs: 2000, maxDeliver: 2, probeTimeoutMs: 300 });
      const SPIN = COUNT / 2;
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ b, peer }) => {
        const replaced: unknown[] = [];
        b.on('worker-replaced', (e) => replaced.push(e));
        const answers = await callMany(peer, COUNT, (n) => (n === SPIN ? { action: 'spin' } : {}));
        assert.ok(answers.every((x) => !(x instanceof Error)));
        const others = answers.map((_, n) => n).filter((n) => n !== SPIN);
        await untilAsync(async () => (await outCount(nc)) >= others.length, 'every other message in the output stream', 60_000);
        const counts = tally((await readStream(nc, OUT_STREAM)).map((m) => m.n));
        assert.deepEqual(
          others.filter((n) => counts.get(n) !== 1),
          [],
        );
        assert.equal(counts.has(SPIN), false);
        await untilAsync(async () => b.laneCounts?.deadLettered === 1, 'the spinning message to be dead-lettered', 30_000);
        const dead = (await readStream(nc, laneStreamName('faults-worker'))).filter((m) => m.meta['lane.error'] !== undefined);
        assert.deepEqual(
          dead.map((m) => m.n),
          [SPIN],
        );
        assert.ok(replaced.length >= 2, `${replaced.length} workers replaced`);
        console.log(
          `# worker lost: ${JSON.stringify({ replaced: replaced.length, redelivered: b.laneCounts?.redelivered, dead: dead[0]?.meta['lane.error'] })}`,
        );
      });
    });
  });

  describe('on a 3-node cluster', () => {
    const nodes: NatsServerProcess[] = [];
    before(async () => {
      const routes = await Promise.all([0, 1, 2].map(() => freePort()));
      const urls = routes.map((p) => `nats://127.0.0.1:${p}`);
      await Promise.all(
        [0, 1, 2].map(async (i) => {
          const config = join(dir, `node-${i}.conf`);
          writeFileSync(config, `server_name: n${i}\ncluster {\n  name: lanes\n  listen: 127.0.0.1:${routes[i]}\n  routes: [${urls.join(', ')}]\n}\n`);
          nodes[i] = await NatsServerProcess.start({ config, timeoutMs: 20_000 });
        }),
      );
    });
    after(async () => {
      await Promise.all(nodes.map((n) => n.stop()));
    });

    // Reported, not yet gating: in about one run of eight the output stream does not get every
    // accepted message within the deadline after the leader change (docs/rack.md, Lanes); a
    // failing run prints the wire consumer's state and rack B's counts.
    const todo = 'the receiving consumer sometimes stalls after a leader change';
    it('the stream leader killed mid-flow: the flow goes on with the new leader, and nothing accepted is lost', { todo }, async () => {
      const nc = await natsConnect({ servers: nodes.map((n) => n.url), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
      try {
        let jsm = undefined as unknown as Awaited<ReturnType<typeof jetstreamManager>>;
        await untilAsync(
          async () =>
            jetstreamManager(nc, { timeout: 1000 })
              .then((m) => {
                jsm = m;
                return true;
              })
              .catch(() => false),
          'JetStream on the cluster',
          30_000,
        );
        await untilAsync(
          async () =>
            jsm.streams
              .add({ name: OUT_STREAM, subjects: ['lanes.out'], num_replicas: 3, duplicate_window: 120_000 * 1_000_000 })
              .then(() => true)
              .catch(() => false),
          'the cluster to elect its JetStream meta leader',
          30_000,
        );
        const doc = laneScenario({ name: 'faults-cluster', replicas: 3 });
        // The racks connect to different nodes (and know the others, to move on when theirs dies).
        const urls = nodes.map((n) => n.url);
        const natsUrls = { a: urls, b: [urls[1]!, urls[2]!, urls[0]!] };
        await withRackPair(natsUrls, doc, async ({ a, b, peer }) => {
          const leaderName = (await jsm.streams.info(laneStreamName('faults-cluster'))).cluster?.leader;
          const leader = nodes[Number(leaderName?.slice(1))]!;
          const answers = await callsWithFault(peer, () => leader.down());
          const figures = await checkArrivals(nc, answers, 'stream leader killed', async () => {
            const c = await jsm.consumers.info(laneStreamName('faults-cluster'), 'api_out__probe_in');
            return { consumer: { pending: c.num_pending, ackPending: c.num_ack_pending, leader: c.cluster?.leader }, b: b.laneCounts };
          });
          const newLeader = (await jsm.streams.info(laneStreamName('faults-cluster'))).cluster?.leader;
          assert.notEqual(newLeader, leaderName);
          assert.ok(figures.accepted > COUNT / 2, JSON.stringify(figures));
          console.log(`# leader ${leaderName} killed: ${JSON.stringify({ ...figures, newLeader, retries: a.laneCounts?.publishRetries })}`);
        });
      } finally {
        await nc.close();
      }
    });
  });
});
