import {
  align8,
  BUSY_SINCE,
  CONSUMER_BEAT,
  CONSUMER_SLEEPING,
  DEFAULT_CAPACITY,
  DEFAULT_MAX_RECORDS,
  HEADER_BYTES,
  MAX_CAPACITY,
  maxRecordBytes,
  MIN_CAPACITY,
  PAD_MARKER,
  PRODUCER_WAITING,
  READ_COUNT,
  READ_POS,
  RECORD_HEADER_BYTES,
  WRITE_COUNT,
  WRITE_POS,
} from './layout.js';
import { RecordTooLargeError, RingLayoutError } from './errors.js';

// Constants kept in the producer line; written once at creation, read by both sides.
const CAPACITY = 2;
const MAX_RECORDS = 3;
const EPOCH_HIGH = 4;
const EPOCH_LOW = 5;
/** Records a consumer visits before it hands their room back mid-batch (a power of two). */
const RELEASE_EVERY = 64;

export interface RingOptions {
  /** Data bytes; a power of two from 1 KiB to 1 GiB. Default 1 MiB. */
  capacity?: number;
  /** Most records in the ring at once (lane_queue_size). Default 1024. */
  maxRecords?: number;
}

/** Allocates a ring. Hand the returned buffer to exactly one producer and one consumer. */
export function createRing(options: RingOptions = {}): SharedArrayBuffer {
  const capacity = options.capacity ?? DEFAULT_CAPACITY;
  const maxRecords = options.maxRecords ?? DEFAULT_MAX_RECORDS;
  if (!Number.isInteger(capacity) || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY || (capacity & (capacity - 1)) !== 0) {
    throw new RangeError(`ring capacity must be a power of two from ${MIN_CAPACITY} to ${MAX_CAPACITY}, got ${capacity}`);
  }
  if (!Number.isInteger(maxRecords) || maxRecords < 1 || maxRecords > 0x7fffffff) {
    throw new RangeError(`ring maxRecords must be a positive integer, got ${maxRecords}`);
  }
  const sab = new SharedArrayBuffer(HEADER_BYTES + capacity);
  const i32 = new Int32Array(sab, 0, HEADER_BYTES / 4);
  const epoch = Date.now();
  i32[CAPACITY] = capacity;
  i32[MAX_RECORDS] = maxRecords;
  i32[EPOCH_HIGH] = Math.floor(epoch / 0x100000000);
  i32[EPOCH_LOW] = epoch >>> 0;
  return sab;
}

/** What both ends share: views on the buffer and its fixed geometry. */
class RingEnd {
  readonly buffer: SharedArrayBuffer;
  /** The whole buffer as bytes; record payloads are at offsets within it. */
  readonly bytes: Uint8Array;
  protected readonly header: Int32Array;
  protected readonly view: DataView;
  readonly capacity: number;
  readonly maxRecords: number;
  /** Payload bytes of the largest record this ring accepts. */
  readonly maxRecordBytes: number;
  protected readonly mask: number;
  protected readonly epochMs: number;

  constructor(buffer: SharedArrayBuffer) {
    if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < HEADER_BYTES + MIN_CAPACITY) {
      throw new RingLayoutError('not a ring: expected a SharedArrayBuffer made by createRing');
    }
    this.buffer = buffer;
    this.header = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.capacity = this.header[CAPACITY]!;
    if (this.capacity + HEADER_BYTES !== buffer.byteLength) {
      throw new RingLayoutError(`not a ring: capacity ${this.capacity} does not match ${buffer.byteLength} bytes`);
    }
    this.maxRecords = this.header[MAX_RECORDS]!;
    this.mask = this.capacity - 1;
    this.maxRecordBytes = maxRecordBytes(this.capacity);
    this.epochMs = this.header[EPOCH_HIGH]! * 0x100000000 + (this.header[EPOCH_LOW]! >>> 0);
    this.bytes = new Uint8Array(buffer);
    this.view = new DataView(buffer);
  }

  /** Records written and not yet released by the consumer. */
  pendingRecords(): number {
    return (Atomics.load(this.header, WRITE_COUNT) - Atomics.load(this.header, READ_COUNT)) >>> 0;
  }

  /** Bytes written and not yet released (records, headers and padding). */
  pendingBytes(): number {
    return (Atomics.load(this.header, WRITE_POS) - Atomics.load(this.header, READ_POS)) >>> 0;
  }

  /** The consumer's batch counter: unchanged over time while records wait means it is stuck. */
  consumerBeat(): number {
    return Atomics.load(this.header, CONSUMER_BEAT);
  }

  /** Milliseconds the consumer has spent in its current batch; 0 when it is between batches. */
  consumerBusyMs(now = Date.now()): number {
    const since = Atomics.load(this.header, BUSY_SINCE);
    return since === 0 ? 0 : now - this.epochMs - since + 1;
  }
}

