// A worker's local log: the lines its logger writes, to stdout (or a file), without ever making
// a gear wait on a disk or a pipe, and without a log flood costing more per line than the line.
import { openSync, write, writeSync } from 'node:fs';
import type { Utf8Destination } from '../telemetry/log-tap.js';

/** Bytes of local log a worker holds while its output is busy; beyond, lines are dropped and counted. */
const LOCAL_LOG_BUFFER_BYTES = 8 * 1024 * 1024;
/** What has gathered goes out this long after its first line, or at once past FLUSH_BYTES. */
const FLUSH_MS = 20;
const FLUSH_BYTES = 64 * 1024;
/** How soon a write that found a non-blocking pipe full is tried again. */
const RETRY_MS = 10;

interface LocalLogOptions {
  /** A file descriptor or path (appended to); default stdout. */
  dest?: number | string;
  maxBytes?: number;
  /** Called with the number of lines dropped because the buffer was full. */
  onDrop?: (lines: number) => void;
}

/**
 * Lines are encoded straight into one of two fixed buffers, and a buffer goes out in one async
 * fs.write while the lines that follow fill the other. A write per line, or per turn of the
 * event loop, is what a log flood (a gear at 50,000 lines a second) made expensive: each write is
 * a hand-over to libuv's thread pool and a wake-up of the worker when it completes, and on a
 * small VM those wake-ups cost more than the lines. Gathering for FLUSH_MS makes it a few dozen
 * writes a second; a line logged alone reaches the file FLUSH_MS later.
 *
 * Memory is bounded by the two buffers (maxBytes in all). A line that finds the filling buffer
 * full while the other is still being written is dropped and counted: the gear never waits.
 */
export class LocalLog implements Utf8Destination {
  private readonly fd: number;
  private filling: Buffer;
  /** The other buffer while it is free; undefined while it is being written. */
  private spare: Buffer | undefined;
  private used = 0;
  /** Lines in `filling`, and in the buffer being written: counted as dropped if its write fails. */
  private lines = 0;
  private writingLines = 0;
  private timer: NodeJS.Timeout | undefined;
  private dropped = 0;
  private readonly onDrop: ((lines: number) => void) | undefined;
  private waiting: Array<() => void> = [];
  private readonly flushLater = (): void => {
    this.timer = undefined;
    this.flush();
  };

  constructor(options: LocalLogOptions = {}) {
    const dest = options.dest ?? 1;
    this.fd = typeof dest === 'number' ? dest : openSync(dest, 'a');
    const half = Math.max(1, Math.floor((options.maxBytes ?? LOCAL_LOG_BUFFER_BYTES) / 2));
    // Pages of an unsafe allocation are only backed once written: a quiet worker costs little.
    this.filling = Buffer.allocUnsafe(half);
    this.spare = Buffer.allocUnsafe(half);
    this.onDrop = options.onDrop;
  }

  write(line: string): void {
    // A UTF-8 byte count only when the line might not fit: at most 3 bytes per UTF-16 unit.
    if (this.used + line.length * 3 > this.filling.length && !this.room(Buffer.byteLength(line))) return;
    this.used += this.filling.write(line, this.used);
    this.added();
  }

  /** A whole line as UTF-8 bytes, copied before returning. */
  writeUtf8(line: Uint8Array): void {
    if (!this.room(line.length)) return;
    this.filling.set(line, this.used);
    this.used += line.length;
    this.added();
  }

  /** Whether `bytes` more fit, once what has gathered is sent if need be; if not, the line is dropped and counted. */
  private room(bytes: number): boolean {
    if (this.used + bytes <= this.filling.length) return true;
    this.flush();
    if (this.used + bytes <= this.filling.length) return true;
    this.dropped++;
    this.reportDrops();
    return false;
  }

  private added(): void {
    this.lines++;
    if (this.used >= FLUSH_BYTES) this.flush();
    else if (this.timer === undefined && !this.writing) this.timer = setTimeout(this.flushLater, FLUSH_MS);
  }

  /** An fs.write is under way (of the buffer that is not `filling`). */
  private get writing(): boolean {
    return this.spare === undefined;
  }

  /** Starts writing what has gathered, unless a write is under way (its completion does it). */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.spare === undefined || this.used === 0) return;
    const out = this.filling;
    const length = this.used;
    this.filling = this.spare;
    this.spare = undefined;
    this.used = 0;
    this.writingLines = this.lines;
    this.lines = 0;
    this.writeOut(out, 0, length);
  }

  private writeOut(buffer: Buffer, from: number, to: number): void {
    write(this.fd, buffer, from, to - from, null, (err, written) => {
      // A short write (a pipe) goes on from where it stopped. A full non-blocking pipe (stdout read
      // slowly) is tried again shortly; meanwhile lines fill the other buffer, and past it are
      // dropped and counted. Any other failure loses the buffer's lines, counted: the output is
      // gone (a closed stdout) and nothing here can mend it.
      if (err === null && from + written < to) return this.writeOut(buffer, from + written, to);
      if (err !== null && err.code === 'EAGAIN') {
        setTimeout(() => this.writeOut(buffer, from, to), RETRY_MS);
        return;
      }
      if (err !== null) this.dropped += this.writingLines;
      this.writingLines = 0;
      this.spare = buffer;
      this.reportDrops();
      if (this.used >= FLUSH_BYTES) this.flush();
      else if (this.used > 0) this.timer ??= setTimeout(this.flushLater, FLUSH_MS);
      else for (const resolve of this.waiting.splice(0)) resolve();
    });
  }

  private reportDrops(): void {
    // Counted once a write completes (or at once when nothing is being written): a flood that
    // keeps the buffer full would otherwise pay an atomic add per dropped line.
    if (this.dropped === 0 || (this.writing && this.dropped < 1024)) return;
    this.onDrop?.(this.dropped);
    this.dropped = 0;
  }

  /** Everything gathered, written before returning (at exit). */
  flushSync(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    let from = 0;
    while (from < this.used) from += writeSync(this.fd, this.filling, from, this.used - from);
    this.used = 0;
    this.lines = 0;
    if (this.dropped > 0) this.onDrop?.(this.dropped);
    this.dropped = 0;
  }

  /** Resolves once everything handed over so far is written. */
  drained(): Promise<void> {
    this.flush();
    if (!this.writing && this.used === 0) {
      this.reportDrops();
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

/**
 * A worker's local log on stdout: bounded (past LOCAL_LOG_BUFFER_BYTES lines are dropped and
 * counted through `onDrop`), and what waits is written out when the thread exits.
 */
export function workerLocalLog(onDrop?: (lines: number) => void): LocalLog {
  const log = new LocalLog({ onDrop });
  process.once('exit', () => {
    try {
      log.flushSync();
    } catch {
      // Nothing more can be done for the log of a thread that is leaving.
    }
  });
  return log;
}
