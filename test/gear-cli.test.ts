// A gear author's path outside this repository: `fluxrig gear new`, `gear build`, `gear test`,
// then the gear in a rack, answering calls. The SDK resolves by its package name from any folder.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { connect, FluxarError } from '../src/fluxar/mod.js';
import { Rack } from '../src/rack/rack.js';
import { loadScenario } from '../src/scenario/parse.js';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const fluxrig = (...args: string[]) => run(process.execPath, [cli, ...args], { cwd: dir });
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-author-'));

describe('fluxrig gear: from nothing to a gear in a rack, outside the tree', () => {
  it('new writes a starter gear, its cases and a scenario', async () => {
    const { stdout } = await fluxrig('gear', 'new', 'limit');
    assert.match(stdout, /wrote limit\/limit\.ts, limit\/cases\.json and limit\/scenario\.yaml/);
    assert.match(readFileSync(join(dir, 'limit/limit.ts'), 'utf8'), /from '@fluxrig\/gear-sdk'/);
  });

  it('build picks the runtime from the marker and prints exports and imports', async () => {
    const { stdout } = await fluxrig('gear', 'build', 'limit/limit.ts');
    assert.match(stdout, /built limit\/limit\.wasm \(stub runtime\)/);
    assert.match(stdout, /exports: .*process.*alloc.*free.*reset/);
    assert.match(stdout, /imports: env\.abort/);
  });

  it('build refuses an arena gear that does not export reset, saying what to write', async () => {
    writeFileSync(
      join(dir, 'noreset.ts'),
      readFileSync(join(dir, 'limit/limit.ts'), 'utf8').replace('export { alloc, free, reset }', 'export { alloc, free }'),
    );
    await assert.rejects(
      fluxrig('gear', 'build', 'noreset.ts'),
      (err: { stderr: string; code: number }) => err.code === 1 && /is an arena gear .* but does not export reset/.test(err.stderr),
    );
  });

  it('test runs the gear once without a rack, and runs the cases', async () => {
    const once = await fluxrig('gear', 'test', 'limit/limit.wasm', '--input', '{"amount": 20000}');
    assert.deepEqual(JSON.parse(once.stdout), { status: 'reject', reason: 'amount over the 10,000 limit' });
    const cases = await fluxrig('gear', 'test', 'limit/limit.wasm', '--cases', 'limit/cases.json');
    assert.match(cases.stdout, /^2 passed, 0 failed$/m);
  });

  it('the gear answers calls in a rack', async () => {
    // The starter scenario listens on 7430; the test takes a free port instead.
    const text = readFileSync(join(dir, 'limit/scenario.yaml'), 'utf8').replace('tcp://127.0.0.1:7430', 'tcp://127.0.0.1:0');
    writeFileSync(join(dir, 'limit/scenario-test.yaml'), text);
    const live = new Rack({ scenario: await loadScenario(join(dir, 'limit/scenario-test.yaml')), workers: 1, logger: pino({ level: 'silent' }) });
    await live.start();
    try {
      const peer = await connect(live.addresses()[0]!);
      assert.deepEqual(await peer.call('check', { amount: 100 }), { amount: 100, checked_by: 'limit' });
      await assert.rejects(peer.call('check', { amount: 20_000 }), (err: unknown) => err instanceof FluxarError && err.code === 403);
      await peer.close();
    } finally {
      await live.stop();
    }
  });
});