/**
 * The producing end. Exactly one thread may hold the producer of a ring. Writes never block:
 * a full ring returns -1/false and the caller decides (pause the source, or wait).
 */
export class RingProducer extends RingEnd {
  // Only this thread writes WRITE_POS/WRITE_COUNT, so it keeps them locally and only stores.
  private writePos: number;
  private writeCount: number;
  private reservedAt = -1;
  private reservedLength = 0;
  /**
   * While true, commit() publishes without ringing the consumer's doorbell; whoever set it
   * rings once with announce() when done. A worker sets it around each batch: a batch of
   * outputs then costs one wake-up (a futex call) instead of one per record.
   */
  deferWake = false;
  /** Records committed with the doorbell deferred and not yet announced. */
  private unannounced = false;

  // The consumer's release positions as last seen; they only move forward, so a stale value
  // under-estimates the room and is safe.
  private seenReadPos: number;
  private seenReadCount: number;

  constructor(buffer: SharedArrayBuffer) {
    super(buffer);
    this.writePos = Atomics.load(this.header, WRITE_POS) >>> 0;
    this.writeCount = Atomics.load(this.header, WRITE_COUNT) >>> 0;
    this.seenReadPos = Atomics.load(this.header, READ_POS) >>> 0;
    this.seenReadCount = Atomics.load(this.header, READ_COUNT) >>> 0;
  }

  /**
   * Reserves room for a record of `length` payload bytes and returns the offset in `bytes` where
   * the payload goes, or -1 when the ring is full right now. Fill the payload, then commit().
   * Throws RecordTooLargeError for a record that could never fit.
   */
  reserve(tag: number, length: number): number {
    if (length > this.maxRecordBytes) throw new RecordTooLargeError(length, this.maxRecordBytes);
    const need = RECORD_HEADER_BYTES + align8(length);
    let at = this.writePos & this.mask;
    const toEnd = this.capacity - at;
    const total = need > toEnd ? toEnd + need : need;
    // The consumer's position is re-read only when the last one seen leaves too little room: a
    // producer far ahead of a slow consumer touches the consumer's cache line rarely.
    if (((this.writePos - this.seenReadPos) >>> 0) + total > this.capacity) {
      this.seenReadPos = Atomics.load(this.header, READ_POS) >>> 0;
      if (((this.writePos - this.seenReadPos) >>> 0) + total > this.capacity) return -1;
    }
    if ((this.writeCount - this.seenReadCount) >>> 0 >= this.maxRecords) {
      this.seenReadCount = Atomics.load(this.header, READ_COUNT) >>> 0;
      if ((this.writeCount - this.seenReadCount) >>> 0 >= this.maxRecords) return -1;
    }
    if (need > toEnd) {
      // Not enough room before the end: mark the tail as padding and start over at 0.
      this.view.setInt32(HEADER_BYTES + at, PAD_MARKER, true);
      this.writePos = (this.writePos + toEnd) >>> 0;
      at = 0;
    }
    this.view.setInt32(HEADER_BYTES + at, length, true);
    this.view.setInt32(HEADER_BYTES + at + 4, tag, true);
    this.reservedAt = at;
    this.reservedLength = need;
    return HEADER_BYTES + at + RECORD_HEADER_BYTES;
  }

