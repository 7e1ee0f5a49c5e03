/**
 * What a gear sent on and is still waiting to hear about (JetStream publishes), for a guaranteed
 * wire that may ack its message only once all of that is confirmed (MainGear.settled).
 *
 * A failure is kept for the next two settled() calls before it is forgotten: a publish can fail
 * before the wire asks (a stream between leaders answers at once), and the message that led to it
 * may be in the batch the wire asks about next. Forgetting it at once would ack that message.
 *
 * Outputs are tracked with a completion callback (track()), or as objects of their own (begin()
 * and end() of a TrackedOutput), not a promise per output: the guaranteed lanes track every
 * message they publish. Promises are made only for settled() and drained(), once per batch.
 */
export class PendingOutputs {
  private readonly waiting = new Set<TrackedOutput>();
  private readonly failed = new Map<TrackedOutput, number>();

  /** How many are still waiting. */
  get size(): number {
    return this.waiting.size;
  }

  /** Tracks one output; call what it returns once, with the error if it failed. */
  track(): (err?: unknown) => void {
    const output = new TrackedOutput();
    this.begin(output);
    return (err) => this.end(output, err);
  }

  /** Tracks `output` until end(output). */
  begin(output: TrackedOutput): void {
    this.waiting.add(output);
  }

  /** `output` is done, failed if `err` is given. Only its first end counts. */
  end(output: TrackedOutput, err?: unknown): void {
    if (output.finished) return;
    output.finished = true;
    this.waiting.delete(output);
    if (err !== undefined) {
      output.failure = err;
      this.failed.set(output, FAILURE_REPORTS);
      // Nobody may ever ask (no guaranteed wire): the oldest failures go first.
      if (this.failed.size > MAX_FAILURES_KEPT) this.failed.delete(this.failed.keys().next().value!);
    }
    const waiters = output.waiters;
    output.waiters = undefined;
    if (waiters !== undefined) for (const f of waiters) f(output);
  }

  /** Tracks a promise. */
  add(output: Promise<unknown>): void {
    const done = this.track();
    output.then(
      () => done(),
      (err: unknown) => done(err ?? new Error('an output failed')),
    );
  }

  /** Settles when everything added so far has; rejects (at the first failure) if any of it failed (recently). */
  settled(): Promise<unknown> {
    if (this.waiting.size === 0 && this.failed.size === 0) return Promise.resolve();
    const all = [...this.waiting, ...this.failed.keys()];
    for (const [output, left] of this.failed) {
      if (left <= 1) this.failed.delete(output);
      else this.failed.set(output, left - 1);
    }
    return whenAll(all, true);
  }

  /** Settles when everything added so far has, failed or not. */
  drained(): Promise<void> {
    return whenAll([...this.waiting], false).then(() => {});
  }
}

/**
 * One output being waited for. A class to extend: a guaranteed wire tracks every message it
 * publishes, and what it keeps per message while the stream confirms it is one object (see
 * LanePublish in rack/lanes.ts), not an output, a closure and the closure's context.
 */
export class TrackedOutput {
  finished = false;
  /** Why it failed; undefined while it waits or once it succeeded. */
  failure: unknown = undefined;
  /** Who waits for it (settled(), drained()); made only when somebody does. */
  waiters: Array<(output: TrackedOutput) => void> | undefined = undefined;
}

/** Resolves once every output is done; with `failFast`, rejects with the first failure instead. */
function whenAll(outputs: TrackedOutput[], failFast: boolean): Promise<unknown> {
  return new Promise((resolve, reject) => {
    // One count per output still to finish, and one for the loop below, so that outputs already
    // done are counted by the same path as those that finish later.
    let left = outputs.length + 1;
    let over = false;
    const finished = (output: TrackedOutput | undefined) => {
      if (over) return;
      if (failFast && output?.failure !== undefined) {
        over = true;
        reject(output.failure);
      } else if (--left === 0) {
        over = true;
        resolve(undefined);
      }
    };
    for (const output of outputs) {
      if (output.finished) finished(output);
      else (output.waiters ??= []).push(finished);
    }
    finished(undefined);
  });
}

const FAILURE_REPORTS = 2;
const MAX_FAILURES_KEPT = 10_000;
