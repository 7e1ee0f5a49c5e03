import hdr from 'hdr-histogram-js';

/** Milliseconds on the monotonic clock (process.hrtime), comparable between processes on one machine. */
export const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;

export interface LatencySummary {
  p50_us: number;
  p99_us: number;
  p999_us: number;
  max_us: number;
  count: number;
}

/** An HDR histogram of nanosecond samples, summarised in microseconds. */
export class LatencyRecorder {
  private readonly histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: 3 });

  recordNs(ns: number): void {
    this.histogram.recordValue(Math.max(1, Math.round(ns)));
  }

  summary(): LatencySummary {
    const us = (p: number) => Math.round(this.histogram.getValueAtPercentile(p) / 10) / 100;
    return {
      p50_us: us(50),
      p99_us: us(99),
      p999_us: us(99.9),
      max_us: Math.round(this.histogram.maxValue / 10) / 100,
      count: this.histogram.totalCount,
    };
  }
}
