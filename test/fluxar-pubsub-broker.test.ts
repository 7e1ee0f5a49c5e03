// The broker of docs/fluxar-spec.md section 14, driven through real sans-I/O sessions on a fake
// clock: fan-out and wildcards, acks of the current attempt only, nack, redelivery, the
// dead-letter topic, QoS 2 dedupe, max_in_flight, a full queue, durable subscriptions.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  Broker,
  type BrokerLink,
  decodeEnvelope,
  encodeEnvelope,
  encodeStreamFrame,
  MAX_FRAME_CEILING,
  MessageType,
  type Qos,
  type Session,
  type SessionEvent,
  StreamFrameSplitter,
} from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';
import { Clock, errorsIn, ofType, pair } from './harness/session-pair.js';

/** A subscriber or publisher client, connected to the shared broker through a session pair. */
function client(broker: Broker, clock: Clock) {
  const p = pair({}, {}, clock);
  const link: BrokerLink = { session: p.server, transportBacklog: () => 0, scheduleFlush: () => {} };
  const pump = () => {
    p.pump();
    // The server side's events go to the broker, as a Peer does.
    for (let i = 0; i < 10; i++) {
      const events = p.events.server.splice(0);
      if (events.length === 0) break;
      for (const e of events) serve(broker, link, e);
      p.pump();
    }
  };
  pump();
  return { session: p.client as Session, link, pump, events: p.events.client, p };
}

function serve(broker: Broker, link: BrokerLink, e: SessionEvent): void {
  switch (e.type) {
    case 'subscribe':
      return broker.subscribe(link, e.key, e.pattern, e.options);
    case 'unsubscribe':
      return broker.unsubscribe(link, e.key);
    case 'publish':
      broker.publish(link, e.key, e.id, e.topic, e.qos, e.payload);
      return;
    case 'delivery-ack':
      return broker.ack(link, e.key, e.ok);
    case 'closed':
      return broker.linkClosed(link);
  }
}

function setup() {
  const clock = new Clock();
  const broker = new Broker({ clock: clock.now, maxQueued: 100, dedupeWindowMs: 60_000 });
  return { clock, broker, make: () => client(broker, clock) };
}

const deliveries = (events: SessionEvent[], key?: string) => ofType(events, 'delivery').filter((d) => key === undefined || d.key === key);

