// One FLUXAR stream against grpc-js server streaming, in the same run: chunks/s and MB/s with
// 64 B and 4 KiB chunks, time to first chunk, and the server's RSS under a consumer that reads
// 10x slower than the producer can produce. Results: bench/results/stream.json.
//
// Each library's server and each peer's consumer run in processes of their own
// (fixtures/stream-servers.ts, fixtures/stream-consumer.ts), started one after the other; this
// process only runs them and the slow consumer. With grpc-js loaded beside FLUXAR in one consumer,
// V8 sized that process's heap differently: its young generation grew to the maximum early while
// the old one stayed small, and it ran 53-106 full collections in 3 s of 4 KiB chunks instead of
// 1-4, reading 15-25% fewer MB/s. A user's process holds the library it uses.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { connect } from '../src/fluxar/mod.js';
import { rssOf } from '../test/harness/server-process.js';
import { CHUNK_SIZES, type ConsumerResult, RUN_MS, type Throughput, WARMUP_MS, WINDOW_BYTES, windowFor } from './fixtures/stream-consumer.js';
import type { LatencySummary } from './harness/latency.js';
import { printTable, writeResult } from './harness/report.js';

const SLOW_MS = Number(process.env.BENCH_SLOW_MS ?? 5000);

const fixture = (name: string) => new URL(`./fixtures/${name}.js`, import.meta.url).pathname;

/** Starts one library's server process: its address and pid, and how to stop it. */
async function startServer(library: 'fluxar' | 'grpc'): Promise<{ address: string; pid: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [fixture('stream-servers'), library], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const [line] = (await Promise.race([once(createInterface({ input: child.stdout! }), 'line'), exited.then(() => [''])])) as [string];
  if (line === '') throw new Error(`the ${library} stream server exited before it listened`);
  const { address, pid } = JSON.parse(line) as { address: string; pid: number };
  return {
    address,
    pid,
    stop: async () => {
      child.stdin!.end();
      await exited;
    },
  };
}

