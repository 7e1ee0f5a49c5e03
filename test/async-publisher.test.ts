// Pipelined JetStream publishes (AsyncPublisher) against a real nats-server: each publish is told
// its outcome exactly once, however many wait at a time and however long one of them lingers.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { AsyncPublisher, type PublishAck, PublishRefused, PublishTimeout, type PublishWaiter } from '../src/bus/async-publisher.js';
import { NatsServerProcess } from './harness/nats.js';
import { until } from './harness/wait.js';

/** Records every outcome it is told, so a second telling shows. */
class Outcomes implements PublishWaiter {
  readonly told: Array<{ err: Error | undefined; ack: PublishAck | undefined }> = [];
  published(err: Error | undefined, ack?: PublishAck): void {
    this.told.push({ err, ack });
  }
}

describe('AsyncPublisher', () => {
  let nats: NatsServerProcess;
  let nc: NatsConnection;

  before(async () => {
    nats = await NatsServerProcess.start({ jetstream: true });
    nc = await natsConnect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'PIPELINE', subjects: ['pipeline.>'] });
  });
  after(async () => {
    await nc.close();
    await nats.stop();
  });

  it('tells each of 5,000 publishes in flight at once its own acknowledgement, once; a duplicate id says so', async () => {
    const publisher = new AsyncPublisher(nc);
    const waiters = Array.from({ length: 5000 }, () => new Outcomes());
    // All sent before any acknowledgement can be read: far more than the ring's first 1,024 slots.
    for (const [i, w] of waiters.entries()) publisher.send('pipeline.many', new Uint8Array([i & 255]), `many-${i}`, 10_000, w);
    assert.equal(publisher.outstanding, 5000);
    await until(() => waiters.every((w) => w.told.length > 0), 'every publish to be acknowledged');
    assert.equal(publisher.outstanding, 0);
    const seqs = new Set<number>();
    for (const w of waiters) {
      assert.equal(w.told.length, 1);
      assert.equal(w.told[0]!.err, undefined);
      assert.equal(w.told[0]!.ack!.stream, 'PIPELINE');
      assert.equal(w.told[0]!.ack!.duplicate, false);
      seqs.add(w.told[0]!.ack!.seq);
    }
    assert.equal(seqs.size, 5000, 'each publish got its own sequence');

    const again = new Outcomes();
    publisher.send('pipeline.many', new Uint8Array([7]), 'many-7', 10_000, again);
    await until(() => again.told.length > 0, 'the repeated id to be acknowledged');
    assert.equal(again.told[0]!.ack!.duplicate, true);
    publisher.close();
  });

  it('a publish nobody acknowledges times out while thousands after it go through, and only it', async () => {
    const publisher = new AsyncPublisher(nc);
    // A core subscriber and no stream: the subject has a responder that never answers.
    const silent = nc.subscribe('silent.one');
    const lingering = new Outcomes();
    publisher.send('silent.one', new Uint8Array([1]), 'silent-1', 1500, lingering);
    const waiters = Array.from({ length: 3000 }, () => new Outcomes());
    // In rounds, so the ring wraps onto the lingering publish's slot and must grow around it.
    for (let round = 0; round < 3; round++) {
      const batch = waiters.slice(round * 1000, round * 1000 + 1000);
      for (const [i, w] of batch.entries()) publisher.send('pipeline.rounds', new Uint8Array([i & 255]), `round-${round}-${i}`, 10_000, w);
      await until(() => batch.every((w) => w.told.length > 0), `round ${round} to be acknowledged`);
    }
    assert.ok(
      waiters.every((w) => w.told.length === 1 && w.told[0]!.err === undefined),
      'the publishes after it were acknowledged',
    );
    assert.equal(lingering.told.length, 0, 'the silent publish still waits');
    assert.equal(publisher.outstanding, 1);
    await until(() => lingering.told.length > 0, 'the silent publish to time out', 5000);
    assert.ok(lingering.told[0]!.err instanceof PublishTimeout);
    assert.equal(publisher.outstanding, 0);
    silent.unsubscribe();
    publisher.close();
  });

  it('a subject no stream takes is refused with 503; close() fails what still waits', async () => {
    const publisher = new AsyncPublisher(nc);
    const refused = new Outcomes();
    publisher.send('nowhere.at.all', new Uint8Array([1]), 'nowhere-1', 10_000, refused);
    await until(() => refused.told.length > 0, 'the refusal');
    assert.ok(refused.told[0]!.err instanceof PublishRefused);
    assert.equal((refused.told[0]!.err as PublishRefused).code, 503);

    const silent = nc.subscribe('silent.two');
    const waiting = new Outcomes();
    publisher.send('silent.two', new Uint8Array([1]), 'silent-2', 10_000, waiting);
    publisher.close();
    assert.equal(waiting.told.length, 1);
    assert.ok(waiting.told[0]!.err instanceof PublishTimeout);
    silent.unsubscribe();
  });
});
