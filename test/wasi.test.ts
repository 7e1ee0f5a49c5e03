// Gears in C and Rust on the WASI host (src/gears/wasm/wasi.ts): the ABI from both languages
// (ok, reject, drop, fan-out, KV, log through stdout, a trap, proc_exit), WASI's default-deny
// (approved environment and preopens only, read-only unless rw, refused imports named at load),
// and both fraud scorers answering calls in a rack over FLUXAR. Gears built by `make test`.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { connect, FluxarError } from '../src/fluxar/mod.js';
import { createFluxMsg } from '../src/fluxmsg/fluxmsg.js';
import type { WasmGearConfig } from '../src/gears/wasm/config.js';
import { WasmModuleError } from '../src/gears/wasm/errors.js';
import { type GearOutcome, WasmGear } from '../src/gears/wasm/host.js';
import { prepareModule } from '../src/gears/wasm/loader.js';
import { gearBytes, wat } from './harness/gears.js';
import { captureLogs } from './harness/logs.js';
import { type RackProcess, startRackProcess } from './harness/rack-process.js';
import { until } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const ENOTCAPABLE = 76;

function dataOf(outcome: GearOutcome, i = 0): Record<string, unknown> {
  if (outcome.status !== 'ok')
    assert.fail(`expected ok, got ${outcome.status}: ${'reason' in outcome ? outcome.reason : 'detail' in outcome ? outcome.detail : ''}`);
  return (outcome as { msgs: Array<{ data: Record<string, unknown> }> }).msgs[i]!.data;
}

for (const language of ['c', 'rust'] as const) {
  describe(`a ${language} gear on the WASI host`, () => {
    const log = captureLogs('debug');
    const kv = new Map<string, Uint8Array>();
    const box = sandboxDirs();
    const config: WasmGearConfig = {
      module: `probe-${language}`,
      allow_kv: true,
      wasi: {
        env: { GREETING: 'hello' },
        preopens: [
          { guest: '/data', host: box.data },
          { guest: '/scratch', host: box.scratch, rw: true },
        ],
      },
    };
    const gear = new WasmGear(`probe-${language}`, prepareModule(gearBytes(`probe-${language}`), config.module, config), config, {
      logger: log.logger,
      kv: { get: (k) => kv.get(k), put: (k, v) => void kv.set(k, v) },
    });
    const run = (data: Record<string, unknown>) => gear.process(createFluxMsg({ data }));

    it('passes a message on changed, rejects, drops and fans out', () => {
      assert.equal(dataOf(run({ op: 'ok', keep: 1 })).seen, language);
      assert.equal(dataOf(run({ op: 'ok', keep: 1 })).keep, 1, 'the other fields come through');
      assert.deepEqual(run({ op: 'reject' }), { status: 'reject', reason: `${language} says no` });
      assert.deepEqual(run({ op: 'drop' }), { status: 'drop' });
      const fan = run({ op: 'fanout', n: 3 });
      assert.deepEqual(
        (fan as { msgs: Array<{ data: Record<string, unknown> }> }).msgs.map((m) => m.data.copy),
        [0, 1, 2],
      );
    });

    it('reads and writes KV', () => {
      assert.equal(dataOf(run({ op: 'kv', key: `k-${language}`, value: 'v1' })).read_back, 'v1');
      assert.equal(Buffer.from(kv.get(`k-${language}`)!).toString(), 'v1');
    });

    it("logs what it prints to stdout (info) and stderr (warn) as the gear's lines", () => {
      run({ op: 'print', text: `printed by ${language}` });
      const mine = log.lines.filter((l) => l.gear === `probe-${language}`);
      assert.ok(
        mine.some((l) => l.msg === `printed by ${language}` && l.level === 30),
        JSON.stringify(mine),
      );
      assert.ok(mine.some((l) => l.msg === `stderr: printed by ${language}` && l.level === 40));
    });

    it('fails the message that traps or calls proc_exit, and only that one', () => {
      const trap = run({ op: 'trap' });
      assert.equal(trap.status, 'fail');
      assert.equal((trap as { kind: string }).kind, 'trap');
      const exit = run({ op: 'exit' });
      assert.equal(exit.status, 'fail');
      assert.equal((exit as { kind: string }).kind, 'exit');
      assert.match((exit as { detail: string }).detail, /proc_exit\(3\)/);
      assert.equal(dataOf(run({ op: 'ok' })).seen, language, 'the next message is served');
    });

    it('sees only the environment the scenario grants', () => {
      assert.equal(dataOf(run({ op: 'env', name: 'GREETING' })).value, 'hello');
      assert.equal(dataOf(run({ op: 'env', name: 'PATH' })).value, '(unset)', "the rack's own environment stays out");
    });

    it('reads an approved read-only preopen, and cannot write it', () => {
      assert.equal(dataOf(run({ op: 'read', path: '/data/hello.txt' })).text, 'first line');
      assert.equal(dataOf(run({ op: 'write', path: '/data/new.txt', text: 'x' })).errno, ENOTCAPABLE);
      assert.equal(existsSync(join(box.data, 'new.txt')), false);
    });

    it('writes a preopen granted rw', () => {
      assert.equal(dataOf(run({ op: 'write', path: '/scratch/out.txt', text: `from ${language}` })).written, 'yes');
      assert.equal(readFileSync(join(box.scratch, 'out.txt'), 'utf8'), `from ${language}`);
    });

    it('cannot reach a file outside its preopens: by absolute path, by .., or by a link', () => {
      for (const path of [box.secret, '/data/../secret.txt', '/data/escape.txt']) {
        const d = dataOf(run({ op: 'read', path }));
        assert.equal(d.text, undefined, `${path} was read`);
        // wasi-libc finds no preopen for an outside path (ENOTCAPABLE); Rust's std says so without an errno.
        assert.ok(d.errno === ENOTCAPABLE || (language === 'rust' && d.errno === -1), `${path}: errno ${d.errno}`);
      }
    });
  });
}

