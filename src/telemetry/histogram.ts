/**
 * Upper bounds (ms) of the call-latency buckets, shared by every rack and the Mixer (Prometheus
 * `le`, in seconds there). Fixed, so that counts from any rack and any worker add up.
 */
export const LATENCY_BOUNDS_MS = [0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000] as const;

/** Counts per bucket (not cumulative; the last one is above every bound), their sum and count. */
export interface HistogramData {
  counts: number[];
  sumMs: number;
}

export function emptyHistogram(): HistogramData {
  return { counts: new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0), sumMs: 0 };
}

export function observe(h: HistogramData, ms: number): void {
  let i = 0;
  while (i < LATENCY_BOUNDS_MS.length && ms > LATENCY_BOUNDS_MS[i]!) i++;
  h.counts[i]!++;
  h.sumMs += ms;
}

/** Adds `more` into `into`; counts of another length (a rack of another version) are refused. */
export function addHistogram(into: HistogramData, more: HistogramData): void {
  if (more.counts.length !== into.counts.length) throw new RangeError(`a histogram of ${more.counts.length} buckets, expected ${into.counts.length}`);
  for (let i = 0; i < more.counts.length; i++) into.counts[i]! += more.counts[i]!;
  into.sumMs += more.sumMs;
}

export function histogramCount(h: HistogramData): number {
  let n = 0;
  for (const c of h.counts) n += c;
  return n;
}
