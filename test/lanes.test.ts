// Guaranteed wires between racks over JetStream (a real nats-server): every call rack A
// accepted reaches rack B's gears exactly once, a poison message ends in the dead-letter
// subject without blocking the wire, a reload provisions and cleans up, and the stream's
// limits reach the caller as an error.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AckPolicy, DiscardPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { deliveryCount, deliveryCountIn, laneConsumerName, laneStreamName, provisionLanes } from '../src/bus/lanes.js';
import { connect } from '../src/fluxar/mod.js';
import { encodeFluxMsg } from '../src/fluxmsg/codec.js';
import { createFluxMsg } from '../src/fluxmsg/fluxmsg.js';
import { LANE_DEFAULTS } from '../src/rack/defaults.js';
import { parseScenario } from '../src/scenario/parse.js';
import { callMany, laneRack, laneScenario, makeOutStream, OUT_STREAM, outCount, outStreamConfig, readStream, tally, withRackPair } from './harness/lanes.js';
import { NatsServerProcess } from './harness/nats.js';
import { untilAsync } from './harness/wait.js';

describe('guaranteed wires between racks', () => {
  let nats: NatsServerProcess;
  let nc: NatsConnection;

  before(async () => {
    nats = await NatsServerProcess.start();
    nc = await natsConnect({ servers: nats.url });
  });
  after(async () => {
    await nc.close();
    await nats.stop();
  });

  it('every call rack A accepted reaches rack B once; the call is answered when the stream has it', async () => {
    await makeOutStream(nc);
    const doc = laneScenario({ name: 'lanes-basic' });
    try {
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ a, b, peer }) => {
        const answers = await callMany(peer, 2000, () => ({}));
        for (const [n, answer] of answers.entries()) {
          assert.ok(!(answer instanceof Error), `call ${n}: ${(answer as Error).message}`);
          const { lane, stream, seq, duplicate } = answer as Record<string, unknown>;
          assert.deepEqual([lane, stream, duplicate, typeof seq], ['flux.msg.a.api.out', laneStreamName('lanes-basic'), false, 'number']);
        }
        await untilAsync(
          async () => (await jetstreamManager(nc).then((j) => j.streams.info(OUT_STREAM))).state.messages >= 2000,
          'rack B to pass on every message',
        );
        const out = await readStream(nc, OUT_STREAM);
        const counts = tally(out.map((m) => m.n));
        assert.equal(counts.size, 2000);
        assert.ok([...counts.values()].every((c) => c === 1));
        assert.ok(
          out.every((m) => m.meta.probe === 'seen'),
          'each went through the probe gear on rack B',
        );
        // Rack B acks a batch once what it led to is in the out stream: the count follows the stream.
        await untilAsync(async () => (b.laneCounts?.acked ?? 0) >= 2000, 'rack B to ack every message');
        assert.deepEqual([a.laneCounts?.published, a.laneCounts?.publishFailed, b.laneCounts?.acked], [2000, 0, 2000]);
      });
    } finally {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('a main-thread source (a generator) sends along a guaranteed wire straight from the main thread; every message arrives once', async () => {
    await makeOutStream(nc);
    const doc = laneScenario({ name: 'lanes-generator' });
    const gears = doc.gears as Array<Record<string, unknown>>;
    gears.push({ name: 'gen', type: 'generator', deploy: 'a', config: { rate_per_s: 5000, count: 1000 } });
    (doc.wires as unknown[]).push({ from: 'gen.out', to: 'probe.in', lane: 'guaranteed' });
    try {
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ a, b }) => {
        await untilAsync(async () => (await readStream(nc, OUT_STREAM)).length >= 1000, 'the generated messages to arrive');
        const out = await readStream(nc, OUT_STREAM);
        assert.equal(out.length, 1000);
        assert.equal(new Set(out.map((m) => m.meta['generator.gear'])).size, 1);
        await untilAsync(async () => (b.laneCounts?.acked ?? 0) >= 1000, 'rack B to ack every message');
        assert.deepEqual([a.laneCounts?.published, b.laneCounts?.acked], [1000, 1000]);
      });
    } finally {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('an ordered wire delivers in stream order: the output follows the order the stream took the calls in', async () => {
    await makeOutStream(nc);
    const doc = laneScenario({ name: 'lanes-ordered', ordered: true });
    try {
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ peer }) => {
        const answers = (await callMany(peer, 3000, () => ({}), 64)) as Array<{ seq: number }>;
        const seqOf = new Map(answers.map((a, n) => [n, a.seq]));
        await untilAsync(async () => (await readStream(nc, OUT_STREAM)).length >= 3000, 'every message to arrive');
        const seqs = (await readStream(nc, OUT_STREAM)).map((m) => seqOf.get(m.n)!);
        assert.deepEqual(
          seqs,
          [...seqs].sort((x, y) => x - y),
        );
      });
    } finally {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('a poison message ends in the dead-letter subject after max_deliver, with its error, and the wire flows on', async () => {
    await makeOutStream(nc);
    const doc = laneScenario({ name: 'lanes-poison', maxDeliver: 3, ackWaitMs: 1000 });
    try {
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ b, peer }) => {
        const answers = await callMany(peer, 200, (n) => (n === 7 ? { action: 'reject', reason: 'not today' } : {}));
        assert.ok(answers.every((x) => !(x instanceof Error)));
        await untilAsync(async () => (await readStream(nc, OUT_STREAM)).length >= 199, 'the other 199 to arrive');
        const stream = laneStreamName('lanes-poison');
        await untilAsync(async () => b.laneCounts?.deadLettered === 1, 'the poison message to be dead-lettered');
        const dead = (await readStream(nc, stream)).filter((m) => m.meta['lane.error'] !== undefined);
        assert.equal(dead.length, 1);
        assert.equal(dead[0]!.n, 7);
        assert.match(dead[0]!.meta['lane.error']!, /probe rejected it: not today/);
        assert.deepEqual([dead[0]!.meta['lane.deliveries'], dead[0]!.meta['lane.wire']], ['3', 'api.out -> probe.in']);
        assert.equal(b.laneCounts?.redelivered, 2);
        const out = await readStream(nc, OUT_STREAM);
        assert.deepEqual(
          out.map((m) => m.n).sort((x, y) => x - y),
          Array.from({ length: 200 }, (_, n) => n).filter((n) => n !== 7),
        );
      });
    } finally {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('a reload that removes a wire removes its consumer, and one that brings it back consumes it again; the stream is made with the scenario settings', async () => {
    await makeOutStream(nc);
    const doc = laneScenario({ name: 'lanes-reload' });
    const b = laneRack('b', nats.url, doc);
    await b.start();
    const jsm = await jetstreamManager(nc);
    const stream = laneStreamName('lanes-reload');
    try {
      const info = await jsm.streams.info(stream);
      assert.deepEqual(info.config.subjects.sort(), ['flux.dlq.lanes-reload.*.*', 'flux.msg.a.api.out']);
      assert.equal(info.config.discard, 'new');
      const consumer = await jsm.consumers.info(stream, 'api_out__probe_in');
      assert.deepEqual([consumer.config.ack_wait, consumer.config.max_ack_pending], [2000 * 1_000_000, 4096]);
      const without = { ...doc, wires: (doc.wires as unknown[]).slice(1) };
      const file = join(mkdtempSync(join(tmpdir(), 'fluxrig-lanes-')), 'reload.yaml');
      writeFileSync(file, stringify(without));
      await b.reload(parseScenario(stringify(without), file));
      // No bus wire is left in the scenario: the rack stops consuming; the Mixer's rollout or the
      // next scenario with wires cleans the stream up.
      const withOther = {
        ...doc,
        wires: [{ from: 'api.out', to: 'probe.in', lane: 'guaranteed', max_ack_pending: 10 }, (doc.wires as unknown[])[1]],
      };
      const file2 = `${file}.2.yaml`;
      writeFileSync(file2, stringify(withOther));
      await b.reload(parseScenario(stringify(withOther), file2));
      const updated = await jsm.consumers.info(stream, laneConsumerName(parseScenario(stringify(withOther), file2).wires[0]!));
      assert.equal(updated.config.max_ack_pending, 10);
      // The wire is consumed again: a message published on its subject goes through rack B.
      await jetstream(nc).publish('flux.msg.a.api.out', encodeFluxMsg(createFluxMsg({ data: { n: 7 } })));
      await untilAsync(async () => (await readStream(nc, OUT_STREAM)).some((m) => m.n === 7), 'rack B to consume the wire it was given back');
      assert.equal(b.laneCounts?.acked, 1);
    } finally {
      await b.stop();
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('a reload that brings a wire into the rack pulls it once the new chain runs: no attempt spent on the old one, nothing lost on the way to a main-thread gear', async () => {
    await makeOutStream(nc);
    const doc = laneScenario({ name: 'lanes-arrive' });
    // What the Mixer does on a push: the stream and its consumers, before any rack has the scenario.
    const jsm = await jetstreamManager(nc);
    await provisionLanes(jsm, parseScenario(stringify(doc), 'lanes-arrive.yaml'));
    const waiting = 500;
    const js = jetstream(nc);
    for (let n = 0; n < waiting; n++) await js.publish('flux.msg.a.api.out', encodeFluxMsg(createFluxMsg({ data: { n } })));
    // Rack B runs none of the scenario's gears, then reloads into all of them: the backlog meets
    // the probe on the workers and the sink (a nats gear, on the main thread) both new.
    const idle = { ...doc, gears: (doc.gears as Array<{ deploy: string }>).filter((g) => g.deploy === 'a'), wires: [] };
    const b = laneRack('b', nats.url, idle);
    await b.start();
    try {
      await b.reload(parseScenario(stringify(doc), 'lanes-arrive.yaml'));
      await untilAsync(async () => (await outCount(nc)) >= waiting, 'the backlog to reach the output stream');
      const counts = tally((await readStream(nc, OUT_STREAM)).map((m) => m.n));
      assert.equal(counts.size, waiting);
      assert.ok([...counts.values()].every((c) => c === 1));
      assert.deepEqual([b.laneCounts?.acked, b.laneCounts?.redelivered, b.laneCounts?.deadLettered], [waiting, 0, 0]);
    } finally {
      await b.stop();
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('a slow consumer: the backlog waits in the stream; rack B holds at most max_ack_pending, rack A at most its publish window', async () => {
    const count = 20_000;
    const maxAckPending = 16;
    await makeOutStream(nc);
    const doc = laneScenario({ name: 'lanes-slow' });
    (doc.gears as unknown[]).push({ name: 'gen', type: 'generator', deploy: 'a', config: { rate_per_s: 100_000, count } });
    const wire = { from: 'gen.out', to: 'probe.in', lane: 'guaranteed', max_ack_pending: maxAckPending };
    (doc.wires as unknown[]).push(wire);
    const consumer = laneConsumerName(parseScenario(stringify(doc), 'lanes-slow.yaml').wires.find((w) => w.from.gear === 'gen')!);
    const jsm = await jetstreamManager(nc);
    try {
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ a, b }) => {
        let holding = 0;
        let outstanding = 0;
        let backlog = 0;
        // Sampled on every turn of the loop while the flow lasts.
        const sampler = setInterval(() => {
          holding = Math.max(holding, b.laneCounts!.holding);
          outstanding = Math.max(outstanding, a.laneCounts!.outstanding);
        }, 1);
        try {
          await untilAsync(
            async () => {
              backlog = Math.max(backlog, (await jsm.consumers.info(laneStreamName('lanes-slow'), consumer)).num_pending);
              return (await outCount(nc)) >= count;
            },
            'every generated message through the slow wire',
            90_000,
          );
        } finally {
          clearInterval(sampler);
        }
        assert.ok(backlog > 10 * maxAckPending, `the consumer fell behind (a backlog of ${backlog} in the stream)`);
        assert.ok(holding <= maxAckPending, `rack B held ${holding} messages at most (max_ack_pending ${maxAckPending})`);
        assert.ok(holding > 0);
        // The generator is paused by the publish that fills the window: that one publish goes out.
        assert.ok(outstanding <= LANE_DEFAULTS.publish_window + 1, `rack A had ${outstanding} publishes outstanding at most`);
        const out = await readStream(nc, OUT_STREAM);
        assert.equal(out.length, count);
        const counts = tally(out.map((m) => m.n));
        assert.equal(counts.size, count, 'every generated message, by its seq');
        assert.ok(
          [...counts.values()].every((c) => c === 1),
          'each once',
        );
        assert.equal(a.laneCounts?.published, count);
        await untilAsync(async () => b.laneCounts?.acked === count && b.laneCounts.holding === 0, 'rack B to ack them all');
      });
    } finally {
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('a downstream outage (the output stream full) stalls the wire instead of spending attempts: nothing is dead-lettered, and all arrives once there is room', async () => {
    const jsm = await jetstreamManager(nc);
    const room = 500;
    const count = 2000;
    await jsm.streams.add({ ...outStreamConfig(), max_msgs: room, discard: DiscardPolicy.New });
    // ack_wait leaves a slow machine room: a first outcome later than it would be a real attempt.
    const doc = laneScenario({ name: 'lanes-stall', maxDeliver: 2, ackWaitMs: 5000 });
    try {
      await withRackPair({ a: nats.url, b: nats.url }, doc, async ({ b, peer }) => {
        const answers = await callMany(peer, count, () => ({}));
        assert.equal(answers.filter((x) => x instanceof Error).length, 0, 'rack A took every call');
        // Three rounds for every stalled message: past max_deliver (2), had each round cost an attempt.
        await untilAsync(async () => b.laneCounts!.onwardRetries >= 3 * (count - room), 'the stalled deliveries to run again three times', 30_000);
        assert.equal(b.laneCounts?.deadLettered, 0, `no good message dead-lettered for an outage downstream: ${JSON.stringify(b.laneCounts)}`);
        assert.equal(b.laneCounts?.redelivered, 0, 'no attempt spent');
        assert.equal(await outCount(nc), room);
        assert.ok(b.laneCounts!.stalled + b.laneCounts!.holding > 0, JSON.stringify(b.laneCounts));

        await jsm.streams.update(OUT_STREAM, { max_msgs: -1 });
        await untilAsync(async () => b.laneCounts?.acked === count && b.laneCounts.holding === 0, 'rack B to ack them all once the stream has room', 30_000);
        const counts = tally((await readStream(nc, OUT_STREAM)).map((m) => m.n));
        assert.equal(counts.size, count);
        assert.ok(
          [...counts.values()].every((c) => c === 1),
          'each arrived once',
        );
        assert.deepEqual([b.laneCounts?.deadLettered, b.laneCounts?.stalled], [0, 0]);
      });
    } finally {
      await jsm.streams.delete(OUT_STREAM);
    }
  });

  it('a stream at its limits answers the caller with an error, never silently', async () => {
    const doc = { ...laneScenario({ name: 'lanes-full' }), lanes: { max_bytes: 4096 } };
    const a = laneRack('a', nats.url, doc);
    await a.start();
    const peer = await connect(a.addresses()[0]!);
    try {
      const answers = await callMany(peer, 100, () => ({ pad: 'x'.repeat(200) }), 10);
      const failed = answers.filter((x) => x instanceof Error) as Array<Error & { code?: number }>;
      assert.ok(failed.length > 50, `${failed.length} of 100 refused`);
      assert.ok(
        answers.slice(0, 5).every((x) => !(x instanceof Error)),
        'the first ones fit',
      );
      assert.equal(failed[0]!.code, 503);
      assert.match(failed[0]!.message, /the bus did not take the message for flux\.msg\.a\.api\.out: .*maximum bytes/i);
      assert.equal(a.laneCounts?.publishFailed, failed.length);
    } finally {
      await peer.close();
      await a.stop();
    }
  });

  it("the delivery count is read off a message's acknowledgement subject as JsMsg.info reads it, first delivery and redelivery", async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'DELIVERIES', subjects: ['deliveries.>'] });
    await jsm.consumers.add('DELIVERIES', { durable_name: 'reader', ack_policy: AckPolicy.Explicit });
    const js = jetstream(nc);
    await js.publish('deliveries.one', new Uint8Array([1]));
    const consumer = await js.consumers.get('DELIVERIES', 'reader');
    for (const expected of [1, 2, 3]) {
      const m = await consumer.next({ expires: 5000 });
      assert.ok(m !== null, `delivery ${expected} came`);
      assert.equal(deliveryCount(m), expected);
      assert.equal(m.info.deliveryCount, expected);
      // Read off the subject, not through info: the server's subject has a shape deliveryCountIn reads.
      assert.equal(deliveryCountIn((m as unknown as { reply: string }).reply), expected);
      m.nak();
    }
    await jsm.streams.delete('DELIVERIES');
  });
});

describe('deliveryCountIn', () => {
  // Stream and consumer names: no dots, spaces, wildcards.
  const name = fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/);
  const uint = fc.integer({ min: 0, max: 2 ** 40 });

  it('reads the count of both subject shapes, and -1 for any other text', () => {
    fc.assert(
      fc.property(
        name,
        name,
        name,
        name,
        fc.integer({ min: 1, max: 10_000_000 }),
        uint,
        uint,
        uint,
        uint,
        (stream, consumer, domain, hash, count, sseq, cseq, ts, pending) => {
          const tail = `${stream}.${consumer}.${count}.${sseq}.${cseq}.${ts}.${pending}`;
          assert.equal(deliveryCountIn(`$JS.ACK.${tail}`), count);
          assert.equal(deliveryCountIn(`$JS.ACK.${domain}.${hash}.${tail}`), count);
          assert.equal(deliveryCountIn(`$JS.ACK.${domain}.${hash}.${tail}.${hash}`), count);
        },
      ),
    );
    fc.assert(fc.property(fc.string(), (text) => assert.ok(deliveryCountIn(`x${text}`) === -1)));
    for (const odd of ['$JS.ACK.s.c.1.2.3', '$JS.ACK.s.c.x.2.3.4.5', '$JS.ACK.s.c..2.3.4.5', '$JS.ACK', '']) assert.equal(deliveryCountIn(odd), -1, odd);
  });
});
