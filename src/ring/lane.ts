import { LaneTimeoutError } from './errors.js';
import { RingProducer } from './ring.js';

/** lane_send_timeout: how long a send into a full hot lane waits before failing. */
export const DEFAULT_LANE_SEND_TIMEOUT_MS = 5000;

/** Where records go: a HotLane in a worker, a direct call on the main thread (inline mode). */
export interface Lane {
  send(tag: number, payload: Uint8Array): void;
  /** The largest record the lane takes (half its ring); Infinity inline. */
  readonly maxRecordBytes: number;
}

/**
 * Sends the bytes of a byte stream as records of at most `max` bytes (a ring record is at most
 * half its ring): a stream may be cut anywhere, its reader reassembles frames across records.
 */
export function sendStreamBytes(bytes: Uint8Array, max: number, send: (piece: Uint8Array) => void): void {
  if (bytes.length <= max) return send(bytes);
  for (let at = 0; at < bytes.length; at += max) send(bytes.subarray(at, Math.min(at + max, bytes.length)));
}

/**
 * A hot lane out of a worker: a ring producer whose sends wait for room (blocking the worker, up
 * to lane_send_timeout) instead of failing at once or buffering without bound. Only for worker
 * threads: the wait is Atomics.wait.
 */
export class HotLane implements Lane {
  readonly name: string;
  readonly producer: RingProducer;
  readonly sendTimeoutMs: number;

  constructor(name: string, buffer: SharedArrayBuffer, sendTimeoutMs = DEFAULT_LANE_SEND_TIMEOUT_MS) {
    this.name = name;
    this.producer = new RingProducer(buffer);
    this.sendTimeoutMs = sendTimeoutMs;
  }

  get maxRecordBytes(): number {
    return this.producer.maxRecordBytes;
  }

  /** Sends one record; waits while the lane is full and throws LaneTimeoutError past the timeout. */
  send(tag: number, payload: Uint8Array): void {
    if (this.producer.tryWrite(tag, payload)) return;
    if (!this.producer.waitForRoom(payload.length, this.sendTimeoutMs) || !this.producer.tryWrite(tag, payload)) {
      throw new LaneTimeoutError(this.name, this.sendTimeoutMs);
    }
  }

  /**
   * Zero-copy form: returns the offset in `producer.bytes` to fill with `length` bytes, then call
   * commit(). Waits like send().
   */
  reserve(tag: number, length: number): number {
    let at = this.producer.reserve(tag, length);
    if (at >= 0) return at;
    if (this.producer.waitForRoom(length, this.sendTimeoutMs)) at = this.producer.reserve(tag, length);
    if (at < 0) throw new LaneTimeoutError(this.name, this.sendTimeoutMs);
    return at;
  }

  commit(): void {
    this.producer.commit();
  }
}
