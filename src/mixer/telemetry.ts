// The Mixer's side of telemetry: it reads the racks' publications from the telemetry stream
// (every Mixer reads all of them: each can answer for the whole fleet), keeps the newest log
// lines and events in memory for queries and followers, and each rack's newest metrics.
import { EventEmitter } from 'node:events';
import { DeliverPolicy, DiscardPolicy, type JetStreamManager, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { decodeMessage } from '../bus/mixer-protocol.js';
import { ensureStream, followStream } from '../bus/streams.js';
import { TELEMETRY_ALL, TELEMETRY_STREAM } from '../bus/subjects.js';
import { LEVEL_VALUES } from '../telemetry/log-tap.js';
import { type EventEntry, type LogEntry, type MetricsEntry, readPublication } from '../telemetry/shapes.js';
import type { LogRecord, RackSample } from './api-shapes.js';
import { RackSeries } from './series.js';

/** Publications a starting Mixer reads back to fill its recent logs and metrics. */
export const TELEMETRY_LOOKBACK = 5000;

export const TELEMETRY_STREAM_LIMITS = {
  max_age_ms: 24 * 3600_000,
  max_bytes: 256 * 1024 * 1024,
  max_msg_size: 1024 * 1024,
  /** Publications sent again within it (same message id) are stored once. */
  duplicate_window_ms: 2 * 60_000,
} as const;

export interface LogQuery {
  rack?: string;
  /** This level and above. */
  level?: string;
  kind?: 'log' | 'event';
  /** Only records newer than this id. */
  after?: number;
  /** The newest this many (default 100). */
  limit?: number;
}

export interface RackMetrics {
  metrics: MetricsEntry;
  boot: string;
  receivedAt: number;
}

export interface TelemetryStoreOptions {
  nats: NatsConnection;
  logger: Logger;
  /** Log lines and events kept in memory, newest. Default 10,000. */
  keep?: number;
  /** At start, read back this many of the newest publications. Default TELEMETRY_LOOKBACK. */
  lookback?: number;
}

export async function ensureTelemetryStream(jsm: JetStreamManager): Promise<void> {
  await ensureStream(jsm, {
    name: TELEMETRY_STREAM,
    subjects: [TELEMETRY_ALL],
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    storage: StorageType.File,
    max_age: TELEMETRY_STREAM_LIMITS.max_age_ms * 1_000_000,
    max_bytes: TELEMETRY_STREAM_LIMITS.max_bytes,
    max_msg_size: TELEMETRY_STREAM_LIMITS.max_msg_size,
    duplicate_window: TELEMETRY_STREAM_LIMITS.duplicate_window_ms * 1_000_000,
  });
}

/** A rack's sample, as the 'sample' event and the API's /events carry it. */
export type RackSampleEvent = RackSample & { rack: string };

/**
 * Events: 'log' (LogRecord) for each line or event as it arrives; 'sample' (RackSampleEvent) for
 * each rack's traffic sample, one per metrics snapshot after its first.
 */
export class TelemetryStore extends EventEmitter {
  private readonly records: LogRecord[] = [];
  private nextId = 1;
  private readonly latest = new Map<string, RackMetrics>();
  private readonly traffic = new Map<string, RackSeries>();
  private stopped = false;
  private closeConsumer: (() => Promise<void>) | undefined;
  readonly stats = { publications: 0, entries: 0, refused: 0 };

  constructor(private readonly options: TelemetryStoreOptions) {
    super();
    this.setMaxListeners(0);
  }

  async start(): Promise<void> {
    const jsm = await jetstreamManager(this.options.nats);
    const { first_seq, last_seq } = (await jsm.streams.info(TELEMETRY_STREAM)).state;
    // The newest publications at start, counted back by sequence.
    const from = Math.max(first_seq, last_seq - (this.options.lookback ?? TELEMETRY_LOOKBACK) + 1, 1);
    this.closeConsumer = await followStream(this.options.nats, TELEMETRY_STREAM, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from }, (m) => {
      if (!this.stopped) this.take(m.subject, m.data);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.closeConsumer?.();
  }

  /** One publication: refused whole when it is off-shape or names another rack than its subject. */
  private take(subject: string, data: Uint8Array): void {
    let publication: ReturnType<typeof readPublication>;
    try {
      publication = readPublication(decodeMessage(data));
      const [, , rack, kind] = subject.split('.');
      if (publication.rack !== rack || publication.kind !== kind) throw new Error(`a ${publication.kind} of ${publication.rack} on ${subject}`);
    } catch (err) {
      this.stats.refused++;
      this.options.logger.debug({ subject, err: (err as Error).message }, 'telemetry refused');
      return;
    }
    this.stats.publications++;
    this.stats.entries += publication.entries.length;
    const rack = publication.rack;
    if (publication.kind === 'metrics') {
      for (const e of publication.entries as MetricsEntry[]) {
        const held = this.latest.get(rack);
        if (held === undefined || held.boot !== publication.boot || held.metrics.time <= e.time)
          this.latest.set(rack, { metrics: e, boot: publication.boot, receivedAt: Date.now() });
        let series = this.traffic.get(rack);
        if (series === undefined) this.traffic.set(rack, (series = new RackSeries()));
        const sample = series.add(publication.boot, e);
        if (sample !== undefined) this.emit('sample', { rack, ...sample } satisfies RackSampleEvent);
      }
      return;
    }
    for (const e of publication.entries) {
      const record: LogRecord =
        publication.kind === 'log'
          ? { id: this.nextId++, rack, kind: 'log', time: e.time, level: (e as LogEntry).level, msg: (e as LogEntry).msg, fields: (e as LogEntry).fields }
          : {
              id: this.nextId++,
              rack,
              kind: 'event',
              time: e.time,
              level: 'info',
              msg: (e as EventEntry).type,
              fields: JSON.stringify((e as EventEntry).detail),
            };
      this.records.push(record);
      this.emit('log', record);
    }
    const keep = this.options.keep ?? 10_000;
    if (this.records.length > keep * 1.25) this.records.splice(0, this.records.length - keep);
  }

  /** The newest records that match, oldest first. */
  logs(query: LogQuery = {}): LogRecord[] {
    const out: LogRecord[] = [];
    const limit = query.limit ?? 100;
    for (let i = this.records.length - 1; i >= 0 && out.length < limit; i--) {
      const r = this.records[i]!;
      if (query.after !== undefined && r.id <= query.after) break;
      if (matches(r, query)) out.push(r);
    }
    return out.reverse();
  }

  /** Each rack's newest metrics. */
  metrics(): ReadonlyMap<string, RackMetrics> {
    return this.latest;
  }

  /** Each rack's traffic samples over the last minutes (SERIES_LIMITS), oldest first. */
  series(): Record<string, readonly RackSample[]> {
    return Object.fromEntries([...this.traffic].map(([rack, s]) => [rack, s.list()]));
  }

  forget(rack: string): void {
    this.latest.delete(rack);
    this.traffic.delete(rack);
  }
}

export function matches(r: LogRecord, query: LogQuery): boolean {
  if (query.rack !== undefined && r.rack !== query.rack) return false;
  if (query.kind !== undefined && r.kind !== query.kind) return false;
  if (query.level !== undefined && (LEVEL_VALUES[r.level] ?? 0) < (LEVEL_VALUES[query.level] ?? 0)) return false;
  return true;
}
