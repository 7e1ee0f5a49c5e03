// CPU per message of each process and thread on the guaranteed wire of `make bench-lanes`, at one
// offered rate: where a guaranteed message's time goes, to compare two builds in turns. By hand,
// not part of `make bench`:
//   node dist/bench/lanes-cpu.js [RATE=15000] [SECONDS=10]
// Starts a nats-server, rack B then rack A (one worker each, as the benchmark runs them), reads
// what arrives on OUT, and after a 3 s warm-up reads utime + stime of every thread from /proc
// (Linux) over SECONDS. Threads are named by process: `main` is the main thread; the next four
// of a rack are V8's helpers (the collector's parallel work), and its worker comes after them.
import { readdirSync, readFileSync } from 'node:fs';
import { connect as natsConnect } from '@nats-io/transport-node';
import { decodeFluxMsg } from '../src/fluxmsg/codec.js';
import { nowNs } from '../src/fluxmsg/fluxmsg.js';
import { NatsServerProcess } from '../test/harness/nats.js';
import { type RackProcess, startRackProcess } from '../test/harness/rack-process.js';
import { chain, OUT } from './fixtures/lanes-chain.js';
import { LatencyRecorder } from './harness/latency.js';

const RATE = Number(process.argv[2] ?? 15_000);
const SECONDS = Number(process.argv[3] ?? 10);
const WARMUP_MS = 3000;
const TICKS_PER_S = 100;

/** CPU ticks of every thread of each process, keyed `process/thread`. */
function threadTicks(pids: Record<string, number>): Map<string, number> {
  const ticks = new Map<string, number>();
  for (const [name, pid] of Object.entries(pids)) {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        ticks.set(`${name}/${Number(tid) === pid ? 'main' : tid}`, Number(fields[11]) + Number(fields[12]));
      } catch {
        // The thread ended between the listing and the read.
      }
    }
  }
  return ticks;
}

const nats = await NatsServerProcess.start({ jetstream: true });
const nc = await natsConnect({ servers: nats.url });
const recorder = new LatencyRecorder();
let counting = false;
let count = 0;
nc.subscribe(OUT, {
  callback: (_err, m) => {
    if (!counting) return;
    count++;
    recorder.recordNs(Number(nowNs() - decodeFluxMsg(m.data).ts));
  },
});
const doc = chain('lanes-cpu', RATE, 'guaranteed');
const racks: RackProcess[] = [];
try {
  // The receiver first, so the sender's first messages find it consuming.
  const b = await startRackProcess(doc, { name: 'b', workers: 1 }, { nats: { url: nats.url } });
  racks.push(b);
  const a = await startRackProcess(doc, { name: 'a', workers: 1 }, { nats: { url: nats.url } });
  racks.push(a);
  const pids = { 'rack A': a.child.pid!, 'rack B': b.child.pid!, 'nats-server': nats.pid!, bench: process.pid };
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  const before = threadTicks(pids);
  counting = true;
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
  counting = false;
  const after = threadTicks(pids);
  const seconds = (performance.now() - started) / 1000;
  const perS = count / seconds;
  const latency = recorder.summary();
  console.log(`offered ${RATE}/s, delivered ${Math.round(perS)}/s, p50 ${latency.p50_us / 1000} ms, p99 ${latency.p99_us / 1000} ms`);
  const totals = new Map<string, number>();
  for (const [key, t] of after) {
    const cores = (t - (before.get(key) ?? t)) / TICKS_PER_S / seconds;
    const owner = key.split('/')[0]!;
    totals.set(owner, (totals.get(owner) ?? 0) + cores);
    if (cores >= 0.01) console.log(`  ${key.padEnd(24)} ${cores.toFixed(2)} cores  ${((cores * 1e6) / perS).toFixed(1)} µs/msg`);
  }
  for (const [owner, cores] of totals)
    console.log(`  ${`${owner} (all threads)`.padEnd(24)} ${cores.toFixed(2)} cores  ${((cores * 1e6) / perS).toFixed(1)} µs/msg`);
} finally {
  for (const rack of racks.reverse()) await rack.stop();
  await nc.close();
  await nats.stop();
}
