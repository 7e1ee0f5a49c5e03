// What a guaranteed wire waits on before it acks a message (PendingOutputs) and how its publishes
// are tried again (sendRetrying): the per-message path is callbacks, settled() keeps its rules.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PendingOutputs } from '../src/gears/pending-outputs.js';
import { publishRetrying, sendRetrying } from '../src/gears/publish-retry.js';

/** Whether a promise has settled, and how, once pending callbacks have run. */
async function state(p: Promise<unknown>): Promise<'pending' | 'resolved' | 'rejected'> {
  let s: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(
    () => {
      s = 'resolved';
    },
    () => {
      s = 'rejected';
    },
  );
  await new Promise((resolve) => setImmediate(resolve));
  return s;
}

describe('PendingOutputs', () => {
  it('settles once everything tracked before the call is done, not what came after', async () => {
    const outputs = new PendingOutputs();
    const first = outputs.track();
    const second = outputs.track();
    assert.equal(outputs.size, 2);
    const settled = outputs.settled();
    const later = outputs.track();
    first();
    assert.equal(await state(settled), 'pending');
    second();
    assert.equal(await state(settled), 'resolved');
    assert.equal(outputs.size, 1);
    later();
    assert.equal(outputs.size, 0);
  });

  it('rejects with the failure at once, though others still wait, and keeps it for the next two calls after it', async () => {
    const outputs = new PendingOutputs();
    const waiting = outputs.track();
    const failing = outputs.track();
    const settled = outputs.settled();
    const boom = new Error('stream full');
    failing(boom);
    await assert.rejects(settled, (err) => err === boom);
    waiting();
    // The first call asked before it failed; the two calls after it still hear of it.
    await assert.rejects(outputs.settled(), (err) => err === boom);
    await assert.rejects(outputs.settled(), (err) => err === boom);
    assert.equal(await state(outputs.settled()), 'resolved'); // forgotten
  });

  it('reports a failure that came before anybody asked', async () => {
    const outputs = new PendingOutputs();
    outputs.track()(new Error('no leader'));
    await assert.rejects(outputs.settled(), /no leader/);
  });

  it('calls a completion once: a second call changes nothing', async () => {
    const outputs = new PendingOutputs();
    const done = outputs.track();
    done();
    done(new Error('late'));
    assert.equal(await state(outputs.settled()), 'resolved');
  });

  it('drains through failures; tracks promises too', async () => {
    const outputs = new PendingOutputs();
    let fail!: (err: Error) => void;
    outputs.add(new Promise((_resolve, reject) => (fail = reject)));
    const done = outputs.track();
    const drained = outputs.drained();
    fail(new Error('refused'));
    assert.equal(await state(drained), 'pending');
    done();
    assert.equal(await state(drained), 'resolved');
    await assert.rejects(outputs.settled(), /refused/);
  });
});

describe('sendRetrying', () => {
  it('tries again while the error is retryable, then reports the result once', async () => {
    let attempts = 0;
    let retries = 0;
    const results: Array<[Error | undefined, number | undefined]> = [];
    sendRetrying<number>(
      (done) => {
        attempts++;
        if (attempts < 3) done(new Error('timeout'));
        else done(undefined, 42);
      },
      (err) => err.message === 'timeout',
      () => retries++,
      (err, value) => results.push([err, value]),
    );
    const deadline = Date.now() + 5000;
    while (results.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(results, [[undefined, 42]]);
    assert.equal(attempts, 3);
    assert.equal(retries, 2);
  });

  it('reports an error that is not retryable at once, without trying again', () => {
    let attempts = 0;
    const results: Array<Error | undefined> = [];
    sendRetrying(
      (done) => {
        attempts++;
        done(new Error('message size exceeds maximum'));
      },
      () => false,
      undefined,
      (err) => results.push(err),
    );
    assert.equal(attempts, 1);
    assert.match(String(results[0]?.message), /message size/);
  });

  it('has a promise form', async () => {
    let attempts = 0;
    const value = await publishRetrying(
      async () => {
        if (attempts++ === 0) throw new Error('timeout');
        return 'acked';
      },
      () => true,
    );
    assert.equal(value, 'acked');
    await assert.rejects(
      publishRetrying(
        async () => {
          throw new Error('refused');
        },
        () => false,
      ),
      /refused/,
    );
  });

  it('counts a publish that throws instead of rejecting as a failed attempt, retries included', async () => {
    let attempts = 0;
    const value = await publishRetrying(
      () => {
        attempts++;
        if (attempts < 3) throw new Error('timeout');
        return Promise.resolve('acked');
      },
      () => true,
    );
    assert.equal(value, 'acked');
    assert.equal(attempts, 3);
  });
});
