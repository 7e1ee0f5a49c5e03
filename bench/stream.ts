// One FLUXAR stream against grpc-js server streaming, in the same run: chunks/s and MB/s with
// 64 B and 4 KiB chunks, time to first chunk, and the server's RSS under a consumer that reads
// 10x slower than the producer can produce. The servers run in a second process; this process
// is the consumer. Results: bench/results/stream.json.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { connect, type Peer } from '../src/fluxar/mod.js';
import { streamService } from './fixtures/rpc-grpc.js';
import { rssOf } from '../test/harness/server-process.js';
import { LatencyRecorder, type LatencySummary } from './harness/latency.js';
import { printTable, writeResult } from './harness/report.js';

const RUN_MS = Number(process.env.BENCH_DURATION_MS ?? 3000);
/**
 * Each peer streams this long before it is measured. A fixed count of chunks was too short: the
 * first 200,000 chunks of 4 KiB after the 64 B runs went 1.5x slower than the next ones (the JIT
 * re-optimising for the new size, TCP's buffers growing), and that first stream fell inside the
 * measured run of one peer and not of another.
 */
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1000);
const FIRST_CHUNK_SAMPLES = 300;
const SLOW_MS = Number(process.env.BENCH_SLOW_MS ?? 5000);
const WINDOW_BYTES = 4 * 1024 * 1024;

interface Throughput {
  peer: string;
  chunk_bytes: number;
  chunks: number;
  chunks_per_s: number;
  mb_per_s: number;
}

type StreamOnce = (count: number, size: number, onChunk: () => void) => Promise<void>;

/**
 * Streams until RUN_MS have passed, in streams of `perStream` chunks (one stream of a billion
 * chunks would measure the same; several keep a run's length bounded on a slow peer).
 */
async function throughput(peer: string, size: number, perStream: number, run: StreamOnce): Promise<Throughput> {
  // Warm-up: the JIT, the sockets' buffers.
  const warming = performance.now();
  while (performance.now() - warming < WARMUP_MS) await run(perStream, size, () => {});
  let chunks = 0;
  const began = performance.now();
  while (performance.now() - began < RUN_MS) await run(perStream, size, () => chunks++);
  const seconds = (performance.now() - began) / 1000;
  return {
    peer,
    chunk_bytes: size,
    chunks,
    chunks_per_s: Math.round(chunks / seconds),
    mb_per_s: Math.round((chunks * size) / seconds / 1e6),
  };
}

/** From asking for a stream to its first chunk, one stream at a time. */
async function firstChunk(open: (onFirst: () => void) => Promise<void>): Promise<LatencySummary> {
  const latency = new LatencyRecorder();
  for (let i = 0; i < FIRST_CHUNK_SAMPLES + 20; i++) {
    const began = performance.now();
    let at = 0;
    await open(() => (at = performance.now()));
    if (i >= 20) latency.recordNs((at - began) * 1e6);
  }
  return latency.summary();
}

const rssMb = (pid: number) => rssOf(pid) / (1024 * 1024);

const servers = spawn(process.execPath, [new URL('./fixtures/stream-servers.js', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
const [line] = (await once(createInterface({ input: servers.stdout! }), 'line')) as [string];
const addresses = JSON.parse(line) as { fluxar: string; grpc: string; pid: number };

const fluxarPeer: Peer = await connect(addresses.fluxar);
/**
 * The window a user streaming chunks of this size would grant: 4 MiB of them (credit counts
 * chunks; a byte budget divided by the chunk size). grpc-js's HTTP/2 window grows to a few MiB.
 */
const windowFor = (size: number) => Math.max(64, Math.ceil(WINDOW_BYTES / size));
/** A FLUXAR stream from the handler at `target`: an async generator ('chunks') or a plain one. */
const fluxarStreamOf =
  (target: string): StreamOnce =>
  async (count, size, onChunk) => {
    const stream = fluxarPeer.stream(target, { count, size }, { credit: windowFor(size) });
    for await (const _ of stream) onChunk();
    await stream.result;
  };
const fluxarStream = fluxarStreamOf('chunks');
const fluxarGenerator = fluxarStreamOf('chunks-sync');

const GrpcClient = grpc.makeGenericClientConstructor(streamService, 'Stream');
const grpcClient = new GrpcClient(addresses.grpc, grpc.credentials.createInsecure()) as unknown as {
  chunks(req: Buffer): grpc.ClientReadableStream<Buffer>;
  close(): void;
};
const grpcStream: StreamOnce = async (count, size, onChunk) => {
  const call = grpcClient.chunks(Buffer.from(JSON.stringify({ count, size })));
  for await (const _ of call) onChunk();
};

const throughputs: Throughput[] = [];
let first: { fluxar: LatencySummary; grpc: LatencySummary };
let slow: { chunks_read: number; produced_per_s_max: number; read_per_s: number; rss_before_mb: number; rss_peak_mb: number; rss_growth_mb: number };
try {
  for (const size of [64, 4096]) {
    throughputs.push(await throughput('fluxar-tcp', size, 200_000, fluxarStream));
    throughputs.push(await throughput('fluxar-tcp-generator', size, 200_000, fluxarGenerator));
    throughputs.push(await throughput('grpc-js', size, 200_000, grpcStream));
  }

  const firstOf = (run: StreamOnce) => (onFirst: () => void) => {
    let seen = false;
    return run(1, 64, () => {
      if (!seen) onFirst();
      seen = true;
    });
  };
  first = { fluxar: await firstChunk(firstOf(fluxarStream)), grpc: await firstChunk(firstOf(grpcStream)) };

  // The slow consumer: reads one tenth of what the producer can make, for SLOW_MS, from one
  // stream that would never end on its own. The producer must stop, not buffer.
  const max = throughputs.find((t) => t.peer === 'fluxar-tcp' && t.chunk_bytes === 4096)!.chunks_per_s;
  const readRate = Math.max(1, Math.round(max / 10));
  const rssBefore = rssMb(addresses.pid);
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
    rssPeak = Math.max(rssPeak, rssMb(addresses.pid));
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
  grpcClient.close();
  servers.stdin!.end();
  await once(servers, 'exit');
}

const find = (peer: string, size: number) => throughputs.find((t) => t.peer === peer && t.chunk_bytes === size)!;
const ratio = (a: number, b: number) => Math.round((a / b) * 10) / 10;
const summary = {
  run_ms: RUN_MS,
  warmup_ms: WARMUP_MS,
  window_bytes: WINDOW_BYTES,
  handler: 'fluxar-tcp: an async generator handler (the headline figures); fluxar-tcp-generator: the same loop as a plain generator',
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
