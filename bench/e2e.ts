// End to end: a load generator in its own process calls the quickstart rack (FLUXAR over TCP,
// then the fraud-scorer Wasm gear, then the answer), and the same fraud check built the ways a
// user would build it without fluxrig. One run answers:
// - latency at fixed offered rates (10k, 25k, 50k calls/s), open loop;
// - capacity under the budget: the highest rate of a ladder whose p99 stays under 500 ms;
// - the maximum (closed loop, 512 calls in flight), with the generator's own CPU and the rack's
//   CPU per call on its main thread and its workers;
// - a CPU profile of the rack at its maximum, as a flame graph (bench/results/e2e-flame.html);
// - head to head, over ROUNDS rounds, each system started afresh and measured at its maximum in
//   turn: the rack with workers, the same rack with its gears on the main thread (the baseline of
//   the worker design), and the peers: a NATS micro service, a grpc-js service, Fastify with
//   piscina workers (HTTP/1.1 gets HTTP_CONNECTIONS connections: one call each). Every ratio is
//   the median of the rounds' own; the peers are also measured once at a common rate.
// On 2 cores the generator competes with what it measures; its CPU is reported.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import { NatsServerProcess } from '../test/harness/nats.js';
import { flameGraphPage } from './harness/flamegraph.js';
import { cliNodeArgs } from './harness/cli.js';
import type { LoadResult } from './harness/open-loop.js';
import { latencyReport } from './harness/report-html.js';
import { threadCpuSeconds } from './harness/threads.js';
import { formatNumber, median, medianBy, printTable, writeResult } from './harness/report.js';

const root = new URL('../../', import.meta.url).pathname;
const loadScript = join(root, 'dist/bench/fixtures/e2e-load.js');
const peerScript = join(root, 'dist/bench/fixtures/fraud-service.js');
const DEFAULT_RATE = 50_000;
const P99_BUDGET_MS = 500;
const FIXED_RATES = (process.env.BENCH_RATES ?? '10000,25000,50000').split(',').map(Number);
/** The capacity ladder: each rate holds if p99 < budget, no errors, and 95% of it is answered. */
const LADDER = [10_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 75_000, 100_000, 125_000, 150_000];
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 5000);
const CONNECTIONS = 8;
/** A fresh rack is slower for its first seconds (JIT, pools): it is warmed before measuring. */
const RACK_WARMUP = { rate: 10_000, ms: 3000 };
/** The rate every peer is measured at, for latencies side by side: one all of them sustain. */
const COMMON_RATE = 1_000;
/**
 * HTTP/1.1 has one call in flight per connection, so its client gets as many connections as the
 * others have calls in flight at their maximum (about); FLUXAR and gRPC multiplex over CONNECTIONS.
 */
const HTTP_CONNECTIONS = 256;
const PROFILE_MS = 3000;
/**
 * Rounds of the head-to-head maxima. One maximum of each system, minutes apart, is one draw of a
 * shared 2-core machine whose maxima move by 25 % between minutes: in turns, each round starting
 * every system afresh, the rounds' ratios say how far the draw decides the result.
 */
const ROUNDS = Math.max(1, Number(process.env.BENCH_E2E_ROUNDS ?? 3));
/** The peers: how each is served, and how the generator calls it. */
const PEERS = [
  { name: 'nats_service', kind: 'nats', load: 'nats' },
  { name: 'grpc', kind: 'grpc', load: 'grpc' },
  { name: 'fastify_piscina', kind: 'fastify', load: 'http' },
] as const;
type PeerName = (typeof PEERS)[number]['name'];
/**
 * The systems of a round, in the order of even rounds; odd rounds run them backwards. Each system
 * then meets the same neighbours in both directions: the two racks stay side by side, and the
 * rack with workers next to the NATS service, the closest peer.
 */
const HEAD_TO_HEAD = ['mainthread', 'workers', ...PEERS.map((p) => p.name)] as const;
const execFileAsync = promisify(execFile);

// The quickstart scenario on a port of its own, so a rack already running on 7420 is no obstacle.
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-e2e-'));
const scenario = parse(readFileSync(join(root, 'scenarios/quickstart.yaml'), 'utf8'));
scenario.gears[0].config.listen = ['tcp://127.0.0.1:0'];
for (const gear of scenario.gears) if (gear.type === 'wasm') gear.config.module = join(root, 'scenarios', gear.config.module);
const scenarioFile = join(dir, 'quickstart.yaml');
writeFileSync(scenarioFile, stringify(scenario));