/** A sandbox: /data (read-only) with a file and a link leading out, /scratch (rw), a secret beside them. */
function sandboxDirs(): { data: string; scratch: string; secret: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fluxrig-wasi-'));
  const data = join(dir, 'data');
  const scratch = join(dir, 'scratch');
  mkdirSync(data);
  mkdirSync(scratch);
  writeFileSync(join(data, 'hello.txt'), 'first line\nsecond\n');
  writeFileSync(join(dir, 'secret.txt'), 'do not read\n');
  symlinkSync(join(dir, 'secret.txt'), join(data, 'escape.txt'));
  return { data, scratch, secret: join(dir, 'secret.txt') };
}

describe('the WASI host against a hostile guest', () => {
  it('garbage pointers and lengths fail that message only, never the host', async () => {
    // process(ptr, len) calls the WASI function named by the input's first byte with pointers past memory.
    const bytes = await wat(`(module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "free") (param i32 i32))
      (func (export "process") (param $ptr i32) (param $len i32) (result i64)
        (block $done
          (br_if $done (i32.eqz (local.get $len)))
          (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 1))
            (then (drop (call $fd_write (i32.const 1) (i32.const 0x7ffffff0) (i32.const 1000000) (i32.const 16)))))
          (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 2))
            (then (drop (call $random_get (i32.const 65000) (i32.const 100000)))))
          (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 3))
            (then (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const -1) (i32.const 0) (i64.const -1) (i64.const 0) (i32.const 0) (i32.const 70000)))))
          (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 4))
            (then (drop (call $environ_get (i32.const 70000) (i32.const 70000))))))
        (i64.const 0)))`);
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-wasi-hostile-'));
    const config: WasmGearConfig = { module: 'hostile', wasi: { env: { A: 'b' }, preopens: [{ guest: '/d', host: dir }] } };
    const gear = new WasmGear('hostile', prepareModule(bytes, 'hostile', config), config, {});
    for (const op of [1, 2, 3, 4]) {
      const outcome = gear.processEncoded(new Uint8Array([op]));
      assert.equal(outcome.status, 'fail', `op ${op}`);
      assert.equal(gear.processEncoded(new Uint8Array([0])).status, 'drop', `the message after op ${op} runs on a fresh instance`);
    }
  });
});

