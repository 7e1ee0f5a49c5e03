// The rack's telemetry uplink: everything it publishes waits in a bounded local queue and leaves
// through a token bucket. When the bus is slow or away, the queue fills, and what no longer fits
// is dropped and counted; nothing here can slow the gears (they only ever write a record into a
// ring, or a line into this queue, and never wait).
import { type JetStreamClient, jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { encodeMessage } from '../bus/mixer-protocol.js';
import { telemetrySubject } from '../bus/subjects.js';
import { type Entry, type EventEntry, logEntryOf, type MetricsEntry, type TelemetryCounters, type TelemetryKind } from './shapes.js';
import { TokenBucket } from './token-bucket.js';

export const TELEMETRY_DEFAULTS = {
  /** Entries per second the uplink publishes (fluxrig publishes its log WAL at 500/s). */
  rate_per_s: 500,
  /** Entries it may publish at once after a quiet spell. */
  burst: 250,
  /** Entries waiting at most (logs are dropped first, oldest first; metrics coalesce). */
  queue_entries: 10_000,
  /** Bytes waiting at most. */
  queue_bytes: 4 * 1024 * 1024,
  /** Log lines at this level and above are published. */
  level: 'warn',
  /** How often the uplink publishes what waits. */
  flush_ms: 250,
} as const;

/** Publications awaiting their acknowledgement at once: more wait in the queue. */
const MAX_IN_FLIGHT = 4;
/** Publications that failed, kept (with their message id) to be sent again, at most. */
const MAX_RETRIES = 16;
/** A publication is cut at about this many bytes (NATS' default max_payload is 1 MiB). */
const PUBLICATION_BYTES = 256 * 1024;
const PUBLISH_TIMEOUT_MS = 5000;

/** Log lines the workers wrote into their telemetry rings (the pool reads them). */
export interface WorkerTelemetry {
  /** Lines waiting in the rings. */
  pending(): number;
  /** Takes up to `max` lines. */
  take(max: number): string[];
  /** Lines the workers could not write (their ring was full), since the rack started. */
  dropped(): number;
}

export interface TelemetryUplinkOptions {
  rack: string;
  ratePerS?: number;
  burst?: number;
  queueEntries?: number;
  queueBytes?: number;
  flushMs?: number;
  workers?: WorkerTelemetry;
  /** Called after each publication is acknowledged or fails (tests and the benchmark wait on it). */
  onProgress?: () => void;
}

interface Queued {
  line: string;
  bytes: number;
}

interface Outgoing {
  kind: TelemetryKind;
  subject: string;
  bytes: Uint8Array;
  msgID: string;
  entries: number;
}

export class TelemetryUplink {
  readonly boot = crypto.randomUUID();
  private readonly bucket: TokenBucket;
  private readonly logs: Queued[] = [];
  private logHead = 0;
  private readonly events: EventEntry[] = [];
  private metrics: MetricsEntry | undefined;
  private queuedBytes = 0;
  private readonly retries: Outgoing[] = [];
  private inFlight = 0;
  /** Entries built into publications and not yet acknowledged (in flight, or waiting to be sent again), by kind. */
  private readonly unacknowledged: Record<TelemetryKind, number> = { log: 0, metrics: 0, event: 0 };
  private seq = 0;
  private js: JetStreamClient | undefined;
  private connected = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly published: Record<TelemetryKind, number> = { log: 0, metrics: 0, event: 0 };
  private readonly droppedHere: Record<TelemetryKind, number> = { log: 0, metrics: 0, event: 0 };
  private readonly queueEntries: number;
  private readonly queueBytes: number;

  constructor(private readonly options: TelemetryUplinkOptions) {
    this.bucket = new TokenBucket(options.ratePerS ?? TELEMETRY_DEFAULTS.rate_per_s, options.burst ?? TELEMETRY_DEFAULTS.burst, Date.now());
    this.queueEntries = options.queueEntries ?? TELEMETRY_DEFAULTS.queue_entries;
    this.queueBytes = options.queueBytes ?? TELEMETRY_DEFAULTS.queue_bytes;
  }

  /** Starts publishing on `nc` (the Mixer's bus); what was queued before goes first. */
  attach(nc: NatsConnection): void {
    this.js = jetstream(nc);
    this.connected = !nc.isClosed();
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect' || s.type === 'close') this.connected = false;
        else if (s.type === 'reconnect') this.connected = true;
      }
    })();
    this.timer ??= setInterval(() => this.flush(), this.options.flushMs ?? TELEMETRY_DEFAULTS.flush_ms);
    this.timer.unref();
  }

  /** A log line (pino JSON) from the main thread. */
  log(line: string): void {
    this.logs.push({ line, bytes: line.length });
    this.queuedBytes += line.length;
    this.trim();
  }

  event(type: string, detail: EventEntry['detail'] = {}): void {
    this.events.push({ time: Date.now(), type, detail });
    this.queuedBytes += 64;
    this.trim();
  }

  /** The newest metrics; a snapshot still waiting is replaced (they are cumulative). */
  setMetrics(metrics: Omit<MetricsEntry, 'telemetry'>): void {
    this.metrics = { ...metrics, telemetry: this.counters() };
  }

  counters(): TelemetryCounters {
    const dropped = { ...this.droppedHere };
    dropped.log += this.options.workers?.dropped() ?? 0;
    return { published: { ...this.published }, dropped, queued: this.queued() };
  }

  /** Log lines waiting (queued here, in the workers' rings, or in publications not yet acknowledged). */
  logsWaiting(): number {
    return this.logs.length - this.logHead + this.unacknowledged.log + (this.options.workers?.pending() ?? 0);
  }

  /** Entries waiting: in the queue, in publications to retry, and in the workers' rings. */
  queued(): number {
    const { metrics, event } = this.unacknowledged;
    return this.logsWaiting() + this.events.length + (this.metrics === undefined ? 0 : 1) + metrics + event;
  }

  /** Stops the timer; waits (up to `ms`) for what is queued and in flight to be published. */
  async stop(ms = 1000): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && this.connected && (this.queued() > 0 || this.inFlight > 0 || this.retries.length > 0)) {
      this.flush();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Keeps the queue within its bounds: the oldest log lines go first, then the oldest events. */
  private trim(): void {
    while (this.logs.length - this.logHead + this.events.length > this.queueEntries || this.queuedBytes > this.queueBytes) {
      if (this.logHead < this.logs.length) {
        this.queuedBytes -= this.logs[this.logHead++]!.bytes;
        this.droppedHere.log++;
        this.compactLogs();
      } else if (this.events.length > 0) {
        this.events.shift();
        this.queuedBytes -= 64;
        this.droppedHere.event++;
      } else break;
    }
  }

  private compactLogs(): void {
    if (this.logHead > 1024 && this.logHead * 2 > this.logs.length) {
      this.logs.splice(0, this.logHead);
      this.logHead = 0;
    }
  }

  /** One turn: retries first, then as many new entries as the bucket grants, events before logs. */
  flush(): void {
    if (!this.connected || this.js === undefined) return;
    while (this.retries.length > 0 && this.inFlight < MAX_IN_FLIGHT) this.send(this.retries.shift()!);
    if (this.inFlight >= MAX_IN_FLIGHT || this.retries.length > 0) return;
    const workerLines = this.options.workers?.pending() ?? 0;
    const waiting = this.events.length + (this.metrics === undefined ? 0 : 1) + (this.logs.length - this.logHead) + workerLines;
    if (waiting === 0) return;
    let tokens = this.bucket.take(waiting, Date.now());
    if (tokens === 0) return;
    const events = this.events.splice(0, Math.min(tokens, this.events.length));
    tokens -= events.length;
    this.queuedBytes -= events.length * 64;
    if (events.length > 0) this.publish('event', events);
    if (this.metrics !== undefined && tokens > 0) {
      const metrics = this.metrics;
      this.metrics = undefined;
      metrics.telemetry = this.counters();
      tokens--;
      this.publish('metrics', [metrics]);
    }
    const logs: Entry[] = [];
    while (tokens > 0 && this.logHead < this.logs.length) {
      const q = this.logs[this.logHead++]!;
      this.queuedBytes -= q.bytes;
      logs.push(logEntryOf(q.line));
      tokens--;
    }
    this.compactLogs();
    if (tokens > 0 && this.options.workers !== undefined) for (const line of this.options.workers.take(tokens)) logs.push(logEntryOf(line));
    if (logs.length > 0) this.publish('log', logs);
  }

  /** Cuts the entries into publications of about PUBLICATION_BYTES and sends each. */
  private publish(kind: TelemetryKind, entries: Entry[]): void {
    let batch: Entry[] = [];
    let size = 0;
    const out = () => {
      const seq = ++this.seq;
      const bytes = encodeMessage({ rack: this.options.rack, kind, boot: this.boot, seq, entries: batch });
      this.unacknowledged[kind] += batch.length;
      this.send({ kind, subject: telemetrySubject(this.options.rack, kind), bytes, msgID: `${this.boot}.${seq}`, entries: batch.length });
      batch = [];
      size = 0;
    };
    for (const e of entries) {
      batch.push(e);
      size += 'fields' in e ? e.msg.length + e.fields.length + 32 : 256;
      if (size >= PUBLICATION_BYTES) out();
    }
    if (batch.length > 0) out();
  }

  private send(p: Outgoing): void {
    this.inFlight++;
    // The message id makes a publication sent again (after a timeout that hid a success) count once.
    this.js!.publish(p.subject, p.bytes, { msgID: p.msgID, timeout: PUBLISH_TIMEOUT_MS }).then(
      () => {
        this.inFlight--;
        this.unacknowledged[p.kind] -= p.entries;
        this.published[p.kind] += p.entries;
        this.options.onProgress?.();
      },
      () => {
        this.inFlight--;
        if (this.retries.length < MAX_RETRIES) this.retries.push(p);
        else {
          this.unacknowledged[p.kind] -= p.entries;
          this.droppedHere[p.kind] += p.entries;
        }
        this.options.onProgress?.();
      },
    );
  }
}
