// The Mixer's Prometheus metrics (prom-client): the fleet, each rack and each gear, read at
// scrape time from what the Mixer already follows (the racks bucket's watch, the telemetry store).
import { collectDefaultMetrics, Counter, Gauge, type Metric, Registry } from 'prom-client';
import { LATENCY_BOUNDS_MS } from '../telemetry/histogram.js';
import { TELEMETRY_KINDS } from '../telemetry/shapes.js';
import type { Mixer } from './mixer.js';
import type { RackMetrics } from './telemetry.js';

const STATUSES = ['pending', 'active', 'suspended', 'denied'] as const;

export function mixerMetrics(mixer: Mixer): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'fluxrig_mixer_' });
  const register = [registry];

  new Gauge({
    name: 'fluxrig_racks',
    help: 'Enrolled racks by status and whether they are online',
    labelNames: ['status', 'online'],
    registers: register,
    collect() {
      this.reset();
      for (const status of STATUSES) for (const online of ['true', 'false']) this.set({ status, online }, 0);
      for (const r of mixer.fleet) this.inc({ status: r.status, online: String(r.online) });
    },
  });
  new Gauge({
    name: 'fluxrig_rack_online',
    help: '1 while a rack heartbeats, 0 once it missed three',
    labelNames: ['rack'],
    registers: register,
    collect() {
      this.reset();
      for (const r of mixer.fleet) this.set({ rack: r.name }, r.online ? 1 : 0);
    },
  });
  new Gauge({
    name: 'fluxrig_rack_last_seen_timestamp_seconds',
    help: "The rack's last heartbeat or message",
    labelNames: ['rack'],
    registers: register,
    collect() {
      this.reset();
      for (const r of mixer.fleet) this.set({ rack: r.name }, r.last_seen / 1000);
    },
  });
  const fromMetrics = (name: string, help: string, read: (m: RackMetrics) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['rack'],
      registers: register,
      collect() {
        this.reset();
        for (const [rack, m] of mixer.telemetry.metrics()) this.set({ rack }, read(m));
      },
    });
  fromMetrics('fluxrig_rack_connections', 'Connections the rack has open', (m) => m.metrics.connections);
  fromMetrics('fluxrig_rack_workers', 'Worker threads of the rack', (m) => m.metrics.workers);
  fromMetrics('fluxrig_rack_resident_memory_bytes', "The rack process's resident memory", (m) => m.metrics.rss);
  fromMetrics('fluxrig_rack_scenario_version', 'The version of the scenario the rack applied', (m) => m.metrics.scenario_version);
  fromMetrics('fluxrig_rack_telemetry_queued', 'Telemetry entries waiting in the rack', (m) => m.metrics.telemetry.queued);

  for (const [what, help] of [
    ['published', 'Telemetry entries the rack published, by kind'],
    ['dropped', 'Telemetry entries the rack dropped (its queue was full while the uplink was slow or away), by kind'],
  ] as const) {
    new Counter({
      name: `fluxrig_rack_telemetry_${what}_total`,
      help,
      labelNames: ['rack', 'kind'],
      registers: register,
      collect() {
        this.reset();
        for (const [rack, m] of mixer.telemetry.metrics()) for (const kind of TELEMETRY_KINDS) this.inc({ rack, kind }, m.metrics.telemetry[what][kind]);
      },
    });
  }
  for (const [what, help] of [
    ['messages', 'Messages delivered to the gear'],
    ['errors', 'Messages the gear failed, rejected or sent out of its error port'],
  ] as const) {
    new Counter({
      name: `fluxrig_gear_${what}_total`,
      help,
      labelNames: ['rack', 'gear'],
      registers: register,
      collect() {
        this.reset();
        for (const [rack, m] of mixer.telemetry.metrics()) for (const [gear, g] of Object.entries(m.metrics.gears)) this.inc({ rack, gear }, g[what]);
      },
    });
  }
  new Counter({
    name: 'fluxrig_rack_local_log_dropped_total',
    help: "Local log lines the rack's workers dropped because their log output could not keep up",
    labelNames: ['rack'],
    registers: register,
    collect() {
      this.reset();
      for (const [rack, m] of mixer.telemetry.metrics()) this.inc({ rack }, m.metrics.local_log_dropped);
    },
  });
  new Counter({
    name: 'fluxrig_mixer_telemetry_publications_total',
    help: 'Telemetry publications this Mixer read',
    registers: register,
    collect() {
      this.reset();
      this.inc(mixer.telemetry.stats.publications);
    },
  });
  new Counter({
    name: 'fluxrig_mixer_telemetry_refused_total',
    help: 'Telemetry publications this Mixer refused (off-shape, or under another rack’s subject)',
    registers: register,
    collect() {
      this.reset();
      this.inc(mixer.telemetry.stats.refused);
    },
  });
  registry.registerMetric(callHistogram(mixer) as unknown as Metric);
  return registry;
}

const CALL_HISTOGRAM = 'fluxrig_gear_call_duration_seconds';

/**
 * The racks send their call latencies as counts in shared buckets, already summed; prom-client's
 * Histogram only takes single observations. This object gives the registry the same shape its
 * own histograms give (name, help, type and the _bucket, _sum and _count values).
 */
function callHistogram(mixer: Mixer) {
  const help = 'Calls a fluxar gear answered in a worker, from the frame to the answer';
  return {
    name: CALL_HISTOGRAM,
    help,
    type: 'histogram',
    aggregator: 'sum',
    reset() {},
    async get() {
      const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
      for (const [rack, m] of mixer.telemetry.metrics()) {
        for (const [gear, g] of Object.entries(m.metrics.gears)) {
          if (g.calls === undefined) continue;
          let cumulative = 0;
          for (let i = 0; i < LATENCY_BOUNDS_MS.length; i++) {
            cumulative += g.calls.counts[i]!;
            values.push({ metricName: `${CALL_HISTOGRAM}_bucket`, labels: { rack, gear, le: LATENCY_BOUNDS_MS[i]! / 1000 }, value: cumulative });
          }
          cumulative += g.calls.counts[LATENCY_BOUNDS_MS.length]!;
          values.push({ metricName: `${CALL_HISTOGRAM}_bucket`, labels: { rack, gear, le: '+Inf' }, value: cumulative });
          values.push({ metricName: `${CALL_HISTOGRAM}_sum`, labels: { rack, gear }, value: g.calls.sumMs / 1000 });
          values.push({ metricName: `${CALL_HISTOGRAM}_count`, labels: { rack, gear }, value: cumulative });
        }
      }
      return { name: CALL_HISTOGRAM, help, type: 'histogram', aggregator: 'sum', values };
    },
  };
}
