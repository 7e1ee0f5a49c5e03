/**
 * A token bucket on a clock the caller passes in (the session has no clock of its own). It may
 * go negative: work already done is charged in full, and the next check refuses until the
 * debt is refilled.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly rate: number,
    readonly capacity: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.last = now;
  }

  /** Refills for the time passed; true while anything is left to spend. */
  available(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
    return this.tokens > 0;
  }

  spend(amount: number, now: number): void {
    this.available(now);
    this.tokens -= amount;
  }
}