describe('the WASI host refuses at load', () => {
  const config = (module: string, extra: Partial<WasmGearConfig> = {}): WasmGearConfig => ({ module, allow_kv: true, ...extra });

  it('a WASI import it does not grant, naming it', async () => {
    const bytes = await wat(`(module
      (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 0))
      (func (export "free") (param i32 i32))
      (func (export "process") (param i32 i32) (result i64) (i64.const 0)))`);
    assert.throws(
      () => prepareModule(bytes, 'sock.wasm', config('sock.wasm')),
      (err: unknown) => {
        assert.ok(err instanceof WasmModuleError);
        assert.match(err.message, /imports wasi_snapshot_preview1\.sock_accept, which the WASI host does not grant/);
        return true;
      },
    );
  });

  it('a WASI command (it exports _start): gears are reactors', async () => {
    const bytes = await wat(`(module
      (memory (export "memory") 1)
      (func (export "_start"))
      (func (export "alloc") (param i32) (result i32) (i32.const 0))
      (func (export "free") (param i32 i32))
      (func (export "process") (param i32 i32) (result i64) (i64.const 0)))`);
    assert.throws(() => prepareModule(bytes, 'cmd.wasm', config('cmd.wasm')), /is a WASI command .*-mexec-model=reactor/);
  });

  it('a preopen that is not a directory, and a relative guest path', () => {
    const bytes = gearBytes('probe-c');
    assert.throws(
      () => prepareModule(bytes, 'p', config('p', { wasi: { preopens: [{ guest: '/data', host: '/nonexistent/fluxrig' }] } })),
      /wasi\.preopens: \/nonexistent\/fluxrig \(for \/data\) is not a directory/,
    );
    assert.throws(() => prepareModule(bytes, 'p', config('p', { wasi: { preopens: [{ guest: 'data', host: tmpdir() }] } })), /must be absolute/);
  });
});

describe('C and Rust fraud scorers in a rack, over FLUXAR', () => {
  const racks: RackProcess[] = [];
  const scenario = (module: string, probe: string) => ({
    meta: { name: 'polyglot', version: '1' },
    gears: [
      { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
      { name: 'route', type: 'router', config: { routes: [{ port: 'probe', data: { op: 'print' } }] } },
      { name: 'fraud', type: 'wasm', config: { module, allow_kv: true } },
      { name: 'probe', type: 'wasm', config: { module: probe, allow_kv: true } },
    ],
    wires: [
      { from: 'api.out', to: 'route.in' },
      { from: 'route.default', to: 'fraud.in' },
      { from: 'route.probe', to: 'probe.in' },
      { from: 'fraud.out', to: 'api.in' },
      { from: 'fraud.error', to: 'api.in' },
      { from: 'probe.out', to: 'api.in' },
      { from: 'probe.error', to: 'api.in' },
    ],
  });
  after(async () => {
    for (const r of racks) await r.stop();
  });

  for (const language of ['c', 'rust'] as const) {
    it(`the ${language} gear answers calls: approved, rejected by its score, and its stdout in the rack's log`, async () => {
      const rack = await startRackProcess(
        scenario(join(root, `wasm-gears/build/fraud-scorer-${language}.wasm`), join(root, `dist/test-gears/probe-${language}.wasm`)),
      );
      racks.push(rack);
      const peer = await connect(rack.addresses[0]!);
      try {
        const ok = (await peer.call('pay', { amount: 100, merchant: 'm-1' })) as Record<string, unknown>;
        assert.equal(ok.decision, 'approved');
        assert.equal(ok.fraud_score, 0);
        await assert.rejects(peer.call('pay', { amount: 2000, merchant: 'm-666', country: 'UY', card_country: 'US' }), (err: unknown) => {
          assert.ok(err instanceof FluxarError);
          assert.match(err.message, /fraud score 125 >= 70/);
          return true;
        });
        assert.equal(((await peer.call('print', { op: 'print', text: `rack line from ${language}` })) as Record<string, unknown>).seen, language);
      } finally {
        await peer.close();
      }
      await until(() => rack.lines.some((l) => l.gear === 'probe' && l.msg === `rack line from ${language}`), `the ${language} gear's line in the rack's log`);
    });
  }
});
