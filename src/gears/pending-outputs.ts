/**
 * What a gear sent on and is still waiting to hear about (JetStream publishes), for a guaranteed
 * wire that may ack its message only once all of that is confirmed (MainGear.settled).
 *
 * A failure is kept for the next two settled() calls before it is forgotten: a publish can fail
 * before the wire asks (a stream between leaders answers at once), and the message that led to it
 * may be in the batch the wire asks about next. Forgetting it at once would ack that message.
 */
export class PendingOutputs {
  private readonly waiting = new Set<Promise<unknown>>();
  private readonly failed = new Map<Promise<unknown>, number>();

  /** How many are still waiting. */
  get size(): number {
    return this.waiting.size;
  }

  add(output: Promise<unknown>): void {
    this.waiting.add(output);
    output.then(
      () => this.waiting.delete(output),
      () => {
        this.waiting.delete(output);
        this.failed.set(output, FAILURE_REPORTS);
        // Nobody may ever ask (no guaranteed wire): the oldest failures go first.
        if (this.failed.size > MAX_FAILURES_KEPT) this.failed.delete(this.failed.keys().next().value!);
      },
    );
  }

  /** Settles when everything added so far has; rejects if any of it failed (recently). */
  settled(): Promise<unknown> {
    if (this.waiting.size === 0 && this.failed.size === 0) return Promise.resolve();
    const all = [...this.waiting, ...this.failed.keys()];
    for (const [output, left] of this.failed) {
      if (left <= 1) this.failed.delete(output);
      else this.failed.set(output, left - 1);
    }
    return Promise.all(all);
  }

  /** Settles when everything added so far has, failed or not. */
  async drained(): Promise<void> {
    await Promise.allSettled([...this.waiting]);
  }
}

const FAILURE_REPORTS = 2;
const MAX_FAILURES_KEPT = 10_000;
