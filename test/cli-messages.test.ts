// What the command line says to a newcomer: help exits 0, and a mistake gets one clear line.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { until } from './harness/wait.js';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FLUXRIG_')));
const fluxrig = (...args: string[]) => run(process.execPath, [cli, ...args], { env });

describe('the command line', () => {
  for (const args of [['help'], ['wasm', 'help'], ['gear', 'help'], ['rack', '--help']]) {
    it(`fluxrig ${args.join(' ')} exits 0`, async () => {
      const { stdout } = await fluxrig(...args);
      assert.match(stdout, /usage: fluxrig/);
    });
  }

  it('fluxrig rack takes --module-store and --trusted-key, as the errors suggest', async () => {
    const { stdout } = await fluxrig('rack', '--help');
    assert.match(stdout, /--module-store DIR/);
    assert.match(stdout, /--trusted-key FILE/);
  });

  it('a missing trusted-key file is named, not a bare ENOENT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-cli-'));
    writeFileSync(join(dir, 's.yaml'), 'meta: { name: s, version: "1" }\ngears: []\nwires: []\n');
    await assert.rejects(
      fluxrig('rack', '--scenario', join(dir, 's.yaml'), '--trusted-key', join(dir, 'nope.pub')),
      (err: { code: number; stderr: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stderr, /cannot read the key .*nope\.pub \(wasm\.trusted_keys\)/);
        return true;
      },
    );
  });

  it('a rack started through node without the young-generation flag says so, and how to run it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-cli-'));
    writeFileSync(
      join(dir, 's.yaml'),
      "meta: { name: s, version: '1' }\ngears:\n  - { name: api, type: fluxar, config: { listen: ['tcp://127.0.0.1:0'] } }\nwires: []\n",
    );
    const child = spawn(process.execPath, [cli, 'rack', '--scenario', join(dir, 's.yaml'), '--workers', '1'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    try {
      await until(() => /default young generation/.test(out) || child.exitCode !== null, 'the rack to warn', 20_000);
      const warning = out
        .split('\n')
        .filter((line) => line.includes('default young generation'))
        .map((line) => JSON.parse(line) as { level: number; hint: string })[0];
      assert.ok(warning !== undefined, out);
      assert.equal(warning.level, 40);
      assert.match(warning.hint, /--max-semi-space-size=4/);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
