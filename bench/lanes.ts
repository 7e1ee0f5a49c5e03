// Guaranteed wires against their floor and their ceiling, in one run on one nats-server:
// - guaranteed: rack A's generator -> (guaranteed wire) -> rack B's probe gear -> a core NATS
//   subject the benchmark reads; two rack processes, as deployed;
// - hot: the same chain inside one rack (a hot lane), for the cost of durability;
// - bare JetStream, paced (the floor a guaranteed wire should stay close to): nats.js alone doing
//   the two racks' work in the same layout, a sending and a receiving process
//   (fixtures/lanes-bare.ts): pipelined publishes whose acks come to one reply subscription,
//   a pull consumer acking each message after passing it on to the subject the benchmark reads;
// - bare JetStream bursts: nats.js flat out in this process, as above (nats.go's PublishAsync)
//   and with js.publish() calls kept in flight (nats.js's API, a request per message). A burst's
//   batches are far larger than any paced source sends, so it is the broker's ceiling, not a
//   rate held under a latency budget;
// - sync publish: one awaited js.publish() at a time (what a naive sender gets).
// The rack chains and the paced floor are offered the same ladder of rates; a maximum is the
// highest rate delivered (>= 95 % of offered) with p99 under the budget; then the guaranteed
// wire's p99 at half of its maximum.
// Latency is from the message's creation (fluxMsg ts) to its arrival at the benchmark.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { stringify } from 'yaml';
import { createInbox, headers, connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { NatsServerProcess } from '../test/harness/nats.js';
import { laneConsumerName, laneStreamName, provisionLanes, wireFilterSubject } from '../src/bus/lanes.js';
import { busWires } from '../src/scenario/lanes.js';
import { parseScenario } from '../src/scenario/parse.js';
import { chain, OUT, readOut, startChainRacks } from './fixtures/lanes-chain.js';
import { LatencyRecorder, type LatencySummary } from './harness/latency.js';
import { printTable, writeResult } from './harness/report.js';

const STEP_MS = Number(process.env.BENCH_LANES_STEP_MS ?? 4000);
const WARMUP_MS = Number(process.env.BENCH_LANES_WARMUP_MS ?? 2000);
// Steps of 2,500/s where the rack chains top out on 2 cores (10k-20k/s), so a maximum is not
// read 2x low for want of a step.
const LADDER = (process.env.BENCH_LANES_RATES ?? '5000,10000,12500,15000,17500,20000,25000,30000,35000,50000,70000').split(',').map(Number);
const P99_BUDGET_MS = 500;
const BARE_SCRIPT = join(new URL('../../', import.meta.url).pathname, 'dist/bench/fixtures/lanes-bare.js');
const TARGETS = { msgs_per_s: 50_000, p99_ms_at_half_max: 20, ratio_vs_bare_jetstream: 0.8 };

interface Step {
  offered: number;
  delivered_per_s: number;
  latency: LatencySummary;
}

/** Reads what arrives on OUT during the measured window; latency from each message's ts. */
async function measure(nc: NatsConnection, run: () => Promise<() => Promise<void>>): Promise<{ delivered_per_s: number; latency: LatencySummary }> {
  const out = readOut(nc);
  const stop = await run();
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  out.start();
  await new Promise((resolve) => setTimeout(resolve, STEP_MS));
  const result = out.stop();
  await stop();
  return result;
}

async function rackChain(nats: NatsServerProcess, nc: NatsConnection, lane: 'hot' | 'guaranteed', rate: number, n: number): Promise<Step> {
  const doc = chain(`bench-${lane}-${n}`, rate, lane);
  const result = await measure(nc, async () => (await startChainRacks(doc, lane, nats.url)).stop);
  return { offered: rate, ...result };
}

/** A process of fixtures/lanes-bare.ts, once it is ready; stop() ends it. */
async function bareProcess(role: 'send' | 'receive', url: string, where: string, arg: string): Promise<() => Promise<void>> {
  const child = spawn(process.execPath, [BARE_SCRIPT, role, url, where, arg], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  if ((await lines.next()).value !== 'ready') throw new Error(`the bare ${role} process did not start`);
  return async () => {
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  };
}

/**
 * The paced floor at one rate: the stream and consumer the guaranteed chain of the same rate gets
 * (provisioned as a rack provisions them), a receiver, a sender.
 */
async function bareChain(nats: NatsServerProcess, nc: NatsConnection, rate: number, n: number): Promise<Step> {
  const jsm = await jetstreamManager(nc);
  const scenario = parseScenario(stringify(chain(`bench-bare-${n}`, rate, 'guaranteed')), 'bench-bare.yaml');
  const wire = busWires(scenario)[0]!;
  await provisionLanes(jsm, scenario);
  const stream = laneStreamName(scenario.meta.name);
  try {
    const result = await measure(nc, async () => {
      const stops = [
        await bareProcess('receive', nats.url, `${stream}/${laneConsumerName(wire)}`, OUT),
        await bareProcess('send', nats.url, wireFilterSubject(scenario, wire), String(rate)),
      ];
      return async () => {
        for (const stop of stops.reverse()) await stop();
      };
    });
    return { offered: rate, ...result };
  } finally {
    await jsm.streams.delete(stream);
  }
}

async function ladder(name: string, step: (rate: number, n: number) => Promise<Step>): Promise<Step[]> {
  const steps: Step[] = [];
  for (const [i, rate] of LADDER.entries()) {
    const s = await step(rate, i);
    steps.push(s);
    console.log(
      `${name} ${rate}/s offered: ${Math.round(s.delivered_per_s)}/s delivered, p50 ${s.latency.p50_us / 1000} ms, p99 ${s.latency.p99_us / 1000} ms`,
    );
    if (!held(s)) break;
  }
  return steps;
}

const held = (s: Step) => s.delivered_per_s >= 0.95 * s.offered && s.latency.p99_us / 1000 <= P99_BUDGET_MS;
const maxOf = (steps: Step[]) => Math.max(0, ...steps.filter(held).map((s) => s.delivered_per_s));

type BareMode = 'reply-subscription' | 'js-publish' | 'sync';

/** nats.js alone: publishes (a window of acks in flight, or one at a time) and a pull consumer acking each. */
async function bareJetStream(nc: NatsConnection, mode: BareMode): Promise<{ msgs_per_s: number; latency: LatencySummary }> {
  const jsm = await jetstreamManager(nc);
  const stream = `BENCH_${mode.replace(/-/g, '_').toUpperCase()}`;
  await jsm.streams.delete(stream).catch(() => {});
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], duplicate_window: 120_000 * 1_000_000 });
  await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit, max_ack_pending: 4096 });
  const js = jetstream(nc);
  const recorder = new LatencyRecorder();
  let received = 0;
  const consumer = await js.consumers.get(stream, 'c');
  const messages = await consumer.consume({
    max_messages: 1024,
    callback: (m) => {
      recorder.recordNs(Number(process.hrtime.bigint() - BigInt(m.headers?.get('t') ?? '0')));
      m.ack();
      received++;
    },
  });
  const payload = new Uint8Array(160);
  const deadline = performance.now() + STEP_MS;
  let sent = 0;
  let acked = 0;
  const inbox = createInbox();
  const acks = nc.subscribe(`${inbox}.*`, {
    callback: () => {
      acked++;
    },
  });
  const window = new Set<Promise<unknown>>();
  const started = performance.now();
  while (performance.now() < deadline) {
    const h = headers();
    h.set('t', String(process.hrtime.bigint()));
    h.set('Nats-Msg-Id', `m${sent}`);
    if (mode === 'reply-subscription') {
      nc.publish(`${stream}.x`, payload, { reply: `${inbox}.${sent}`, headers: h });
      sent++;
      if ((sent & 255) === 0) while (sent - acked > 4096) await new Promise((resolve) => setImmediate(resolve));
      continue;
    }
    const p = js.publish(`${stream}.x`, payload, { headers: h });
    sent++;
    if (mode === 'sync') {
      await p;
      continue;
    }
    window.add(p);
    void p.finally(() => window.delete(p));
    if (window.size >= 4096) await Promise.race(window);
  }
  await Promise.all(window);
  acks.unsubscribe();
  while (received < sent && performance.now() < deadline + 10_000) await new Promise((resolve) => setTimeout(resolve, 5));
  const seconds = (performance.now() - started) / 1000;
  await messages.close();
  return { msgs_per_s: received / seconds, latency: recorder.summary() };
}

