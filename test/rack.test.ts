// The rack end to end: real sockets, real worker threads, real compiled Wasm, real nats-server.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as natsConnect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { ModuleBucket } from '../src/bus/module-bucket.js';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { COMPRESSIONS, connect, type DescribeDocument, decodeEnvelope, FluxarError, StreamFrameSplitter } from '../src/fluxar/mod.js';
import { createFluxMsg, decodeFluxMsg, encodeFluxMsg } from '../src/mod.js';
import { Rack, RackError } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { NatsServerProcess } from './harness/nats.js';
import { makeTestCerts } from './harness/tls.js';
import { captureLogs } from './harness/logs.js';
import { until } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-rack-'));
const fraudWasm = join(root, 'wasm-gears/build/fraud-scorer.wasm');
const probeWasm = join(root, 'dist/test-gears/probe.wasm');

const capture = () => captureLogs();

function scenario(doc: Record<string, unknown>, name = 'test') {
  const file = join(dir, `${name}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, stringify(doc));
  return parseScenario(stringify(doc), file);
}

function quickstart(listen: string[], extraGears: unknown[] = [], extraWires: unknown[] = [], fraud: Record<string, unknown> = {}) {
  return scenario({
    meta: { name: 'qs', version: '1' },
    gears: [
      { name: 'api', type: 'fluxar', config: { listen } },
      { name: 'fraud', type: 'wasm', config: { module: fraudWasm, allow_kv: true, ...fraud } },
      ...extraGears,
    ],
    wires: [{ from: 'api.out', to: 'fraud.in' }, { from: 'fraud.out', to: 'api.in' }, { from: 'fraud.error', to: 'api.in' }, ...extraWires],
  });
}

const approved = { amount: 100, merchant: 'm-1', country: 'FR', card_country: 'FR' };
const blocked = { amount: 2500, merchant: 'm-666', country: 'FR', card_country: 'US' };

describe('rack', () => {
  const certs = makeTestCerts();
  writeFileSync(join(dir, 'server.crt'), certs.serverCert);
  writeFileSync(join(dir, 'server.key'), certs.serverKey);
  let rack: Rack;
  let log: ReturnType<typeof capture>;

  before(async () => {
    log = capture();
    const s = scenario({
      meta: { name: 'qs', version: '1' },
      gears: [
        {
          name: 'api',
          type: 'fluxar',
          config: {
            listen: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar', 'tls://127.0.0.1:0', 'wss://127.0.0.1:0/fluxar', `unix://${join(dir, 'rack.sock')}`],
            tls_cert: join(dir, 'server.crt'),
            tls_key: join(dir, 'server.key'),
          },
        },
        { name: 'fraud', type: 'wasm', config: { module: fraudWasm, allow_kv: true } },
        { name: 'audit', type: 'log', config: { fields: ['amount', 'fraud_score'] } },
      ],
      wires: [
        { from: 'api.out', to: 'fraud.in' },
        { from: 'fraud.out', to: 'api.in' },
        { from: 'fraud.out', to: 'audit.in' },
        { from: 'fraud.error', to: 'api.in' },
      ],
    });
    rack = new Rack({ scenario: s, workers: 2, kv: { 'fraud/blocklist': 'm-666, m-13' }, logger: log.logger });
    await rack.start();
  });
  after(() => rack.stop());

  it('answers a call through the quickstart chain over every transport', async () => {
    const urls = rack.addresses();
    assert.deepEqual(
      urls.map((u) => u.split(':')[0]),
      ['tcp', 'ws', 'tls', 'wss', 'unix'],
    );
    for (const url of urls) {
      const peer = await connect(url, { tls: { ca: certs.ca } });
      const answer = (await peer.call('payments.authorize', approved)) as Record<string, unknown>;
      assert.equal(answer.decision, 'approved', url);
      assert.equal(answer.fraud_score, 0);
      await peer.close();
    }
  });

  it("answers a rejection with the gear's reason", async () => {
    const peer = await connect(rack.addresses()[0]!);
    await assert.rejects(
      peer.call('payments.authorize', blocked),
      (err: unknown) =>
        err instanceof FluxarError && err.code === 403 && err.message === 'fraud score 125 >= 70' && (err.data as { gear: string }).gear === 'fraud',
    );
    await peer.close();
  });

  it('the log gear on the main thread receives what the workers route to it', async () => {
    const peer = await connect(rack.addresses()[0]!);
    await peer.call('payments.authorize', { ...approved, amount: 321 });
    await until(() => log.lines.some((l) => l.gear === 'audit' && (l.data as Record<string, unknown>).amount === 321), 'the audit log line');
    const line = log.lines.find((l) => l.gear === 'audit' && (l.data as Record<string, unknown>).amount === 321)!;
    assert.deepEqual(line.data, { amount: 321, fraud_score: 0 });
    assert.equal((line.meta as Record<string, string>)['fluxar.target'], 'payments.authorize');
    await peer.close();
  });

  it('says it is standalone without NATS', () => {
    assert.ok(log.lines.some((l) => /standalone: no NATS configured/.test(String(l.msg))));
  });

  it('takes and answers compressed frames with every compression, in its workers', async () => {
    const note = Array.from({ length: 200 }, (_, i) => `line ${i}: card ending ${1000 + i} approved`).join('\n');
    for (const compression of COMPRESSIONS) {
      const peer = await connect(rack.addresses()[0]!, { caps: [compression] });
      assert.deepEqual(peer.session.info!.caps, [compression]);
      const answer = (await peer.call('payments.authorize', { ...approved, note })) as Record<string, unknown>;
      assert.equal(answer.note, note, compression);
      assert.equal(answer.decision, 'approved');
      await peer.close();
    }
  });

  it('spreads connections over the workers and keeps many calls in flight', async () => {
    const peers = await Promise.all(Array.from({ length: 4 }, () => connect(rack.addresses()[0]!)));
    const results = await Promise.all(Array.from({ length: 2000 }, (_, i) => peers[i % 4]!.call('payments.authorize', { ...approved, n: i })));
    assert.deepEqual(
      results.map((r) => (r as Record<string, unknown>).n),
      Array.from({ length: 2000 }, (_, i) => i),
    );
    await Promise.all(peers.map((p) => p.close()));
  });
});

