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

/**
 * The q-quantile (ms) of the counts in `h`, interpolated within its bucket as Prometheus'
 * histogram_quantile does; null when empty. Above the last bound it answers that bound.
 */
export function histogramQuantile(h: HistogramData, q: number): number | null {
  const total = histogramCount(h);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < h.counts.length; i++) {
    const c = h.counts[i]!;
    if (c > 0 && seen + c >= rank) {
      if (i === LATENCY_BOUNDS_MS.length) return LATENCY_BOUNDS_MS[i - 1]!;
      const lower = i === 0 ? 0 : LATENCY_BOUNDS_MS[i - 1]!;
      return lower + (LATENCY_BOUNDS_MS[i]! - lower) * ((rank - seen) / c);
    }
    seen += c;
  }
  return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!;
}