async function main(): Promise<void> {
  const nats = await NatsServerProcess.start();
  const nc = await natsConnect({ servers: nats.url });
  try {
    const bare = await bareJetStream(nc, 'reply-subscription');
    console.log(`bare JetStream pipeline (acks on one subscription): ${Math.round(bare.msgs_per_s)}/s, p99 ${bare.latency.p99_us / 1000} ms`);
    const jsPublish = await bareJetStream(nc, 'js-publish');
    console.log(`bare JetStream pipeline (js.publish in flight): ${Math.round(jsPublish.msgs_per_s)}/s, p99 ${jsPublish.latency.p99_us / 1000} ms`);
    const syncPublish = await bareJetStream(nc, 'sync');
    console.log(`synchronous publish: ${Math.round(syncPublish.msgs_per_s)}/s`);
    const guaranteed = await ladder('guaranteed', (rate, n) => rackChain(nats, nc, 'guaranteed', rate, n));
    const hot = await ladder('hot', (rate, n) => rackChain(nats, nc, 'hot', rate, n));
    const barePaced = await ladder('bare paced', (rate, n) => bareChain(nats, nc, rate, n));
    const max = maxOf(guaranteed);
    const floor = maxOf(barePaced);
    const half = max > 0 ? await rackChain(nats, nc, 'guaranteed', Math.round(max / 2), 99) : undefined;
    const result = {
      guaranteed_msgs_per_s: Math.round(max),
      p99_ms_at_half_max: half === undefined ? null : half.latency.p99_us / 1000,
      p50_ms_at_half_max: half === undefined ? null : half.latency.p50_us / 1000,
      // Against the floor read as the racks are read (same layout, same ladder, same budget).
      ratio_vs_bare_jetstream: Math.round((max / Math.max(1, floor)) * 100) / 100,
      // Against nats.js's burst in one process: the broker's ceiling.
      ratio_vs_bare_burst: Math.round((max / bare.msgs_per_s) * 100) / 100,
      ratio_vs_sync_publish: Math.round((max / syncPublish.msgs_per_s) * 100) / 100,
      ratio_vs_hot_lane: Math.round((max / Math.max(1, maxOf(hot))) * 100) / 100,
      bare_paced_msgs_per_s: Math.round(floor),
      bare_jetstream: { msgs_per_s: Math.round(bare.msgs_per_s), ...bare.latency },
      bare_js_publish: { msgs_per_s: Math.round(jsPublish.msgs_per_s), ...jsPublish.latency },
      ratio_vs_bare_js_publish: Math.round((max / jsPublish.msgs_per_s) * 100) / 100,
      sync_publish: { msgs_per_s: Math.round(syncPublish.msgs_per_s) },
      hot_lane_msgs_per_s: Math.round(maxOf(hot)),
      ladder: { guaranteed, hot, bare_paced: barePaced },
      targets: TARGETS,
      met: {
        msgs_per_s: max >= TARGETS.msgs_per_s,
        p99_ms_at_half_max: half !== undefined && half.latency.p99_us / 1000 <= TARGETS.p99_ms_at_half_max,
        ratio_vs_bare_jetstream: max / Math.max(1, floor) >= TARGETS.ratio_vs_bare_jetstream,
        ratio_vs_bare_burst: max / bare.msgs_per_s >= TARGETS.ratio_vs_bare_jetstream,
      },
    };
    printTable([
      { path: 'guaranteed wire (2 racks)', 'msgs/s': result.guaranteed_msgs_per_s, 'p99 ms @ half': result.p99_ms_at_half_max ?? 'n/a' },
      { path: 'hot lane (1 rack)', 'msgs/s': result.hot_lane_msgs_per_s, 'p99 ms @ half': '' },
      { path: 'bare nats.js, paced, 2 processes (the floor)', 'msgs/s': result.bare_paced_msgs_per_s, 'p99 ms @ half': '' },
      { path: 'bare nats.js burst, acks on one subscription', 'msgs/s': result.bare_jetstream.msgs_per_s, 'p99 ms @ half': '' },
      { path: 'bare nats.js burst, js.publish in flight', 'msgs/s': result.bare_js_publish.msgs_per_s, 'p99 ms @ half': '' },
      { path: 'synchronous publish', 'msgs/s': result.sync_publish.msgs_per_s, 'p99 ms @ half': '' },
    ]);
    console.log(
      `ratios: vs the bare floor ${result.ratio_vs_bare_jetstream}, vs the bare burst ${result.ratio_vs_bare_burst}, vs sync ${result.ratio_vs_sync_publish}, vs hot ${result.ratio_vs_hot_lane}`,
    );
    console.log(`wrote ${writeResult('lanes', result)}`);
  } finally {
    await nc.close();
    await nats.stop();
  }
}

await main();
