// Pub/sub against its peers in one run, each with a broker process of its own on loopback: the
// FLUXAR broker (a listen() server), nats-server with nats.js, and mosquitto with mqtt.js.
// 1. Fan-out: 1 publisher, 100 subscribers, 128 B messages: deliveries/s, then p99 from publish
//    to delivery at half of that rate. Each system is warmed up first, and the systems take turns
//    over ROUNDS rounds: the ratios are the medians of each round's own ratio.
//    Then p99 at fixed rates, open loop: the publisher is a process of its own
//    (fixtures/pubsub-publisher.ts) that sends on schedule whatever the subscribers' process is
//    doing, and latency counts from each message's due time.
// 2. QoS 1, 1 to 1, acknowledged both ways: FLUXAR QoS 1, MQTT QoS 1, JetStream with pipelined
//    publish acks and a consumer acking each message; in ROUNDS rounds as well, ratios the
//    medians of each round's own.
// Results: bench/results/pubsub.json.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import { connect } from '../src/fluxar/mod.js';
import { NatsServerProcess } from '../test/harness/nats.js';
import { freePort } from '../test/harness/ports.js';
import { fluxarSystem, mqttClient, mqttSystem, natsSystem, type System } from './fixtures/pubsub-systems.js';
import { LatencyRecorder, type LatencySummary, monotonicMs } from './harness/latency.js';
import { median, printTable, writeResult } from './harness/report.js';

const SUBSCRIBERS = 100;
const PAYLOAD_BYTES = 128;
const FANOUT_MESSAGES = Number(process.env.BENCH_FANOUT_MESSAGES ?? 5000);
/**
 * Messages published before the fan-out is measured, in the same bursts. Brokers run for days: the
 * figure that matters is the steady one, after the JIT has compiled both ends' hot paths. 200
 * messages (20,000 deliveries) measured the climb instead: FLUXAR at 0.71-0.79x NATS after them,
 * 1.07-1.17x after 3,000 (alternating runs, docs/performance.md). The warm-up's own rate is kept
 * as the cold figure.
 */
const WARM_UP_MESSAGES = Number(process.env.BENCH_FANOUT_WARM_UP ?? 3000);
/** A 1-second burst on this shared machine moved from 589k to 964k deliveries/s between rounds of one run. */
const ROUNDS = Number(process.env.BENCH_PUBSUB_ROUNDS ?? 3);
const LATENCY_MS = Number(process.env.BENCH_DURATION_MS ?? 3000);
/**
 * Open-loop rates, messages/s (x100 deliveries). The paced run above is a closed loop: its
 * publisher shares the subscribers' event loop and sends in batches as large as that loop is
 * slow (7-42 ms apart at 3,400 messages/s), so it cannot say what a steady publisher sees.
 */
const OPEN_RATES = (process.env.BENCH_PUBSUB_OPEN_RATES ?? '500,1000,2000').split(',').map(Number);
const OPEN_MS = Number(process.env.BENCH_PUBSUB_OPEN_MS ?? 2000);
const QOS1_MESSAGES = Number(process.env.BENCH_QOS1_MESSAGES ?? 50_000);
const QOS1_WINDOW = 256;
const QUIET_MS = 2000;

/** What every system's result in a round carries. */
interface RoundResult {
  system: string;
  round: number;
}

/** The order the systems take their turns in `round`: each round starts with another, so none always runs first (or last). */
function inTurn<T>(systems: readonly T[], round: number): T[] {
  return systems.map((_, i) => systems[(round + i) % systems.length]!);
}

interface FanoutResult extends RoundResult {
  /** The warm-up burst's rate: the first WARM_UP_MESSAGES after the subscribers connected. */
  cold_deliveries_per_s: number;
  deliveries_per_s: number;
  delivered: number;
  expected: number;
  latency_rate_per_s: number;
  latency: LatencySummary;
  open_loop: OpenLoopResult[];
}

interface OpenLoopResult {
  rate_per_s: number;
  sent: number;
  delivered: number;
  /** How late the publisher process itself sent (p99): latency counts from the due time. */
  send_lag_p99_ms: number;
  latency: LatencySummary;
}

/** Phases of the fan-out run, in byte 8 of every payload: a delivery counts for its own phase only. */
const WARM_UP = 0;
const BURST = 1;
const PACED = 2;
/** Stamped with the monotonic clock by the publisher process: fixtures/pubsub-publisher.ts. */
const OPEN_LOOP = 3;

