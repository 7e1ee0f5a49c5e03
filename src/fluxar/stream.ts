// Streams as an application sees them (docs/fluxar-spec.md section 13): an AsyncIterable of the
// chunks received, write() that waits for credit and for the transport, and the response that
// ends the stream. The protocol's rules live in Session; this is the Peer's side of them.
import { ErrorCode } from './codes.js';
import { STREAM_HIGH_WATER_MARK } from './constants.js';
import { FluxarError } from './errors.js';
import type { Session } from './session.js';
import type { StreamMode } from './stream-state.js';

/** What a stream needs from the Peer it lives on. */
export interface StreamHost {
  readonly session: Session;
  /** Bytes the transport holds unsent. */
  transportBacklog(): number;
  /** Frames queued in this turn leave together, soon. */
  scheduleFlush(): void;
  /** Frames queued leave now (a producer that never yields to the event loop must not pile them up). */
  flushNow(): void;
}

/** Writes queued behind missing credit or a full transport; past this, write() fails with 429. */
export const MAX_QUEUED_WRITES = 1024;
/**
 * A producer's frames go to the transport once this many bytes are queued in the session. On
 * loopback TCP the kernel's cost is per write more than per byte: 256 KiB writes moved 4 KiB
 * chunks 20-37% faster than 128 KiB ones (bench/stream.ts), and a quarter of the high-water
 * mark still keeps several writes in flight.
 */
const FLUSH_BYTES = 256 * 1024;

interface QueuedWrite {
  payload: unknown;
  meta: Record<string, unknown> | null;
  resolve(): void;
  reject(err: FluxarError): void;
}

export interface ChannelOptions {
  /** Chunks kept granted ahead of the reader; 0: the application grants (grant(), pause()). */
  window: number;
}

/**
 * One side's view of one stream: the chunks received and not yet read, the writes waiting for
 * credit, and the grants that keep the peer's window full. Shared by the opener's FluxarStream
 * and the responder's handler.
 */
export class StreamChannel implements AsyncIterable<unknown> {
  private readonly received: unknown[] = [];
  private readHead = 0;
  private reader: { resolve(r: IteratorResult<unknown>): void; reject(err: unknown): void } | null = null;
  private readonly writes: QueuedWrite[] = [];
  /** The peer's direction ended (end, or the response): reads finish once the queue is empty. */
  private inputEnded = false;
  /**
   * Chunks granted to the peer in all, and chunks the reader took: their difference is what
   * may be ahead of the reader (in flight, queued here, or received and not yet handed over;
   * the session's own window drops before its chunk events reach this queue).
   */
  private granted: number;
  private read = 0;
  /** Set when the stream failed or was cancelled: reads and writes fail with it. */
  private failure: FluxarError | null = null;
  private closed = false;

