// main -> worker -> main round trips through (a) our SharedArrayBuffer ring, (b) MessagePort
// postMessage, (c) piscina tasks, in one run, with the same window of messages in flight. Then
// the CPU an idle pool burns. 2 cores: the main thread and the one echo worker each take a core,
// so these are the figures of a saturated machine.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { pino } from 'pino';
import { WorkerPool } from '../src/rack/mod.js';
import { LatencyRecorder, type LatencySummary } from './harness/latency.js';
import { printTable, writeResult } from './harness/report.js';

const SIZES = [64, 256, 4096];
const WINDOW = 256; // messages in flight
const RUN_MS = 2000;
const PING_PONG_MS = 1000;
const IDLE_MS = 5000;
const quiet = pino({ level: 'silent' });

interface PeerResult extends LatencySummary {
  peer: string;
  size: number;
  window: number;
  messages_per_s: number;
}

/** A peer under test: send(seq) puts one message in flight; onReply(seq) must be called per reply. */
interface Peer {
  name: string;
  start(onReply: (seq: number) => void, size: number): Promise<(seq: number) => void>;
  stop(): Promise<void>;
}

/**
 * Latency is stamped and recorded on one message in LATENCY_SAMPLE (by sequence number, so the
 * sample is uniform): stamping and recording every one costs the main thread as much as the ring
 * itself at millions of messages per second. Throughput counts every message.
 */
const LATENCY_SAMPLE = 8;

async function drive(peer: Peer, size: number, window: number, runMs: number): Promise<PeerResult> {
  const sentAt = new Float64Array(window);
  const latency = new LatencyRecorder();
  let received = 0;
  let nextSeq = 0;
  let stopAt = Infinity;
  let stopped = false;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  let inFlight = 0;
  let send!: (seq: number) => void;
  const launch = () => {
    const s = nextSeq++;
    if (s % LATENCY_SAMPLE === 0) sentAt[s % window] = performance.now();
    inFlight++;
    send(s);
  };
  const onReply = (seq: number) => {
    if (seq % LATENCY_SAMPLE === 0) {
      const now = performance.now();
      latency.recordNs((now - sentAt[seq % window]!) * 1e6);
      if (now >= stopAt) stopped = true;
    }
    received++;
    inFlight--;
    if (!stopped) launch();
    else if (inFlight === 0) finish();
  };
  send = await peer.start(onReply, size);
  const began = performance.now();
  stopAt = began + runMs;
  for (let i = 0; i < window; i++) launch();
  await done;
  const elapsed = performance.now() - began;
  await peer.stop();
  return { peer: peer.name, size, window, messages_per_s: Math.round((received / elapsed) * 1000), ...latency.summary() };
}

function ringPeer(): Peer {
  let pool: WorkerPool;
  return {
    name: 'ring',
    async start(onReply, size) {
      pool = new WorkerPool({
        handler: new URL('./fixtures/echo-handler.js', import.meta.url),
        size: 1,
        ringCapacity: 1 << 22, // room for the whole window of 4 KiB records
        logger: quiet,
        onOutput: (_worker, tag) => onReply(tag),
      });
      await pool.start();
      const payload = new Uint8Array(size);
      return (seq) => {
        if (!pool.send(0, seq, payload)) throw new Error('ring full: the window exceeds lane_queue_size');
      };
    },
    stop: () => pool.close(),
  };
}

function postMessagePeer(): Peer {
  let worker: Worker;
  return {
    name: 'postMessage',
    async start(onReply, size) {
      worker = new Worker(new URL('./fixtures/postmessage-echo.js', import.meta.url));
      worker.on('message', (m: Uint8Array) => onReply(m[0]! | (m[1]! << 8) | (m[2]! << 16) | (m[3]! << 24)));
      await new Promise((resolve) => worker.once('online', resolve));
      return (seq) => {
        const payload = new Uint8Array(size);
        payload[0] = seq & 0xff;
        payload[1] = (seq >>> 8) & 0xff;
        payload[2] = (seq >>> 16) & 0xff;
        payload[3] = (seq >>> 24) & 0xff;
        worker.postMessage(payload);
      };
    },
    stop: () => worker.terminate().then(() => {}),
  };
}

function piscinaPeer(): Peer {
  let pool: Piscina;
  return {
    name: 'piscina',
    async start(onReply, size) {
      pool = new Piscina({
        filename: new URL('./fixtures/piscina-echo.js', import.meta.url).href,
        minThreads: 1,
        maxThreads: 1,
        maxQueue: WINDOW * 2,
        concurrentTasksPerWorker: 1,
      });
      const payload = new Uint8Array(size);
      await pool.run(payload);
      return (seq) => void pool.run(payload).then(() => onReply(seq));
    },
    stop: () => pool.destroy(),
  };
}

async function idleCpuPercent(): Promise<number> {
  const pool = new WorkerPool({ handler: new URL('./fixtures/echo-handler.js', import.meta.url), logger: quiet, onOutput: () => {} });
  await pool.start();
  // Let every worker pass its short blocking wait and settle on the doorbell.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const before = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
  const used = process.cpuUsage(before);
  await pool.close();
  return ((used.user + used.system) / 1000 / IDLE_MS) * 100;
}

const peers = [ringPeer, postMessagePeer, piscinaPeer];
const results: PeerResult[] = [];
for (const size of SIZES) {
  for (const make of peers) results.push(await drive(make(), size, WINDOW, RUN_MS));
}
const pingPong: PeerResult[] = [];
for (const make of peers) pingPong.push(await drive(make(), 256, 1, PING_PONG_MS));
const idle = await idleCpuPercent();

const rate = (peer: string, size: number) => results.find((r) => r.peer === peer && r.size === size)!.messages_per_s;
const ratios: Record<string, number> = {};
for (const size of SIZES) {
  ratios[`ratio_vs_postmessage_${size}`] = Math.round((rate('ring', size) / rate('postMessage', size)) * 10) / 10;
  ratios[`ratio_vs_piscina_${size}`] = Math.round((rate('ring', size) / rate('piscina', size)) * 10) / 10;
}

printTable(results.map((r) => ({ peer: r.peer, bytes: r.size, 'msgs/s': r.messages_per_s, 'p50 us': r.p50_us, 'p99 us': r.p99_us, 'max us': r.max_us })));
console.log(`\none message at a time (256 B):`);
printTable(pingPong.map((r) => ({ peer: r.peer, 'round trips/s': r.messages_per_s, 'p50 us': r.p50_us, 'p99 us': r.p99_us, 'max us': r.max_us })));
console.log(
  `\nring vs postMessage / piscina: ${SIZES.map((s) => `${s} B ${ratios[`ratio_vs_postmessage_${s}`]}x / ${ratios[`ratio_vs_piscina_${s}`]}x`).join(', ')}`,
);
console.log(`idle pool of ${availableParallelism()} workers: ${idle.toFixed(3)}% of one core over ${IDLE_MS / 1000} s`);

const file = writeResult('ring', {
  window: WINDOW,
  run_ms: RUN_MS,
  latency_sampled_one_in: LATENCY_SAMPLE,
  ...ratios,
  idle_cpu_percent: Math.round(idle * 1000) / 1000,
  idle_workers: availableParallelism(),
  pipelined: results,
  ping_pong_256: pingPong,
});
console.log(`wrote ${file}`);
