// Wasm gears: the host, its limits and capabilities, module loading, and real AssemblyScript
// and hand-written WAT gears.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { createFluxMsg, decodeFluxMsg, encodeFluxMsg, type FluxMsg, uuidv7 } from '../src/mod.js';
import { encodeCbor } from '../src/cbor/profile.js';
import { MemoryKvStore } from '../src/gears/kv.js';
import { type EncodedOutcome, type GearOutcome, WasmGear } from '../src/gears/wasm/host.js';
import { WasmGearPool } from '../src/gears/wasm/gear-pool.js';
import { loadModule, prepareModule } from '../src/gears/wasm/loader.js';
import { WasmModuleError } from '../src/gears/wasm/errors.js';
import { signModule } from '../src/gears/wasm/signature.js';
import { ModuleStore } from '../src/gears/wasm/store.js';
import type { WasmGearConfig } from '../src/gears/wasm/config.js';
import { captureLogs } from './harness/logs.js';
import { gearBytes, gearPath, WAT_PASSTHROUGH, watGear } from './harness/gears.js';
import { until } from './harness/wait.js';

const run = promisify(execFile);
const quiet = pino({ level: 'silent' });

function gear(name: string, config: Partial<WasmGearConfig> = {}, services: ConstructorParameters<typeof WasmGear>[3] = {}, bytes?: Uint8Array): WasmGear {
  const full: WasmGearConfig = { module: name, ...config };
  return new WasmGear(name, prepareModule(bytes ?? gearBytes(name), name, full), full, { logger: quiet, ...services });
}

function msg(data: Record<string, unknown>): FluxMsg {
  return createFluxMsg({ data, meta: { 'conn.id': 'c1' }, ref_id: uuidv7() });
}

const show = (o: GearOutcome | EncodedOutcome) => JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v));

function okMsgs(outcome: GearOutcome): FluxMsg[] {
  if (outcome.status !== 'ok') assert.fail(`expected ok, got ${show(outcome)}`);
  return outcome.msgs;
}

/** A gear that broke (not a business reject): its kind and the detail for the log. */
function failure(outcome: GearOutcome | EncodedOutcome, kind: string): string {
  if (outcome.status !== 'fail') assert.fail(`expected a failure, got ${show(outcome)}`);
  assert.equal(outcome.kind, kind);
  return outcome.detail;
}

function rejection(outcome: GearOutcome): string {
  if (outcome.status !== 'reject') assert.fail(`expected a rejection, got ${show(outcome)}`);
  return outcome.reason;
}

