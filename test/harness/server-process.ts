import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

/** Resident memory of process `pid`, in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  assert.ok(line !== undefined, 'VmRSS in /proc');
  return Number(line.split(/\s+/)[1]) * 1024;
}

/**
 * The FLUXAR server of test/fixtures/fluxar-server.ts in a process of its own, for tests that
 * measure the server's memory apart from the client's.
 */
export class FluxarServerProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    readonly pid: number,
  ) {}

  static async start(): Promise<FluxarServerProcess> {
    const child = spawn(process.execPath, [new URL('../fixtures/fluxar-server.js', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const { url, pid } = JSON.parse(line) as { url: string; pid: number };
    return new FluxarServerProcess(child, url, pid);
  }

  get rss(): number {
    return rssOf(this.pid);
  }

  async stop(): Promise<void> {
    const exited = once(this.child, 'exit');
    this.child.stdin!.end();
    await exited;
  }
}
