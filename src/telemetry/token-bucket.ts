/**
 * Tokens refill at `ratePerS` up to `burst`; take() grants what is there. The clock is passed in,
 * so the bucket has no timer of its own.
 */
export class TokenBucket {
  private tokens: number;
  private refilledAt: number;

  constructor(
    readonly ratePerS: number,
    readonly burst: number,
    now: number,
  ) {
    if (!(ratePerS > 0) || !(burst >= 1)) throw new RangeError(`a token bucket needs a rate > 0 and a burst >= 1 (got ${ratePerS}/s, burst ${burst})`);
    this.tokens = burst;
    this.refilledAt = now;
  }

  /** Grants up to `wanted` whole tokens (fewer when the bucket has fewer). */
  take(wanted: number, now: number): number {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.ratePerS) / 1000);
    this.refilledAt = now;
    const granted = Math.min(wanted, Math.floor(this.tokens));
    this.tokens -= granted;
    return granted;
  }
}