describe('wasm gears', () => {
  describe('exit codes and fan-out', () => {
    const probe = () => gear('probe');

    it('ok: the message passes through the SDK unchanged but for what the gear set', () => {
      const input = createFluxMsg({
        data: { amount: 12.5, n: -7, big: 2n ** 40n, huge: 2n ** 60n, s: 'héllo', b: new Uint8Array([1, 2]), nested: { l: [1, 'x', null, true, 1.5] } },
        meta: { a: 'b' },
        trace: 't',
        ref_id: uuidv7(),
        raw: new Uint8Array([9]),
        path: [{ g: uuidv7(), p: uuidv7(), t: 77n }],
        flags: 1,
      });
      const [out] = okMsgs(probe().process(input));
      assert.deepEqual([...out!.id], [...input.id]);
      assert.deepEqual([...out!.ref_id!], [...input.ref_id!]);
      assert.equal(out!.trace, 't');
      assert.deepEqual(out!.meta, { a: 'b', probe: 'seen' });
      assert.equal(out!.data.amount, 12.5);
      assert.equal(out!.data.n, -7);
      // Received integers are numbers whenever they are safe, whatever width they were sent in.
      assert.equal(out!.data.big, 2 ** 40);
      assert.equal(out!.data.huge, 2n ** 60n);
      assert.equal(out!.data.s, 'héllo');
      assert.deepEqual([...(out!.data.b as Uint8Array)], [1, 2]);
      assert.deepEqual(out!.data.nested, { l: [1, 'x', null, true, 1.5] });
      assert.deepEqual([...out!.raw!], [9]);
      assert.equal(out!.path[0]!.t, 77n);
      assert.equal(out!.flags, 1);
      assert.equal(out!.ts, input.ts);
    });

    it('meta: entries added, replaced and read in any order come out as a map would have them', () => {
      const cases: Array<[string, Record<string, string>, Record<string, unknown>]> = [
        ['', { 'conn.id': 'c1', a: 'b' }, {}],
        ['n', { 'conn.id': 'c1', a: 'b', added: 'new' }, {}],
        ['r', { 'conn.id': 'c1', a: 'replaced' }, {}],
        ['rn', { 'conn.id': 'c1', a: 'replaced', added: 'new' }, {}],
        ['ng', { 'conn.id': 'c1', a: 'b', added: 'new' }, { got: 'b/new' }],
        ['gn', { 'conn.id': 'c1', a: 'b', added: 'new' }, { got: 'b/none' }],
        ['nrg', { 'conn.id': 'c1', a: 'replaced', added: 'new' }, { got: 'replaced/new' }],
        ['nm', { 'conn.id': 'c1', a: 'b', added: 'new' }, { entries: 3 }],
        ['mn', { 'conn.id': 'c1', a: 'b', added: 'new' }, { entries: 2 }],
      ];
      const probe = gear('probe');
      for (const [steps, meta, data] of cases) {
        const input = createFluxMsg({ data: { action: 'meta', steps }, meta: { 'conn.id': 'c1', a: 'b' } });
        const [out] = okMsgs(probe.process(input));
        assert.deepEqual(out!.meta, meta, `steps "${steps}"`);
        for (const [k, v] of Object.entries(data)) assert.equal(out!.data[k], v, `steps "${steps}": data.${k}`);
      }
      // A message without meta at all, given an entry.
      const bare = createFluxMsg({ data: { action: 'meta', steps: 'n' } });
      assert.deepEqual(okMsgs(probe.process(bare))[0]!.meta, { added: 'new' });
    });

    it('reject (1) carries the reason; drop (2) is counted', () => {
      const g = probe();
      assert.equal(rejection(g.process(msg({ action: 'reject', reason: 'card blocked' }))), 'card blocked');
      assert.deepEqual(g.process(msg({ action: 'drop' })), { status: 'drop' });
      assert.equal(g.stats.dropped, 1);
      assert.equal(g.stats.rejected, 1);
    });

    it('fan-out returns several messages', () => {
      const outs = okMsgs(probe().process(msg({ action: 'fanout', count: 3 })));
      assert.deepEqual(
        outs.map((m) => m.data.part),
        [0, 1, 2],
      );
    });

    it('an aborting guest fails (a trap, not a reject) with its message for the log, and the gear goes on', () => {
      const g = probe();
      assert.match(failure(g.process(msg({ action: 'abort' })), 'trap'), /gear probe aborted: probe asked to abort at test\/gears\/probe\.ts:\d+:\d+/);
      okMsgs(g.process(msg({ action: 'ok' })));
      assert.equal(g.stats.traps, 1);
    });
  });

  describe('capabilities', () => {
    it('refuses a module importing KV without allow_kv, naming the import', () => {
      assert.throws(
        () => prepareModule(gearBytes('kv-probe'), 'kv-probe.wasm', { module: 'x' }),
        (err: unknown) =>
          err instanceof WasmModuleError && /imports env\.flux_kv_(get|put), which this gear is not granted \(needs allow_kv: true\)/.test(err.message),
      );
    });

    it('KV granted: writes reach the store and reads see it', () => {
      const store = new MemoryKvStore();
      store.put('fraud/blocklist', Buffer.from('m-1'));
      const g = gear('kv-probe', { allow_kv: true }, { kv: store });
      const [out] = okMsgs(g.process(msg({ put_key: 'seen/c1', put_value: 'yes', get_key: 'fraud/blocklist' })));
      assert.equal(out!.data.got, 'm-1');
      assert.equal(Buffer.from(store.get('seen/c1')!).toString(), 'yes');
      const [missing] = okMsgs(g.process(msg({ get_key: 'nope' })));
      assert.equal(missing!.data.got, null);
    });

    it('refuses a module importing HTTP without allow_http', () => {
      assert.throws(
        () => prepareModule(gearBytes('http-probe'), 'http-probe.wasm', { module: 'x' }),
        /imports env\.flux_req_http, which this gear is not granted \(needs allow_http: true\)/,
      );
    });

    it('emit: spontaneous messages reach the host', () => {
      const emitted: FluxMsg[] = [];
      const g = gear('probe', {}, { emit: (m) => emitted.push(m) });
      okMsgs(g.process(msg({ action: 'emit', count: 2 })));
      assert.deepEqual(
        emitted.map((m) => m.data.emitted),
        [0, 1],
      );
    });

    it('log: lines reach the logger with the gear name, rate-limited', () => {
      const { logger, lines } = captureLogs('debug');
      const g = gear('probe', { log_rate_per_s: 5 }, { logger });
      okMsgs(g.process(msg({ action: 'log', count: 20 })));
      const probeLines = lines.filter((l) => l.gear === 'probe');
      assert.equal(probeLines.length, 5);
      assert.equal(probeLines[0]!.msg, 'probe line 0');
      assert.equal(g.stats.logsSuppressed, 15);
    });

    it('an unknown import module or function is refused at load', async () => {
      const bytes = await watGear(WAT_PASSTHROUGH, '(import "env" "system" (func $s))');
      assert.throws(() => prepareModule(bytes, 'evil.wasm', { module: 'x' }), /imports env\.system, which this gear is not granted/);
      const other = await watGear(WAT_PASSTHROUGH, '(import "host" "exec" (func $x))');
      assert.throws(() => prepareModule(other, 'other.wasm', { module: 'x' }), /imports host\.exec: only "env" and "wasi_snapshot_preview1" imports exist/);
      // WASI's fd_write is granted (stdout becomes log lines); what WASI does not grant: test/wasi.test.ts.
      const wasi = await watGear(WAT_PASSTHROUGH, '(import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))');
      assert.equal(prepareModule(wasi, 'wasi.wasm', { module: 'x' }).wasi?.preopens.length, 0);
    });

    it('a module without the ABI exports is refused', async () => {
      const bytes = await (await import('./harness/gears.js')).wat('(module (memory (export "memory") 1) (func (export "run")))');
      assert.throws(() => prepareModule(bytes, 'noabi.wasm', { module: 'x' }), /must export the function alloc/);
      assert.throws(() => prepareModule(new Uint8Array([1, 2, 3]), 'junk.wasm', { module: 'x' }), /not a WebAssembly module/);
    });
  });

  describe('limits', () => {
    it('memory_limit_pages: growth past it fails the message as out of memory, the gear goes on', () => {
      const g = gear('probe', { memory_limit_pages: 64 });
      assert.match(failure(g.process(msg({ action: 'hog', count: 16 })), 'memory'), /gear probe (aborted|trapped)/);
      const [out] = okMsgs(g.process(msg({ action: 'hog', count: 1 })));
      assert.equal(out!.data.held_mib, 1, 'a fresh instance after the trap');
      assert.throws(() => prepareModule(gearBytes('probe'), 'probe', { module: 'x', memory_limit_pages: 0 }), /more than memory_limit_pages 0/);
    });
  });

  describe('garbage from the guest', () => {
    it('an out-of-bounds result is a failure of its output', async () => {
      const g = gear('oob', {}, {}, await watGear('(i64.const 0x7ffffff000000010)'));
      assert.match(failure(g.processEncoded(new Uint8Array([0xa0])), 'output'), /out-of-bounds buffer/);
    });

    it('invalid CBOR is a failure of its output, and the next message still runs', async () => {
      const g = gear('badcbor', {}, {}, await watGear('(i64.const 0x1000000002)'));
      assert.match(failure(g.processEncoded(new Uint8Array([0xa0])), 'output'), /returned invalid CBOR/);
      assert.match(failure(g.processEncoded(new Uint8Array([0xa0])), 'output'), /returned invalid CBOR/);
    });

    it('a result that is CBOR but not a fluxMsg is a failure of its output', async () => {
      const g = gear('notamsg', {}, {}, await watGear(WAT_PASSTHROUGH));
      assert.match(failure(g.processEncoded(new Uint8Array([0x83, 1, 2, 3])), 'output'), /returned an invalid message/);
    });
  });

  describe('encoded messages in and out (processEncoded, as the pool runs gears)', () => {
    it('a message in the plain encoding comes back as the guest wrote it: checked, not decoded', async () => {
      const g = gear('wat-passthrough', {}, {}, await watGear(WAT_PASSTHROUGH));
      const input = encodeFluxMsg(msg({ amount: 5, nested: { list: [1, 'two', null] } }));
      const outcome = g.processEncoded(input);
      assert.ok(outcome.status === 'ok' && outcome.encoded.length === 1, show(outcome));
      assert.ok(Buffer.from(outcome.encoded[0]!).equals(input));
      assert.equal(g.stats.ok, 1);
    });

    it('a message in another valid encoding is decoded, and comes back in the plain one', async () => {
      const g = gear('wat-passthrough', {}, {}, await watGear(WAT_PASSTHROUGH));
      const original = msg({ amount: 5 });
      // An unknown key: valid (newer peers may add fields), but not the form the check reads.
      const input = encodeCbor({ ...original, extra: 'from a newer peer' });
      const outcome = g.processEncoded(input);
      assert.ok(outcome.status === 'ok', show(outcome));
      assert.deepEqual(outcome.encoded, [encodeFluxMsg(decodeFluxMsg(input))]);
      assert.equal(decodeFluxMsg(outcome.encoded[0]!).data.amount, 5);
    });

    it("a guest's several messages come back each encoded", () => {
      const outcome = gear('splitter').processEncoded(encodeFluxMsg(msg({ items: ['a', 'b', 'c'] })));
      assert.ok(outcome.status === 'ok', show(outcome));
      assert.deepEqual(
        outcome.encoded.map((m) => decodeFluxMsg(m).data.item),
        ['a', 'b', 'c'],
      );
    });

    it('a message with invalid UTF-8 deep in data is a failure of its output, worded by the decoder', async () => {
      const g = gear('wat-passthrough', {}, {}, await watGear(WAT_PASSTHROUGH));
      const good = Buffer.from(encodeFluxMsg(msg({ deep: ['éé'] })));
      const at = good.indexOf(Buffer.from('éé'));
      good[at + 1] = 0x28; // the first é's second byte: no longer UTF-8
      assert.match(failure(g.processEncoded(good), 'output'), /returned invalid CBOR: invalid UTF-8 in a text string \(at byte \d+\)/);
    });
  });

  it('a gear written by hand in WAT runs on the same host (plain ABI passthrough)', async () => {
    const g = gear('wat-passthrough', {}, {}, await watGear(WAT_PASSTHROUGH));
    const input = msg({ amount: 5 });
    const [out] = okMsgs(g.process(input));
    assert.deepEqual([...out!.id], [...input.id]);
    assert.equal(out!.data.amount, 5);
    assert.deepEqual(g.process(msg({})).status, 'ok');
    const dropper = gear('wat-drop', {}, {}, await watGear('(i64.const 0)'));
    assert.deepEqual(dropper.process(input), { status: 'drop' });
  });

  describe('module sources and signatures', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-wasm-'));
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const other = generateKeyPairSync('ed25519');
    const trusted = [publicKey.export({ format: 'pem', type: 'spki' }).toString()];
    const keyPem = privateKey.export({ format: 'pem', type: 'pkcs8' });

    it('a good signature loads; unsigned, tampered and untrusted are refused (fluxrig.signature: test/module-signatures.test.ts)', () => {
      const bytes = gearBytes('passthrough');
      const signed = signModule(bytes, keyPem);
      assert.ok(prepareModule(signed, 'signed', { module: 'x' }, { trustedKeys: trusted }).signer);
      assert.throws(() => prepareModule(bytes, 'unsigned', { module: 'x' }, { trustedKeys: trusted }), /refused: the module is not signed/);
      const tampered = Buffer.concat([signed, Buffer.from([0x00, 0x04, 0x03, 0x61, 0x62, 0x63])]); // an extra custom section
      // fluxrig's section holds the signature alone: a changed module and another vendor's look alike.
      assert.throws(
        () => prepareModule(tampered, 'tampered', { module: 'x' }, { trustedKeys: trusted }),
        /matches no trusted key: .*changed after it was signed/,
      );
      const foreign = signModule(bytes, other.privateKey.export({ format: 'pem', type: 'pkcs8' }));
      assert.throws(() => prepareModule(foreign, 'foreign', { module: 'x' }, { trustedKeys: trusted }), /matches no trusted key: signed by another vendor/);
      assert.ok(prepareModule(bytes, 'unsigned, no keys', { module: 'x' }), 'without trusted keys signatures are not required');
    });

    it('loads from a path, file:// and urn:wasm: through the store', async () => {
      const store = new ModuleStore(join(dir, 'store'));
      const digest = await store.import(gearBytes('passthrough'), 'passthrough', '1.0.0');
      assert.match(digest, /^sha256:[0-9a-f]{64}$/);
      const byUrn = await loadModule({ module: 'urn:wasm:passthrough:1.0.0' }, { store });
      assert.equal(byUrn.digest, digest);
      const byPath = await loadModule({ module: gearPath('passthrough') });
      const byUrl = await loadModule({ module: pathToFileURL(gearPath('passthrough')).href });
      assert.equal(byPath.digest, digest);
      assert.equal(byUrl.digest, digest);
      await assert.rejects(loadModule({ module: 'urn:wasm:passthrough:9.9.9' }, { store }), /not in the module store/);
      await assert.rejects(loadModule({ module: 'urn:wasm:passthrough:1.0.0' }), /needs a module store/);
      await assert.rejects(loadModule({ module: join(dir, 'missing.wasm') }), /cannot read/);
      writeFileSync(join(dir, 'store', 'blobs', 'sha256', digest.slice(7)), 'corrupted');
      await assert.rejects(loadModule({ module: 'urn:wasm:passthrough:1.0.0' }, { store }), /corrupt/);
    });

    it('the fluxrig wasm CLI makes keys, signs, verifies and imports', async () => {
      const bin = new URL('../src/cli/main.js', import.meta.url).pathname;
      const keys = join(dir, 'keys');
      await run(process.execPath, [bin, 'wasm', 'keygen', keys]);
      // Raw, as fluxrig keeps keys: the seed and public key, and the public key alone.
      assert.equal(readFileSync(join(keys, 'gear-signing.key')).length, 64);
      assert.equal(readFileSync(join(keys, 'gear-signing.pub')).length, 32);
      const mod = join(dir, 'fraud.wasm');
      writeFileSync(mod, gearBytes('fraud-scorer'));
      await run(process.execPath, [bin, 'wasm', 'sign', mod, '--key', join(keys, 'gear-signing.key')]);
      const { stdout } = await run(process.execPath, [bin, 'wasm', 'verify', mod, '--trust', join(keys, 'gear-signing.pub')]);
      assert.match(stdout, /signed by trusted key/);
      const imported = await run(process.execPath, [bin, 'wasm', 'import', mod, '--name', 'fraud-scorer', '--version', '2', '--store', join(dir, 'cli-store')]);
      assert.match(imported.stdout, /urn:wasm:fraud-scorer:2 -> sha256:/);
      const store = new ModuleStore(join(dir, 'cli-store'));
      const loaded = await loadModule(
        { module: 'urn:wasm:fraud-scorer:2', allow_kv: true },
        { store, trustedKeys: [readFileSync(join(keys, 'gear-signing.pub'))] },
      );
      assert.ok(loaded.signer);
    });
  });

  describe('in the worker pool', () => {
    let http: Server;
    let url: string;
    before(async () => {
      http = createServer((req, res) => res.end(`hello from ${req.url}`));
      http.listen(0, '127.0.0.1');
      await once(http, 'listening');
      url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    });
    after(() => http.close());

    it('a guest stuck in a loop is stopped at timeout_ms: its message fails as a timeout, the other worker keeps serving, the gear recovers', async () => {
      const config: WasmGearConfig = { module: 'probe', timeout_ms: 100 };
      const pool = new WasmGearPool({ name: 'probe', prepared: prepareModule(gearBytes('probe'), 'probe', config), config, size: 2, logger: quiet });
      await pool.start();
      try {
        const stuck = pool.process(msg({ action: 'spin' }), 0);
        const others = await Promise.all(Array.from({ length: 20 }, (_, i) => pool.process(msg({ i }), 1)));
        assert.ok(
          others.every((o) => o.status === 'ok'),
          'worker 1 served while worker 0 was stuck',
        );
        const started = Date.now();
        assert.match(failure(await stuck, 'timeout'), /gear probe ran \d+ ms, past its timeout_ms of 100/);
        assert.ok(Date.now() - started < 2000);
        okMsgs(await pool.process(msg({ after: true }), 0));
        assert.equal(pool.pool.stats().replacements, 1);
      } finally {
        await pool.close();
      }
    });

    it('KV writes from one worker reach the store and the other workers', async () => {
      const config: WasmGearConfig = { module: 'kv-probe', allow_kv: true };
      const store = new MemoryKvStore();
      store.put('greeting', Buffer.from('hi'));
      const pool = new WasmGearPool({
        name: 'kv',
        prepared: prepareModule(gearBytes('kv-probe'), 'kv-probe', config),
        config,
        size: 2,
        kv: store,
        logger: quiet,
      });
      await pool.start();
      try {
        const [first] = okMsgs(await pool.process(msg({ get_key: 'greeting', put_key: 'from-0', put_value: 'zero' }), 0));
        assert.equal(first!.data.got, 'hi', 'the snapshot reached the worker');
        await until(() => store.get('from-0') !== undefined, 'the write to reach the store', 5000);
        assert.equal(Buffer.from(store.get('from-0')!).toString(), 'zero');
        let seen: unknown;
        const deadline = Date.now() + 5000;
        while (seen !== 'zero' && Date.now() < deadline) {
          seen = okMsgs(await pool.process(msg({ get_key: 'from-0' }), 1))[0]!.data.got;
        }
        assert.equal(seen, 'zero', 'worker 1 sees what worker 0 wrote');
        store.put('greeting', Buffer.from('changed'));
        let changed: unknown;
        while (changed !== 'changed' && Date.now() < deadline) changed = okMsgs(await pool.process(msg({ get_key: 'greeting' }), 1))[0]!.data.got;
        assert.equal(changed, 'changed', 'store changes reach the replicas');
      } finally {
        await pool.close();
      }
    });

    it('HTTP granted: allowed hosts answer, others are refused', async () => {
      const host = new URL(url).host;
      const config: WasmGearConfig = { module: 'http-probe', allow_http: true, http_allow_hosts: [host], timeout_ms: 3000 };
      const pool = new WasmGearPool({ name: 'http', prepared: prepareModule(gearBytes('http-probe'), 'http-probe', config), config, size: 1, logger: quiet });
      await pool.start();
      try {
        const [ok] = okMsgs(await pool.process(msg({ url: `${url}/price?x=1` })));
        assert.equal(ok!.data.http_status, 200);
        assert.equal(ok!.data.http_body, 'hello from /price?x=1');
        const [refused] = okMsgs(await pool.process(msg({ url: 'http://example.invalid/' })));
        assert.equal(refused!.data.http_status, 0);
        assert.match(refused!.data.http_error as string, /host example\.invalid is not in http_allow_hosts/);
      } finally {
        await pool.close();
      }
    });
  });
});