/** 128 bytes: the send time (ms since the epoch) in the first 8, the phase in the ninth. */
function payload(phase = BURST): Uint8Array {
  const b = Buffer.alloc(PAYLOAD_BYTES);
  b.writeDoubleLE(performance.timeOrigin + performance.now(), 0);
  b[8] = phase;
  return b;
}

/** The time in a payload's first 8 bytes. */
const stampOf = (p: Uint8Array) => Buffer.from(p.buffer, p.byteOffset, 8).readDoubleLE(0);

/** Fan-out of one system in one round: a warm-up burst, the measured burst, the paced run, then the open-loop rates. */
async function fanout(system: System, round: number): Promise<FanoutResult> {
  const topic = 'bench.fanout';
  const delivered = [0, 0, 0, 0];
  const latency = new LatencyRecorder();
  let openLatency = new LatencyRecorder();
  let lastAt = performance.now();
  await system.subscribe(SUBSCRIBERS, topic, (p) => {
    lastAt = performance.now();
    if (p[8] === PACED) latency.recordNs((performance.timeOrigin + performance.now() - stampOf(p)) * 1e6);
    else {
      if (p[8] === OPEN_LOOP) openLatency.recordNs((monotonicMs() - stampOf(p)) * 1e6);
      delivered[p[8]!]!++;
    }
  });
  /** Waits until `expected` deliveries of `phase` have come, or none came for QUIET_MS (a minute at most); returns how many came. */
  async function arrivals(phase: number, expected: number): Promise<number> {
    const deadline = Date.now() + 60_000;
    while (delivered[phase]! < expected && Date.now() < deadline && performance.now() - lastAt < QUIET_MS) await tick();
    return delivered[phase]!;
  }
  /** Publishes `count` messages as fast as the client takes them; deliveries/s until every subscriber has them. */
  async function burst(phase: typeof WARM_UP | typeof BURST, count: number): Promise<number> {
    const expected = count * SUBSCRIBERS;
    const began = performance.now();
    for (let i = 0; i < count; i++) {
      await system.publish(topic, payload(phase));
      if (i % 100 === 99) await system.flush();
    }
    await system.flush();
    const rate = Math.round((await arrivals(phase, expected)) / ((lastAt - began) / 1000));
    await quiet(() => lastAt);
    return rate;
  }
  const coldRate = await burst(WARM_UP, WARM_UP_MESSAGES);
  const rate = await burst(BURST, FANOUT_MESSAGES);
  const expected = FANOUT_MESSAGES * SUBSCRIBERS;
  const burstDelivered = delivered[BURST]!;
  // Latency at half of that rate, paced, for LATENCY_MS.
  const perSecond = Math.max(1, Math.round(rate / SUBSCRIBERS / 2));
  const start = performance.now();
  let sent = 0;
  while (performance.now() - start < LATENCY_MS) {
    const due = Math.floor(((performance.now() - start) / 1000) * perSecond);
    while (sent < due) {
      await system.publish(topic, payload(PACED));
      sent++;
    }
    await system.flush();
    await tick();
  }
  await quiet(() => lastAt);
  const openLoop: OpenLoopResult[] = [];
  for (const openRate of OPEN_RATES) {
    openLatency = new LatencyRecorder();
    delivered[OPEN_LOOP] = 0;
    const published = await publishOpenLoop(system, topic, openRate);
    const arrived = await arrivals(OPEN_LOOP, published.sent * SUBSCRIBERS);
    await quiet(() => lastAt);
    openLoop.push({ rate_per_s: openRate, ...published, delivered: arrived, latency: openLatency.summary() });
  }
  await system.close();
  return {
    system: system.name,
    round,
    cold_deliveries_per_s: coldRate,
    deliveries_per_s: rate,
    delivered: burstDelivered,
    expected,
    latency_rate_per_s: perSecond,
    latency: latency.summary(),
    open_loop: openLoop,
  };
}

