// CPU per message of each process and thread on the guaranteed wire of `make bench-lanes`, at one
// offered rate: where a guaranteed message's time goes, to compare two builds in turns. By hand,
// not part of `make bench`:
//   node dist/bench/lanes-cpu.js [RATE=15000] [SECONDS=10]
// Starts a nats-server, rack B then rack A (one worker each, as the benchmark runs them), reads
// what arrives on OUT, and after a 3 s warm-up reads utime + stime of every thread from /proc
// (Linux) over SECONDS. Threads are named by process: `main` is the main thread; the next four
// of a rack are V8's helpers (the collector's parallel work), and its worker comes after them.
import { connect as natsConnect } from '@nats-io/transport-node';
import { NatsServerProcess } from '../test/harness/nats.js';
import { chain, readOut, startChainRacks } from './fixtures/lanes-chain.js';
import { threadCpuSeconds } from './harness/threads.js';

const RATE = Number(process.argv[2] ?? 15_000);
const SECONDS = Number(process.argv[3] ?? 10);
const WARMUP_MS = 3000;

/** CPU seconds of every thread of each process, keyed `process/thread` (`main` for the main thread). */
function threadTimes(pids: Record<string, number>): Map<string, number> {
  const times = new Map<string, number>();
  for (const [name, pid] of Object.entries(pids)) {
    for (const [tid, seconds] of threadCpuSeconds(pid)) times.set(`${name}/${tid === pid ? 'main' : tid}`, seconds);
  }
  return times;
}

const nats = await NatsServerProcess.start({ jetstream: true });
const nc = await natsConnect({ servers: nats.url });
const out = readOut(nc);
let stopRacks = async () => {};
try {
  const { racks, stop } = await startChainRacks(chain('lanes-cpu', RATE, 'guaranteed'), 'guaranteed', nats.url);
  stopRacks = stop;
  const [b, a] = racks;
  const pids = { 'rack A': a!.child.pid!, 'rack B': b!.child.pid!, 'nats-server': nats.pid!, bench: process.pid };
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  const before = threadTimes(pids);
  const started = performance.now();
  out.start();
  await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
  const { delivered_per_s: perS, latency } = out.stop();
  const after = threadTimes(pids);
  const seconds = (performance.now() - started) / 1000;
  console.log(`offered ${RATE}/s, delivered ${Math.round(perS)}/s, p50 ${latency.p50_us / 1000} ms, p99 ${latency.p99_us / 1000} ms`);
  const totals = new Map<string, number>();
  for (const [key, t] of after) {
    const cores = (t - (before.get(key) ?? t)) / seconds;
    const owner = key.split('/')[0]!;
    totals.set(owner, (totals.get(owner) ?? 0) + cores);
    if (cores >= 0.01) console.log(`  ${key.padEnd(24)} ${cores.toFixed(2)} cores  ${((cores * 1e6) / perS).toFixed(1)} µs/msg`);
  }
  for (const [owner, cores] of totals)
    console.log(`  ${`${owner} (all threads)`.padEnd(24)} ${cores.toFixed(2)} cores  ${((cores * 1e6) / perS).toFixed(1)} µs/msg`);
} finally {
  await stopRacks();
  await nc.close();
  await nats.stop();
}
