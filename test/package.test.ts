// The package resolves by its own name (self-reference through `exports`) and its bin runs.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url);

describe('package surface', () => {
  it('"fluxrig" exports the fluxMsg API', async () => {
    const lib = await import('fluxrig');
    for (const name of ['createFluxMsg', 'encodeFluxMsg', 'decodeFluxMsg', 'uuidv7']) {
      assert.equal(typeof (lib as Record<string, unknown>)[name], 'function', name);
    }
    const msg = lib.decodeFluxMsg(lib.encodeFluxMsg(lib.createFluxMsg({ data: { a: 1 } })));
    assert.equal(msg.data.a, 1);
  });

  it('"fluxrig/fluxar" exports the envelope API', async () => {
    const fluxar = await import('fluxrig/fluxar');
    assert.equal(typeof fluxar.encodeEnvelope, 'function');
    assert.equal(typeof fluxar.decodeEnvelope, 'function');
    assert.equal(fluxar.MessageType.Call, 2);
  });

  it('"fluxrig/gears" and "fluxrig/rack" export the gear host and the rack', async () => {
    const gears = await import('fluxrig/gears');
    assert.equal(typeof gears.WasmGear, 'function');
    assert.equal(typeof gears.prepareModule, 'function');
    const rack = await import('fluxrig/rack');
    assert.equal(typeof rack.Rack, 'function');
    assert.equal(typeof rack.parseScenario, 'function');
  });

  it('the fluxrig bin runs', async () => {
    const pkg = JSON.parse(await readFile(new URL('package.json', root), 'utf8')) as { bin: { fluxrig: string }; version: string };
    const bin = new URL(pkg.bin.fluxrig, root);
    const { stdout } = await run(process.execPath, [bin.pathname, 'version']);
    assert.equal(stdout.trim(), pkg.version);
    const uuid = await run(process.execPath, [bin.pathname, 'uuid']);
    assert.match(uuid.stdout.trim(), /^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    await assert.rejects(
      run(process.execPath, [bin.pathname, 'nope']),
      (err: { code?: number; stderr?: string }) => err.code === 2 && /unknown command "nope"/.test(err.stderr ?? ''),
    );
  });
});
