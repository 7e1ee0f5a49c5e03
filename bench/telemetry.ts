// Business traffic under a telemetry flood. One rack, on the bus with a Mixer, serves calls at a
// fixed rate (open loop, from a generator process) through the quickstart's fraud gear, in
// three conditions, interleaved over ROUNDS rounds:
// - quiet: no gear logs (the rack still sends its metrics and events);
// - flood: a generator gear feeds a Wasm gear that logs FLOOD_LINES_PER_S warn lines a second,
//   on the rack's workers, beside the business traffic;
// - cut: the same flood with nats-server stopped (the uplink away: telemetry queues, then drops).
// The rack's local log goes to a file, as a service's would. p99 of each condition is the median
// over the rounds; flood_vs_quiet is the goal (<= 1.2), and every p99 must stay under the budget.
// At 10k/s a round's p99 is set by a few stalls of the shared 2-core machine, and it moves by
// +-30 % between rounds of the same condition: five rounds keep one bad round from deciding the
// ratio. Each round's own flood/quiet ratio is reported beside it, so the spread is in the JSON.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect as natsConnect } from '@nats-io/transport-node';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { Mixer } from '../src/mixer/mixer.js';
import type { TelemetryCounters } from '../src/telemetry/shapes.js';
import { NatsServerProcess } from '../test/harness/nats.js';
import { freePort } from '../test/harness/ports.js';
import { cliNodeArgs } from './harness/cli.js';
import type { LoadResult } from './harness/open-loop.js';
import { formatNumber, median, printTable, writeResult } from './harness/report.js';

const root = new URL('../../', import.meta.url).pathname;
const loadScript = join(root, 'dist/bench/fixtures/e2e-load.js');
const RATE = Number(process.env.BENCH_TELEMETRY_RATE ?? 10_000);
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 5000);
const ROUNDS = Number(process.env.BENCH_TELEMETRY_ROUNDS ?? 5);
const FLOOD_LINES_PER_S = 50_000;
/** The flood: this many messages a second into the chatty gear, each logging the rest. */
const FLOOD_MESSAGES_PER_S = 500;
const P99_BUDGET_MS = 500;
const GOAL_RATIO = 1.2;
const CONNECTIONS = 8;
const RACK = 'bench';
/** The rack's local log level: info, as a service runs; the flood's warn lines are written locally too. */
const LOCAL_LEVEL = process.env.BENCH_TELEMETRY_LOCAL_LEVEL ?? 'info';
const execFileAsync = promisify(execFile);
const workers = Number(process.env.BENCH_WORKERS ?? 0) || availableParallelism();

const dir = mkdtempSync(join(tmpdir(), 'fluxrig-telemetry-bench-'));

function scenario(port: number, flood: boolean): string {
  const gears: unknown[] = [
    { name: 'api', type: 'fluxar', config: { listen: [`tcp://127.0.0.1:${port}`] } },
    { name: 'fraud', type: 'wasm', config: { module: join(root, 'wasm-gears/build/fraud-scorer.wasm'), allow_kv: true, timeout_ms: 100 } },
  ];
  const wires: unknown[] = [
    { from: 'api.out', to: 'fraud.in' },
    { from: 'fraud.out', to: 'api.in' },
    { from: 'fraud.error', to: 'api.in' },
  ];
  if (flood) {
    gears.push(
      { name: 'flood', type: 'generator', config: { rate_per_s: FLOOD_MESSAGES_PER_S, data: { log_lines: FLOOD_LINES_PER_S / FLOOD_MESSAGES_PER_S } } },
      // A gear author who lifted the per-gear log limit: every line reaches the rack's logger.
      { name: 'chatty', type: 'wasm', config: { module: join(root, 'dist/test-gears/chatty.wasm'), log_rate_per_s: 10_000_000 } },
    );
    wires.push({ from: 'flood.out', to: 'chatty.in' });
  }
  return stringify({ meta: { name: flood ? 'flood' : 'quiet', version: '1' }, racks: [{ name: RACK }], gears, wires });
}

/** After a reload the new gears are cold (JIT): the condition is warmed this long before it is measured. */
const SETTLE_MS = 2000;

