// FLUXAR pub/sub through the library over real sockets: publish and subscribe at QoS 0, 1 and 2
// over TCP and WebSocket, fan-out across connections, acks, exactly-once across a cut
// connection, the publisher's in-flight limit, a subscriber that does not keep up, symmetry.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { connect, type FluxarError, type FluxarMessage, type FluxarServer, listen, type Peer } from '../src/fluxar/mod.js';
import { FluxarServerProcess } from './harness/server-process.js';
import { until } from './harness/wait.js';

const quiet = pino({ level: 'silent' });

/** Reads `n` messages, acking each. */
async function take(sub: AsyncIterable<FluxarMessage>, n: number): Promise<FluxarMessage[]> {
  const got: FluxarMessage[] = [];
  if (n === 0) return got;
  for await (const m of sub) {
    got.push(m);
    m.ack();
    if (got.length === n) break;
  }
  return got;
}

describe('FLUXAR pub/sub over sockets', () => {
  let server: FluxarServer;
  let tcp: string;
  let ws: string;

  before(async () => {
    server = await listen({ endpoints: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar'], maxPublishes: 4, logger: quiet });
    [tcp, ws] = server.addresses as [string, string];
  });
  after(() => server.close());

  for (const qos of [0, 1, 2] as const) {
    it(`a publish reaches subscribers on other connections, over TCP and WebSocket (QoS ${qos})`, async () => {
      const a = await connect(tcp);
      const b = await connect(ws);
      const subA = a.subscribe(`chat.room${qos}.*`, { qos });
      const subB = b.subscribe(`chat.room${qos}.>`, { qos });
      await Promise.all([subA.ready, subB.ready]);
      const pub = await connect(tcp);
      const outcome = await pub.publish(`chat.room${qos}.alice`, { text: 'hi' }, { qos });
      if (qos > 0) assert.deepEqual(outcome, { duplicate: false, subscribers: 2 });
      else assert.equal(outcome, undefined);
      const [ma] = await take(subA, 1);
      const [mb] = await take(subB, 1);
      for (const m of [ma!, mb!]) {
        assert.equal(m.topic, `chat.room${qos}.alice`);
        assert.deepEqual(m.payload, { text: 'hi' });
        assert.equal(m.qos, qos);
        assert.equal(m.attempt, 1);
      }
      subA.unsubscribe();
      assert.equal(await subA.ended, null);
      await Promise.all([a.close(), b.close(), pub.close()]);
    });
  }

  it('deliveries of two subscriptions and two topics, interleaved on one connection, each reach their own', async () => {
    // Runs of one subscription and one topic are recognised by comparing bytes with the last
    // delivery's on both sides; alternating ones must never be taken for the last.
    const sub = await connect(tcp);
    const seen: Record<string, Array<[string, unknown]>> = { evens: [], all: [] };
    const evens = sub.subscribe('mix.even', { callback: (m) => seen.evens!.push([m.topic, m.payload]) });
    const all = sub.subscribe('mix.*', { callback: (m) => seen.all!.push([m.topic, m.payload]) });
    await Promise.all([evens.ready, all.ready]);
    const pub = await connect(tcp);
    const sent: Array<[string, string]> = [];
    for (let i = 0; i < 40; i++) {
      const topic = i % 2 === 0 ? 'mix.even' : 'mix.odd';
      // Payloads long enough for the subscriber's in-place read (a tiny one takes the decoder).
      const payload = `the payload of message ${i}`;
      sent.push([topic, payload]);
      await pub.publish(topic, payload, { qos: 1 });
    }
    await until(() => seen.all!.length === 40 && seen.evens!.length === 20, 'every delivery');
    assert.deepEqual(seen.all, sent);
    assert.deepEqual(
      seen.evens,
      sent.filter(([topic]) => topic === 'mix.even'),
    );
    await Promise.all([sub.close(), pub.close()]);
  });

  it('a subscription that is refused rejects ready; a bad topic is refused locally', async () => {
    const peer = await connect(tcp);
    const sub = peer.subscribe('a.>.b');
    await assert.rejects(sub.ready, (err: FluxarError) => err.code === 400 && /last token/.test(err.message));
    await assert.rejects(peer.publish('a.*', 1, { qos: 1 }), (err: FluxarError) => err.code === 400);
    await peer.close();
  });

  it('a callback subscription gets each message as it arrives; one that throws nacks it, and it comes again', async () => {
    const peer = await connect(tcp);
    const seen: Array<[unknown, number]> = [];
    const sub = peer.subscribe('cb.t', {
      qos: 1,
      callback: (m) => {
        seen.push([m.payload, m.attempt]);
        if (m.attempt === 1) throw new Error('not yet');
        m.ack();
      },
    });
    await sub.ready;
    await peer.publish('cb.t', 'x', { qos: 1 });
    await until(() => seen.length === 2, 'the redelivery');
    assert.deepEqual(seen, [
      ['x', 1],
      ['x', 2],
    ]);
    assert.equal(sub.callbackErrors, 1);
    await peer.close();
  });

  it('a nack is redelivered at once with the next attempt number', async () => {
    const peer = await connect(tcp);
    const sub = peer.subscribe('work.items', { qos: 1 });
    await sub.ready;
    await peer.publish('work.items', 'job', { qos: 1 });
    const it = sub[Symbol.asyncIterator]();
    const first = (await it.next()).value as FluxarMessage;
    first.nack();
    const second = (await it.next()).value as FluxarMessage;
    assert.equal(second.attempt, 2);
    assert.deepEqual(Buffer.from(second.id), Buffer.from(first.id));
    second.ack();
    await peer.close();
  });

  it('exactly once across a cut: the ack is lost with the connection, the redelivery runs nothing twice', async () => {
    const publisher = await connect(tcp);
    let runs = 0;
    const first = await connect(tcp);
    const sub = first.subscribe('pay.orders', { qos: 2, durable: 'ledger', ackWaitMs: 30_000 });
    await sub.ready;
    await publisher.publish('pay.orders', { id: 7, amount: 100 }, { qos: 2 });
    for await (const m of sub) {
      runs++;
      m.ack();
      // The connection drops before the ack leaves: the socket goes, the queued ack with it.
      first.transport.destroy();
      break;
    }
    await first.closed;
    // The subscriber comes back: the broker still has the message unacked, and sends it again.
    const second = await connect(tcp);
    const again = second.subscribe('pay.orders', { qos: 2, durable: 'ledger' });
    await again.ready;
    await publisher.publish('pay.orders', { id: 8, amount: 5 }, { qos: 2 });
    const [next] = await take(again, 1);
    // The redelivery of order 7 was recognised and acked without reaching the application.
    assert.deepEqual(next!.payload, { id: 8, amount: 5 });
    assert.equal(again.duplicates, 1, 'order 7 came again and was recognised');
    assert.equal(runs, 1);
    await until(() => server.broker.size.inFlight === 0, 'both messages settled at the broker');
    again.unsubscribe();
    await again.ended;
    await Promise.all([second.close(), publisher.close()]);
  });

  it('a publish sent twice within the window is acked as a duplicate and fans out once', async () => {
    const peer = await connect(tcp);
    const sub = peer.subscribe('dedupe.t', { qos: 2 });
    await sub.ready;
    const outcome = server.publish('dedupe.t', 'once', { qos: 2 });
    assert.deepEqual(outcome, { duplicate: false, subscribers: 1 });
    const [m] = await take(sub, 1);
    // The publication id again, as a retrying publisher would send it.
    const again = server.broker.publish(null, null, m!.id, 'dedupe.t', 2, 'once');
    assert.deepEqual(again, { duplicate: true, subscribers: 0 });
    await peer.close();
  });

  it('the server announces max_publishes: a publisher refuses the fifth unanswered publish locally with 429', async () => {
    const peer = await connect(tcp);
    assert.equal(peer.session.info!.maxPublishes, 4);
    const pending = Array.from({ length: 4 }, (_, i) => peer.publish('limits.t', i, { qos: 1 }));
    await assert.rejects(peer.publish('limits.t', 4, { qos: 1 }), (err: FluxarError) => err.code === 429);
    await Promise.all(pending);
    await peer.close();
  });

  it('a subscriber that never acks is ended with 429 at its queue limit; the broker holds no more; others go on', async () => {
    const small = await listen({ endpoints: ['tcp://127.0.0.1:0'], broker: { maxQueued: 3000 }, logger: quiet });
    try {
      const [url] = small.addresses as [string];
      const stuck = await connect(url);
      const ok = await connect(url);
      const slow = stuck.subscribe('ticks', { qos: 1, maxInFlight: 8 });
      const fine = ok.subscribe('ticks', { qos: 1, maxInFlight: 100_000 });
      await Promise.all([slow.ready, fine.ready]);
      let received = 0;
      const reading = (async () => {
        for await (const m of fine) {
          m.ack();
          if (++received === 5000) break;
        }
      })();
      for (let i = 0; i < 5000; i++) small.publish('ticks', i, { qos: 1 });
      const ended = await slow.ended;
      assert.equal(ended?.code, 429);
      await reading;
      assert.equal(received, 5000);
      assert.ok(small.broker.size.subscriptions <= 2);
      await Promise.all([stuck.close(), ok.close()]);
    } finally {
      await small.close();
    }
  });

  it('slow subscribers never grow the broker: over 100,000 messages its RSS grows less than 30 MB; the others get everything', async () => {
    // The broker runs in a process of its own: its RSS is the broker's.
    const child = await FluxarServerProcess.start();
    try {
      const url = child.url;
      const [stuck, deaf, healthy, publisher] = await Promise.all([connect(url), connect(url), connect(url), connect(url)]);
      // One never acks (QoS 1); one stops reading its socket altogether (QoS 0).
      const neverAcks = stuck.subscribe('load.>', { qos: 1, maxInFlight: 64 });
      const notReading = deaf.subscribe('load.>', { qos: 0 });
      const fine = healthy.subscribe('load.>', { qos: 1, maxInFlight: 1024 });
      await Promise.all([neverAcks.ready, notReading.ready, fine.ready]);
      deaf.transport.pause();
      const total = 100_000;
      let received = 0;
      const reading = (async () => {
        for await (const m of fine) {
          m.ack();
          if (++received === total) break;
        }
      })();
      let rssBefore = 0;
      let peak = 0;
      const inFlight = new Set<Promise<unknown>>();
      for (let i = 0; i < total; i++) {
        const p = publisher.publish('load.tick', { i, pad: 'x'.repeat(100) }, { qos: 1 });
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        if (inFlight.size >= 256) await Promise.race(inFlight);
        if (i === 20_000) rssBefore = child.rss;
        if (i > 20_000 && i % 10_000 === 0) peak = Math.max(peak, child.rss);
      }
      await Promise.all(inFlight);
      await reading;
      peak = Math.max(peak, child.rss);
      assert.equal(received, total, 'the healthy subscriber got every message');
      assert.equal((await neverAcks.ended)?.code, 429, 'the one that never acks was ended at its queue limit');
      const growthMb = (peak - rssBefore) / (1024 * 1024);
      assert.ok(growthMb < 30, `the broker's RSS grew ${growthMb.toFixed(1)} MB over ${total - 20_000} messages`);
      await Promise.all([stuck.close(), healthy.close(), publisher.close()]);
      deaf.destroy();
    } finally {
      await child.stop();
    }
  });

  it('pub/sub is symmetric: the server subscribes to what a client publishes to its own broker', async () => {
    const accepted = once(server, 'peer');
    const client = await connect(tcp);
    const [serverSide] = (await accepted) as [Peer];
    const sub = serverSide.subscribe('client.events', { qos: 1 });
    await sub.ready;
    // The client's own broker fans out its local publish to the server's subscription.
    client.broker.publish(null, null, new Uint8Array(16).fill(9), 'client.events', 1, 'up');
    const [m] = await take(sub, 1);
    assert.equal(m!.payload, 'up');
    await client.close();
  });
});
