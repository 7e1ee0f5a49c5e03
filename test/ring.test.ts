import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { createRing, HotLane, LaneTimeoutError, RecordTooLargeError, RingConsumer, RingProducer } from '../src/ring/mod.js';

function drainAll(consumer: RingConsumer): Array<{ tag: number; payload: number[] }> {
  const got: Array<{ tag: number; payload: number[] }> = [];
  consumer.drain((tag, bytes, start, length) => got.push({ tag, payload: [...bytes.subarray(start, start + length)] }));
  return got;
}

describe('ring', () => {
  it('matches a reference queue under random writes, drains and wraps (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.record({ write: fc.nat({ max: 600 }) }), fc.record({ drain: fc.nat({ max: 6 }) })), { maxLength: 300 }), (ops) => {
        const sab = createRing({ capacity: 2048, maxRecords: 64 });
        const producer = new RingProducer(sab);
        const consumer = new RingConsumer(sab);
        const reference: Array<{ tag: number; payload: number[] }> = [];
        let tag = 0;
        for (const op of ops) {
          if ('write' in op) {
            const payload = Array.from({ length: op.write }, (_, i) => (tag + i) & 0xff);
            const fits = producer.hasRoom(op.write);
            const wrote = producer.tryWrite(tag, Uint8Array.from(payload));
            assert.equal(wrote, fits, 'hasRoom must predict tryWrite');
            if (wrote) reference.push({ tag, payload });
            tag++;
          } else {
            const got: Array<{ tag: number; payload: number[] }> = [];
            consumer.drain((t, bytes, start, length) => got.push({ tag: t, payload: [...bytes.subarray(start, start + length)] }), op.drain);
            assert.deepEqual(got, reference.splice(0, got.length));
            assert.ok(got.length === Math.min(op.drain, got.length + reference.length) || op.drain === 0);
          }
          assert.equal(producer.pendingRecords(), reference.length);
        }
        assert.deepEqual(drainAll(consumer), reference);
        assert.ok(consumer.isEmpty());
      }),
      { numRuns: 400 },
    );
  });

  it('refuses when full and accepts again once drained (edges)', () => {
    const sab = createRing({ capacity: 1024, maxRecords: 1000 });
    const producer = new RingProducer(sab);
    const consumer = new RingConsumer(sab);
    assert.ok(consumer.isEmpty());
    assert.equal(
      consumer.drain(() => assert.fail('empty ring has no records')),
      0,
    );
    const record = new Uint8Array(120); // 128 bytes with its header: exactly 8 fill the ring
    for (let i = 0; i < 8; i++) assert.ok(producer.tryWrite(i, record), `write ${i}`);
    assert.equal(producer.tryWrite(8, new Uint8Array(0)), false, 'a full ring refuses even an empty record');
    assert.equal(producer.pendingBytes(), 1024);
    assert.equal(
      consumer.drain(() => {}, 1),
      1,
    );
    assert.ok(producer.tryWrite(8, record), 'room again after one release');
    assert.equal(
      consumer.drain(() => {}),
      8,
    );
    assert.ok(consumer.isEmpty());
  });

  it('caps records in flight at maxRecords (lane_queue_size)', () => {
    const sab = createRing({ capacity: 4096, maxRecords: 3 });
    const producer = new RingProducer(sab);
    for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(i, new Uint8Array(1)));
    assert.equal(producer.tryWrite(3, new Uint8Array(1)), false);
  });

  it('keeps records contiguous across the wrap, with a padding marker', () => {
    const sab = createRing({ capacity: 1024 });
    const producer = new RingProducer(sab);
    const consumer = new RingConsumer(sab);
    producer.tryWrite(1, new Uint8Array(500)); // 508 bytes
    producer.tryWrite(1, new Uint8Array(300)); // 308 more: 208 left before the end
    consumer.drain(() => {});
    const payload = Uint8Array.from({ length: 240 }, (_, i) => i); // needs 248: wraps to 0
    assert.ok(producer.tryWrite(2, payload));
    const [record] = drainAll(consumer);
    assert.deepEqual(record, { tag: 2, payload: [...payload] });
  });

  it('hands out views in place (zero-copy) and releases in one batch', () => {
    const sab = createRing({ capacity: 1024 });
    const producer = new RingProducer(sab);
    const consumer = new RingConsumer(sab);
    producer.tryWrite(7, Uint8Array.of(1, 2, 3));
    producer.tryWrite(8, Uint8Array.of(4));
    let seenBuffer: ArrayBufferLike | undefined;
    let pendingDuringVisit = -1;
    consumer.drain((_tag, bytes) => {
      seenBuffer = bytes.buffer;
      pendingDuringVisit = producer.pendingRecords();
    });
    assert.equal(seenBuffer, sab);
    assert.equal(pendingDuringVisit, 2, 'records are released after the batch, not one by one');
    assert.equal(producer.pendingRecords(), 0);
  });

  it('a visitor that throws consumes its record and the error surfaces', () => {
    const sab = createRing({ capacity: 1024 });
    const producer = new RingProducer(sab);
    const consumer = new RingConsumer(sab);
    producer.tryWrite(1, Uint8Array.of(1));
    producer.tryWrite(2, Uint8Array.of(2));
    assert.throws(
      () =>
        consumer.drain((tag) => {
          if (tag === 1) throw new Error('poison');
        }),
      /poison/,
    );
    assert.deepEqual(
      drainAll(consumer).map((r) => r.tag),
      [2],
    );
  });

  it('refuses a record over half the capacity with a clear error', () => {
    const producer = new RingProducer(createRing({ capacity: 1024 }));
    assert.throws(
      () => producer.tryWrite(0, new Uint8Array(505)),
      (err: unknown) => err instanceof RecordTooLargeError && err.limit === 504 && /505 bytes exceeds the ring's limit of 504/.test(err.message),
    );
    assert.ok(producer.tryWrite(0, new Uint8Array(504)));
  });

  it('validates its geometry', () => {
    assert.throws(() => createRing({ capacity: 1000 }), /power of two/);
    assert.throws(() => createRing({ capacity: 512 }), /power of two from 1024/);
    assert.throws(() => createRing({ maxRecords: 0 }), /maxRecords/);
    assert.throws(() => new RingConsumer(new SharedArrayBuffer(64)), /not a ring/);
  });

  it('a hot lane waits for room, then fails loudly at lane_send_timeout', () => {
    const sab = createRing({ capacity: 1024, maxRecords: 2 });
    const lane = new HotLane('gear-a.out', sab, 50);
    lane.send(1, Uint8Array.of(1));
    lane.send(2, Uint8Array.of(2));
    const started = Date.now();
    assert.throws(
      () => lane.send(3, Uint8Array.of(3)),
      (err: unknown) => err instanceof LaneTimeoutError && /hot lane gear-a.out stayed full for 50 ms/.test(err.message),
    );
    assert.ok(Date.now() - started >= 45, 'it waited before failing');
  });

  it('moves two million records between real threads in order, checksummed', async () => {
    const count = 2_000_000;
    const sab = createRing({ capacity: 1 << 16, maxRecords: 4096 });
    const consumer = new RingConsumer(sab);
    const producer = new Worker(new URL('./fixtures/ring-producer.js', import.meta.url), { workerData: { ring: sab, count, maxSize: 300 } });
    const exited = new Promise<number>((resolve) => producer.once('exit', resolve));
    let expected = 0;
    let bad = 0;
    let seed = 12345;
    const visit = (tag: number, bytes: Uint8Array, start: number, length: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const size = 4 + (seed % 297);
      const seq = bytes[start]! | (bytes[start + 1]! << 8) | (bytes[start + 2]! << 16) | (bytes[start + 3]! << 24);
      if (tag !== expected || seq !== expected || length !== size) bad++;
      else if (length > 4 && bytes[start + length - 1] !== ((expected + length - 1) & 0xff)) bad++;
      for (let i = 4; i < length; i += 37) if (bytes[start + i] !== ((expected + i) & 0xff)) bad++;
      expected++;
    };
    const deadline = Date.now() + 60_000;
    while (expected < count && Date.now() < deadline) {
      if (consumer.drain(visit, 4096) === 0 && consumer.armDoorbell()) await consumer.sleepAsync();
    }
    assert.equal(await exited, 0);
    assert.equal(bad, 0, 'every record arrives intact');
    assert.equal(expected, count, 'every record arrives, in order');
    assert.ok(consumer.isEmpty());
  });

  it('rings a sleeping consumer for deferred records once, and never for a batch that wrote nothing', () => {
    const sab = createRing({ capacity: 1024 });
    const producer = new RingProducer(sab);
    const consumer = new RingConsumer(sab);
    producer.deferWake = true;
    assert.ok(consumer.armDoorbell());
    // sleep(0) reads the doorbell: 'timed-out' while still armed, 'not-equal' once rung.
    producer.announce();
    assert.equal(consumer.sleep(0), 'timed-out', 'an empty batch wakes nobody');
    assert.ok(producer.tryWrite(7, Uint8Array.of(1, 2, 3)));
    assert.equal(consumer.sleep(0), 'timed-out', 'a deferred record waits for the batch to end');
    producer.announce();
    assert.equal(consumer.sleep(0), 'not-equal', 'the batch ends with one ring');
    assert.deepEqual(drainAll(consumer), [{ tag: 7, payload: [1, 2, 3] }]);
    assert.ok(consumer.armDoorbell());
    producer.announce();
    assert.equal(consumer.sleep(0), 'timed-out', 'what was announced is not announced again');
  });
});