/** Runs one peer's consumer process to its end: its figures. */
async function consume(peer: string, address: string, firstChunk = false): Promise<ConsumerResult> {
  const child: ChildProcess = spawn(process.execPath, [fixture('stream-consumer'), peer, address, ...(firstChunk ? ['--first-chunk'] : [])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (bytes: Buffer) => (out += bytes.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`the ${peer} consumer exited with ${code}`);
  return JSON.parse(out) as ConsumerResult;
}

const rssMb = (pid: number) => rssOf(pid) / (1024 * 1024);

const throughputs: Throughput[] = [];
const first = {} as { fluxar: LatencySummary; grpc: LatencySummary };
let slow: { chunks_read: number; produced_per_s_max: number; read_per_s: number; rss_before_mb: number; rss_peak_mb: number; rss_growth_mb: number };

const fluxarServer = await startServer('fluxar');
try {
  const async = await consume('fluxar-tcp', fluxarServer.address, true);
  throughputs.push(...async.throughputs);
  first.fluxar = async.first!;
  throughputs.push(...(await consume('fluxar-tcp-generator', fluxarServer.address)).throughputs);

  // The slow consumer: reads one tenth of what the producer can make, for SLOW_MS, from one
  // stream that would never end on its own. The producer must stop, not buffer.
  const fluxarPeer = await connect(fluxarServer.address);
  try {
    const max = throughputs.find((t) => t.peer === 'fluxar-tcp' && t.chunk_bytes === 4096)!.chunks_per_s;
    const readRate = Math.max(1, Math.round(max / 10));
    const rssBefore = rssMb(fluxarServer.pid);
    let rssPeak = rssBefore;
    const stream = fluxarPeer.stream('chunks', { count: Number.MAX_SAFE_INTEGER, size: 4096 }, { credit: windowFor(4096) });
    const it = stream[Symbol.asyncIterator]();
    const began = performance.now();
    let read = 0;
    while (performance.now() - began < SLOW_MS) {
      // Read what the pace allows, then wait a tick of 10 ms.
      const due = Math.floor(((performance.now() - began) / 1000) * readRate);
      while (read < due) {
        await it.next();
        read++;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
      rssPeak = Math.max(rssPeak, rssMb(fluxarServer.pid));
    }
    stream.cancel();
    slow = {
      chunks_read: read,
      produced_per_s_max: max,
      read_per_s: Math.round(read / (SLOW_MS / 1000)),
      rss_before_mb: Math.round(rssBefore * 10) / 10,
      rss_peak_mb: Math.round(rssPeak * 10) / 10,
      rss_growth_mb: Math.round((rssPeak - rssBefore) * 10) / 10,
    };
  } finally {
    await fluxarPeer.close();
  }
} finally {
  await fluxarServer.stop();
}

const grpcServer = await startServer('grpc');
try {
  const grpc = await consume('grpc-js', grpcServer.address, true);
  throughputs.push(...grpc.throughputs);
  first.grpc = grpc.first!;
} finally {
  await grpcServer.stop();
}
throughputs.sort((a, b) => CHUNK_SIZES.indexOf(a.chunk_bytes) - CHUNK_SIZES.indexOf(b.chunk_bytes));

const find = (peer: string, size: number) => throughputs.find((t) => t.peer === peer && t.chunk_bytes === size)!;
const ratio = (a: number, b: number) => Math.round((a / b) * 10) / 10;
const summary = {
  run_ms: RUN_MS,
  warmup_ms: WARMUP_MS,
  window_bytes: WINDOW_BYTES,
  handler: 'fluxar-tcp: an async generator handler (the headline figures); fluxar-tcp-generator: the same loop as a plain generator',
  processes: 'each library its own server process, each peer its own consumer process, one after the other',
  chunks_per_s_64: find('fluxar-tcp', 64).chunks_per_s,
  chunks_per_s_64_generator: find('fluxar-tcp-generator', 64).chunks_per_s,
  grpc_chunks_per_s_64: find('grpc-js', 64).chunks_per_s,
  ratio_vs_grpc_64: ratio(find('fluxar-tcp', 64).chunks_per_s, find('grpc-js', 64).chunks_per_s),
  ratio_vs_grpc_64_generator: ratio(find('fluxar-tcp-generator', 64).chunks_per_s, find('grpc-js', 64).chunks_per_s),
  mb_per_s_4k: find('fluxar-tcp', 4096).mb_per_s,
  mb_per_s_4k_generator: find('fluxar-tcp-generator', 4096).mb_per_s,
  grpc_mb_per_s_4k: find('grpc-js', 4096).mb_per_s,
  ratio_vs_grpc_4k: ratio(find('fluxar-tcp', 4096).mb_per_s, find('grpc-js', 4096).mb_per_s),
  first_chunk_us: first.fluxar.p50_us,
  first_chunk: first,
  slow_consumer_rss_growth_mb: slow.rss_growth_mb,
  slow_consumer: slow,
  targets: { ratio_vs_grpc_64: 10, mb_per_s_4k: 1000, slow_consumer_rss_growth_mb: 20 },
  throughputs,
};
printTable(throughputs.map((t) => ({ peer: t.peer, 'chunk B': t.chunk_bytes, 'chunks/s': t.chunks_per_s, 'MB/s': t.mb_per_s })));
console.log(`\nfirst chunk p50/p99: FLUXAR ${first.fluxar.p50_us}/${first.fluxar.p99_us} us, grpc-js ${first.grpc.p50_us}/${first.grpc.p99_us} us`);
console.log(
  `slow consumer (reads ${slow.read_per_s}/s of ${slow.produced_per_s_max}/s): server RSS ${slow.rss_before_mb} -> peak ${slow.rss_peak_mb} MB (+${slow.rss_growth_mb})`,
);
console.log(
  `FLUXAR vs grpc-js: ${summary.ratio_vs_grpc_64}x on 64 B chunks (${summary.ratio_vs_grpc_64_generator}x with a plain generator), ${summary.ratio_vs_grpc_4k}x on 4 KiB (${summary.mb_per_s_4k} MB/s; ${summary.mb_per_s_4k_generator} with a plain generator)`,
);
const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
console.log(
  `targets: >= 10x grpc-js on 64 B ${met(summary.ratio_vs_grpc_64 >= 10)}; >= 1,000 MB/s on 4 KiB ${met(summary.mb_per_s_4k >= 1000)}; slow consumer under +20 MB ${met(summary.slow_consumer_rss_growth_mb < 20)}`,
);
console.log(`wrote ${writeResult('stream', summary)}`);