async function load(url: string, durationMs = DURATION_MS): Promise<LoadResult> {
  const { stdout } = await execFileAsync(process.execPath, [loadScript, 'fluxar', url, String(CONNECTIONS), String(RATE), String(durationMs)], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as LoadResult;
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const nats = await NatsServerProcess.start();
const nc = await natsConnect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
const mixer = new Mixer({ nats: nc, logger: pino({ level: 'error' }), autoAdopt: true });
await mixer.start();
const port = await freePort();
const quietFile = join(dir, 'quiet.yaml');
writeFileSync(quietFile, scenario(port, false));
const rackLog = join(dir, 'rack.log');
const rack: ChildProcess = spawn(
  process.execPath,
  [
    ...cliNodeArgs(),
    'rack',
    '--mixer',
    nats.url,
    '--name',
    RACK,
    '--scenario',
    quietFile,
    '--config',
    join(root, 'scenarios/quickstart.rack.yaml'),
    '--workers',
    String(workers),
    '--state-dir',
    join(dir, 'state'),
    '--heartbeat-ms',
    '1000',
    '--log-level',
    LOCAL_LEVEL,
  ],
  { cwd: root, stdio: ['ignore', openSync(rackLog, 'a'), 'inherit'] },
);
const url = `tcp://127.0.0.1:${port}`;
const counters = (): TelemetryCounters | undefined => mixer.telemetry.metrics().get(RACK)?.metrics.telemetry;

async function apply(flood: boolean): Promise<void> {
  const name = flood ? 'flood' : 'quiet';
  if (mixer.fleet.find((r) => r.name === RACK)?.applied?.scenario === name) return;
  await mixer.push(scenario(port, flood), `${name}.yaml`);
  await until(async () => (await mixer.rollout(name)).every((r) => r.state === 'applied'), `the ${name} scenario applied`);
  await load(url, SETTLE_MS);
}

const results: Record<'quiet' | 'flood' | 'cut', LoadResult[]> = { quiet: [], flood: [], cut: [] };
let floodPublished = 0;
let exitCode = 0;
try {
  await until(() => mixer.fleet.some((r) => r.name === RACK && r.status === 'active' && r.online), 'the rack to join the Mixer');
  await load(url); // warm-up: JIT, pools
  for (let round = 0; round < ROUNDS; round++) {
    await apply(false);
    results.quiet.push(await load(url));
    await apply(true);
    const before = counters()?.published.log ?? 0;
    results.flood.push(await load(url));
    await until(() => (counters()?.published.log ?? 0) > before, 'metrics after the flood');
    floodPublished += (counters()?.published.log ?? 0) - before;
    await nats.down();
    await load(url, SETTLE_MS);
    results.cut.push(await load(url));
    await nats.up();
    await until(() => mixer.fleet.some((r) => r.name === RACK && r.online) && !nc.isClosed(), 'the rack back on the bus');
  }
  await apply(false);
  // The rack's next metrics after the cuts carry what it dropped meanwhile.
  await until(() => (counters()?.dropped.log ?? 0) > 0, 'the drop counter at the Mixer', 15_000).catch(() => {});
} finally {
  rack.kill('SIGTERM');
  await once(rack, 'exit');
  await mixer.close();
  await nc.close();
  await nats.stop();
  // The flood's local log is hundreds of MB: it is not left behind.
  rmSync(dir, { recursive: true, force: true });
}

const p99 = (k: keyof typeof results) => median(results[k].map((r) => r.p99_ms));
const p50 = (k: keyof typeof results) => median(results[k].map((r) => r.p50_ms));
// Latency counts from each call's due time, so a stall of the generator itself (descheduled on
// the shared cores) lands in the p99 too: its own send lag, beside each condition's p99.
const sendLag = (k: keyof typeof results) => median(results[k].map((r) => r.send_lag_p99_ms ?? 0));
const final = counters();
const summary = {
  rate: RATE,
  duration_ms: DURATION_MS,
  rounds: ROUNDS,
  workers,
  flood_lines_per_s: FLOOD_LINES_PER_S,
  p50_ms_quiet: p50('quiet'),
  p99_ms_quiet: p99('quiet'),
  p50_ms_flood: p50('flood'),
  p99_ms_flood: p99('flood'),
  p50_ms_cut: p50('cut'),
  p99_ms_cut: p99('cut'),
  flood_vs_quiet: Math.round((p99('flood') / p99('quiet')) * 100) / 100,
  cut_vs_quiet: Math.round((p99('cut') / p99('quiet')) * 100) / 100,
  p99_ms_runs: Object.fromEntries(Object.entries(results).map(([k, rs]) => [k, rs.map((r) => r.p99_ms)])),
  flood_vs_quiet_by_round: results.flood.map((r, i) => Math.round((r.p99_ms / results.quiet[i]!.p99_ms) * 100) / 100),
  send_lag_p99_ms: { quiet: sendLag('quiet'), flood: sendLag('flood'), cut: sendLag('cut') },
  telemetry_published_during_flood_per_s: Math.round(floodPublished / ((ROUNDS * DURATION_MS) / 1000)),
  dropped_counted: final?.dropped.log ?? 0,
  telemetry: final,
  generator_cores: median(results.quiet.map((r) => r.generator_cores)),
  note: 'the load generator, the Mixer and nats-server share the machine with the rack',
};
printTable(
  (['quiet', 'flood', 'cut'] as const).map((k) => ({
    condition: k,
    'p50 ms': p50(k),
    'p99 ms': p99(k),
    'p99 runs': results[k].map((r) => r.p99_ms).join(' / '),
    'calls/s': formatNumber(median(results[k].map((r) => r.calls_per_s))),
    'send lag p99 ms': sendLag(k),
    errors: results[k].reduce((s, r) => s + r.errors + r.unfinished, 0),
  })),
);
console.log(
  `flood_vs_quiet ${summary.flood_vs_quiet} (goal <= ${GOAL_RATIO}: ${summary.flood_vs_quiet <= GOAL_RATIO ? 'met' : 'MISSED'}; by round ${summary.flood_vs_quiet_by_round.join(' / ')}), cut_vs_quiet ${summary.cut_vs_quiet}, telemetry published during the flood ${summary.telemetry_published_during_flood_per_s}/s, dropped and counted ${summary.dropped_counted}`,
);
const file = writeResult('telemetry', summary);
console.log(`results: ${file}`);
for (const k of ['quiet', 'flood', 'cut'] as const)
  if (p99(k) >= P99_BUDGET_MS || results[k].some((r) => r.errors + r.unfinished > 0)) {
    console.error(`FAIL: ${k} p99 ${p99(k)} ms (budget ${P99_BUDGET_MS} ms) or calls lost`);
    exitCode = 1;
  }
if (summary.dropped_counted === 0) {
  console.error('FAIL: the flood with the uplink cut dropped nothing that was counted');
  exitCode = 1;
}
process.exit(exitCode);
