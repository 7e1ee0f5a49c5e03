// FLUXAR topics across racks through NATS (a real nats-server with JetStream): a subscriber on
// rack A gets what a client of rack B publishes, at QoS 0, 1 and 2, and a subscriber on rack B
// gets it once; and a QoS 1 flow survives nats-server being killed and started again: nothing
// acknowledged to a publisher is lost.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { connect, type FluxarMessage, type Peer } from '../src/fluxar/mod.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { captureLogs } from './harness/logs.js';
import { NatsServerProcess } from './harness/nats.js';

const dir = mkdtempSync(join(tmpdir(), 'fluxrig-bus-topics-'));

function rackOn(name: string, natsUrl: string): Rack {
  const doc = { meta: { name: 'topics', version: '1' }, gears: [{ name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } }], wires: [] };
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(doc));
  return new Rack({ scenario: parseScenario(stringify(doc), file), name, natsUrl, workers: 1, logger: captureLogs().logger });
}

async function first(sub: AsyncIterable<FluxarMessage>): Promise<FluxarMessage> {
  for await (const m of sub) {
    m.ack();
    return m;
  }
  assert.fail('the subscription ended without a message');
}

describe('topics across racks, through NATS', () => {
  let nats: NatsServerProcess;
  let a: Rack;
  let b: Rack;
  let onA: Peer;
  let onB: Peer;

  before(async () => {
    nats = await NatsServerProcess.start();
    a = rackOn('rack-a', nats.url);
    b = rackOn('rack-b', nats.url);
    await a.start();
    await b.start();
    onA = await connect(a.addresses()[0]!);
    onB = await connect(b.addresses()[0]!);
  });
  after(async () => {
    await Promise.all([onA.close(), onB.close()]);
    await a.stop();
    await b.stop();
    await nats.stop();
  });

  for (const qos of [1, 2, 0] as const) {
    it(`a subscriber on rack A gets what a client of rack B publishes (QoS ${qos})`, async () => {
      const sub = onA.subscribe(`fleet.q${qos}.>`, { qos });
      await sub.ready;
      // QoS 0 on core NATS is at most once: it is published until one arrives (the first may
      // precede rack A's interest reaching the server). QoS 1 and 2 go through JetStream.
      const arrived = first(sub);
      let got: FluxarMessage | undefined;
      void arrived.then((m) => (got = m));
      const outcome = await onB.publish(`fleet.q${qos}.truck7`, { km: 42 }, { qos });
      if (qos > 0) assert.equal(outcome?.duplicate, false);
      for (let i = 0; qos === 0 && got === undefined && i < 50; i++) {
        await onB.publish(`fleet.q${qos}.truck7`, { km: 42 }, { qos });
        await Promise.race([arrived, onB.call('nothing').catch(() => {})]);
      }
      const m = await arrived;
      assert.deepEqual([m.topic, m.payload, m.qos], [`fleet.q${qos}.truck7`, { km: 42 }, qos]);
      sub.unsubscribe();
      await sub.ended;
    });
  }

  for (const qos of [1, 2] as const) {
    it(`a subscriber on the publishing rack gets the publication once, not again from the bus (QoS ${qos})`, async () => {
      const onBSub = onB.subscribe(`echo.q${qos}.>`, { qos });
      const onASub = onA.subscribe(`echo.q${qos}.>`, { qos });
      await Promise.all([onBSub.ready, onASub.ready]);
      const seenOnB: string[] = [];
      const readingB = (async () => {
        for await (const m of onBSub) {
          seenOnB.push(m.topic);
          m.ack();
          if (m.topic.endsWith('.from-a')) return;
        }
      })();
      await onB.publish(`echo.q${qos}.from-b`, 1, { qos });
      // Once rack A has it from the stream, rack B's consumer of the stream is past it too when
      // rack A's own publication, stored after it, reaches B: an echo would come first.
      assert.equal((await first(onASub)).topic, `echo.q${qos}.from-b`);
      await onA.publish(`echo.q${qos}.from-a`, 2, { qos });
      await readingB;
      assert.deepEqual(seenOnB, [`echo.q${qos}.from-b`, `echo.q${qos}.from-a`]);
      onBSub.unsubscribe();
      onASub.unsubscribe();
    });
  }

  it('a QoS 1 flow through a nats-server restart: every publish acknowledged to the publisher arrives', async () => {
    const sub = onA.subscribe('orders.>', { qos: 1 });
    await sub.ready;
    const received = new Set<number>();
    const reading = (async () => {
      for await (const m of sub) {
        received.add((m.payload as { n: number }).n);
        m.ack();
        if (received.size === 40) break;
      }
    })();
    const acked: number[] = [];
    for (let n = 0; n < 40; n++) {
      if (n === 15) await nats.restart(); // killed mid-flow; the rack retries until it is back
      await onB.publish('orders.new', { n }, { qos: 1 });
      acked.push(n);
    }
    await reading;
    assert.deepEqual(
      [...received].sort((x, y) => x - y),
      acked,
    );
    sub.unsubscribe();
  });
});
