// Echo calls through FLUXAR over TCP (1 and 8 connections), gRPC unary (grpc-js) and NATS
// request/reply, in one run, with the same number of calls in flight. Then FLUXAR with a 4 KiB
// JSON-like payload, plain and with each compression: calls/s and bytes on the wire. Then with
// end-to-end encryption (Noise NN), 64 B and 4 KiB, against the same runs in the clear. The servers run in a
// second process (and nats-server in a third): on 2 cores the load generator, the server and the
// broker share the machine, and NATS pays for its extra hop through the broker.
// Several FLUXAR connections are a PeerPool (each call to the connection with the fewest in
// flight), as an application would use them; the end-to-end runs are also made with calls spread
// round-robin, for the cost of sealing when every flush carries only a few calls. Encrypted and
// clear runs alternate in pairs, and each ratio is the median pair's: on a shared machine two
// runs minutes apart differ by more than encryption costs.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { connect as natsConnect } from '@nats-io/transport-node';
import { NatsServerProcess } from '../test/harness/nats.js';
import { COMPRESSIONS, connect, PeerPool, type PoolOptions, Session } from '../src/fluxar/mod.js';
import { transactions } from '../test/harness/documents.js';
import { echoService } from './fixtures/rpc-grpc.js';
import { LatencyRecorder, type LatencySummary } from './harness/latency.js';
import { printTable, writeResult } from './harness/report.js';

const IN_FLIGHT = 256;
const RUN_MS = 3000;
const WARMUP_MS = 500;
const PAYLOAD = new Uint8Array(64).fill(7);
const LATENCY_SAMPLE = 4;
const DOCUMENT_4K = transactions(4096);
const COMPRESSION_CONNECTIONS = 8;
/** Encrypted and clear runs of each payload, alternated. */
const E2E_PAIRS = 3;

interface Result extends LatencySummary {
  peer: string;
  connections: number;
  calls_per_s: number;
  /** The compression agreed, for the 4 KiB runs ('none' for plain). */
  compression?: string;
  /** Sealed end to end. */
  e2e?: boolean;
  /** Session resume agreed: every envelope retained until acknowledged. */
  resume?: boolean;
  /** Bytes of one call's frame on the wire (its answer is as large). */
  wire_bytes?: number;
  /** How calls were spread over several connections. */
  spread?: 'pool' | 'round-robin';
  /** The encrypted-or-clear pair the run belongs to. */
  pair?: number;
}

interface Pair {
  payload: string;
  spread: 'pool' | 'round-robin';
  plain_calls_per_s: number;
  encrypted_calls_per_s: number;
  ratio: number;
}

/** The bytes of one call frame carrying `payload` with the compression agreed from `caps`. */
function wireBytes(caps: string[], payload: unknown): number {
  const client = new Session({ role: 'client', framing: 'stream', caps });
  const server = new Session({ role: 'server', framing: 'stream' });
  for (const b of client.takeOutput()) server.receive(b);
  for (const e of server.takeEvents()) if (e.type === 'authenticate') server.accept({ id: 'bench' });
  for (const b of server.takeOutput()) client.receive(b);
  client.takeOutput();
  client.call('echo', payload);
  return client.takeOutput().reduce((n, b) => n + b.length, 0);
}

/** Keeps IN_FLIGHT calls going for RUN_MS after a warm-up; call(i) makes call number i. */
async function drive(name: string, connections: number, call: (i: number) => Promise<unknown>): Promise<Result> {
  const latency = new LatencyRecorder();
  let measuring = false;
  let stopAt = Infinity;
  let completed = 0;
  let seq = 0;
  let inFlight = 0;
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  let failure: unknown;
  const launch = () => {
    const i = seq++;
    const stamp = i % LATENCY_SAMPLE === 0 ? performance.now() : 0;
    inFlight++;
    call(i).then(
      () => {
        inFlight--;
        const now = stamp !== 0 || measuring ? performance.now() : 0;
        if (measuring) {
          completed++;
          if (stamp !== 0) latency.recordNs((now - stamp) * 1e6);
        }
        if (now < stopAt || stamp === 0) {
          if (performance.now() < stopAt) launch();
          else if (inFlight === 0) finish();
        } else if (inFlight === 0) finish();
      },
      (err: unknown) => {
        failure = err;
        inFlight--;
        stopAt = 0;
        if (inFlight === 0) finish();
      },
    );
  };
  for (let i = 0; i < IN_FLIGHT; i++) launch();
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  measuring = true;
  const began = performance.now();
  stopAt = began + RUN_MS;
  await done;
  if (failure !== undefined) throw failure;
  const elapsed = performance.now() - began;
  return { peer: name, connections, calls_per_s: Math.round((completed / elapsed) * 1000), ...latency.summary() };
}

