/*
 * The shared layout of a ring, in one place. A ring is one SharedArrayBuffer:
 *
 *   bytes   0..63   producer line: WRITE_POS, WRITE_COUNT (written by the producer only)
 *   bytes  64..127  consumer line: READ_POS, READ_COUNT, CONSUMER_BEAT, BUSY_SINCE
 *   bytes 128..191  consumer doorbell: CONSUMER_SLEEPING
 *   bytes 192..255  producer doorbell: PRODUCER_WAITING
 *   bytes 256..     data: records, 8-byte aligned
 *
 * Each side writes only its own cache line, so a busy producer and consumer do not invalidate
 * each other's line on every store (false sharing). Positions are byte counters that only grow
 * and wrap at 2^32; with a power-of-two capacity, `pos & (capacity - 1)` is the offset.
 *
 * A record: int32 length, int32 tag, then `length` payload bytes, padded to a multiple of 8.
 * A length of PAD_MARKER means "nothing more fits before the end: continue at offset 0", so
 * every record is contiguous and a reader gets one view.
 */

/** Int32 slot numbers (byte offset / 4). */
export const WRITE_POS = 0;
export const WRITE_COUNT = 1;
export const READ_POS = 16;
export const READ_COUNT = 17;
/** Bumped by the consumer after every batch: the supervisor's proof of progress. */
export const CONSUMER_BEAT = 18;
/**
 * Milliseconds (relative to the ring's creation) at which the consumer started the batch it is
 * in, or 0 when it is between batches. Lets a watchdog tell "busy for too long" from "idle".
 */
export const BUSY_SINCE = 19;
export const CONSUMER_SLEEPING = 32;
export const PRODUCER_WAITING = 48;

export const HEADER_BYTES = 256;
export const RECORD_HEADER_BYTES = 8;
export const ALIGN = 8;
export const PAD_MARKER = -1;

export const MIN_CAPACITY = 1024;
export const MAX_CAPACITY = 1 << 30;
export const DEFAULT_CAPACITY = 1 << 20;
/** The default cap on records in flight in one ring (lane_queue_size). */
export const DEFAULT_MAX_RECORDS = 1024;

/** Payload bytes of the largest record a ring of `capacity` data bytes takes: half of it. */
export function maxRecordBytes(capacity: number): number {
  return capacity / 2 - RECORD_HEADER_BYTES;
}

export function align8(n: number): number {
  return (n + 7) & ~7;
}
