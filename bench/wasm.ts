// Per-message cost of Wasm gears against the same logic in plain JS, in a worker thread (where
// gears run), plus the host's own cost per call: a hand-written WAT guest that hands its input
// straight back, so only alloc, copy in, call, copy out and free are measured. Each side takes
// an encoded fluxMsg and gives back fluxMsg bytes known to be valid: the JS peer decodes, scores
// and encodes; the Wasm gear is run as a pool's worker runs it (processEncoded: copy in, call,
// check the guest's output).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import wabtInit from 'wabt';
import { printTable, writeResult } from './harness/report.js';

const root = new URL('../../', import.meta.url);
const built = (name: string) => readFileSync(new URL(`wasm-gears/build/${name}.wasm`, root));

async function abiModule(): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const mod = wabt.parseWat(
    'abi.wat',
    `(module
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 1024))
    (func (export "alloc") (param $len i32) (result i32)
      (local $p i32) (local.set $p (global.get $bump))
      (global.set $bump (i32.add (global.get $bump) (local.get $len))) (local.get $p))
    (func (export "free") (param i32 i32) (global.set $bump (i32.const 1024)))
    (func (export "process") (param $ptr i32) (param $len i32) (result i64)
      (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))))`,
  );
  const bytes = Uint8Array.from(mod.toBinary({}).buffer);
  mod.destroy();
  return bytes;
}

/** The passthrough gear built with another runtime, to compare with the arena build `make gears` makes. */
function passthroughWith(runtime: 'minimal' | 'incremental'): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'fluxrig-asc-'));
  try {
    const out = join(dir, `passthrough-${runtime}.wasm`);
    execFileSync(
      new URL('node_modules/.bin/asc', root).pathname,
      [new URL('wasm-gears/examples/passthrough.ts', root).pathname, '--outFile', out, '-O3', '--noAssert', '--runtime', runtime],
      { stdio: 'inherit' },
    );
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const modules = {
  passthrough: built('passthrough'),
  'fraud-scorer': built('fraud-scorer'),
  'fraud-scorer-c': built('fraud-scorer-c'),
  'fraud-scorer-rust': built('fraud-scorer-rust'),
  'passthrough-minimal': passthroughWith('minimal'),
  'passthrough-incremental': passthroughWith('incremental'),
  abi: await abiModule(),
};
const worker = new Worker(new URL('./fixtures/wasm-worker.js', import.meta.url), { workerData: { modules } });
const { ns, payloadBytes } = await new Promise<{ ns: Record<string, number>; payloadBytes: number }>((resolve, reject) => {
  worker.once('message', resolve);
  worker.once('error', reject);
});
await worker.terminate();

const perSecond = (name: string) => 1e9 / ns[name]!;
const result = {
  payload_bytes: payloadBytes,
  ns_per_message: ns,
  host_overhead_ns: Math.round(ns['host overhead (alloc, copy, call, copy, free)']!),
  passthrough_wasm_vs_js: Math.round((perSecond('passthrough wasm') / perSecond('passthrough js')) * 100) / 100,
  fraud_scorer_wasm_vs_js: Math.round((perSecond('fraud-scorer wasm') / perSecond('fraud-scorer js')) * 100) / 100,
  // The same fraud scorer written in C and in Rust (wasm-gears/examples/fraud-scorer.c, .rs).
  c_vs_js: Math.round((perSecond('fraud-scorer c (wasm)') / perSecond('fraud-scorer js')) * 100) / 100,
  rust_vs_js: Math.round((perSecond('fraud-scorer rust (wasm)') / perSecond('fraud-scorer js')) * 100) / 100,
  runtime_arena_vs_minimal: Math.round((perSecond('passthrough wasm') / perSecond('passthrough wasm (minimal runtime)')) * 100) / 100,
  runtime_minimal_vs_incremental:
    Math.round((perSecond('passthrough wasm (minimal runtime)') / perSecond('passthrough wasm (incremental runtime)')) * 100) / 100,
};
printTable(Object.entries(ns).map(([task, v]) => ({ task, 'ns/msg': v, 'msgs/s': 1e9 / v })));
console.log(
  `\nhost overhead ${result.host_overhead_ns} ns/call; fraud-scorer vs js: AssemblyScript ${result.fraud_scorer_wasm_vs_js}x, C ${result.c_vs_js}x, Rust ${result.rust_vs_js}x; passthrough wasm/js ${result.passthrough_wasm_vs_js}x; runtimes: arena/minimal ${result.runtime_arena_vs_minimal}x, minimal/incremental ${result.runtime_minimal_vs_incremental}x`,
);
console.log(`wrote ${writeResult('wasm', result)}`);