  /**
   * Publishes the reserved record. The seq-cst store of WRITE_POS orders the plain payload
   * writes before it, so a consumer that sees the new position sees the bytes.
   */
  commit(): void {
    if (this.reservedAt < 0) throw new Error('commit() without reserve()');
    this.writePos = (this.writePos + this.reservedLength) >>> 0;
    this.writeCount = (this.writeCount + 1) >>> 0;
    this.reservedAt = -1;
    Atomics.store(this.header, WRITE_COUNT, this.writeCount | 0);
    Atomics.store(this.header, WRITE_POS, this.writePos | 0);
    if (this.deferWake) this.unannounced = true;
    else this.wakeConsumer();
  }

  /** Copies `payload` in as one record. Returns false when the ring is full right now. */
  tryWrite(tag: number, payload: Uint8Array): boolean {
    const at = this.reserve(tag, payload.length);
    if (at < 0) return false;
    this.bytes.set(payload, at);
    this.commit();
    return true;
  }

  /**
   * Rings for the records committed with the doorbell deferred, if any. A batch that wrote
   * nothing rings nobody: a consumer asleep on an empty ring woken for nothing costs it a whole
   * turn (a worker's batch with no output, 500 times a second, kept the main thread busier than
   * the batches' own work did).
   */
  announce(): void {
    if (!this.unannounced) return;
    this.unannounced = false;
    this.wakeConsumer();
  }

  /**
   * Wakes the consumer only if it said it is going to sleep: a busy pipeline pays one atomic
   * load per record and no syscall.
   */
  wakeConsumer(): void {
    if (Atomics.load(this.header, CONSUMER_SLEEPING) !== 0) {
      Atomics.store(this.header, CONSUMER_SLEEPING, 0);
      Atomics.notify(this.header, CONSUMER_SLEEPING);
    }
  }

  /** True when a record of `length` payload bytes would fit now. */
  hasRoom(length: number): boolean {
    const need = RECORD_HEADER_BYTES + align8(length);
    const used = (this.writePos - (Atomics.load(this.header, READ_POS) >>> 0)) >>> 0;
    const toEnd = this.capacity - (this.writePos & this.mask);
    const total = need > toEnd ? toEnd + need : need;
    return used + total <= this.capacity && (this.writeCount - Atomics.load(this.header, READ_COUNT)) >>> 0 < this.maxRecords;
  }

  /**
   * Announces that the producer waits for room. Returns false when room for `length` bytes is
   * already there (no need to wait). After true, wait with waitForRoom or waitForRoomAsync.
   */
  armRoomDoorbell(length: number): boolean {
    Atomics.store(this.header, PRODUCER_WAITING, 1);
    if (this.hasRoom(length)) {
      Atomics.store(this.header, PRODUCER_WAITING, 0);
      return false;
    }
    return true;
  }

  /**
   * Blocks (workers only: the main thread must never call Atomics.wait) until the consumer frees
   * room or `timeoutMs` passes. Returns true when a record of `length` bytes fits.
   */
  waitForRoom(length: number, timeoutMs: number): boolean {
    // Whatever was published with the doorbell deferred must be announced before we wait for
    // the consumer to make room, or both would wait for each other.
    this.announce();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.armRoomDoorbell(length)) return true;
      const left = deadline - Date.now();
      if (left <= 0) {
        Atomics.store(this.header, PRODUCER_WAITING, 0);
        return false;
      }
      Atomics.wait(this.header, PRODUCER_WAITING, 1, left);
    }
  }

  /** The non-blocking form for the main thread: resolves when the consumer frees room. */
  waitForRoomAsync(): Promise<unknown> {
    const result = Atomics.waitAsync(this.header, PRODUCER_WAITING, 1);
    return result.async ? result.value : Promise.resolve(result.value);
  }
}

/** Called for each record: payload is bytes[start, start + length). Valid only during the call. */
export type RecordVisitor = (tag: number, bytes: Uint8Array, start: number, length: number) => void;

/**
 * The consuming end. Exactly one thread may hold the consumer of a ring. Reads are zero-copy:
 * the visitor sees the record in place, and room is handed back in batches (every 64 records
 * and at the end), one store per batch rather than per record.
 */
export class RingConsumer extends RingEnd {
  private readPos: number;
  private readCount: number;

