// What the dashboard draws, computed by the Mixer: traffic samples from cumulative metrics
// snapshots, and a pushed scenario's graph with its racks, gears, wires and lanes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stringify } from 'yaml';
import { scenarioGraph } from '../src/mixer/scenario-graph.js';
import { RackSeries, SERIES_LIMITS } from '../src/mixer/series.js';
import { emptyHistogram, histogramQuantile, LATENCY_BOUNDS_MS, observe } from '../src/telemetry/histogram.js';
import type { MetricsEntry } from '../src/telemetry/shapes.js';

function snapshot(time: number, messages: number, errors: number, latenciesMs: number[]): MetricsEntry {
  const calls = emptyHistogram();
  for (const ms of latenciesMs) observe(calls, ms);
  return {
    time,
    gears: { api: { messages, errors: 0, calls }, fraud: { messages, errors } },
    connections: 1,
    workers: 1,
    rss: 1,
    scenario: 's',
    scenario_version: 1,
    local_log_dropped: 0,
    telemetry: { published: { log: 0, metrics: 0, event: 0 }, dropped: { log: 0, metrics: 0, event: 0 }, queued: 0 },
  };
}

describe('traffic samples', () => {
  it('turns cumulative snapshots into rates, errors and a p99 per interval', () => {
    const series = new RackSeries();
    assert.equal(series.add('boot-1', snapshot(1000, 0, 0, [])), undefined, 'the first snapshot of a boot is only a baseline');
    const fast = Array.from({ length: 100 }, () => 0.8);
    const sample = series.add('boot-1', snapshot(3000, 100, 2, fast))!;
    assert.equal(sample.calls_per_s, 50);
    assert.equal(sample.messages_per_s, 100, 'messages of both gears');
    assert.equal(sample.errors, 2);
    assert.ok(sample.p99_ms! > 0.5 && sample.p99_ms! <= 1, `p99 ${sample.p99_ms} in the 0.5-1 ms bucket`);
    // 100 more calls, one slow: the interval's p99 is its own, not the whole run's.
    const slow = [...fast, ...Array.from({ length: 99 }, () => 0.8), 400];
    const next = series.add('boot-1', snapshot(4000, 200, 2, slow))!;
    assert.equal(next.calls_per_s, 100);
    assert.equal(next.errors, 0);
    assert.ok(next.p99_ms! <= 1, `one slow call of 100 is above p99 (${next.p99_ms})`);
    assert.equal(series.list().length, 2);
  });

  it('starts again from a baseline when the rack restarts, and ignores a snapshot older than the last', () => {
    const series = new RackSeries();
    series.add('a', snapshot(1000, 0, 0, []));
    series.add('a', snapshot(2000, 50, 0, []));
    assert.equal(series.add('a', snapshot(1500, 10, 0, [])), undefined, 'out of order');
    assert.equal(series.add('b', snapshot(2500, 5, 0, [])), undefined, 'a new boot counts from zero: no negative rate');
    assert.equal(series.add('b', snapshot(3500, 15, 0, []))!.messages_per_s, 20, '10 more through each of two gears in a second');
  });

  it('keeps only the window', () => {
    const series = new RackSeries();
    series.add('a', snapshot(0, 0, 0, []));
    series.add('a', snapshot(1000, 1, 0, []));
    series.add('a', snapshot(SERIES_LIMITS.window_ms + 5000, 2, 0, []));
    assert.equal(series.list().length, 1);
  });

  it('interpolates a quantile within its bucket, and caps it at the last bound', () => {
    const h = emptyHistogram();
    for (let i = 0; i < 10; i++) observe(h, 3); // bucket (2.5, 5]
    assert.equal(histogramQuantile(h, 0.5), 3.75);
    assert.equal(histogramQuantile(emptyHistogram(), 0.99), null);
    observe(h, 60_000);
    assert.equal(histogramQuantile(h, 1), LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]);
  });
});

describe('scenario graph', () => {
  const yaml = stringify({
    meta: { name: 'orders', version: '3' },
    racks: [{ name: 'edge' }, { group: 'core', match_labels: { tier: 'core' } }],
    gears: [
      { name: 'api', type: 'fluxar', deploy: 'edge', config: { listen: ['tcp://127.0.0.1:0'] } },
      { name: 'audit', type: 'log', deploy: 'core', config: {} },
      { name: 'echo', type: 'log', config: {} },
    ],
    wires: [
      { from: 'api.out', to: 'echo.in' },
      { from: 'edge.api.out', to: 'core.audit.in', lane: 'guaranteed' },
    ],
  });
  const record = { name: 'orders', version: 3, meta_version: '3', yaml, pushed_at: 0, targets: { edge: [], 'core-1': ['core'], 'core-2': ['core'] } };

  it('places each gear on the racks that run it, by name, group or everywhere', () => {
    const graph = scenarioGraph(record);
    const gears = Object.fromEntries(graph.racks.map((r) => [r.rack, r.gears.map((g) => g.name).sort()]));
    assert.deepEqual(gears, { edge: ['api', 'echo'], 'core-1': ['audit', 'echo'], 'core-2': ['audit', 'echo'] });
  });

  it('joins gears within a rack by hot wires, and racks by guaranteed ones', () => {
    const { wires } = scenarioGraph(record);
    const hot = wires.filter((w) => w.lane === 'hot');
    assert.deepEqual(
      hot.map((w) => `${w.from.rack}/${w.from.gear} > ${w.to.rack}/${w.to.gear}`),
      ['edge/api > edge/echo'],
    );
    const across = wires.filter((w) => w.lane === 'guaranteed');
    assert.deepEqual(across.map((w) => `${w.from.rack} > ${w.to.rack}`).sort(), ['edge > core-1', 'edge > core-2']);
    assert.ok(across.every((w) => w.cross_rack));
  });
});
