// Every call gets an answer or an error, promptly, and every failure is named: a call whose
// message a gear drops, sends nowhere, rejects with `error` unwired, or breaks on, is answered
// at once (never left to the caller's deadline); gear failures are 5xx naming the gear, with the
// guest's internals in the log only.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { connect, type Peer } from '../src/fluxar/mod.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { errorOf } from './harness/errors.js';
import { captureLogs } from './harness/logs.js';
import { until } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const probe = join(root, 'dist/test-gears/probe.wasm');
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-answers-'));

function scenarioOf(doc: Record<string, unknown>) {
  const file = join(dir, `s-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(doc));
  return parseScenario(stringify(doc), file);
}

// With workers the gears log from the worker threads; inline (workers: 0) the same code logs to
// the rack's logger, which the test reads.
for (const workers of [2, 0])
  describe(`every call answered, every failure named (workers: ${workers})`, () => {
    let lines: Array<Record<string, unknown>> = [];
    let rack: Rack;
    let peer: Peer;

    before(async () => {
      const { logger, lines: logged } = captureLogs();
      lines = logged;
      rack = new Rack({
        scenario: scenarioOf({
          meta: { name: 'answers', version: '1' },
          gears: [
            { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
            {
              name: 'route',
              type: 'router',
              config: {
                routes: [
                  { port: 'nowhere', data: { to: 'nowhere' } },
                  { port: 'small', data: { to: 'small' } },
                ],
              },
            },
            { name: 'probe', type: 'wasm', config: { module: probe } },
            { name: 'tiny', type: 'wasm', config: { module: probe, memory_limit_pages: 64 } },
          ],
          wires: [
            { from: 'api.out', to: 'route.in' },
            { from: 'route.default', to: 'probe.in' },
            { from: 'route.small', to: 'tiny.in' },
            // probe.error is left unwired on purpose; tiny.error is wired.
            { from: 'probe.out', to: 'api.in' },
            { from: 'tiny.out', to: 'api.in' },
            { from: 'tiny.error', to: 'api.in' },
          ],
        }),
        workers,
        logger,
      });
      await rack.start();
      peer = await connect(rack.addresses()[0]!);
    });
    after(async () => {
      await peer.close();
      await rack.stop();
    });

    const call = (data: Record<string, unknown>) => peer.call('x', data, { timeoutMs: 10_000 });

    it('a message a gear drops is answered at once with a null payload', async () => {
      assert.equal(await call({ action: 'drop' }), null);
    });

    it('a message routed to a port wired to nothing is answered 500, naming the port', async () => {
      const err = await errorOf(call({ to: 'nowhere' }));
      assert.equal(err.code, 500);
      assert.match(err.message, /reached route\.nowhere, which is wired to nothing/);
    });

    it('a reject whose error port is unwired is answered at once with 403 and the reason', async () => {
      const err = await errorOf(call({ action: 'reject', reason: 'card blocked' }));
      assert.equal(err.code, 403);
      assert.equal(err.message, 'card blocked');
      assert.deepEqual(err.data, { gear: 'probe' });
    });

    it('a trap is a 500 naming the gear; the pointers and source positions go to the log only', async () => {
      const err = await errorOf(call({ action: 'abort' }));
      assert.equal(err.code, 500);
      assert.equal(err.message, 'gear probe failed');
      assert.doesNotMatch(err.message, /\.ts:|ptr|0x/);
      if (workers === 0) {
        await until(
          () => lines.some((l) => l.gear === 'probe' && l.kind === 'trap' && /probe asked to abort at .*probe\.ts:\d+/.test(String(l.detail))),
          'the log line naming the gear',
        );
      }
    });

    it('memory past the limit says so (500), through a wired error port', async () => {
      const err = await errorOf(call({ to: 'small', action: 'hog', count: 16 }));
      assert.equal(err.code, 500);
      assert.match(err.message, /gear tiny ran out of memory near its limit/);
      // The gear goes on with a fresh instance.
      assert.deepEqual(((await call({ to: 'small', action: 'hog', count: 1 })) as Record<string, unknown>).held_mib, 1);
    });

    it('a second answer to an answered call is discarded, counted and logged with the gear and port it came from', async () => {
      const answer = (await call({ action: 'fanout', count: 3 })) as Record<string, unknown>;
      assert.equal(answer.part, 0);
      if (workers === 0)
        await until(() => lines.some((l) => /a second answer to a call reached api\.in from probe\.out/.test(String(l.msg))), 'the second-answer log line');
    });
  });

describe('a rack that cannot start', () => {
  it('exits 1 with one clear line when its port is in use', async () => {
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as { port: number }).port;
    const scenario = join(dir, 'busy.yaml');
    writeFileSync(
      scenario,
      stringify({
        meta: { name: 'busy', version: '1' },
        gears: [
          { name: 'api', type: 'fluxar', config: { listen: [`tcp://127.0.0.1:${port}`] } },
          { name: 'probe', type: 'wasm', config: { module: probe } },
        ],
        wires: [
          { from: 'api.out', to: 'probe.in' },
          { from: 'probe.out', to: 'api.in' },
        ],
      }),
    );
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FLUXRIG_')));
    const child = spawn(process.execPath, [join(root, 'dist/src/cli/main.js'), 'rack', '--scenario', scenario, '--workers', '2'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout!.resume();
    const [code] = (await once(child, 'exit')) as [number];
    taken.close();
    assert.equal(code, 1);
    assert.match(stderr, new RegExp(`cannot listen on tcp://127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
  });
});
