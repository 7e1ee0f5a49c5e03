// What the guaranteed-lane tests and benchmark share: a two-rack scenario whose wire from rack
// A's fluxar gear to rack B's probe gear is guaranteed, and the stream where rack B's sink puts
// what came through, read back to see exactly which messages arrived.
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { connect, type Peer } from '../../src/fluxar/mod.js';
import { decodeFluxMsg } from '../../src/fluxmsg/codec.js';
import { Rack } from '../../src/rack/rack.js';
import { parseScenario } from '../../src/scenario/parse.js';
import { captureLogs } from './logs.js';
import { untilAsync } from './wait.js';

const root = new URL('../../../', import.meta.url);
export const PROBE_WASM = new URL('dist/test-gears/probe.wasm', root).pathname;

/** Where rack B's sink publishes (a JetStream stream of the test's, deduplicating by message id). */
export const OUT_SUBJECT = 'lanes.out';
export const OUT_STREAM = 'LANES_OUT';

export interface LaneScenarioOptions {
  name?: string;
  ackWaitMs?: number;
  maxDeliver?: number;
  ordered?: boolean;
  replicas?: number;
  /** The probe runs with this time limit per message (a spin then costs its worker). */
  probeTimeoutMs?: number;
}

/** rack a: api (fluxar) -guaranteed-> rack b: probe (wasm) -> sink (nats, JetStream). */
export function laneScenario(options: LaneScenarioOptions = {}): Record<string, unknown> {
  return {
    meta: { name: options.name ?? 'lanes', version: '1' },
    racks: [{ name: 'a' }, { name: 'b' }],
    lanes: { replicas: options.replicas ?? 1 },
    gears: [
      { name: 'api', type: 'fluxar', deploy: 'a', config: { listen: ['tcp://127.0.0.1:0'] } },
      {
        name: 'probe',
        type: 'wasm',
        deploy: 'b',
        config: { module: PROBE_WASM, ...(options.probeTimeoutMs === undefined ? {} : { timeout_ms: options.probeTimeoutMs }) },
      },
      { name: 'sink', type: 'nats', deploy: 'b', config: { subject: OUT_SUBJECT, mode: 'publish', jetstream: true } },
    ],
    wires: [
      {
        from: 'api.out',
        to: 'probe.in',
        lane: 'guaranteed',
        ack_wait_ms: options.ackWaitMs ?? 2000,
        max_deliver: options.maxDeliver ?? 5,
        ...(options.ordered ? { ordered: true } : {}),
      },
      { from: 'probe.out', to: 'sink.in' },
    ],
  };
}

/** The output stream: deduplicating by message id for two minutes. */
export function outStreamConfig(replicas = 1) {
  return { name: OUT_STREAM, subjects: [OUT_SUBJECT], duplicate_window: 120_000 * 1_000_000, num_replicas: replicas };
}

export async function makeOutStream(nc: NatsConnection, replicas = 1): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add(outStreamConfig(replicas));
}

const READER_DEADLINE_MS = 30_000;