const nats = await NatsServerProcess.start({ jetstream: false });
const servers = spawn(process.execPath, [new URL('./fixtures/rpc-servers.js', import.meta.url).pathname, nats.url], { stdio: ['pipe', 'pipe', 'inherit'] });
const [line] = (await once(createInterface({ input: servers.stdout! }), 'line')) as [string];
const addresses = JSON.parse(line) as { fluxar: string; grpc: string };

/**
 * Calls of `payload` over COMPRESSION_CONNECTIONS connections: through the pool (to the one with
 * the fewest in flight), or each call on the next connection in turn.
 */
async function pooled(peer: string, options: PoolOptions, payload: unknown, spread: Result['spread'] = 'pool'): Promise<Result> {
  const n = COMPRESSION_CONNECTIONS;
  const pool = await PeerPool.connect(addresses.fluxar, { ...options, size: n });
  const call = spread === 'pool' ? () => pool.call('echo', payload) : (i: number) => pool.peers[i % n]!.call('echo', payload);
  try {
    return { ...(await drive(peer, n, call)), spread };
  } finally {
    await pool.close();
  }
}

const results: Result[] = [];
const pairs: Pair[] = [];
let resumeBaseline = 0;
try {
  {
    const peer = await connect(addresses.fluxar);
    results.push(await drive('fluxar-tcp', 1, () => peer.call('echo', PAYLOAD)));
    await peer.close();
  }
  results.push(await pooled('fluxar-tcp', {}, PAYLOAD));

  const Client = grpc.makeGenericClientConstructor(echoService, 'Bench');
  const grpcClient = new Client(addresses.grpc, grpc.credentials.createInsecure()) as unknown as {
    echo(req: Buffer, cb: (err: Error | null, res: Buffer) => void): void;
    close(): void;
  };
  const grpcPayload = Buffer.from(PAYLOAD);
  results.push(
    await drive('grpc-js', 1, () => new Promise((resolve, reject) => grpcClient.echo(grpcPayload, (err, res) => (err ? reject(err) : resolve(res))))),
  );
  grpcClient.close();

  const nc = await natsConnect({ servers: nats.url });
  results.push(await drive('nats-request', 1, () => nc.request('bench.echo', PAYLOAD, { timeout: 10_000 })));
  await nc.close();

  for (const compression of ['none', ...COMPRESSIONS]) {
    const caps = compression === 'none' ? [] : [compression];
    const result = await pooled('fluxar-tcp-4k', { caps }, DOCUMENT_4K);
    results.push({ ...result, compression, wire_bytes: wireBytes(caps, DOCUMENT_4K) });
  }

  for (const [peer, payload, spread] of [
    ['fluxar-tcp', PAYLOAD, 'pool'],
    ['fluxar-tcp-4k', DOCUMENT_4K, 'pool'],
    ['fluxar-tcp', PAYLOAD, 'round-robin'],
  ] as const) {
    for (let pair = 0; pair < E2E_PAIRS; pair++) {
      const plain = await pooled(peer, { caps: [] }, payload, spread);
      const sealed = await pooled(peer, { caps: [], e2e: {} }, payload, spread);
      results.push({ ...plain, pair }, { ...sealed, e2e: true, pair });
      pairs.push({
        payload: peer === 'fluxar-tcp' ? '64 B' : '4 KiB',
        spread: plain.spread!,
        plain_calls_per_s: plain.calls_per_s,
        encrypted_calls_per_s: sealed.calls_per_s,
        ratio: Math.round((sealed.calls_per_s / plain.calls_per_s) * 100) / 100,
      });
    }
  }

  // What resume costs while nothing breaks: a copy of each envelope sent, kept until acked;
  // against a clear run just before it.
  resumeBaseline = (await pooled('fluxar-tcp', { caps: [] }, PAYLOAD)).calls_per_s;
  results.push({ ...(await pooled('fluxar-tcp', { caps: [], resume: true }, PAYLOAD)), resume: true });
} finally {
  servers.stdin!.end();
  await once(servers, 'exit');
  await nats.stop();
}

const rate = (peer: string, connections = 1) =>
  results.find((r) => r.peer === peer && r.connections === connections && r.e2e !== true && r.resume !== true && r.pair === undefined)!.calls_per_s;
