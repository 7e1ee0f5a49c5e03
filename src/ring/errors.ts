import { FluxrigError } from '../errors.js';

/** A record that can never fit: more than half the ring's capacity. */
export class RecordTooLargeError extends FluxrigError {
  readonly size: number;
  readonly limit: number;
  constructor(size: number, limit: number) {
    super(`record of ${size} bytes exceeds the ring's limit of ${limit} bytes (half its capacity); raise the ring capacity or split the message`);
    this.size = size;
    this.limit = limit;
  }
}

/** A hot-lane send that found the lane full for longer than lane_send_timeout. */
export class LaneTimeoutError extends FluxrigError {
  readonly timeoutMs: number;
  constructor(lane: string, timeoutMs: number) {
    super(`hot lane ${lane} stayed full for ${timeoutMs} ms (lane_send_timeout); the consumer is not keeping up`);
    this.timeoutMs = timeoutMs;
  }
}

/** A SharedArrayBuffer that is not a ring of this layout. */
export class RingLayoutError extends FluxrigError {}
