// The load generator's engine, shared by every system the end-to-end benchmark drives (the rack
// and its peers), so each is measured the same way.
//
// Open loop: call number i is due at start + i / rate, and its latency is measured from that due
// time, so a slow server cannot slow the generator down and hide its own queueing (no
// coordinated omission). Every due call is sent at each 1 ms tick.
//
// Maximum: closed loop with a fixed number of calls in flight; the calls completed per second.
import hdr from 'hdr-histogram-js';

export type Outcome = 'ok' | 'rejected' | 'error';

/** A client of the system under test. It answers every call(i) with exactly one done(i, outcome). */
export interface LoadTarget {
  call(i: number): void;
  close(): Promise<void>;
}
export type Done = (i: number, outcome: Outcome) => void;

export interface LoadResult {
  rate: number | 'max';
  calls_per_s: number;
  offered?: number;
  completed: number;
  errors: number;
  rejections: number;
  unfinished: number;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  percentiles: Array<[number, number]>;
  /** CPU the generator process used over the measured window, in cores. */
  generator_cores: number;
  /**
   * Open loop: how late the generator itself sent its calls (p99 of send time minus due time).
   * Latency counts from the due time, so this much of the p99 can be the generator's own.
   */
  send_lag_p99_ms?: number;
}

const TICK_MS = 1;
/** Due times are kept in a ring this long (in calls): far more than can ever be in flight. */
const SLOTS = 1 << 21;
const MASK = SLOTS - 1;
const DRAIN_WAIT_MS = 10_000;

/**
 * Runs one load: warm-up, then `durationMs` measured. `connect` gets the completion callback and
 * returns the target.
 */
export async function runLoad(
  connect: (done: Done) => Promise<LoadTarget>,
  rate: number | 'max',
  durationMs: number,
  options: { inFlightMax?: number; warmupMs?: number } = {},
): Promise<LoadResult> {
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  const sendLag = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  const dueAt = new Float64Array(SLOTS);
  let firstMeasured = Number.MAX_SAFE_INTEGER;
  let completed = 0;
  let errors = 0;
  let rejections = 0;
  let sent = 0;
  let answered = 0;
  let stopped = false;
  const inFlightMax = options.inFlightMax ?? 512;
  const warmupMs = options.warmupMs ?? Math.min(1000, durationMs / 4);

  const done: Done = (i, outcome) => {
    answered++;
    if (i >= firstMeasured) {
      completed++;
      if (outcome === 'rejected') rejections++;
      else if (outcome === 'error') errors++;
      histogram.recordValue(Math.max(1, Math.round((performance.now() - dueAt[i & MASK]!) * 1000))); // microseconds
    }
    if (rate === 'max' && !stopped) launch(performance.now());
  };
  const target = await connect(done);
  const launch = (at: number) => {
    const i = sent++;
    dueAt[i & MASK] = at;
    target.call(i);
  };

  let cpuAtStart: NodeJS.CpuUsage = process.cpuUsage();
  let measuredFrom = 0;
  let result: Pick<LoadResult, 'rate' | 'calls_per_s' | 'offered' | 'send_lag_p99_ms'>;
  if (rate === 'max') {
    for (let i = 0; i < inFlightMax; i++) launch(performance.now());
    await sleep(warmupMs);
    firstMeasured = sent;
    cpuAtStart = process.cpuUsage();
    measuredFrom = performance.now();
    await sleep(durationMs);
    stopped = true;
    const elapsed = performance.now() - measuredFrom;
    result = { rate: 'max', calls_per_s: Math.round((completed / elapsed) * 1000) };
  } else {
    const interval = 1000 / rate;
    const began = performance.now();
    const measureFrom = began + warmupMs;
    const end = measureFrom + durationMs;
    let scheduled = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = performance.now();
        if (measuredFrom === 0 && now >= measureFrom) {
          cpuAtStart = process.cpuUsage();
          measuredFrom = now;
        }
        // Every call due by now is sent now, each stamped with the time it was due.
        while (began + scheduled * interval <= Math.min(now, end)) {
          const at = began + scheduled * interval;
          if (at >= measureFrom && firstMeasured === Number.MAX_SAFE_INTEGER) firstMeasured = sent;
          scheduled++;
          if (at >= measureFrom) sendLag.recordValue(Math.max(1, Math.round((now - at) * 1000)));
          launch(at);
        }
        if (now >= end) {
          clearInterval(timer);
          resolve();
        }
      }, TICK_MS);
    });
    result = {
      rate,
      calls_per_s: Math.round((completed / durationMs) * 1000),
      offered: rate,
      send_lag_p99_ms: Math.round(sendLag.getValueAtPercentile(99)) / 1000,
    };
  }
  const cpu = process.cpuUsage(cpuAtStart);
  const generatorCores = Math.round(((cpu.user + cpu.system) / 1000 / (performance.now() - measuredFrom)) * 100) / 100;
  const deadline = performance.now() + DRAIN_WAIT_MS;
  while (answered < sent && performance.now() < deadline) await sleep(5);
  // Open loop: a call due in the window but still unanswered after the wait counts as unfinished.
  const unfinished = sent - answered;
  await target.close();
  const ms = (p: number) => Math.round(histogram.getValueAtPercentile(p)) / 1000;
  return {
    ...result,
    completed,
    errors,
    rejections,
    unfinished,
    p50_ms: ms(50),
    p99_ms: ms(99),
    p999_ms: ms(99.9),
    max_ms: Math.round(histogram.maxValue) / 1000,
    percentiles: [50, 75, 90, 95, 99, 99.9, 99.99, 100].map((p) => [p, ms(p)]),
    generator_cores: generatorCores,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