const resumable = results.find((r) => r.resume === true)!;
const best = Math.max(rate('fluxar-tcp', 1), rate('fluxar-tcp', 8));
const compressed = (name: string) => results.find((r) => r.peer === 'fluxar-tcp-4k' && r.compression === name)!;
/** The pairs of one payload and spread, and the median pair (by its ratio). */
function medianPair(payload: string, spread: Pair['spread']): { median: Pair; ratios: number[] } {
  const of = pairs.filter((p) => p.payload === payload && p.spread === spread).sort((a, b) => a.ratio - b.ratio);
  return { median: of[Math.floor(of.length / 2)]!, ratios: of.map((p) => p.ratio) };
}
const sealed64 = medianPair('64 B', 'pool');
const sealed4k = medianPair('4 KiB', 'pool');
const sealedRoundRobin = medianPair('64 B', 'round-robin');
const plain4k = compressed('none');
const round2 = (x: number) => Math.round(x * 100) / 100;
/** Per compression: wire bytes and calls/s against the plain 4 KiB run. */
const vsPlain = Object.fromEntries(
  COMPRESSIONS.flatMap((name) => [
    [`${name}_wire_ratio_4k`, round2(compressed(name).wire_bytes! / plain4k.wire_bytes!)],
    [`${name}_calls_vs_plain_4k`, round2(compressed(name).calls_per_s / plain4k.calls_per_s)],
  ]),
);
const summary = {
  in_flight: IN_FLIGHT,
  run_ms: RUN_MS,
  payload_bytes: PAYLOAD.length,
  latency_sampled_one_in: LATENCY_SAMPLE,
  fluxar_calls_per_s: best,
  fluxar_calls_per_s_1_conn: rate('fluxar-tcp', 1),
  fluxar_calls_per_s_8_conn: rate('fluxar-tcp', 8),
  grpc_calls_per_s: rate('grpc-js'),
  nats_calls_per_s: rate('nats-request'),
  ratio_vs_grpc: Math.round((best / rate('grpc-js')) * 10) / 10,
  ratio_vs_nats: Math.round((best / rate('nats-request')) * 10) / 10,
  payload_4k_json_bytes: JSON.stringify(DOCUMENT_4K).length,
  plain_wire_bytes_4k: plain4k.wire_bytes,
  plain_calls_per_s_4k: plain4k.calls_per_s,
  ...vsPlain,
  encrypted_calls_per_s_64: sealed64.median.encrypted_calls_per_s,
  encrypted_calls_per_s_4k: sealed4k.median.encrypted_calls_per_s,
  encrypted_vs_plain_64: sealed64.median.ratio,
  encrypted_vs_plain_4k: sealed4k.median.ratio,
  /** Every pair's ratio, lowest first: the spread on this machine in this run. */
  encrypted_vs_plain_64_pairs: sealed64.ratios,
  encrypted_vs_plain_4k_pairs: sealed4k.ratios,
  /** The same with calls spread round-robin over the connections: a few calls per seal. */
  encrypted_vs_plain_64_round_robin: sealedRoundRobin.median.ratio,
  encrypted_vs_plain_64_round_robin_pairs: sealedRoundRobin.ratios,
  e2e_pairs: pairs,
  resumable_calls_per_s_64: resumable.calls_per_s,
  resumable_baseline_calls_per_s_64: resumeBaseline,
  resumable_vs_plain_64: round2(resumable.calls_per_s / resumeBaseline),
  results,
};
printTable(
  results.map((r) => ({
    peer: `${r.e2e ? `${r.peer} e2e` : r.resume ? `${r.peer} resume` : r.compression === undefined ? r.peer : `${r.peer} ${r.compression}`}${r.pair === undefined ? '' : ` #${r.pair + 1}`}`,
    conns: r.spread === 'round-robin' ? `${r.connections} rr` : r.connections,
    'calls/s': r.calls_per_s,
    'wire B': r.wire_bytes ?? '',
    'p50 us': r.p50_us,
    'p99 us': r.p99_us,
    'max us': r.max_us,
  })),
);
console.log(`\nFLUXAR (best) vs grpc-js: ${summary.ratio_vs_grpc}x, vs NATS request/reply: ${summary.ratio_vs_nats}x (${IN_FLIGHT} calls in flight)`);
for (const name of COMPRESSIONS) {
  console.log(
    `4 KiB JSON with ${name}: ${vsPlain[`${name}_wire_ratio_4k`]}x the bytes on the wire, ${vsPlain[`${name}_calls_vs_plain_4k`]}x the calls/s of plain`,
  );
}
console.log(
  `end to end (Noise NN, ChaCha20-Poly1305), median of ${E2E_PAIRS} alternated pairs: ${summary.encrypted_vs_plain_64}x the calls/s in the clear at 64 B (pairs ${sealed64.ratios.join(', ')}), ${summary.encrypted_vs_plain_4k}x at 4 KiB (${sealed4k.ratios.join(', ')}); calls spread round-robin: ${summary.encrypted_vs_plain_64_round_robin}x at 64 B (${sealedRoundRobin.ratios.join(', ')})`,
);
console.log(`session resume agreed (envelopes retained until acked): ${summary.resumable_vs_plain_64}x the calls/s without it at 64 B`);
console.log(`wrote ${writeResult('rpc', summary)}`);