  constructor(
    private readonly host: StreamHost,
    readonly key: string,
    readonly mode: StreamMode,
    private readonly options: ChannelOptions,
    /** Credit the peer already holds (the opener's meta.credit). */
    initialCredit = 0,
  ) {
    this.granted = initialCredit;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // ---- the peer's direction ----------------------------------------------------------------

  /** A chunk from the session, in order. */
  push(payload: unknown): void {
    if (this.closed) return;
    if (this.reader !== null) {
      const reader = this.reader;
      this.reader = null;
      this.read++;
      reader.resolve({ value: payload, done: false });
      this.topUp();
      return;
    }
    this.received.push(payload);
  }

  /** The peer's direction is over: readers finish after what is queued. */
  endInput(): void {
    this.inputEnded = true;
    if (this.reader !== null && this.queued() === 0) {
      const reader = this.reader;
      this.reader = null;
      reader.resolve({ value: undefined, done: true });
    }
  }

  private queued(): number {
    return this.received.length - this.readHead;
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.queued() > 0) {
      const value = this.received[this.readHead];
      this.received[this.readHead++] = undefined;
      if (this.readHead === this.received.length) {
        this.received.length = 0;
        this.readHead = 0;
      }
      this.read++;
      this.topUp();
      return Promise.resolve({ value, done: false });
    }
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.inputEnded || this.closed) return Promise.resolve({ value: undefined, done: true });
    if (this.reader !== null) return Promise.reject(new FluxarError(ErrorCode.BadRequest, 'a stream is read by one reader at a time'));
    return new Promise((resolve, reject) => {
      this.reader = { resolve, reject };
      this.topUp();
    });
  }

  /**
   * Keeps the peer's window at `window` chunks ahead of the reader: granted and not yet read.
   * Grants go out when that falls to half, so a grant covers many chunks, and a reader that
   * stops reading stops the producer within one window.
   */
  private topUp(): void {
    const window = this.options.window;
    if (window === 0 || this.closed || this.inputEnded) return;
    const ahead = this.granted - this.read;
    if (ahead > window / 2) return;
    this.grant(window - ahead);
  }

  /** Grants the peer `credit` more chunks. */
  grant(credit: number): void {
    if (this.closed) return;
    this.host.session.grantCredit(this.key, credit);
    this.granted += credit;
    this.host.scheduleFlush();
  }

  /** Asks the peer to stop sending (its unspent credit drops to 0). */
  pause(): void {
    if (this.closed) return;
    this.host.session.pauseStream(this.key);
    this.host.scheduleFlush();
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    return { next: () => this.next() };
  }

  // ---- our direction -----------------------------------------------------------------------

  /**
   * Sends a chunk: resolves once it is handed to the session (credit spent, under the
   * transport's high-water mark). Rejects with 413 for a chunk over max_frame (the stream
   * carries on), 429 past MAX_QUEUED_WRITES waiting writes, or the stream's own failure.
   */
  write(payload: unknown, meta: Record<string, unknown> | null = null): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new FluxarError(ErrorCode.BadRequest, 'the stream has ended'));
    if (this.writes.length === 0 && this.canSend()) {
      try {
        this.send(payload, meta);
      } catch (err) {
        return Promise.reject(err);
      }
      return Promise.resolve();
    }
    if (!this.host.session.hasStream(this.key)) return Promise.reject(new FluxarError(ErrorCode.BadRequest, 'the stream has ended'));
    if (this.writes.length >= MAX_QUEUED_WRITES) {
      return Promise.reject(new FluxarError(ErrorCode.Overloaded, `${MAX_QUEUED_WRITES} writes already wait for credit on this stream: await write()`));
    }
    return new Promise((resolve, reject) => this.writes.push({ payload, meta, resolve, reject }));
  }

  /**
   * Sends a chunk now if nothing waits and credit and the transport allow; false otherwise (then
   * write() it). Saves a producer loop a promise per chunk. Throws what write() would reject with.
   */
  trySend(payload: unknown): boolean {
    if (this.failure !== null || this.closed || this.writes.length > 0 || !this.canSend()) return false;
    this.send(payload, null);
    return true;
  }

  private canSend(): boolean {
    return this.host.session.streamCredit(this.key) > 0 && this.host.transportBacklog() < STREAM_HIGH_WATER_MARK;
  }

  private send(payload: unknown, meta: Record<string, unknown> | null): void {
    const session = this.host.session;
    session.sendChunk(this.key, payload, meta);
    if (session.outputBytes >= FLUSH_BYTES) this.host.flushNow();
    else this.host.scheduleFlush();
  }

  /** Credit arrived, or the transport drained: waiting writes go, in order, while they can. */
  flushWrites(): void {
    while (this.writes.length > 0 && this.canSend()) {
      const w = this.writes.shift()!;
      try {
        this.send(w.payload, w.meta);
        w.resolve();
      } catch (err) {
        w.reject(err as FluxarError);
      }
    }
  }

  /** Our direction cannot carry more (we ended it): waiting writes fail. */
  endOutput(): void {
    this.rejectWrites(new FluxarError(ErrorCode.BadRequest, 'the stream has ended'));
  }

  private rejectWrites(err: FluxarError): void {
    for (const w of this.writes.splice(0)) w.reject(err);
  }

  /**
   * The stream is over for this side. Unread chunks are still read, then the iteration finishes,
   * or fails with `error`; writes fail. With `dropUnread` (a cancel) they are dropped instead:
   * nothing reaches the application after a cancel.
   */
  close(error: FluxarError | null, dropUnread = false): void {
    if (this.closed) return;
    this.closed = true;
    if (dropUnread) {
      this.received.length = 0;
      this.readHead = 0;
    }
    if (error !== null) {
      this.failure = error;
      if (this.queued() > 0) {
        this.rejectWrites(error);
        return;
      }
      if (this.reader !== null) {
        const reader = this.reader;
        this.reader = null;
        reader.reject(error);
      }
      this.rejectWrites(error);
      return;
    }
    this.endInput();
    this.rejectWrites(new FluxarError(ErrorCode.BadRequest, 'the stream has ended'));
  }
}