interface Served {
  child: ChildProcess;
  url: string;
}

async function startRack(workers: number, profileDir?: string): Promise<Served> {
  const args = [
    ...cliNodeArgs(...(profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`])),
    'rack',
    '--scenario',
    scenarioFile,
    '--config',
    join(root, 'scenarios/quickstart.rack.yaml'),
    '--workers',
    String(workers),
    '--log-level',
    'info',
  ];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  for await (const line of createInterface({ input: child.stdout! })) {
    const entry = JSON.parse(line) as { msg?: string; listening?: string[] };
    if (entry.msg === 'rack started') {
      child.stdout!.resume();
      return { child, url: entry.listening![0]! };
    }
  }
  throw new Error('the rack exited before it started');
}

async function startPeer(kind: 'nats' | 'grpc' | 'fastify', natsUrl?: string): Promise<Served> {
  const child = spawn(process.execPath, [peerScript, kind, ...(natsUrl === undefined ? [] : [natsUrl])], { stdio: ['pipe', 'pipe', 'inherit'] });
  for await (const line of createInterface({ input: child.stdout! })) {
    child.stdout!.resume();
    return { child, url: (JSON.parse(line) as { url: string }).url };
  }
  throw new Error(`the ${kind} peer exited before it served`);
}

async function stop(served: Served, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (served.child.exitCode !== null) return;
  const exited = once(served.child, 'exit');
  if (served.child.stdin !== null) served.child.stdin.end();
  else served.child.kill(signal);
  await exited;
}

async function load(kind: string, url: string, rate: number | 'max', durationMs = DURATION_MS): Promise<LoadResult> {
  const connections = kind === 'http' ? HTTP_CONNECTIONS : CONNECTIONS;
  const { stdout } = await execFileAsync(process.execPath, [loadScript, kind, url, String(connections), String(rate), String(durationMs)], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as LoadResult;
}

const holds = (r: LoadResult) => r.p99_ms < P99_BUDGET_MS && r.errors === 0 && r.unfinished === 0 && r.calls_per_s >= 0.95 * (r.rate as number);

/** The rack's CPU during the middle of a maximum run, by thread kind, in cores. */
async function maxWithCpu(url: string, pid: number, workers: number): Promise<{ result: LoadResult; cores: { main: number; workers: number; other: number } }> {
  const running = load('fluxar', url, 'max');
  const warmup = Math.min(1000, DURATION_MS / 4);
  await sleep(warmup + 300);
  const before = threadCpuSeconds(pid);
  const from = performance.now();
  await sleep(DURATION_MS - 600);
  const after = threadCpuSeconds(pid);
  const seconds = (performance.now() - from) / 1000;
  const used = [...after].map(([tid, t]) => ({ tid, cores: (t - (before.get(tid) ?? t)) / seconds }));
  const main = used.find((u) => u.tid === pid)?.cores ?? 0;
  // The worker threads are the busiest after the main thread; the rest are V8 and libuv helpers.
  const others = used.filter((u) => u.tid !== pid).sort((a, b) => b.cores - a.cores);
  const workerCores = others.slice(0, workers).reduce((s, u) => s + u.cores, 0);
  const other = others.slice(workers).reduce((s, u) => s + u.cores, 0);
  const round = (v: number) => Math.round(v * 100) / 100;
  return { result: await running, cores: { main: round(main), workers: round(workerCores), other: round(other) } };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const workers = Number(process.env.BENCH_WORKERS ?? 0) || availableParallelism();
const rackRuns: LoadResult[] = [];
const ladder: LoadResult[] = [];
let rackMax: LoadResult;
let rackAtCommon: LoadResult;
let rackCores: { main: number; workers: number; other: number };
let mainAtFirst: LoadResult;
/** The maxima of the head-to-head rounds, by system, in round order: index i of each is round i. */
const headToHead = Object.fromEntries(HEAD_TO_HEAD.map((system) => [system, [] as LoadResult[]])) as Record<(typeof HEAD_TO_HEAD)[number], LoadResult[]>;
/** Each peer at the common rate, measured in the first round. */
const peersAtCommon = {} as Record<PeerName, LoadResult>;
let flameFile = '';
try {
  // The rack with its workers: warm-up, the fixed rates and the ladder, then the maximum.
  const rack = await startRack(workers);
  try {
    await load('fluxar', rack.url, RACK_WARMUP.rate, RACK_WARMUP.ms);
    rackAtCommon = await load('fluxar', rack.url, COMMON_RATE);
    let failedAbove = Number.POSITIVE_INFINITY;
    for (const rate of [...new Set([...FIXED_RATES, ...LADDER])].sort((a, b) => a - b)) {
      const fixed = FIXED_RATES.includes(rate);
      if (!fixed && rate > failedAbove) continue;
      const r = await load('fluxar', rack.url, rate);
      if (fixed) rackRuns.push(r);
      if (LADDER.includes(rate)) ladder.push(r);
      if (!holds(r)) failedAbove = Math.min(failedAbove, rate);
    }
    ({ result: rackMax, cores: rackCores } = await maxWithCpu(rack.url, rack.child.pid!, workers));
  } finally {
    await stop(rack);
  }

  // The same at its maximum under the CPU profiler, for the flame graph.
  const profileDir = join(dir, 'profile');
  const profiled = await startRack(workers, profileDir);
  try {
    await load('fluxar', profiled.url, RACK_WARMUP.rate, 1000);
    await load('fluxar', profiled.url, 'max', PROFILE_MS);
  } finally {
    await stop(profiled, 'SIGINT');
  }
  // Node names each file CPU.<date>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main one.
  const files = readdirSync(profileDir).sort((a, b) => Number(a.split('.')[3]) - Number(b.split('.')[3]));
  const profiles = files.map((f) => ({
    heading: Number(f.split('.')[3]) === 0 ? 'main thread' : `worker ${Number(f.split('.')[3]) - 1}`,
    profile: JSON.parse(readFileSync(join(profileDir, f), 'utf8')),
  }));
  flameFile = join(root, 'bench/results/e2e-flame.html');
  writeFileSync(
    flameFile,
    flameGraphPage('fluxrig rack at its maximum: where each thread spends its time', profiles, [
      `quickstart rack, ${workers} workers, driven closed-loop (512 calls in flight over ${CONNECTIONS} connections) for ${PROFILE_MS / 1000} s`,
      'profiled with node --cpu-prof (the profiler costs a few percent); wasm-function[N] frames (blue) are the fraud-scorer guest',
    ]),
  );

  // Head to head: every system started afresh in each round, warmed, then driven at its maximum.
  const nats = await NatsServerProcess.start({ jetstream: false });
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const system of round % 2 === 0 ? HEAD_TO_HEAD : [...HEAD_TO_HEAD].reverse()) {
        const peer = PEERS.find((p) => p.name === system);
        if (peer === undefined) {
          const r = await startRack(system === 'workers' ? workers : 0);
          try {
            await load('fluxar', r.url, RACK_WARMUP.rate, RACK_WARMUP.ms);
            if (system === 'mainthread' && round === 0) mainAtFirst = await load('fluxar', r.url, FIXED_RATES[0]!);
            headToHead[system].push(await load('fluxar', r.url, 'max'));
          } finally {
            await stop(r);
          }
          continue;
        }
        const served = await startPeer(peer.kind, peer.kind === 'nats' ? nats.url : undefined);
        try {
          // Warmed closed-loop: an open-loop warm-up past a peer's capacity would leave it a backlog.
          await load(peer.load, served.url, 'max', 1000);
          if (round === 0) peersAtCommon[peer.name] = await load(peer.load, served.url, COMMON_RATE);
          headToHead[peer.name].push(await load(peer.load, served.url, 'max'));
        } finally {
          await stop(served);
        }
      }
    }
  } finally {
    await nats.stop();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const atDefault = rackRuns.find((r) => r.rate === DEFAULT_RATE);
let capacity = 0;
for (const r of ladder) {
  if (!holds(r)) break;
  capacity = r.rate as number;
}
const ratio = (a: number, b: number) => (b === 0 ? null : Math.round((a / b) * 10) / 10);
/** The rack with workers against `system`, round by round (both maxima of the same round). */
const workersVsByRound = (system: (typeof HEAD_TO_HEAD)[number]) =>
  headToHead.workers.map((r, i) => ratio(r.calls_per_s, headToHead[system][i]!.calls_per_s) ?? 0);
const workersVsMainByRound = workersVsByRound('mainthread');
const peerRatiosByRound = Object.fromEntries(PEERS.map((p) => [p.name, workersVsByRound(p.name)])) as Record<PeerName, number[]>;
const mainMaxCallsPerS = median(headToHead.mainthread.map((r) => r.calls_per_s));
/** Each peer at the common rate, and at the maximum of its median round (as `median` picks it). */
const peers = Object.fromEntries(
  PEERS.map((p) => [p.name, { common: peersAtCommon[p.name], max: medianBy(headToHead[p.name], (r) => r.calls_per_s) }]),
) as Record<PeerName, { common: LoadResult; max: LoadResult }>;
const perCallUs = (cores: number) => Math.round(((cores * 1e6) / Math.max(1, rackMax!.calls_per_s)) * 10) / 10;
const summary = {
  connections: CONNECTIONS,
  duration_ms: DURATION_MS,
  workers,
  default_rate: DEFAULT_RATE,
  p99_budget_ms: P99_BUDGET_MS,
  p99_ms_at_10k: rackRuns.find((r) => r.rate === 10_000)?.p99_ms ?? null,
  p99_ms_at_25k: rackRuns.find((r) => r.rate === 25_000)?.p99_ms ?? null,
  p99_ms_at_50k: atDefault?.p99_ms ?? null,
  // How late the generator itself sent at 50k/s (p99): latency counts from the due time.
  generator_send_lag_p99_ms_at_50k: atDefault?.send_lag_p99_ms ?? null,
  capacity_under_budget_calls_per_s: capacity,
  max_calls_per_s: rackMax!.calls_per_s,
  // The head-to-head rounds: medians, and each round's own.
  mainthread_max_calls_per_s: mainMaxCallsPerS,
  workers_vs_mainthread: median(workersVsMainByRound),
  workers_vs_mainthread_by_round: workersVsMainByRound,
  head_to_head_max_calls_per_s: Object.fromEntries(HEAD_TO_HEAD.map((system) => [system, headToHead[system].map((r) => r.calls_per_s)])),
  // The rack with workers against each peer, both fresh in the same round: medians, and each round's own.
  ratio_vs_nats_service: median(peerRatiosByRound.nats_service),
  ratio_vs_grpc: median(peerRatiosByRound.grpc),
  ratio_vs_fastify_piscina: median(peerRatiosByRound.fastify_piscina),
  ratio_vs_nats_service_by_round: peerRatiosByRound.nats_service,
  ratio_vs_grpc_by_round: peerRatiosByRound.grpc,
  ratio_vs_fastify_piscina_by_round: peerRatiosByRound.fastify_piscina,
  // The same ratios with the maximum read after the ladder, as this benchmark reported them before the rounds.
  ratio_after_ladder_vs_peers: Object.fromEntries(PEERS.map((p) => [p.name, ratio(rackMax!.calls_per_s, peers[p.name].max.calls_per_s)])),
  // Share of the machine's cores the generator used at the rack's maximum.
  generator_cpu_share: Math.round((rackMax!.generator_cores / availableParallelism()) * 100) / 100,
  // CPU per call at the maximum, in microseconds, by where it was spent (/proc thread times).
  cpu_per_call_us: {
    rack_main_thread: perCallUs(rackCores!.main),
    rack_workers: perCallUs(rackCores!.workers),
    rack_other_threads: perCallUs(rackCores!.other),
    generator: perCallUs(rackMax!.generator_cores),
  },
  rack_cores_at_max: rackCores!,
  runs: { rack: rackRuns, ladder, rack_max: rackMax!, rack_at_common_rate: rackAtCommon!, mainthread: [mainAtFirst!], head_to_head: headToHead },
  peers,
  flame_graph: 'bench/results/e2e-flame.html',
};

const row = (mode: string, r: LoadResult) => ({
  system: mode,
  offered: r.rate === 'max' ? 'max' : r.rate,
  'calls/s': r.calls_per_s,
  'p50 ms': r.p50_ms,
  'p99 ms': r.p99_ms,
  'p99.9 ms': r.p999_ms,
  errors: r.errors + r.unfinished,
  'generator cores': r.generator_cores,
  'send lag p99 ms': r.send_lag_p99_ms ?? '',
});
printTable([
  ...ladder.filter((r) => !FIXED_RATES.includes(r.rate as number)).map((r) => row('rack (ladder)', r)),
  ...rackRuns.map((r) => row('rack', r)),
  row('rack', rackMax!),
  row('rack, main thread', mainAtFirst!),
  ...headToHead.workers.flatMap((_, i) =>
    HEAD_TO_HEAD.map((system) =>
      row(`round ${i + 1}: ${system === 'workers' ? 'rack' : system === 'mainthread' ? 'rack, main thread' : system}`, headToHead[system][i]!),
    ),
  ),
  row('rack', rackAtCommon!),
  ...Object.entries(peers).map(([name, p]) => row(name, p.common)),
]);
console.log(
  `\nrack at its maximum: ${formatNumber(rackMax!.calls_per_s)} calls/s; CPU per call ${summary.cpu_per_call_us.rack_main_thread} µs main thread + ${summary.cpu_per_call_us.rack_workers} µs workers + ${summary.cpu_per_call_us.rack_other_threads} µs other rack threads; generator ${summary.cpu_per_call_us.generator} µs`,
);
console.log(
  `max calls/s, the rack with workers against each system fresh in the same round (median of ${ROUNDS} rounds; the rounds): main thread ${summary.workers_vs_mainthread}x (${workersVsMainByRound.join(', ')}); NATS service ${summary.ratio_vs_nats_service}x (${peerRatiosByRound.nats_service.join(', ')}), grpc-js ${summary.ratio_vs_grpc}x (${peerRatiosByRound.grpc.join(', ')}), Fastify + piscina ${summary.ratio_vs_fastify_piscina}x (${peerRatiosByRound.fastify_piscina.join(', ')})`,
);
console.log(`wrote ${writeResult('e2e', summary)}`);
const htmlFile = join(root, 'bench/results/e2e.html');
writeFileSync(
  htmlFile,
  latencyReport(
    'fluxrig end to end: quickstart rack, FLUXAR over TCP to the fraud-scorer Wasm gear',
    [
      {
        heading: 'the rack at fixed offered rates',
        series: [
          ...rackRuns.map((r) => ({ label: `workers, ${r.rate}/s offered`, points: r.percentiles })),
          { label: `main thread, ${mainAtFirst!.rate}/s offered`, points: mainAtFirst!.percentiles },
        ],
      },
      {
        heading: `the rack and its peers at ${COMMON_RATE}/s offered`,
        series: [
          { label: `rack, ${COMMON_RATE}/s`, points: rackAtCommon!.percentiles },
          ...Object.entries(peers).map(([name, p]) => ({ label: `${name}, ${COMMON_RATE}/s`, points: p.common.percentiles })),
        ],
      },
    ],
    [
      `open loop, latency from each call's scheduled send time; ${CONNECTIONS} connections; ${DURATION_MS / 1000} s per rate after a warm-up`,
      `capacity under the ${P99_BUDGET_MS} ms budget: ${formatNumber(capacity)} calls/s; maximum: workers ${formatNumber(rackMax!.calls_per_s)} calls/s, main thread ${formatNumber(mainMaxCallsPerS)} calls/s (median of ${ROUNDS} rounds)`,
      `peers' maximum (median of ${ROUNDS} rounds): ${Object.entries(peers)
        .map(([n, p]) => `${n} ${formatNumber(p.max.calls_per_s)} calls/s`)
        .join(', ')}`,
      "one 2-core machine: the load generator, the rack's main thread and its workers share the cores",
    ],
  ),
);
console.log(`wrote ${htmlFile}`);
console.log(`wrote ${flameFile}`);

// The verdict, in one line a newcomer can act on.
if (atDefault === undefined) {
  console.log(`NOTE: ${DEFAULT_RATE}/s was not among BENCH_RATES, so the ${P99_BUDGET_MS} ms check did not run`);
} else if (atDefault.p99_ms < P99_BUDGET_MS && atDefault.errors + atDefault.unfinished === 0) {
  console.log(
    `PASS: p99 ${atDefault.p99_ms} ms at ${formatNumber(DEFAULT_RATE)} calls/s offered (budget ${P99_BUDGET_MS} ms); the rack holds the budget up to ${formatNumber(capacity)} calls/s on this machine`,
  );
} else {
  console.error(
    `FAIL: at ${formatNumber(DEFAULT_RATE)} calls/s offered the rack answered ${formatNumber(atDefault.calls_per_s)}/s with p99 ${formatNumber(atDefault.p99_ms)} ms (budget ${P99_BUDGET_MS} ms) and ${atDefault.errors + atDefault.unfinished} errors; on this machine it holds the budget up to ${formatNumber(capacity)} calls/s`,
  );
  process.exitCode = 1;
}
