// Guaranteed wires under faults, each with 20,000 messages from rack A's fluxar gear to rack B's
// probe gear, checking exactly which ones arrived in rack B's output stream: nats-server killed
// and restarted, rack B killed and restarted, rack A killed, a worker of rack B lost. The
// cluster's leader change is in lanes-cluster.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { laneStreamName } from '../src/bus/lanes.js';
import { connect } from '../src/fluxar/mod.js';
import {
  callMany,
  callsWithFault,
  checkArrivals,
  FAULT_COUNT,
  type LaneScenarioOptions,
  laneRack,
  laneScenario,
  makeOutStream,
  OUT_STREAM,
  outCount,
  readStream,
  tally,
  withRackPair,
} from './harness/lanes.js';
import { NatsServerProcess } from './harness/nats.js';
import { type RackProcess, startRackProcess } from './harness/rack-process.js';
import { until, untilAsync } from './harness/wait.js';

const COUNT = FAULT_COUNT;

function rackProcess(name: string, natsUrl: string, doc: Record<string, unknown>): Promise<RackProcess> {
  return startRackProcess(doc, { name }, { nats: { url: natsUrl } });
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
});
