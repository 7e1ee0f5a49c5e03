// Echo calls through FLUXAR over TCP (1 and 8 connections), gRPC unary (grpc-js) and NATS
// request/reply, in one run, with the same number of calls in flight. Then FLUXAR with a 4 KiB
// JSON-like payload, plain and with each compression: calls/s and bytes on the wire. Then with
// end-to-end encryption (Noise NN), 64 B and 4 KiB, against the same runs in the clear. The servers run in a
// second process (and nats-server in a third): on 2 cores the load generator, the server and the
// broker share the machine, and NATS pays for its extra hop through the broker.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { connect as natsConnect } from '@nats-io/transport-node';
import { NatsServerProcess } from '../test/harness/nats.js';
import { COMPRESSIONS, connect, type Peer, Session } from '../src/fluxar/mod.js';
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

const results: Result[] = [];
try {
  for (const connections of [1, 8]) {
    const peers: Peer[] = await Promise.all(Array.from({ length: connections }, () => connect(addresses.fluxar)));
    results.push(await drive('fluxar-tcp', connections, (i) => peers[i % connections]!.call('echo', PAYLOAD)));
    await Promise.all(peers.map((p) => p.close()));
  }

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
    const n = COMPRESSION_CONNECTIONS;
    const peers: Peer[] = await Promise.all(Array.from({ length: n }, () => connect(addresses.fluxar, { caps })));
    const result = await drive('fluxar-tcp-4k', n, (i) => peers[i % n]!.call('echo', DOCUMENT_4K));
    results.push({ ...result, compression, wire_bytes: wireBytes(caps, DOCUMENT_4K) });
    await Promise.all(peers.map((p) => p.close()));
  }

  for (const [peer, payload] of [
    ['fluxar-tcp', PAYLOAD],
    ['fluxar-tcp-4k', DOCUMENT_4K],
  ] as const) {
    const n = COMPRESSION_CONNECTIONS;
    const peers: Peer[] = await Promise.all(Array.from({ length: n }, () => connect(addresses.fluxar, { caps: [], e2e: {} })));
    results.push({ ...(await drive(peer, n, (i) => peers[i % n]!.call('echo', payload))), e2e: true });
    await Promise.all(peers.map((p) => p.close()));
  }

  {
    // What resume costs while nothing breaks: a copy of each envelope sent, kept until acked.
    const n = COMPRESSION_CONNECTIONS;
    const peers: Peer[] = await Promise.all(Array.from({ length: n }, () => connect(addresses.fluxar, { caps: [], resume: true })));
    results.push({ ...(await drive('fluxar-tcp', n, (i) => peers[i % n]!.call('echo', PAYLOAD))), resume: true });
    await Promise.all(peers.map((p) => p.close()));
  }
} finally {
  servers.stdin!.end();
  await once(servers, 'exit');
  await nats.stop();
}

const rate = (peer: string, connections = 1) =>
  results.find((r) => r.peer === peer && r.connections === connections && r.e2e !== true && r.resume !== true)!.calls_per_s;
const resumable = results.find((r) => r.resume === true)!;
const best = Math.max(rate('fluxar-tcp', 1), rate('fluxar-tcp', 8));
const compressed = (name: string) => results.find((r) => r.peer === 'fluxar-tcp-4k' && r.compression === name)!;
const sealed = (peer: string) => results.find((r) => r.peer === peer && r.e2e === true)!;
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
  encrypted_calls_per_s_64: sealed('fluxar-tcp').calls_per_s,
  encrypted_calls_per_s_4k: sealed('fluxar-tcp-4k').calls_per_s,
  encrypted_vs_plain_64: round2(sealed('fluxar-tcp').calls_per_s / rate('fluxar-tcp', 8)),
  encrypted_vs_plain_4k: round2(sealed('fluxar-tcp-4k').calls_per_s / plain4k.calls_per_s),
  resumable_calls_per_s_64: resumable.calls_per_s,
  resumable_vs_plain_64: round2(resumable.calls_per_s / rate('fluxar-tcp', 8)),
  results,
};
printTable(
  results.map((r) => ({
    peer: r.e2e ? `${r.peer} e2e` : r.resume ? `${r.peer} resume` : r.compression === undefined ? r.peer : `${r.peer} ${r.compression}`,
    conns: r.connections,
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
  `end to end (Noise NN, ChaCha20-Poly1305): ${summary.encrypted_vs_plain_64}x the calls/s in the clear at 64 B, ${summary.encrypted_vs_plain_4k}x at 4 KiB`,
);
console.log(`session resume agreed (envelopes retained until acked): ${summary.resumable_vs_plain_64}x the calls/s without it at 64 B`);
console.log(`wrote ${writeResult('rpc', summary)}`);
