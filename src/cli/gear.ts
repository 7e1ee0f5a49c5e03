import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { createFluxMsg } from '../fluxmsg/fluxmsg.js';
import { printable } from './fluxar-client.js';
import { MemoryKvStore } from '../gears/kv.js';
import { buildGear } from '../gears/wasm/build.js';
import type { WasmGearConfig } from '../gears/wasm/config.js';
import { type GearOutcome, WasmGear } from '../gears/wasm/host.js';
import { prepareModule } from '../gears/wasm/loader.js';

export const GEAR_USAGE = `usage: fluxrig gear <command>

commands:
  build FILE.ts [-o OUT.wasm]     compile a gear with the runtime its marker asks for; prints its exports and imports
  new NAME                        write a starter gear, its test cases and a scenario into the folder NAME
  test FILE.wasm --input JSON [--kv KEY=VALUE ...]
                                  run a gear once on a message with that data, without a rack, and print what it decided
  test FILE.wasm --cases FILE.json
                                  run every case in the file ([{input, kv?, expect}]); exit 1 if any fails
  help                            print this text

A gear whose source holds the marker "// fluxrig: arena" keeps nothing on the heap between
messages: it is built with the stub runtime, reset by the host before each message, and must
export reset (export { alloc, free, reset } from '@fluxrig/gear-sdk').`;

export async function runGear(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'build':
      return build(rest);
    case 'new':
      return create(rest);
    case 'test':
      return test(rest);
    case undefined:
    case 'help':
    case '--help':
      console.log(GEAR_USAGE);
      return 0;
    default:
      console.error(`fluxrig gear: unknown command ${JSON.stringify(command)}\n${GEAR_USAGE}`);
      return 2;
  }
}

async function build(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { out: { type: 'string', short: 'o' } }, allowPositionals: true });
  const file = positionals[0];
  if (file === undefined) {
    console.error('usage: fluxrig gear build FILE.ts [-o OUT.wasm]');
    return 2;
  }
  const out = values.out ?? file.replace(/\.ts$/, '.wasm');
  const built = await buildGear(file, out);
  console.log(`built ${built.out} (${built.runtime} runtime)`);
  console.log(`exports: ${built.exports.join(', ')}`);
  console.log(`imports: ${built.imports.length === 0 ? 'none' : built.imports.join(', ')}`);
  return 0;
}

function starterGear(name: string): string {
  return `// fluxrig: arena (keeps nothing on the heap between messages; the host resets it before each)
import { FluxMsg, ok, processWith, reject, Result } from '@fluxrig/gear-sdk';
export { alloc, free, reset } from '@fluxrig/gear-sdk';

export function process(ptr: usize, len: i32): i64 {
  return processWith(ptr, len, handle);
}

// ${name}: refuses amounts over a limit and marks the rest.
function handle(msg: FluxMsg): Result {
  const amount = msg.getFloat('amount');
  if (amount > 10_000) return reject('amount over the 10,000 limit');
  msg.setString('checked_by', '${name}');
  return ok(msg);
}
`;
}

async function create(argv: string[]): Promise<number> {
  const name = argv[0];
  if (name === undefined || !/^[a-z0-9_-]+$/.test(basename(name))) {
    console.error('usage: fluxrig gear new NAME (a folder name of [a-z0-9_-])');
    return 2;
  }
  if (existsSync(name)) {
    console.error(`fluxrig gear new: ${name} already exists`);
    return 1;
  }
  const gear = basename(name);
  mkdirSync(name, { recursive: true });
  writeFileSync(join(name, `${gear}.ts`), starterGear(gear));
  const cases = [
    { input: { amount: 100 }, expect: { status: 'ok', data: { amount: 100, checked_by: gear } } },
    { input: { amount: 20_000 }, expect: { status: 'reject', reason: 'amount over the 10,000 limit' } },
  ];
  writeFileSync(join(name, 'cases.json'), `${JSON.stringify(cases, null, 2)}\n`);
  writeFileSync(
    join(name, 'scenario.yaml'),
    `meta: { name: ${gear}, version: "1" }
gears:
  - name: api
    type: fluxar
    config: { listen: [tcp://127.0.0.1:7430] }
  - name: ${gear}
    type: wasm
    config: { module: ${gear}.wasm }
wires:
  - { from: api.out, to: ${gear}.in }
  - { from: ${gear}.out, to: api.in }
  - { from: ${gear}.error, to: api.in }
`,
  );
  console.log(`wrote ${name}/${gear}.ts, ${name}/cases.json and ${name}/scenario.yaml. Next:
  fluxrig gear build ${name}/${gear}.ts
  fluxrig gear test ${name}/${gear}.wasm --cases ${name}/cases.json
  fluxrig rack --scenario ${name}/scenario.yaml
  fluxrig call tcp://127.0.0.1:7430 check '{"amount": 100}'`);
  return 0;
}