describe('FLUXAR broker (sans-I/O)', () => {
  it('fans a publish out to every matching subscription, with * and > wildcards', () => {
    const { broker, make } = setup();
    const a = make();
    const b = make();
    const subs = {
      star: a.session.subscribe('prices.*'),
      rest: a.session.subscribe('prices.>'),
      exact: b.session.subscribe('prices.eur'),
      all: b.session.subscribe('>'),
    };
    a.pump();
    b.pump();
    const pub = make();
    pub.session.publish('prices.eur', 1.08, 1);
    pub.session.publish('prices.eur.usd', 1.1, 1);
    pub.pump();
    a.pump();
    b.pump();
    const topics = (events: SessionEvent[], key: string) => deliveries(events, key).map((d) => d.topic);
    assert.deepEqual(topics(a.events, subs.star), ['prices.eur']);
    assert.deepEqual(topics(a.events, subs.rest), ['prices.eur', 'prices.eur.usd']);
    assert.deepEqual(topics(b.events, subs.exact), ['prices.eur']);
    assert.deepEqual(topics(b.events, subs.all), ['prices.eur', 'prices.eur.usd']);
    const acks = ofType(pub.events, 'published');
    assert.deepEqual(
      acks.map((x) => x.payload),
      [
        { duplicate: false, subscribers: 4 },
        { duplicate: false, subscribers: 2 },
      ],
    );
    assert.equal(broker.size.subscriptions, 4);
  });

  it('only the ack of the current attempt counts; a late ack of an earlier one is ignored', () => {
    const { clock, broker, make } = setup();
    const sub = make();
    const key = sub.session.subscribe('orders', { qos: 1, ackWaitMs: 100 });
    sub.pump();
    const pub = make();
    pub.session.publish('orders', { id: 1 }, 1);
    pub.pump();
    sub.pump();
    const [first] = deliveries(sub.events, key);
    assert.equal(first!.meta.n, 1);
    clock.t += 100;
    broker.tick();
    sub.pump();
    const second = deliveries(sub.events, key)[1]!;
    assert.equal(second.meta.n, 2);
    assert.deepEqual(Buffer.from(second.meta.msg), Buffer.from(first!.meta.msg), 'the same publication');
    // The first attempt's ack arrives after its wait: the message is not settled by it.
    sub.session.ackDelivery(first!.deliveryKey);
    sub.pump();
    assert.equal(broker.size.inFlight, 1);
    clock.t += 100;
    broker.tick();
    sub.pump();
    assert.equal(deliveries(sub.events, key)[2]!.meta.n, 3);
    sub.session.ackDelivery(deliveries(sub.events, key)[2]!.deliveryKey);
    sub.pump();
    assert.equal(broker.size.inFlight, 0);
  });

  it('a nack redelivers at once; after max_deliver the message goes to $dead.<topic>', () => {
    const { broker, make } = setup();
    const dead = make();
    const deadKey = dead.session.subscribe('$dead.>', { qos: 1 });
    dead.pump();
    const sub = make();
    const key = sub.session.subscribe('jobs', { qos: 1, maxDeliver: 2 });
    sub.pump();
    const pub = make();
    pub.session.publish('jobs', 'work', 1);
    pub.pump();
    sub.pump();
    sub.session.ackDelivery(deliveries(sub.events, key)[0]!.deliveryKey, false);
    sub.pump();
    const again = deliveries(sub.events, key);
    assert.equal(again.length, 2);
    assert.equal(again[1]!.meta.n, 2);
    sub.session.ackDelivery(again[1]!.deliveryKey, false);
    sub.pump();
    dead.pump();
    assert.equal(deliveries(sub.events, key).length, 2, 'no third attempt');
    const [letter] = deliveries(dead.events, deadKey);
    assert.equal(letter!.topic, '$dead.jobs');
    assert.equal(letter!.payload, 'work');
    assert.equal(broker.size.inFlight, 1, 'the dead letter waits for its own ack');
  });

  it('QoS 2: a publication sent again within the window fans out once; its second ack says duplicate', () => {
    const { clock, broker, make } = setup();
    const sub = make();
    const key = sub.session.subscribe('pay', { qos: 2 });
    sub.pump();
    const pub = make();
    // The same publication id twice, as a publisher that lost the first ack would send it.
    const id = uuidv7();
    const publish = () => {
      pub.p.server.receive(encodePublish(id, 'pay', 2, { amount: 5 }));
      for (const e of pub.p.server.takeEvents()) serve(broker, pub.link, e);
      sub.pump();
      const [answer] = splitFrames(pub.p.server.takeOutput());
      assert.equal(answer!.target, 'ack');
      return answer!.payload;
    };
    assert.deepEqual(publish(), { duplicate: false, subscribers: 1 });
    assert.deepEqual(publish(), { duplicate: true, subscribers: 0 });
    assert.equal(deliveries(sub.events, key).length, 1);
    clock.t += 60_001;
    assert.deepEqual(publish(), { duplicate: false, subscribers: 1 }, 'past the window it is a new publication');
    assert.equal(deliveries(sub.events, key).length, 2);
  });

  it('at max_in_flight a subscription gets no new messages but still its redeliveries', () => {
    const { clock, broker, make } = setup();
    const sub = make();
    const key = sub.session.subscribe('t', { qos: 1, maxInFlight: 2, ackWaitMs: 100 });
    sub.pump();
    const pub = make();
    for (let i = 0; i < 5; i++) pub.session.publish('t', i, 1);
    pub.pump();
    sub.pump();
    assert.deepEqual(
      deliveries(sub.events, key).map((d) => d.payload),
      [0, 1],
    );
    clock.t += 100;
    broker.tick();
    sub.pump();
    assert.deepEqual(
      deliveries(sub.events, key).map((d) => [d.payload, d.meta.n]),
      [
        [0, 1],
        [1, 1],
        [0, 2],
        [1, 2],
      ],
    );
    for (const d of deliveries(sub.events, key).slice(2)) sub.session.ackDelivery(d.deliveryKey);
    sub.pump();
    assert.deepEqual(
      deliveries(sub.events, key)
        .slice(4)
        .map((d) => d.payload),
      [2, 3],
    );
  });

  it('a subscriber that does not keep up is ended with 429 at its queue limit; the others are not held back', () => {
    const { broker, make } = setup();
    const slow = make();
    const slowKey = slow.session.subscribe('feed', { qos: 1, maxInFlight: 1 });
    slow.pump();
    const fast = make();
    const fastKey = fast.session.subscribe('feed', { qos: 1, maxInFlight: 1000 });
    fast.pump();
    const pub = make();
    for (let i = 0; i < 150; i++) pub.session.publish('feed', i, 1);
    pub.pump();
    slow.pump();
    fast.pump();
    const [end] = ofType(slow.events, 'subscription-end');
    assert.equal(end!.key, slowKey);
    assert.equal(end!.error!.code, 429);
    // The fast one has as many out as the queue may hold (100), acks them, and gets the rest.
    assert.equal(deliveries(fast.events, fastKey).length, 100);
    for (const d of deliveries(fast.events, fastKey)) fast.session.ackDelivery(d.deliveryKey);
    fast.pump();
    assert.equal(deliveries(fast.events, fastKey).length, 150);
    assert.equal(broker.size.subscriptions, 1);
  });

  it('what a subscription holds is bounded in bytes too, and comes back to zero once acked; durables are capped', () => {
    const clock = new Clock();
    const broker = new Broker({ clock: clock.now, maxQueued: 100, maxQueuedBytes: 4096, maxDurables: 1 });
    const make = () => client(broker, clock);
    const good = make();
    const goodKey = good.session.subscribe('big', { qos: 1 });
    good.pump();
    const pub = make();
    for (let i = 0; i < 3; i++) pub.session.publish('big', new Uint8Array(1000), 1);
    pub.pump();
    good.pump();
    assert.ok(broker.size.heldBytes >= 3000, `holds ${broker.size.heldBytes} bytes while unacked`);
    for (const d of deliveries(good.events, goodKey)) good.session.ackDelivery(d.deliveryKey);
    good.pump();
    assert.equal(broker.size.heldBytes, 0);
    // A subscriber that asks for a billion in flight and never acks gets what 4 KiB holds, then 429.
    const greedy = make();
    const greedyKey = greedy.session.subscribe('big', { qos: 1, maxInFlight: 1_000_000_000 });
    greedy.pump();
    let acked = 3;
    for (let i = 0; i < 10; i++) {
      pub.session.publish('big', new Uint8Array(1000), 1);
      pub.pump();
      good.pump();
      // The good subscriber acks as it goes.
      for (const d of deliveries(good.events, goodKey).slice(acked)) good.session.ackDelivery(d.deliveryKey);
      acked = deliveries(good.events, goodKey).length;
      good.pump();
    }
    greedy.pump();
    assert.ok(deliveries(greedy.events, greedyKey).length <= 4);
    const [end] = ofType(greedy.events, 'subscription-end');
    assert.equal(end!.error!.code, 429);
    assert.match(end!.error!.message, /bytes/);
    assert.equal(deliveries(good.events, goodKey).length, 13, 'the other subscriber is not held back');
    // One durable subscription at most here: a second is refused with 429.
    const d1 = make();
    d1.session.subscribe('x', { durable: 'one' });
    d1.pump();
    const d2 = make();
    d2.session.subscribe('x', { durable: 'two' });
    d2.pump();
    assert.equal(ofType(d2.events, 'subscribed')[0]!.error!.code, 429);
  });

  it('a durable subscription outlives its connection: unacked messages come again as new attempts', () => {
    const clock = new Clock();
    const lost: unknown[] = [];
    const broker = new Broker({ clock: clock.now, maxQueued: 100, dedupeWindowMs: 60_000, lost: (e) => lost.push(e) });
    const make = () => client(broker, clock);
    const first = make();
    const key = first.session.subscribe('orders', { qos: 1, durable: 'billing' });
    first.pump();
    const pub = make();
    pub.session.publish('orders', 'a', 1);
    pub.pump();
    first.pump();
    assert.equal(deliveries(first.events, key).length, 1);
    // The connection drops before the ack.
    broker.linkClosed(first.link);
    pub.session.publish('orders', 'b', 1);
    pub.pump();
    const second = make();
    const again = second.session.subscribe('orders', { qos: 1, durable: 'billing' });
    second.pump();
    assert.deepEqual(
      deliveries(second.events, again).map((d) => [d.payload, d.meta.n]),
      [
        ['a', 2],
        ['b', 1],
      ],
    );
    // A second connection may not take a durable name in use.
    const third = make();
    third.session.subscribe('orders', { qos: 1, durable: 'billing' });
    third.pump();
    assert.equal(ofType(third.events, 'subscribed')[0]!.error!.code, 409);
    // Detached past the window with messages unacked, it is gone, and the loss is reported.
    broker.linkClosed(second.link);
    clock.t += 60_001;
    broker.tick();
    assert.equal(broker.size.subscriptions, 0);
    assert.deepEqual(lost, [{ subscription: 'orders', durable: 'billing', messages: 2, reason: 'durable subscription expired with no connection' }]);
  });

  it('deliveries read back as sent, whatever their topic, attempt, QoS and payload (the plain form and the full decoder agree)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.stringMatching(/^[a-z0-9_-]{1,12}$/), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 70_000 }),
        fc.constantFrom<Qos>(0, 1, 2),
        fc.oneof(
          fc.jsonValue(),
          // Bytes take the plain form's own path: lengths across the one-byte, 1-, 2- and 4-byte heads.
          fc
            .uint8Array({ maxLength: 300 })
            .map((b) => Buffer.from(b)),
          fc.constantFrom(65_535, 65_536, 70_000).map((n) => Buffer.alloc(n, n & 0xff)),
        ),
        fc.boolean(),
        (tokens, n, qos, value, dead) => {
          // JSON has no -0, and the profile refuses a __proto__ key anywhere (a 400 bye, tested elsewhere).
          const payload: unknown = Buffer.isBuffer(value) ? value : JSON.parse(JSON.stringify(value));
          fc.pre(Buffer.isBuffer(value) || !JSON.stringify(value).includes('"__proto__"'));
          const { make } = setup();
          const c = make();
          const key = c.session.subscribe('>');
          c.pump();
          const topic = tokens.join('.');
          const msg = uuidv7();
          // A dead letter's extra meta takes the full decoder; the rest the plain form.
          // The subscription's key is the same on both sides: the subscribe envelope's id.
          c.p.server.deliver(key, topic, payload, { msg, n, qos }, dead ? { dead_reason: 'max_deliver' } : null);
          c.p.pump();
          const [d] = deliveries(c.events, key);
          assert.equal(d!.topic, topic);
          assert.deepEqual(d!.payload, payload);
          assert.deepEqual([Buffer.from(d!.meta.msg), d!.meta.n, d!.meta.qos], [Buffer.from(msg), n, qos]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("a plain delivery's bytes and publication id are views of its frame, or copies with copyBuffers", () => {
    for (const copyBuffers of [false, true]) {
      const clock = new Clock();
      const p = pair({ copyBuffers }, {}, clock);
      p.pump();
      const key = p.client.subscribe('prices.>');
      p.pump();
      const msg = uuidv7();
      const payload = Buffer.from('a tick of 24 bytes, more');
      p.server.deliver(key, 'prices.eur', payload, { msg, n: 1, qos: 1 });
      const frames = p.server.takeOutput();
      for (const bytes of frames) p.client.receive(bytes);
      const [d] = ofType(p.client.takeEvents(), 'delivery');
      assert.ok(d !== undefined, 'the delivery arrived');
      // The transport reuses the memory of the frames it handed over.
      for (const bytes of frames) bytes.fill(0);
      if (copyBuffers) {
        assert.deepEqual(Buffer.from(d.payload as Uint8Array), payload);
        assert.deepEqual(Buffer.from(d.meta.msg), Buffer.from(msg));
      } else {
        assert.deepEqual(Buffer.from(d.payload as Uint8Array), Buffer.alloc(payload.length));
        assert.deepEqual(Buffer.from(d.meta.msg), Buffer.alloc(16), 'read after the frame was overwritten: a view');
      }
    }
  });

  it('refuses bad patterns, topics and meta with 400, and a publish of any QoS is never silent', () => {
    const { make } = setup();
    const c = make();
    c.p.server.receive(encodeEnv(4, null, 'a..b', null));
    c.p.server.receive(encodeEnv(4, null, 'a.>.b', null));
    c.p.server.receive(encodeEnv(4, null, 'ok', { qos: 3 }));
    c.p.server.receive(encodePublish(uuidv7(), 'a.*', 0, null));
    assert.deepEqual(errorsIn(c.p.server.takeOutput()), [400, 400, 400, 400]);
    assert.equal(c.p.server.state, 'open');
    assert.throws(() => c.session.subscribe('a..b'), /empty token/);
    assert.throws(() => c.session.publish('a.*', 1), /no wildcards/);
  });
});

function encodeEnv(type: number, ref: Uint8Array | null, target: string | null, meta: Record<string, unknown> | null, payload: unknown = null) {
  return encodeStreamFrame(0, encodeEnvelope({ type: type as MessageType, id: uuidv7(), ref, target, meta, payload, error: null }));
}

function splitFrames(output: Uint8Array[]) {
  const splitter = new StreamFrameSplitter(MAX_FRAME_CEILING);
  return output.flatMap((b) => splitter.push(b)).map((f) => decodeEnvelope(f.body));
}

function encodePublish(id: Uint8Array, topic: string, qos: number, payload: unknown) {
  return encodeStreamFrame(0, encodeEnvelope({ type: MessageType.Publish, id, ref: null, target: topic, meta: { qos }, payload, error: null }));
}