describe('rack behaviour', () => {
  it('runs the gears on the main thread with workers: 0 (the baseline)', async () => {
    const rack = new Rack({ scenario: quickstart(['tcp://127.0.0.1:0']), workers: 0, kv: { 'fraud/blocklist': 'm-666' }, logger: pino({ level: 'silent' }) });
    await rack.start();
    try {
      const peer = await connect(rack.addresses()[0]!);
      assert.equal(((await peer.call('x', approved)) as Record<string, unknown>).decision, 'approved');
      await assert.rejects(peer.call('x', blocked), /fraud score 125/);
      await peer.close();
    } finally {
      await rack.stop();
    }
  });

  it('hot-lane backpressure: tiny lanes, many calls, nothing lost', async () => {
    const s = quickstart(['tcp://127.0.0.1:0']);
    s.gears[0]!.config.max_frame = 4000;
    const rack = new Rack({ scenario: s, workers: 2, laneQueueSize: 4, ringBytes: 8192, logger: pino({ level: 'silent' }) });
    await rack.start();
    try {
      const peers = await Promise.all(Array.from({ length: 3 }, () => connect(rack.addresses()[0]!)));
      const results = await Promise.all(Array.from({ length: 3000 }, (_, i) => peers[i % 3]!.call('x', { ...approved, n: i })));
      assert.equal(results.length, 3000);
      assert.ok(results.every((r, i) => (r as Record<string, unknown>).n === i));
      await Promise.all(peers.map((p) => p.close()));
    } finally {
      await rack.stop();
    }
  });

  it('a graceful stop loses nothing it accepted', async () => {
    const rack = new Rack({ scenario: quickstart(['tcp://127.0.0.1:0']), workers: 2, logger: pino({ level: 'silent' }) });
    await rack.start();
    const peer = await connect(rack.addresses()[0]!);
    const calls = Array.from({ length: 500 }, (_, i) => peer.call('x', { ...approved, n: i }));
    await new Promise((r) => setImmediate(r)); // the calls are on the wire
    const stopping = rack.stop();
    const results = await Promise.allSettled(calls);
    await stopping;
    const failed = results.filter((r) => r.status === 'rejected');
    assert.equal(
      failed.length,
      0,
      `${failed.length} calls lost: ${failed
        .map((f) => (f as PromiseRejectedResult).reason)
        .slice(0, 3)
        .join('; ')}`,
    );
    await peer.closed;
  });

  it('a guest stuck past timeout_ms: its connection gets a clean 503 bye, the rack keeps serving', async () => {
    const s = scenario({
      meta: { name: 'spin' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        { name: 'probe', type: 'wasm', config: { module: probeWasm, timeout_ms: 100 } },
      ],
      wires: [
        { from: 'api.out', to: 'probe.in' },
        { from: 'probe.out', to: 'api.in' },
        { from: 'probe.error', to: 'api.in' },
      ],
    });
    const rack = new Rack({ scenario: s, workers: 2, logger: pino({ level: 'silent' }) });
    await rack.start();
    try {
      const stuck = await connect(rack.addresses()[0]!);
      const other = await connect(rack.addresses()[0]!); // the next connection id: the other worker
      const neighbour = await connect(rack.addresses()[0]!); // the same worker as `stuck`
      const neighbourClosed = neighbour.closed;
      const started = Date.now();
      await assert.rejects(
        stuck.call('x', { action: 'spin' }),
        (err: unknown) => err instanceof FluxarError && err.code === 503 && /gear probe ran \d+ ms, past its timeout_ms of 100/.test(err.message),
      );
      assert.ok(Date.now() - started < 3000);
      assert.equal(((await other.call('x', { action: 'ok' })) as Record<string, unknown>).action, 'ok', 'the other worker never noticed');
      const { code, reason } = await neighbourClosed;
      assert.equal(code, 503);
      assert.match(reason, /gear probe ran \d+ ms, past its timeout_ms of 100/, 'a connection sharing the worker is told precisely why');
      const again = await connect(rack.addresses()[0]!);
      assert.equal(((await again.call('x', { action: 'ok' })) as Record<string, unknown>).action, 'ok');
      await Promise.all([other.close(), again.close()]);
    } finally {
      await rack.stop();
    }
  });

  it('fluxar.describe answers the targets the scenario routes, from its router rules and gear manifests', async () => {
    const s = scenario({
      meta: { name: 'described' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        {
          name: 'route',
          type: 'router',
          config: {
            routes: [
              { port: 'pay', meta: { 'fluxar.target': 'payments.authorize' } },
              { port: 'feed', meta: { 'fluxar.target': 'reports.feed', 'fluxar.type': 'stream' } },
            ],
          },
        },
        { name: 'fraud', type: 'wasm', config: { module: fraudWasm, allow_kv: true } },
        { name: 'probe', type: 'wasm', config: { module: probeWasm } },
        { name: 'ticks', type: 'generator', config: { rate_per_s: 1, meta: { 'fluxar.topic': 'prices.eurusd' } } },
      ],
      wires: [
        { from: 'api.out', to: 'route.in' },
        { from: 'route.pay', to: 'fraud.in' },
        { from: 'route.feed', to: 'probe.in' },
        { from: 'route.default', to: 'probe.in' },
        { from: 'fraud.out', to: 'api.in' },
        { from: 'probe.out', to: 'api.in' },
        { from: 'ticks.out', to: 'api.in' },
      ],
    });
    const rack = new Rack({ scenario: s, workers: 2, logger: capture().logger });
    await rack.start();
    try {
      const peer = await connect(rack.addresses()[0]!);
      const doc = (await peer.call('fluxar.describe', null)) as DescribeDocument;
      assert.equal(doc.version, 1);
      assert.deepEqual(
        doc.methods.map((m) => m.name),
        ['payments.authorize', '*'],
      );
      assert.match(doc.methods[0]!.description!, /^payments\.authorize: to fraud \(wasm: .+\) by route$/);
      assert.deepEqual(
        doc.streams.map((m) => m.name),
        ['reports.feed', '*'],
      );
      assert.deepEqual(
        doc.topics.map((t) => t.pattern),
        ['prices.eurusd'],
      );
      await assert.rejects(peer.call('fluxar.describe', { version: 9 }), (err: unknown) => err instanceof FluxarError && err.code === 501);
      await peer.close();
    } finally {
      await rack.stop();
    }
  });

  it('router: routes by data to named ports', async () => {
    const { logger, lines } = capture();
    const s = scenario({
      meta: { name: 'router' },
      gears: [
        { name: 'gen', type: 'generator', config: { rate_per_s: 200, count: 20 } },
        { name: 'split', type: 'router', config: { routes: [{ port: 'even', data: { parity: 0 } }] } },
        { name: 'probe', type: 'wasm', config: { module: probeWasm } },
        { name: 'evens', type: 'log' },
        { name: 'rest', type: 'log' },
      ],
      wires: [
        { from: 'gen.out', to: 'probe.in' },
        { from: 'probe.out', to: 'split.in' },
        { from: 'split.even', to: 'evens.in' },
        { from: 'split.default', to: 'rest.in' },
      ],
    });
    const rack = new Rack({ scenario: s, workers: 2, logger });
    await rack.start();
    try {
      await until(() => lines.filter((l) => l.gear === 'rest').length === 20, 'all 20 generated messages through the router', 10_000);
      // No message has data.parity 0, so all go to default; a generator with data makes the even ones.
      assert.equal(lines.filter((l) => l.gear === 'evens').length, 0);
      const seqs = lines
        .filter((l) => l.gear === 'rest')
        .map((l) => Number((l.data as Record<string, unknown>).seq))
        .sort((a, b) => a - b);
      assert.deepEqual(
        seqs,
        Array.from({ length: 20 }, (_, i) => i),
      );
    } finally {
      await rack.stop();
    }
    const { logger: logger2, lines: lines2 } = capture();
    const s2 = scenario({
      meta: { name: 'router2' },
      gears: [
        { name: 'gen', type: 'generator', config: { rate_per_s: 500, count: 10, data: { parity: 0 } } },
        { name: 'split', type: 'router', config: { routes: [{ port: 'even', data: { parity: 0 } }] } },
        { name: 'evens', type: 'log' },
        { name: 'rest', type: 'log' },
      ],
      wires: [
        { from: 'gen.out', to: 'split.in' },
        { from: 'split.even', to: 'evens.in' },
        { from: 'split.default', to: 'rest.in' },
      ],
    });
    const rack2 = new Rack({ scenario: s2, workers: 1, logger: logger2 });
    await rack2.start();
    try {
      await until(() => lines2.filter((l) => l.gear === 'evens').length === 10, 'the even messages', 10_000);
      assert.equal(lines2.filter((l) => l.gear === 'rest').length, 0);
    } finally {
      await rack2.stop();
    }
  });

  it('refuses wires that need the bus, and a nats gear without NATS, saying why', async () => {
    const guaranteed = parseScenario(
      stringify({
        meta: { name: 'g' },
        gears: [
          { name: 'gen', type: 'generator', config: { rate_per_s: 1 } },
          { name: 'sink', type: 'log' },
        ],
        wires: [{ from: 'gen.out', to: 'sink.in', lane: 'guaranteed' }],
      }),
      'g.yaml',
    );
    await assert.rejects(
      new Rack({ scenario: guaranteed, workers: 1, logger: pino({ level: 'silent' }) }).start(),
      (err: unknown) =>
        err instanceof RackError &&
        /travels over the snake bus \(NATS JetStream\); start the rack with --nats URL/.test(err.message) &&
        /g\.yaml:\d+:\d+: gen\.out -> sink\.in \(lane: guaranteed\)/.test(err.message),
    );
    const natsOnly = parseScenario(
      stringify({ meta: { name: 'n' }, gears: [{ name: 'pub', type: 'nats', config: { subject: 'x', mode: 'publish' } }] }),
      'n.yaml',
    );
    await assert.rejects(
      new Rack({ scenario: natsOnly, workers: 1, logger: pino({ level: 'silent' }) }).start(),
      /gear pub \(nats\) needs NATS: start the rack with --nats URL/,
    );
  });

  it('a client that sends garbage is disconnected; the rack keeps serving', async () => {
    const rack = new Rack({ scenario: quickstart(['tcp://127.0.0.1:0']), workers: 2, logger: pino({ level: 'silent' }) });
    await rack.start();
    try {
      const port = Number(new URL(rack.addresses()[0]!).port);
      const socket = netConnect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.on('data', (c) => chunks.push(c));
      socket.write(Buffer.from([0, 0, 0, 3, 0, 0xff, 0xff]));
      await once(socket, 'close');
      const [frame] = new StreamFrameSplitter(1 << 20).push(Buffer.concat(chunks));
      assert.equal(decodeEnvelope(frame!.body).error?.code, 400);
      const peer = await connect(rack.addresses()[0]!);
      assert.equal(((await peer.call('x', approved)) as Record<string, unknown>).decision, 'approved');
      await peer.close();
    } finally {
      await rack.stop();
    }
  });
});