interface Case {
  input: Record<string, unknown>;
  kv?: Record<string, string>;
  expect: { status: 'ok' | 'reject' | 'drop' | 'fail'; data?: Record<string, unknown>; reason?: string };
}

/** Runs the gear once; grants KV (from `kv`) and HTTP with no allowed host, whatever it imports. */
function runOnce(file: string, bytes: Uint8Array, input: Record<string, unknown>, kv: Record<string, string>): GearOutcome {
  const config: WasmGearConfig = { module: file, allow_kv: true, allow_http: true, http_allow_hosts: [] };
  const store = new MemoryKvStore();
  for (const [k, v] of Object.entries(kv)) store.put(k, Buffer.from(v));
  const gear = new WasmGear(basename(file, '.wasm'), prepareModule(bytes, file, config), config, { kv: store });
  return gear.process(createFluxMsg({ data: input }));
}

function describeOutcome(outcome: GearOutcome): string {
  switch (outcome.status) {
    case 'ok':
      return JSON.stringify({ status: 'ok', messages: outcome.msgs.map((m) => ({ data: m.data, meta: m.meta })) }, printable, 2);
    case 'reject':
      return JSON.stringify({ status: 'reject', reason: outcome.reason }, null, 2);
    case 'drop':
      return JSON.stringify({ status: 'drop' }, null, 2);
    case 'fail':
      return JSON.stringify({ status: 'fail', kind: outcome.kind, detail: outcome.detail }, null, 2);
  }
}

/** Whether `actual` holds every field `expected` names, with the same value (deep). */
function holds(actual: unknown, expected: unknown): boolean {
  if (expected === null || typeof expected !== 'object') return actual === expected || (typeof actual === 'bigint' && BigInt(expected as number) === actual);
  if (actual === null || typeof actual !== 'object') return false;
  return Object.entries(expected).every(([k, v]) => holds((actual as Record<string, unknown>)[k], v));
}

function test(argv: string[]): number {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { input: { type: 'string' }, kv: { type: 'string', multiple: true }, cases: { type: 'string' } },
    allowPositionals: true,
  });
  const file = positionals[0];
  if (file === undefined || (values.input === undefined && values.cases === undefined)) {
    console.error('usage: fluxrig gear test FILE.wasm --input JSON [--kv KEY=VALUE ...] | --cases FILE.json');
    return 2;
  }
  const bytes = readFileSync(file);
  if (values.cases === undefined) {
    const kv = Object.fromEntries((values.kv ?? []).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]));
    console.log(describeOutcome(runOnce(file, bytes, JSON.parse(values.input!) as Record<string, unknown>, kv)));
    return 0;
  }
  const cases = JSON.parse(readFileSync(values.cases, 'utf8')) as Case[];
  let failed = 0;
  for (const [i, c] of cases.entries()) {
    const outcome = runOnce(file, bytes, c.input, c.kv ?? {});
    const data = outcome.status === 'ok' ? outcome.msgs[0]?.data : undefined;
    const reason = outcome.status === 'reject' ? outcome.reason : undefined;
    const pass =
      outcome.status === c.expect.status &&
      (c.expect.data === undefined || holds(data, c.expect.data)) &&
      (c.expect.reason === undefined || reason === c.expect.reason);
    if (!pass) failed++;
    console.log(
      `${pass ? 'ok  ' : 'FAIL'} case ${i + 1}: ${JSON.stringify(c.input)}${pass ? '' : `\n  expected ${JSON.stringify(c.expect)}\n  got ${describeOutcome(outcome).replace(/\n\s*/g, ' ')}`}`,
    );
  }
  console.log(`${cases.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}