  constructor(buffer: SharedArrayBuffer) {
    super(buffer);
    this.readPos = Atomics.load(this.header, READ_POS) >>> 0;
    this.readCount = Atomics.load(this.header, READ_COUNT) >>> 0;
  }

  isEmpty(): boolean {
    return Atomics.load(this.header, WRITE_POS) >>> 0 === this.readPos;
  }

  /**
   * Visits up to `max` records in order, releasing their room in batches. A visitor that throws
   * still consumes its record (a poison record must not be replayed forever); the error
   * propagates after the release.
   */
  drain(visit: RecordVisitor, max = 0x7fffffff): number {
    let writePos = Atomics.load(this.header, WRITE_POS) >>> 0;
    if (writePos === this.readPos) return 0;
    Atomics.store(this.header, BUSY_SINCE, Date.now() - this.epochMs + 1);
    let pos = this.readPos;
    let n = 0;
    let released = 0;
    try {
      while (n < max) {
        if (pos === writePos) {
          writePos = Atomics.load(this.header, WRITE_POS) >>> 0;
          if (pos === writePos) break;
        }
        const at = pos & this.mask;
        const length = this.view.getInt32(HEADER_BYTES + at, true);
        if (length === PAD_MARKER) {
          pos = (pos + this.capacity - at) >>> 0;
          continue;
        }
        const tag = this.view.getInt32(HEADER_BYTES + at + 4, true);
        pos = (pos + RECORD_HEADER_BYTES + align8(length)) >>> 0;
        n++;
        visit(tag, this.bytes, HEADER_BYTES + at + RECORD_HEADER_BYTES, length);
        // A long batch hands room back as it goes: a producer that refills the ring while we
        // drain it (a round-trip pipeline) must not find it full of records already visited.
        if ((n & (RELEASE_EVERY - 1)) === 0) {
          this.publishRelease(pos, n - released);
          released = n;
        }
      }
    } finally {
      this.publishRelease(pos, n - released);
      Atomics.add(this.header, CONSUMER_BEAT, 1);
      Atomics.store(this.header, BUSY_SINCE, 0);
    }
    return n;
  }

  private publishRelease(pos: number, n: number): void {
    this.readPos = pos;
    this.readCount = (this.readCount + n) >>> 0;
    Atomics.store(this.header, READ_COUNT, this.readCount | 0);
    Atomics.store(this.header, READ_POS, pos | 0);
    if (Atomics.load(this.header, PRODUCER_WAITING) !== 0) {
      Atomics.store(this.header, PRODUCER_WAITING, 0);
      Atomics.notify(this.header, PRODUCER_WAITING);
    }
  }

  /**
   * Checks for data up to `checks` times without sleeping. Returns true when the ring stayed
   * empty throughout (go to sleep), false as soon as a record is there.
   */
  waitBriefly(checks: number): boolean {
    for (let i = 0; i < checks; i++) {
      if (Atomics.load(this.header, WRITE_POS) >>> 0 !== this.readPos) return false;
    }
    return true;
  }

  /**
   * Announces that the consumer is about to sleep. Returns false when data arrived meanwhile
   * (do not sleep). The flag is set before the emptiness check, so a producer that publishes
   * after the check is certain to see it and ring: no lost wake-up.
   */
  armDoorbell(): boolean {
    Atomics.store(this.header, CONSUMER_SLEEPING, 1);
    if (!this.isEmpty()) {
      Atomics.store(this.header, CONSUMER_SLEEPING, 0);
      return false;
    }
    return true;
  }

  /** Blocks after armDoorbell() until rung or timeout. Workers only, never the main thread. */
  sleep(timeoutMs: number): 'ok' | 'not-equal' | 'timed-out' {
    return Atomics.wait(this.header, CONSUMER_SLEEPING, 1, timeoutMs);
  }

  /** After armDoorbell(): a promise that settles when the producer rings. */
  sleepAsync(): Promise<unknown> {
    const result = Atomics.waitAsync(this.header, CONSUMER_SLEEPING, 1);
    return result.async ? result.value : Promise.resolve(result.value);
  }

  /** Clears the sleeping flag (after a timed-out sleep the consumer is awake again). */
  wake(): void {
    Atomics.store(this.header, CONSUMER_SLEEPING, 0);
  }
}