/** The `data.n` (or `data.seq`) of every message in a stream (in stream order), with each fluxMsg's meta. */
export async function readStream(
  nc: NatsConnection,
  stream: string,
  readerDeadlineMs = READER_DEADLINE_MS,
): Promise<Array<{ n: number; meta: Record<string, string> }>> {
  const jsm = await jetstreamManager(nc);
  const total = (await jsm.streams.info(stream)).state.messages;
  const out: Array<{ n: number; meta: Record<string, string> }> = [];
  if (total === 0) return out;
  // On a cluster that just lost a node, making the reader may time out for a while (CI saw five
  // timeouts in a row) while JetStream settles: it is tried again until the deadline.
  const deadline = Date.now() + readerDeadlineMs;
  let consumer: Awaited<ReturnType<ReturnType<typeof jetstream>['consumers']['get']>> | undefined;
  while (consumer === undefined) {
    consumer = await jetstream(nc)
      .consumers.get(stream)
      .catch((err: Error) => {
        if (Date.now() >= deadline) throw err;
        return undefined;
      });
    if (consumer === undefined) await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const messages = await consumer.consume({ max_messages: 1000 });
  for await (const m of messages) {
    const msg = decodeFluxMsg(m.data, { copyBuffers: true });
    const data = msg.data as Record<string, unknown>;
    // A call's n, or a generated message's seq.
    out.push({ n: Number(data.n ?? data.seq), meta: msg.meta });
    if (out.length >= total) break;
  }
  await messages.close();
  return out;
}

/** How many times each n occurs. */
export function tally(ns: number[]): Map<number, number> {
  const counts = new Map<number, number>();
  for (const n of ns) counts.set(n, (counts.get(n) ?? 0) + 1);
  return counts;
}

/**
 * `count` calls `{n, ...body(n)}` through `peer`, at most `window` in flight; the answers by n
 * (an Error for a call that failed). `onAnswer` sees how many have been answered so far.
 */
export async function callMany(
  peer: Peer,
  count: number,
  body: (n: number) => Record<string, unknown>,
  window = 256,
  onAnswer?: (answered: number) => void,
): Promise<unknown[]> {
  const answers: unknown[] = new Array(count);
  let next = 0;
  let answered = 0;
  const worker = async () => {
    while (next < count) {
      const n = next++;
      answers[n] = await peer.call('lane', { n, ...body(n) }).catch((err: Error) => err);
      onAnswer?.(++answered);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  return answers;
}

const rackDir = mkdtempSync(join(tmpdir(), 'fluxrig-lane-racks-'));

/** A rack of a lane scenario, in this process, on `natsUrl` (several URLs: a cluster's nodes). */
export function laneRack(name: string, natsUrl: string | string[], doc: Record<string, unknown>, workers = 2): Rack {
  const file = join(rackDir, `${name}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(doc));
  const url = Array.isArray(natsUrl) ? natsUrl.join(',') : natsUrl;
  return new Rack({ scenario: parseScenario(stringify(doc), file), name, natsUrl: url, workers, logger: captureLogs().logger });
}

/**
 * Starts racks a and b of a lane scenario, runs `body` with a client of a's fluxar gear, and
 * stops them all, whatever `body` did.
 */
export async function withRackPair(
  natsUrls: { a: string | string[]; b: string | string[] },
  doc: Record<string, unknown>,
  body: (racks: { a: Rack; b: Rack; peer: Peer }) => Promise<void>,
): Promise<void> {
  const a = laneRack('a', natsUrls.a, doc);
  const b = laneRack('b', natsUrls.b, doc);
  await a.start();
  await b.start();
  const peer = await connect(a.addresses()[0]!);
  try {
    await body({ a, b, peer });
  } finally {
    await peer.close();
    await a.stop();
    await b.stop();
  }
}

/** Messages each fault test sends. */
export const FAULT_COUNT = 20_000;

export async function outCount(nc: NatsConnection): Promise<number> {
  return (await (await jetstreamManager(nc)).streams.info(OUT_STREAM)).state.messages;
}

/** FAULT_COUNT calls through `peer`; once a quarter are answered, `fault` strikes. The answers, once it is over. */
export async function callsWithFault(peer: Peer, fault: () => unknown): Promise<unknown[]> {
  let struck: unknown;
  const answers = await callMany(
    peer,
    FAULT_COUNT,
    () => ({}),
    256,
    (answered) => {
      if (answered === FAULT_COUNT / 4) struck = fault();
    },
  );
  await struck;
  return answers;
}

/**
 * Which of the accepted calls arrived, how often, and what arrived that nobody was told of:
 * every accepted one must arrive exactly once.
 */
/** `waitMs`: how long the arrivals may take (the whole file must stay within make test's per-file timeout). */
export async function checkArrivals(nc: NatsConnection, answers: unknown[], what: string, diagnose?: () => Promise<unknown>, waitMs = 60_000) {
  const accepted = answers.flatMap((a, n) => (a instanceof Error ? [] : [n]));
  try {
    // A cluster that just lost a node may time out an info request: that is "not yet", not a failure.
    await untilAsync(async () => (await outCount(nc).catch(() => -1)) >= accepted.length, `${what}: every accepted message in the output stream`, waitMs);
  } catch (err) {
    const state = await diagnose?.().catch((e: Error) => e.message);
    throw new Error(`${(err as Error).message}: ${await outCount(nc).catch(() => '?')} of ${accepted.length} arrived; ${JSON.stringify(state)}`);
  }
  const counts = tally((await readStream(nc, OUT_STREAM)).map((m) => m.n));
  const missing = accepted.filter((n) => counts.get(n) !== 1);
  assert.deepEqual(missing.slice(0, 10), [], `${what}: accepted messages that did not arrive exactly once`);
  const duplicates = [...counts.values()].filter((c) => c > 1).length;
  assert.equal(duplicates, 0, `${what}: duplicates in the output stream`);
  return { accepted: accepted.length, failed: answers.length - accepted.length, arrived: counts.size };
}
