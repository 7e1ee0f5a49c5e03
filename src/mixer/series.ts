// Each rack's traffic over the last minutes, for the dashboard's charts: a sample per metrics
// snapshot, from the difference with the one before (snapshots are cumulative since the rack
// started, so a lost one widens the next sample instead of losing its calls).
import { addHistogram, emptyHistogram, type HistogramData, histogramQuantile } from '../telemetry/histogram.js';
import type { MetricsEntry } from '../telemetry/shapes.js';
import type { RackSample } from './api-shapes.js';

export const SERIES_LIMITS = {
  /** Samples older than this are forgotten. */
  window_ms: 15 * 60_000,
  /** At most this many per rack (a rack heartbeating every 250 ms fills 15 minutes with 3,600). */
  samples: 4_000,
} as const;

interface Totals {
  time: number;
  messages: number;
  errors: number;
  calls: HistogramData;
}

function totalsOf(m: MetricsEntry): Totals {
  const calls = emptyHistogram();
  let messages = 0;
  let errors = 0;
  for (const g of Object.values(m.gears)) {
    messages += g.messages;
    errors += g.errors;
    if (g.calls !== undefined && g.calls.counts.length === calls.counts.length) addHistogram(calls, g.calls);
  }
  return { time: m.time, messages, errors, calls };
}

/** One rack's samples. A new boot (the rack restarted) starts from its first snapshot again. */
export class RackSeries {
  private last: { boot: string; totals: Totals } | undefined;
  private readonly samples: RackSample[] = [];

  /** Takes a snapshot; answers the sample it makes, if any (not for the first of a boot). */
  add(boot: string, metrics: MetricsEntry): RackSample | undefined {
    const now = totalsOf(metrics);
    const before = this.last;
    if (before !== undefined && before.boot === boot && now.time <= before.totals.time) return undefined;
    this.last = { boot, totals: now };
    if (before === undefined || before.boot !== boot || now.messages < before.totals.messages) return undefined;
    const seconds = (now.time - before.totals.time) / 1000;
    const interval = emptyHistogram();
    let calls = 0;
    for (let i = 0; i < interval.counts.length; i++) {
      interval.counts[i] = Math.max(0, now.calls.counts[i]! - before.totals.calls.counts[i]!);
      calls += interval.counts[i]!;
    }
    const p99 = histogramQuantile(interval, 0.99);
    const sample: RackSample = {
      time: now.time,
      calls_per_s: round(calls / seconds),
      messages_per_s: round((now.messages - before.totals.messages) / seconds),
      errors: Math.max(0, now.errors - before.totals.errors),
      p99_ms: p99 === null ? null : round(p99),
    };
    this.samples.push(sample);
    const oldest = now.time - SERIES_LIMITS.window_ms;
    let cut = 0;
    while (cut < this.samples.length && (this.samples[cut]!.time < oldest || this.samples.length - cut > SERIES_LIMITS.samples)) cut++;
    if (cut > 0) this.samples.splice(0, cut);
    return sample;
  }

  /** The samples of the window, oldest first. */
  list(): readonly RackSample[] {
    return this.samples;
  }
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