/** Runs the open-loop publisher process for OPEN_MS at `rate` messages/s. */
async function publishOpenLoop(system: System, topic: string, rate: number): Promise<{ sent: number; send_lag_p99_ms: number }> {
  const script = new URL('./fixtures/pubsub-publisher.js', import.meta.url).pathname;
  const publisher = spawn(process.execPath, [script, system.name, system.url, topic, String(rate), String(OPEN_MS), String(OPEN_LOOP)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: publisher.stdout! })[Symbol.asyncIterator]();
  const exited = once(publisher, 'exit');
  if ((await lines.next()).value !== 'ready') throw new Error(`the ${system.name} open-loop publisher did not start`);
  publisher.stdin!.write('go\n');
  const last = await lines.next();
  const [code] = (await exited) as [number | null];
  if (code !== 0 || typeof last.value !== 'string') throw new Error(`the ${system.name} open-loop publisher exited with ${code}`);
  return JSON.parse(last.value) as { sent: number; send_lag_p99_ms: number };
}

interface Qos1Result extends RoundResult {
  messages_per_s: number;
  received: number;
}

/** One system's QoS 1 run: `count` acknowledged publishes from one publisher to one subscriber acking each. */
type Qos1Run = (count: number, onReceived: () => void) => Promise<void>;

/** QoS 1, one publisher and one subscriber acking each message: acknowledged publishes per second. */
async function qos1(name: string, round: number, run: Qos1Run): Promise<Qos1Result> {
  let received = 0;
  await run(2000, () => {}); // warm-up
  const began = performance.now();
  await run(QOS1_MESSAGES, () => received++);
  const seconds = (performance.now() - began) / 1000;
  return { system: name, round, messages_per_s: Math.round(QOS1_MESSAGES / seconds), received };
}

