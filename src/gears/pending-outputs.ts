/**
 * What a gear sent on and is still waiting to hear about (JetStream publishes), for a guaranteed
 * wire that may ack its message only once all of that is confirmed (MainGear.settled).
 *
 * A failure is kept for the next two settled() calls before it is forgotten: a publish can fail
 * before the wire asks (a stream between leaders answers at once), and the message that led to it
 * may be in the batch the wire asks about next. Forgetting it at once would ack that message.
 *
 * Outputs are tracked with a completion callback (track()), not a promise per output: the
 * guaranteed lanes track every message they publish. Promises are made only for settled() and
 * drained(), once per batch.
 */
export class PendingOutputs {
  private readonly waiting = new Set<Output>();
  private readonly failed = new Map<Output, number>();

  /** How many are still waiting. */
  get size(): number {
    return this.waiting.size;
  }

  /** Tracks one output; call what it returns once, with the error if it failed. */
  track(): (err?: unknown) => void {
    const output: Output = { done: false, error: undefined, notify: undefined };
    this.waiting.add(output);
    return (err) => {
      if (output.done) return;
      output.done = true;
      this.waiting.delete(output);
      if (err !== undefined) {
        output.error = err;
        this.failed.set(output, FAILURE_REPORTS);
        // Nobody may ever ask (no guaranteed wire): the oldest failures go first.
        if (this.failed.size > MAX_FAILURES_KEPT) this.failed.delete(this.failed.keys().next().value!);
      }
      const notify = output.notify;
      output.notify = undefined;
      if (notify !== undefined) for (const f of notify) f(output);
    };
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

interface Output {
  done: boolean;
  /** Why it failed; undefined while it waits or once it succeeded. */
  error: unknown;
  /** Who waits for it (settled(), drained()); made only when somebody does. */
  notify: Array<(output: Output) => void> | undefined;
}

/** Resolves once every output is done; with `failFast`, rejects with the first failure instead. */
function whenAll(outputs: Output[], failFast: boolean): Promise<unknown> {
  return new Promise((resolve, reject) => {
    // One count per output still to finish, and one for the loop below, so that outputs already
    // done are counted by the same path as those that finish later.
    let left = outputs.length + 1;
    let over = false;
    const finished = (output: Output | undefined) => {
      if (over) return;
      if (failFast && output?.error !== undefined) {
        over = true;
        reject(output.error);
      } else if (--left === 0) {
        over = true;
        resolve(undefined);
      }
    };
    for (const output of outputs) {
      if (output.done) finished(output);
      else (output.notify ??= []).push(finished);
    }
    finished(undefined);
  });
}

const FAILURE_REPORTS = 2;
const MAX_FAILURES_KEPT = 10_000;
