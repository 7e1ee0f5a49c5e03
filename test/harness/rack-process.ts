// A rack as users run it: the fluxrig CLI's executable in a child process (with the Node flags its
// first line names), so a test sees whether the process itself survives (exit code) and not just
// whether the library call returned.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { connect, type Peer } from '../../src/fluxar/mod.js';
import { until } from './wait.js';

const root = new URL('../../../', import.meta.url).pathname;
export const FRAUD_WASM = join(root, 'wasm-gears/build/fraud-scorer.wasm');

export interface RackProcess {
  /** The URLs it listens on, in the order of the scenario's listen list. */
  addresses: string[];
  /** Parsed JSON log lines so far. */
  lines: Array<Record<string, unknown>>;
  exitCode(): number | null;
  stop(): Promise<number | null>;
  child: ChildProcess;
}

/** The quickstart chain (fluxar -> fraud-scorer -> back) with the fluxar gear config given. */
export function quickstartScenario(fluxar: Record<string, unknown>): Record<string, unknown> {
  return {
    meta: { name: 'hostile', version: '1' },
    gears: [
      { name: 'api', type: 'fluxar', config: fluxar },
      { name: 'fraud', type: 'wasm', config: { module: FRAUD_WASM, allow_kv: true } },
    ],
    wires: [
      { from: 'api.out', to: 'fraud.in' },
      { from: 'fraud.out', to: 'api.in' },
      { from: 'fraud.error', to: 'api.in' },
    ],
  };
}

/** `config`: more sections of the rack config (nats, telemetry, ...). */
export async function startRackProcess(
  scenario: Record<string, unknown>,
  rack: Record<string, unknown> = {},
  config: Record<string, unknown> = {},
): Promise<RackProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'fluxrig-rackproc-'));
  writeFileSync(join(dir, 'scenario.yaml'), stringify(scenario));
  writeFileSync(
    join(dir, 'rack.yaml'),
    stringify({ rack: { scenario: join(dir, 'scenario.yaml'), workers: 2, ...rack }, log: { level: 'info' }, kv: { 'fraud/blocklist': 'm-666' }, ...config }),
  );
  // The rack reads FLUXRIG_<SECTION>_<KEY> settings: none from the test's own environment.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FLUXRIG_')));
  const child = spawn(join(root, 'dist/src/cli/main.js'), ['rack', '--config', join(dir, 'rack.yaml')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  const lines: Array<Record<string, unknown>> = [];
  let stderr = '';
  let pending = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const parts = pending.split('\n');
    pending = parts.pop()!;
    for (const line of parts) {
      try {
        lines.push(JSON.parse(line));
      } catch {
        lines.push({ msg: line });
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let code: number | null = null;
  let exited = false;
  child.on('exit', (c) => {
    code = c;
    exited = true;
  });
  await until(() => exited || lines.some((l) => l.msg === 'rack started'), 'the rack process to start', 20_000);
  const started = lines.find((l) => l.msg === 'rack started');
  if (started === undefined) throw new Error(`the rack process exited (${code}) before it started: ${stderr}${lines.map((l) => JSON.stringify(l)).join('\n')}`);
  return {
    addresses: started.listening as string[],
    lines,
    child,
    exitCode: () => (exited ? code : null),
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        await until(() => exited, 'the rack process to stop', 20_000);
      }
      return code;
    },
  };
}

/**
 * The quickstart rack as a process, on tcp and ws, with a canary connection that hostile tests
 * check after each case: the process must still run and the canary must still get answers.
 */
export async function startCanaryRack(fluxar: Record<string, unknown> = {}): Promise<{ rack: RackProcess; canary: Peer; tcp: string; ws: string }> {
  const rack = await startRackProcess(quickstartScenario({ listen: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar'], ...fluxar }));
  const [tcp, ws] = rack.addresses as [string, string];
  return { rack, canary: await connect(tcp), tcp, ws };
}
