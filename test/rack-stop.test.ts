// A rack told to stop stops, whatever state its bus is in: with its nats-server gone, the
// connection it would drain is reconnecting, and the process must still exit.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { NatsServerProcess } from './harness/nats.js';
import { until } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');

describe('a rack stopping with its bus down', () => {
  const children: ChildProcess[] = [];
  after(() => {
    for (const child of children) child.kill('SIGKILL');
  });

  for (const [flag, connected] of [
    ['--mixer', 'connected to the Mixer bus'],
    ['--nats', 'connected to NATS'],
  ] as const) {
    it(`exits 0 on SIGTERM after its nats-server died (${flag})`, async () => {
      const nats = await NatsServerProcess.start();
      const stateDir = mkdtempSync(join(tmpdir(), 'fluxrig-rack-stop-'));
      const child = spawn(cli, ['rack', flag, nats.url, '--name', 'stopper', '--workers', '0', '--state-dir', stateDir], {
        cwd: root,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      children.push(child);
      let log = '';
      child.stdout!.on('data', (chunk: Buffer) => (log += chunk.toString()));
      let exitCode: number | null | undefined;
      child.once('exit', (code) => (exitCode = code));
      // Started (its signal handlers are set just after this line) and on the bus.
      await until(() => log.includes('"rack started"') && log.includes(connected), `the rack started and "${connected}"`);
      await nats.stop();
      child.kill('SIGTERM');
      // Before, the process logged "rack stopped" and then stayed, its connection reconnecting for ever.
      await until(() => exitCode !== undefined, 'the rack process to exit', 15_000);
      assert.equal(exitCode, 0, log);
      assert.match(log, /rack stopped/);
    });
  }
});