/** Sends `count` acknowledged publishes, QOS1_WINDOW in flight at a time, the same way for every system. */
async function pipelined(count: number, send: () => Promise<unknown>): Promise<void> {
  const inFlight = new Set<Promise<unknown>>();
  for (let i = 0; i < count; i++) {
    const p = send();
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    if (inFlight.size >= QOS1_WINDOW) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
async function quiet(last: () => number): Promise<void> {
  while (performance.now() - last() < 200) await new Promise((resolve) => setTimeout(resolve, 50));
}

// ---- the brokers -----------------------------------------------------------------------------

const fluxarServer = spawn(process.execPath, [new URL('./fixtures/pubsub-server.js', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
const [fluxarLine] = (await once(createInterface({ input: fluxarServer.stdout! }), 'line')) as [string];
const fluxarUrl = (JSON.parse(fluxarLine) as { url: string }).url;
const nats = await NatsServerProcess.start({ jetstream: true });
const mqttPort = await freePort();
const mqttDir = mkdtempSync(join(tmpdir(), 'fluxrig-mosquitto-'));
writeFileSync(
  join(mqttDir, 'mosquitto.conf'),
  `listener ${mqttPort} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\nmax_inflight_messages ${QOS1_WINDOW}\n`,
);
// Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
const mosquitto = spawn(existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto', ['-c', join(mqttDir, 'mosquitto.conf')], { stdio: 'ignore' });
const mqttUrl = `mqtt://127.0.0.1:${mqttPort}`;

const fanouts: FanoutResult[] = [];
const qos1Results: Qos1Result[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const system of inTurn([() => fluxarSystem(fluxarUrl), () => natsSystem(nats.url), () => mqttSystem(mqttUrl)], round))
      fanouts.push(await fanout(system(), round));
  }

  const nc = await natsConnect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: 'BENCH', subjects: ['bench.js.>'] });
  let jetstreamRuns = 0;
  const qos1Runs: Record<string, Qos1Run> = {
    fluxar: async (count, onReceived) => {
      const sub = await connect(fluxarUrl);
      const pub = await connect(fluxarUrl);
      const subscription = sub.subscribe('bench.qos1', { qos: 1, maxInFlight: QOS1_WINDOW });
      await subscription.ready;
      let got = 0;
      const reading = (async () => {
        for await (const m of subscription) {
          m.ack();
          onReceived();
          if (++got === count) break;
        }
      })();
      await pipelined(count, () => pub.publish('bench.qos1', payload(), { qos: 1 }));
      await reading;
      await Promise.all([sub.close(), pub.close()]);
    },
    mqtt: async (count, onReceived) => {
      const sub = await mqttClient(mqttUrl);
      const pub = await mqttClient(mqttUrl);
      let got = 0;
      const all = new Promise<void>((resolve) =>
        sub.on('message', () => {
          onReceived();
          if (++got === count) resolve();
        }),
      );
      await sub.subscribeAsync('bench/qos1', { qos: 1 });
      await pipelined(count, () => pub.publishAsync('bench/qos1', Buffer.from(payload()), { qos: 1 }));
      await all;
      await Promise.all([sub.endAsync(), pub.endAsync()]);
    },
    jetstream: async (count, onReceived) => {
      const subject = `bench.js.r${jetstreamRuns++}`;
      const durable = `c${jetstreamRuns}`;
      await jsm.consumers.add('BENCH', { durable_name: durable, ack_policy: AckPolicy.Explicit, filter_subject: subject, max_ack_pending: QOS1_WINDOW * 4 });
      const js = jetstream(nc);
      const consumer = await js.consumers.get('BENCH', durable);
      const messages = await consumer.consume();
      let got = 0;
      const reading = (async () => {
        for await (const m of messages) {
          m.ack();
          onReceived();
          if (++got === count) break;
        }
      })();
      await pipelined(count, () => js.publish(subject, payload()));
      await reading;
      await messages.close();
    },
  };
  // In rounds too, as the fan-out: one run is one draw of this machine.
  for (let round = 0; round < ROUNDS; round++) {
    for (const system of inTurn(Object.keys(qos1Runs), round)) qos1Results.push(await qos1(system, round, qos1Runs[system]!));
  }
  await nc.close();
} finally {
  fluxarServer.stdin!.end();
  mosquitto.kill();
  await once(fluxarServer, 'exit');
  await nats.stop();
}

const ratio = (a: number, b: number) => Math.round((a / b) * 10) / 10;
/** One system's results, round by round. */
const roundsOf = <R extends RoundResult>(results: R[], system: string) => results.filter((r) => r.system === system).sort((a, b) => a.round - b.round);
/** Each round's ratio of FLUXAR's figure to a peer's: the peers ran beside it, minutes apart at most. */
const byRound = <R extends RoundResult>(results: R[], peer: string, figure: (r: R) => number) =>
  roundsOf(results, 'fluxar').map((r, i) => ratio(figure(r), figure(roundsOf(results, peer)[i]!)));
const qos1Rate = (q: Qos1Result) => q.messages_per_s;
const steady = (f: FanoutResult) => f.deliveries_per_s;
const cold = (f: FanoutResult) => f.cold_deliveries_per_s;
const p99Ms = (f: FanoutResult) => Math.round(f.latency.p99_us) / 1000;
const openP99Ms = (f: FanoutResult, rate: number) => Math.round(f.open_loop.find((o) => o.rate_per_s === rate)!.latency.p99_us) / 1000;
/** Per open-loop rate, the median over the rounds of a figure of one system's (or of a pair's). */
const perOpenRate = (figure: (rate: number) => number) => Object.fromEntries(OPEN_RATES.map((rate) => [rate, figure(rate)]));
const openP99 = (system: string) => perOpenRate((rate) => median(roundsOf(fanouts, system).map((f) => openP99Ms(f, rate))));
/** FLUXAR's open-loop p99 over a peer's, median of the rounds: below 1, FLUXAR's tail is shorter. */
const openP99Ratio = (peer: string) =>
  perOpenRate((rate) =>
    median(roundsOf(fanouts, 'fluxar').map((f, i) => Math.round((openP99Ms(f, rate) / openP99Ms(roundsOf(fanouts, peer)[i]!, rate)) * 100) / 100)),
  );
const openLoopP99: Record<string, Record<number, number>> = { fluxar: openP99('fluxar'), nats: openP99('nats'), mqtt: openP99('mqtt') };
const summary = {
  subscribers: SUBSCRIBERS,
  payload_bytes: PAYLOAD_BYTES,
  fanout_messages: FANOUT_MESSAGES,
  fanout_warm_up_messages: WARM_UP_MESSAGES,
  rounds: ROUNDS,
  qos1_messages: QOS1_MESSAGES,
  qos1_window: QOS1_WINDOW,
  fanout_deliveries_per_s: median(roundsOf(fanouts, 'fluxar').map(steady)),
  ratio_fanout_vs_nats: median(byRound(fanouts, 'nats', steady)),
  ratio_fanout_vs_mqtt: median(byRound(fanouts, 'mqtt', steady)),
  ratio_fanout_vs_nats_by_round: byRound(fanouts, 'nats', steady),
  ratio_fanout_vs_mqtt_by_round: byRound(fanouts, 'mqtt', steady),
  ratio_fanout_vs_nats_cold: median(byRound(fanouts, 'nats', cold)),
  qos1_messages_per_s: median(roundsOf(qos1Results, 'fluxar').map(qos1Rate)),
  ratio_qos1_vs_mqtt: median(byRound(qos1Results, 'mqtt', qos1Rate)),
  ratio_qos1_vs_jetstream: median(byRound(qos1Results, 'jetstream', qos1Rate)),
  ratio_qos1_vs_mqtt_by_round: byRound(qos1Results, 'mqtt', qos1Rate),
  ratio_qos1_vs_jetstream_by_round: byRound(qos1Results, 'jetstream', qos1Rate),
  p99_ms_at_half_max: median(roundsOf(fanouts, 'fluxar').map(p99Ms)),
  p99_ms_at_half_max_by_round: roundsOf(fanouts, 'fluxar').map(p99Ms),
  p99_ms_at_half_max_nats: median(roundsOf(fanouts, 'nats').map(p99Ms)),
  open_loop_rates_per_s: OPEN_RATES,
  open_loop_p99_ms: openLoopP99,
  open_loop_p99_vs_nats: openP99Ratio('nats'),
  open_loop_p99_vs_mqtt: openP99Ratio('mqtt'),
  targets: { ratio_fanout_vs_nats: 1, ratio_fanout_vs_mqtt: 3, ratio_qos1_vs_mqtt: 2, p99_ms_at_half_max: 5 },
  fanouts,
  qos1: qos1Results,
};
printTable(
  fanouts.map((f) => ({
    round: String(f.round + 1),
    system: f.system,
    'cold/s': f.cold_deliveries_per_s,
    'deliveries/s': f.deliveries_per_s,
    delivered: `${f.delivered}/${f.expected}`,
    'at msgs/s': f.latency_rate_per_s,
    'p50 ms': f.latency.p50_us / 1000,
    'p99 ms': f.latency.p99_us / 1000,
  })),
);
printTable(
  fanouts.flatMap((f) =>
    f.open_loop.map((o) => ({
      round: String(f.round + 1),
      system: f.system,
      'open loop msgs/s': o.rate_per_s,
      delivered: `${o.delivered}/${o.sent * SUBSCRIBERS}`,
      'p50 ms': o.latency.p50_us / 1000,
      'p99 ms': o.latency.p99_us / 1000,
      'max ms': o.latency.max_us / 1000,
      'send lag p99 ms': o.send_lag_p99_ms,
    })),
  ),
);
printTable(qos1Results.map((q) => ({ round: String(q.round + 1), system: q.system, 'QoS 1 msgs/s': q.messages_per_s })));
const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
console.log(
  `\nfan-out (median of ${ROUNDS} rounds): ${summary.ratio_fanout_vs_nats}x NATS (${met(summary.ratio_fanout_vs_nats >= 1)}; rounds ${summary.ratio_fanout_vs_nats_by_round.join(', ')}; cold ${summary.ratio_fanout_vs_nats_cold}x), ${summary.ratio_fanout_vs_mqtt}x MQTT (${met(summary.ratio_fanout_vs_mqtt >= 3)}); QoS 1 (median of ${ROUNDS} rounds): ${summary.ratio_qos1_vs_mqtt}x MQTT (${met(summary.ratio_qos1_vs_mqtt >= 2)}; rounds ${summary.ratio_qos1_vs_mqtt_by_round.join(', ')}), ${summary.ratio_qos1_vs_jetstream}x JetStream; p99 at half max ${summary.p99_ms_at_half_max} ms (${met(summary.p99_ms_at_half_max <= 5)}; NATS ${summary.p99_ms_at_half_max_nats} ms at its own)`,
);
const openLine = (system: string) => OPEN_RATES.map((rate) => `${openLoopP99[system]![rate]} ms at ${rate}/s`).join(', ');
console.log(`open loop p99 (median of ${ROUNDS} rounds): FLUXAR ${openLine('fluxar')}; NATS ${openLine('nats')}; MQTT ${openLine('mqtt')}`);
console.log(`wrote ${writeResult('pubsub', summary)}`);
