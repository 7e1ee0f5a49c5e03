// `fluxrig scenario validate` says what the rack would say at start: each case below makes a
// rack refuse to start, and validate refuses it too, at the gear's position.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { withCustomSection } from '../src/gears/wasm/binary.js';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FLUXRIG_')));
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-validate-'));
copyFileSync(join(root, 'wasm-gears/build/passthrough.wasm'), join(dir, 'pass.wasm'));
copyFileSync(join(root, 'dist/test-gears/kv-probe.wasm'), join(dir, 'kv.wasm'));
writeFileSync(join(dir, 'garbage.wasm'), 'not wasm at all');

/** Runs validate on a scenario with these gears (wired api -> gear -> api); resolves with its output and code. */
async function validate(gears: unknown[], extra: string[] = []): Promise<{ code: number; out: string }> {
  const file = join(dir, `s-${Math.random().toString(36).slice(2)}.yaml`);
  const names = (gears as Array<{ name: string }>).map((g) => g.name);
  writeFileSync(
    file,
    stringify({
      meta: { name: 'v', version: '1' },
      gears: [{ name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } }, ...gears],
      wires: names.flatMap((n) => [
        { from: 'api.out', to: `${n}.in` },
        { from: `${n}.out`, to: 'api.in' },
      ]),
    }),
  );
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, 'scenario', 'validate', file, ...extra], { env });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

describe('fluxrig scenario validate checks what the rack checks at start', () => {
  const refused: Array<[string, unknown, RegExp]> = [
    ['a module file that does not exist', { name: 'g', type: 'wasm', config: { module: 'missing.wasm' } }, /:\d+:\d+: gear g: .*cannot read .*missing\.wasm/],
    ['a module that does not parse', { name: 'g', type: 'wasm', config: { module: 'garbage.wasm' } }, /:\d+:\d+: gear g: .*garbage\.wasm/],
    [
      'a module importing what its grants do not allow',
      { name: 'g', type: 'wasm', config: { module: 'kv.wasm' } },
      /:\d+:\d+: gear g: .*flux_kv_(get|put), which this gear is not granted \(needs allow_kv: true\)/,
    ],
    [
      'a module store that is not configured',
      { name: 'g', type: 'wasm', config: { module: 'urn:wasm:pass:1.0.0' } },
      /:\d+:\d+: gear g: .*needs a module store/,
    ],
  ];
  for (const [name, gear, pattern] of refused) {
    it(`refuses ${name}, at the gear's position`, async () => {
      const { code, out } = await validate([gear]);
      assert.equal(code, 1, out);
      assert.match(out, pattern);
      assert.match(out, /a rack would refuse to start/);
    });
  }

  it('refuses a module with a bad signature when keys are trusted', async () => {
    await run(process.execPath, [cli, 'wasm', 'keygen', join(dir, 'keys')], { env });
    const signed = join(dir, 'signed.wasm');
    await run(process.execPath, [cli, 'wasm', 'sign', join(dir, 'pass.wasm'), '--key', join(dir, 'keys/gear-signing.key'), '--out', signed], { env });
    writeFileSync(join(dir, 'tampered.wasm'), withCustomSection(readFileSync(signed), 'extra', new Uint8Array([1])));
    const trust = ['--trusted-key', join(dir, 'keys/gear-signing.pub')];
    assert.equal((await validate([{ name: 'g', type: 'wasm', config: { module: 'signed.wasm' } }], trust)).code, 0);
    const { code, out } = await validate([{ name: 'g', type: 'wasm', config: { module: 'tampered.wasm' } }], trust);
    assert.equal(code, 1);
    assert.match(out, /gear g: .*changed after it was signed/);
  });

  it('refuses a port out of range', async () => {
    const file = join(dir, 'port.yaml');
    writeFileSync(
      file,
      stringify({ meta: { name: 'p', version: '1' }, gears: [{ name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:99999'] } }], wires: [] }),
    );
    await assert.rejects(run(process.execPath, [cli, 'scenario', 'validate', file], { env }), (err: { code: number; stderr: string }) => {
      assert.equal(err.code, 1);
      assert.match(err.stderr, /port\.yaml:\d+:\d+: gear api: not a FLUXAR URL: "tcp:\/\/127\.0\.0\.1:99999"/);
      return true;
    });
  });

  it('says "did you mean" for unknown names', async () => {
    const { code, out } = await validate([{ name: 'g', type: 'wsam', config: { module: 'pass.wasm' } }]);
    assert.equal(code, 1);
    assert.match(out, /unknown gear type "wsam" \(did you mean wasm\?\)/);
    const typo = await validate([{ name: 'g', type: 'wasm', config: { module: 'pass.wasm', timeout_sm: 5 } }]);
    assert.match(typo.out, /unknown key timeout_sm in config \(did you mean timeout_ms\?\)/);
  });

  it('warns about an error port left unwired on a call path, and still passes', async () => {
    const { code, out } = await validate([{ name: 'g', type: 'wasm', config: { module: 'pass.wasm' } }]);
    assert.equal(code, 0, out);
    assert.match(out, /:\d+:\d+: warning: gear g is on a call path and its error port is wired to nothing/);
    assert.match(out, /valid \(2 gears, 2 wires\)/);
  });
});