describe('rack with NATS', () => {
  let nats: NatsServerProcess;
  before(async () => {
    nats = await NatsServerProcess.start();
  });
  after(() => nats.stop());

  it('on the bus, KV is a NATS KV bucket: the config seeds it, outside changes reach the gears', async () => {
    const rack = new Rack({
      scenario: quickstart(['tcp://127.0.0.1:0']),
      workers: 2,
      natsUrl: nats.url,
      kvBucket: 'test-kv',
      kv: { 'fraud/blocklist': 'm-666' },
      logger: pino({ level: 'silent' }),
    });
    await rack.start();
    const nc = await natsConnect({ servers: nats.url });
    try {
      const kv = await new Kvm(nc).open('test-kv');
      assert.equal(new TextDecoder().decode((await kv.get('fraud/blocklist'))!.value), 'm-666', 'the config seeded the bucket');
      const peer = await connect(rack.addresses()[0]!);
      const suspect = { amount: 2500, merchant: 'm-999', country: 'FR', card_country: 'US' };
      assert.equal(((await peer.call('x', suspect)) as Record<string, unknown>).fraud_score, 65, 'not blocked yet');
      await kv.put('fraud/blocklist', 'm-666, m-999'); // as another rack or an operator would
      let code = 0;
      const deadline = Date.now() + 5000;
      while (code !== 403 && Date.now() < deadline) {
        code = await peer.call('x', suspect).then(
          () => 0,
          (err: FluxarError) => err.code,
        );
      }
      assert.equal(code, 403, "the bucket change reached the workers' replicas");
      await peer.close();
    } finally {
      await nc.close();
      await rack.stop();
    }
  });

  it("on the bus, a gear's KV writes reach the bucket", async () => {
    const s = scenario({
      meta: { name: 'kvw' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        { name: 'kvp', type: 'wasm', config: { module: join(root, 'dist/test-gears/kv-probe.wasm'), allow_kv: true } },
      ],
      wires: [
        { from: 'api.out', to: 'kvp.in' },
        { from: 'kvp.out', to: 'api.in' },
      ],
    });
    const rack = new Rack({ scenario: s, workers: 2, natsUrl: nats.url, kvBucket: 'test-kv-writes', logger: pino({ level: 'silent' }) });
    await rack.start();
    const nc = await natsConnect({ servers: nats.url });
    try {
      const peer = await connect(rack.addresses()[0]!);
      await peer.call('x', { put_key: 'seen.c1', put_value: 'yes' });
      const kv = await new Kvm(nc).open('test-kv-writes');
      let value: string | undefined;
      const deadline = Date.now() + 5000;
      while (value !== 'yes' && Date.now() < deadline) {
        const entry = await kv.get('seen.c1');
        value = entry === null ? undefined : new TextDecoder().decode(entry.value);
      }
      assert.equal(value, 'yes');
      await peer.close();
    } finally {
      await nc.close();
      await rack.stop();
    }
  });

  it('on the bus, urn:wasm: modules come from a NATS Object Store bucket', async () => {
    const nc = await natsConnect({ servers: nats.url });
    const bucket = await ModuleBucket.open(nc, 'test-modules');
    await bucket.import(readFileSync(fraudWasm), 'fraud-scorer', '2.0.0');
    await nc.close();
    const s = quickstart(['tcp://127.0.0.1:0']);
    s.gears[1]!.config.module = 'urn:wasm:fraud-scorer:2.0.0';
    const rack = new Rack({ scenario: s, workers: 1, natsUrl: nats.url, moduleBucket: 'test-modules', logger: pino({ level: 'silent' }) });
    await rack.start();
    try {
      const peer = await connect(rack.addresses()[0]!);
      assert.equal(((await peer.call('x', approved)) as Record<string, unknown>).decision, 'approved');
      await peer.close();
    } finally {
      await rack.stop();
    }
    const missing = quickstart(['tcp://127.0.0.1:0']);
    missing.gears[1]!.config.module = 'urn:wasm:fraud-scorer:9.9.9';
    await assert.rejects(
      new Rack({ scenario: missing, workers: 1, natsUrl: nats.url, moduleBucket: 'test-modules', logger: pino({ level: 'silent' }) }).start(),
      /not in the module bucket test-modules/,
    );
  });

  it('the nats gear publishes through JetStream with acknowledgements', async () => {
    const nc = await natsConnect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'DECISIONS', subjects: ['decisions.>'] });
    const s = scenario({
      meta: { name: 'js' },
      gears: [
        { name: 'gen', type: 'generator', config: { rate_per_s: 1000, count: 50, data: { kind: 'tick' } } },
        { name: 'store', type: 'nats', config: { subject: 'decisions.ticks', mode: 'publish', jetstream: true } },
      ],
      wires: [{ from: 'gen.out', to: 'store.in' }],
    });
    const rack = new Rack({ scenario: s, workers: 2, natsUrl: nats.url, logger: pino({ level: 'silent' }) });
    await rack.start();
    try {
      let stored = 0;
      const deadline = Date.now() + 10_000;
      while (stored < 50 && Date.now() < deadline) {
        stored = (await jsm.streams.info('DECISIONS')).state.messages;
        if (stored < 50) await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(stored, 50, 'every generated message is in the stream');
    } finally {
      await rack.stop();
      await nc.close();
    }
  });

  it("the nats gear publishes the chain's output and feeds a subject into the chain", async () => {
    const { logger, lines } = capture();
    const s = scenario({
      meta: { name: 'bus' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        { name: 'fraud', type: 'wasm', config: { module: fraudWasm, allow_kv: true } },
        { name: 'out', type: 'nats', config: { subject: 'payments.decided', mode: 'publish' } },
        { name: 'in', type: 'nats', config: { subject: 'payments.offline', mode: 'subscribe' } },
        { name: 'offline', type: 'log' },
      ],
      wires: [
        { from: 'api.out', to: 'fraud.in' },
        { from: 'fraud.out', to: 'api.in' },
        { from: 'fraud.out', to: 'out.in' },
        { from: 'in.out', to: 'offline.in' },
      ],
    });
    const rack = new Rack({ scenario: s, workers: 2, natsUrl: nats.url, logger });
    await rack.start();
    const nc = await natsConnect({ servers: nats.url });
    try {
      assert.ok(lines.some((l) => l.msg === 'connected to NATS'));
      const sub = nc.subscribe('payments.decided', { max: 1 });
      const peer = await connect(rack.addresses()[0]!);
      await peer.call('payments.authorize', { ...approved, amount: 77 });
      for await (const m of sub) {
        const msg = decodeFluxMsg(m.data);
        assert.equal(msg.data.amount, 77);
        assert.equal(msg.data.decision, 'approved');
        assert.equal(msg.meta['fluxar.target'], 'payments.authorize');
      }
      nc.publish('payments.offline', encodeFluxMsg(createFluxMsg({ data: { batch: 'b-7' } })));
      await until(() => lines.some((l) => l.gear === 'offline' && (l.data as Record<string, unknown>).batch === 'b-7'), 'the offline message in the log');
      await peer.close();
    } finally {
      await nc.close();
      await rack.stop();
    }
  });
});
