// A worker's local log: the lines its logger writes, to stdout (or a file), without ever making
// a gear wait on a disk or a pipe, and without a log flood costing more per line than the line.
import { type DestinationStream, pino } from 'pino';

/** Bytes of local log a worker holds while its output is busy; beyond, lines are dropped and counted. */
const LOCAL_LOG_BUFFER_BYTES = 8 * 1024 * 1024;
/** A batch goes out at once when it reaches this many characters, else at the end of the turn. */
const BATCH_CHARS = 8 * 1024;

interface LocalLogOptions {
  /** A file descriptor or path; default stdout. */
  dest?: number | string;
  maxBytes?: number;
  /** Called with the number of lines dropped because the buffer was full. */
  onDrop?: (lines: number) => void;
}

/**
 * Lines gathered and handed to pino's file stream (sonic-boom) as one write per turn of the
 * event loop, or per BATCH_CHARS. sonic-boom appends every write to its pending string and
 * then measures that whole string with Buffer.byteLength, which flattens it: a copy of up to
 * 16 KiB per line. Under a gear's log flood (50,000 lines a second) that was a tenth of a
 * worker's busy time; once per batch it is noise.
 */
export class LocalLog implements DestinationStream {
  private lines: string[] = [];
  private chars = 0;
  private scheduled = false;
  /** Set by the file stream while a batch is handed over that does not fit its buffer. */
  private dropped = false;
  private readonly onDrop: ((lines: number) => void) | undefined;
  /** Lines handed over and not yet written; drained() waits on these. */
  private writing = false;
  private waiting: Array<() => void> = [];
  private readonly flushLater = (): void => {
    this.scheduled = false;
    this.flush();
  };
  private readonly out: ReturnType<typeof pino.destination>;

  constructor(options: LocalLogOptions = {}) {
    this.out = pino.destination({ dest: options.dest ?? 1, sync: false, maxLength: options.maxBytes ?? LOCAL_LOG_BUFFER_BYTES });
    this.onDrop = options.onDrop;
    this.out.on('drop', () => {
      this.dropped = true;
    });
    // sonic-boom says 'drain' when a write completes with nothing left to write.
    this.out.on('drain', () => {
      this.writing = false;
      for (const resolve of this.waiting.splice(0)) resolve();
    });
  }

  write(line: string): void {
    this.lines.push(line);
    this.chars += line.length;
    if (this.chars >= BATCH_CHARS) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushLater);
    }
  }

  /** Hands the gathered lines to the file stream (which writes them asynchronously). */
  flush(): void {
    if (this.lines.length === 0) return;
    const count = this.lines.length;
    const batch = count === 1 ? this.lines[0]! : this.lines.join('');
    this.lines = [];
    this.chars = 0;
    this.dropped = false;
    this.out.write(batch);
    if (this.dropped) this.onDrop?.(count);
    else this.writing = true;
  }

  /** Everything gathered and pending, written before returning (at exit). */
  flushSync(): void {
    this.flush();
    this.out.flushSync();
  }

  /** Resolves once everything handed over so far is written. */
  drained(): Promise<void> {
    this.flush();
    return this.writing ? new Promise((resolve) => this.waiting.push(resolve)) : Promise.resolve();
  }
}

/**
 * A worker's local log on stdout: bounded (past LOCAL_LOG_BUFFER_BYTES lines are dropped and
 * counted through `onDrop`), and what waits is written out when the thread exits.
 */
export function workerLocalLog(onDrop?: (lines: number) => void): DestinationStream {
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