export interface StreamOptions {
  /** "out" (default): the responder streams back; "in": this side streams up; "bidi": both. */
  mode?: StreamMode;
  /**
   * Down chunks kept granted ahead of this side's reader (default 64), so a reader that stops
   * reading stops the producer. With manualCredit, the initial grant only.
   */
  credit?: number;
  /** The application grants credit itself with grant() and pause(). */
  manualCredit?: boolean;
  meta?: Record<string, unknown>;
  /** Budget for the whole stream in ms (408). */
  timeoutMs?: number;
  /** Aborting it cancels the stream (499). */
  signal?: AbortSignal;
}

/**
 * A stream this side opened: iterate it for the chunks the responder sends, write() and end()
 * to stream up, and `result` for the response that ends it. Breaking out of the iteration before
 * the stream ends cancels it.
 */
export class FluxarStream implements AsyncIterable<unknown> {
  /** The response's payload; rejects with the stream's FluxarError. */
  readonly result: Promise<unknown>;
  private settle!: { resolve(v: unknown): void; reject(err: FluxarError): void };
  private done = false;
  private cleanup: (() => void) | undefined;

  constructor(
    private readonly channel: StreamChannel,
    private readonly host: StreamHost,
    signal: AbortSignal | undefined,
  ) {
    this.result = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.result.catch(() => {}); // the iteration reports the same failure; never unhandled
    if (signal !== undefined) {
      const onAbort = () => this.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      this.cleanup = () => signal.removeEventListener('abort', onAbort);
    }
  }

  get key(): string {
    return this.channel.key;
  }

  get mode(): StreamMode {
    return this.channel.mode;
  }

  /** Sends a chunk up ("in" and "bidi"): resolves when credit and the transport allow. */
  write(chunk: unknown, meta?: Record<string, unknown>): Promise<void> {
    return this.channel.write(chunk, meta ?? null);
  }

  /** No more chunks up. */
  end(): void {
    if (this.done) return;
    this.host.session.endStream(this.key);
    this.channel.endOutput();
    this.host.scheduleFlush();
  }

  /** Grants the responder more down chunks (manualCredit). */
  grant(credit: number): void {
    this.channel.grant(credit);
  }

  /** Withdraws the responder's unspent credit (manualCredit). */
  pause(): void {
    this.channel.pause();
  }

  /** Gives up: the responder's handler is aborted; reads, writes and `result` fail with 499. */
  cancel(): void {
    if (this.done) return;
    this.host.session.cancelStream(this.key);
    this.host.scheduleFlush();
    this.finish(null, new FluxarError(ErrorCode.Cancelled, 'cancelled by the caller'), true);
  }

  /**
   * The response arrived, or the session ended the stream: chunks that came before it are still
   * read, then the iteration ends (or fails with `error`). A cancel drops them.
   */
  finish(payload: unknown, error: FluxarError | null, cancelled = false): void {
    if (this.done) return;
    this.done = true;
    this.cleanup?.();
    this.channel.close(error, cancelled);
    if (error !== null) this.settle.reject(error);
    else this.settle.resolve(payload);
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    return {
      next: () => this.channel.next(),
      return: () => {
        // Leaving the loop early means the rest is not wanted.
        if (!this.done) this.cancel();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** A generator object or any iterator (an array is not one: it is a final payload). */
export function isIterator(value: unknown): value is Iterator<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as Iterator<unknown>).next === 'function' && Symbol.iterator in value;
}

/** What a stream handler returns to stream its values down (spec section 13), sync or async. */
export function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
}
