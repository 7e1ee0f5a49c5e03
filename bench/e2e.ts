// End to end: a load generator in its own process calls the quickstart rack (FLUXAR over TCP,
// then the fraud-scorer Wasm gear, then the answer) open-loop at fixed offered rates, then as
// fast as it can; the same scenario with the gears on the main thread (no workers) is the
// baseline. 2 cores: the generator competes with the rack it measures.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { availableParallelism } from 'node:os';
import { parse, stringify } from 'yaml';
import { latencyReport } from './harness/report-html.js';
import { printTable, writeResult } from './harness/report.js';

const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const loadScript = join(root, 'dist/bench/fixtures/e2e-load.js');
const RATES = (process.env.BENCH_RATES ?? '10000,25000,50000').split(',').map(Number);
const DEFAULT_RATE = 50_000;
const P99_BUDGET_MS = 500;
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 5000);
const CONNECTIONS = 8;

interface LoadResult {
  rate: number | 'max';
  calls_per_s: number;
  completed: number;
  errors: number;
  rejections: number;
  unfinished: number;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  percentiles: Array<[number, number]>;
  /** CPU the load generator itself used over the measured window, in cores. */
  generator_cores: number;
}

// The quickstart scenario on a port of its own, so a rack already running on 7420 is no obstacle.
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-e2e-'));
const scenario = parse(readFileSync(join(root, 'scenarios/quickstart.yaml'), 'utf8'));
scenario.gears[0].config.listen = ['tcp://127.0.0.1:0'];
for (const gear of scenario.gears) if (gear.type === 'wasm') gear.config.module = join(root, 'scenarios', gear.config.module);
const scenarioFile = join(dir, 'quickstart.yaml');
writeFileSync(scenarioFile, stringify(scenario));

async function startRack(workers: number): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(
    process.execPath,
    [cli, 'rack', '--scenario', scenarioFile, '--config', join(root, 'scenarios/quickstart.rack.yaml'), '--workers', String(workers), '--log-level', 'info'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  for await (const line of createInterface({ input: child.stdout! })) {
    const entry = JSON.parse(line) as { msg?: string; listening?: string[] };
    if (entry.msg === 'rack started') {
      child.stdout!.resume();
      return { child, url: entry.listening![0]! };
    }
  }
  throw new Error('the rack exited before it started');
}

async function stopRack(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  if (child.exitCode === null) await once(child, 'exit');
}

function load(url: string, rate: number | 'max'): LoadResult {
  const out = execFileSync(process.execPath, [loadScript, url, String(CONNECTIONS), String(rate), String(DURATION_MS)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').at(-1)!) as LoadResult;
}

const runs: Record<string, LoadResult[]> = { workers: [], mainthread: [] };
try {
  const rack = await startRack(Number(process.env.BENCH_WORKERS ?? 0) || (await import('node:os')).availableParallelism());
  try {
    for (const rate of RATES) runs.workers!.push(load(rack.url, rate));
    runs.workers!.push(load(rack.url, 'max'));
  } finally {
    await stopRack(rack.child);
  }
  const baseline = await startRack(0);
  try {
    runs.mainthread!.push(load(baseline.url, RATES[0]!));
    runs.mainthread!.push(load(baseline.url, 'max'));
  } finally {
    await stopRack(baseline.child);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const atDefault = runs.workers!.find((r) => r.rate === DEFAULT_RATE);
const maxWorkers = runs.workers!.find((r) => r.rate === 'max')!.calls_per_s;
const maxMain = runs.mainthread!.find((r) => r.rate === 'max')!.calls_per_s;
const summary = {
  connections: CONNECTIONS,
  duration_ms: DURATION_MS,
  default_rate: DEFAULT_RATE,
  p99_ms_at_50k: atDefault?.p99_ms ?? null,
  max_calls_per_s: maxWorkers,
  mainthread_max_calls_per_s: maxMain,
  workers_vs_mainthread: Math.round((maxWorkers / maxMain) * 100) / 100,
  // Share of the machine's cores the generator used at the workers' maximum: load generation
  // competes with the rack on this 2-core machine.
  generator_cpu_share: Math.round((runs.workers!.find((r) => r.rate === 'max')!.generator_cores / availableParallelism()) * 100) / 100,
  runs,
};
const row = (mode: string, r: LoadResult) => ({
  mode,
  offered: r.rate === 'max' ? 'max' : r.rate,
  'calls/s': r.calls_per_s,
  'p50 ms': r.p50_ms,
  'p99 ms': r.p99_ms,
  'p99.9 ms': r.p999_ms,
  'max ms': r.max_ms,
  errors: r.errors + r.unfinished,
  'generator cores': r.generator_cores,
});
printTable([...runs.workers!.map((r) => row('workers', r)), ...runs.mainthread!.map((r) => row('main thread', r))]);
console.log(
  `\nworkers vs main thread (max calls/s): ${summary.workers_vs_mainthread}x; p99 at ${DEFAULT_RATE}/s offered: ${summary.p99_ms_at_50k} ms (budget ${P99_BUDGET_MS} ms)`,
);
console.log(`wrote ${writeResult('e2e', summary)}`);
const html = latencyReport(
  'fluxrig end to end: quickstart rack, FLUXAR over TCP to the fraud-scorer Wasm gear',
  [
    ...runs.workers!.filter((r) => r.rate !== 'max').map((r) => ({ label: `workers, ${r.rate}/s offered`, points: r.percentiles })),
    ...runs.mainthread!.filter((r) => r.rate !== 'max').map((r) => ({ label: `main thread, ${r.rate}/s offered`, points: r.percentiles })),
  ],
  [
    `open loop, latency from each call's scheduled send time; ${CONNECTIONS} connections; ${DURATION_MS / 1000} s per rate after a warm-up`,
    `maximum: workers ${maxWorkers} calls/s, main thread ${maxMain} calls/s (${summary.workers_vs_mainthread}x)`,
    "one 2-core machine: the load generator, the rack's main thread and its workers share the cores",
  ],
);
const htmlFile = join(root, 'bench/results/e2e.html');
writeFileSync(htmlFile, html);
console.log(`wrote ${htmlFile}`);
if (atDefault !== undefined && (atDefault.p99_ms >= P99_BUDGET_MS || atDefault.errors > 0)) {
  console.error(`FAIL: p99 ${atDefault.p99_ms} ms at ${DEFAULT_RATE}/s offered (budget ${P99_BUDGET_MS} ms), ${atDefault.errors} errors`);
  process.exitCode = 1;
}
