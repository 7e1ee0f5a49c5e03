// What racks publish on flux.telemetry.{rack}.{kind} (docs/snake-protocol.md): a fluxMsg whose
// data is a Publication carrying entries of one kind. Metrics are cumulative since the rack
// started, so a lost or dropped snapshot loses nothing the next one does not carry.
import { Fields, SnakeProtocolError } from '../bus/mixer-protocol.js';
import { isCborMap } from '../cbor/profile.js';
import { type HistogramData, LATENCY_BOUNDS_MS } from './histogram.js';

export const TELEMETRY_KINDS = ['log', 'metrics', 'event'] as const;
export type TelemetryKind = (typeof TELEMETRY_KINDS)[number];

/** The text a log entry keeps of a message, and of its other fields (JSON). */
export const LOG_TEXT_MAX = 4096;
export const LOG_FIELDS_MAX = 8192;

export interface LogEntry {
  time: number;
  level: string;
  msg: string;
  /** The line's other fields, as JSON text (cut at LOG_FIELDS_MAX). */
  fields: string;
}

export interface GearMetrics {
  messages: number;
  errors: number;
  /** Calls a fluxar gear answered, from their frame to the answer. */
  calls?: HistogramData;
}

export interface TelemetryCounters {
  published: Record<TelemetryKind, number>;
  dropped: Record<TelemetryKind, number>;
  queued: number;
}

export interface MetricsEntry {
  time: number;
  gears: Record<string, GearMetrics>;
  connections: number;
  workers: number;
  rss: number;
  scenario: string;
  scenario_version: number;
  /** Local log lines the rack's workers dropped (their log output could not keep up). */
  local_log_dropped: number;
  telemetry: TelemetryCounters;
}

export interface EventEntry {
  time: number;
  /** started, stopping, status, scenario-applied, scenario-refused, command. */
  type: string;
  detail: Record<string, string | number | boolean | null>;
}

export type Entry = LogEntry | MetricsEntry | EventEntry;

export interface Publication<E = Entry> {
  rack: string;
  kind: TelemetryKind;
  /** A rack run (a random id per start) and its publication number: the JetStream message id. */
  boot: string;
  seq: number;
  entries: E[];
}

const LEVEL_NAMES: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
const LEVEL_SET = new Set(Object.values(LEVEL_NAMES));
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** A log entry from one of pino's JSON lines (a line that is not one is kept as its text). */
export function logEntryOf(line: string): LogEntry {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { time: Date.now(), level: 'info', msg: line.slice(0, LOG_TEXT_MAX), fields: '{}' };
  }
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(parsed)) if (!SKIP.has(k)) rest[k] = v;
  let fields = JSON.stringify(rest);
  if (fields.length > LOG_FIELDS_MAX) fields = JSON.stringify({ cut: fields.slice(0, LOG_FIELDS_MAX - 64) });
  return {
    time: typeof parsed.time === 'number' ? parsed.time : Date.now(),
    level: LEVEL_NAMES[Number(parsed.level)] ?? 'info',
    msg: String(parsed.msg ?? '').slice(0, LOG_TEXT_MAX),
    fields,
  };
}

function counts(f: Fields, key: string): Record<TelemetryKind, number> {
  const m = Fields.of(f.raw(key), key);
  return { log: m.number('log'), metrics: m.number('metrics'), event: m.number('event') };
}

function histogramOf(value: unknown): HistogramData {
  const f = Fields.of(value, 'calls');
  const c = f.raw('counts');
  if (!Array.isArray(c) || c.length !== LATENCY_BOUNDS_MS.length + 1 || c.some((n) => typeof n !== 'number' || !(n >= 0)))
    throw new SnakeProtocolError(`calls.counts must be ${LATENCY_BOUNDS_MS.length + 1} counts`);
  return { counts: c as number[], sumMs: f.number('sumMs') };
}

/** Reads a publication strictly: anything off-shape is refused with what is wrong. */
export function readPublication(data: Record<string, unknown>): Publication {
  const f = Fields.of(data, 'telemetry');
  const kind = f.text('kind', 16) as TelemetryKind;
  if (!TELEMETRY_KINDS.includes(kind)) throw new SnakeProtocolError(`telemetry: unknown kind ${JSON.stringify(kind)}`);
  const raw = f.raw('entries');
  if (!Array.isArray(raw)) throw new SnakeProtocolError('telemetry: entries must be a list');
  const entries = raw.map((value): Entry => {
    const e = Fields.of(value, `${kind} entry`);
    const time = e.number('time');
    if (kind === 'log') {
      const level = e.text('level', 8);
      if (!LEVEL_SET.has(level)) throw new SnakeProtocolError(`log entry: unknown level ${JSON.stringify(level)}`);
      return { time, level, msg: e.text('msg', LOG_TEXT_MAX), fields: e.text('fields', LOG_FIELDS_MAX + 64) };
    }
    if (kind === 'event') {
      const detail = e.raw('detail') ?? {};
      if (!isCborMap(detail)) throw new SnakeProtocolError('event entry: detail must be a map');
      return { time, type: e.text('type', 64), detail: detail as EventEntry['detail'] };
    }
    const gearsRaw = e.raw('gears');
    if (!isCborMap(gearsRaw)) throw new SnakeProtocolError('metrics entry: gears must be a map');
    const gears: Record<string, GearMetrics> = {};
    for (const [name, g] of Object.entries(gearsRaw)) {
      const gf = Fields.of(g, `gear ${name}`);
      gears[name] = { messages: gf.number('messages'), errors: gf.number('errors') };
      if (gf.raw('calls') !== undefined) gears[name].calls = histogramOf(gf.raw('calls'));
    }
    const t = Fields.of(e.raw('telemetry'), 'telemetry counters');
    return {
      time,
      gears,
      connections: e.number('connections'),
      workers: e.number('workers'),
      rss: e.number('rss'),
      scenario: e.text('scenario', 256),
      scenario_version: e.number('scenario_version'),
      local_log_dropped: e.number('local_log_dropped'),
      telemetry: { published: counts(t, 'published'), dropped: counts(t, 'dropped'), queued: t.number('queued') },
    };
  });
  return { rack: f.text('rack', 64), kind, boot: f.text('boot', 64), seq: f.number('seq'), entries };
}
