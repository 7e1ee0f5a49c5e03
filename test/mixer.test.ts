// The Mixer and its racks over a real nats-server: enrollment, adoption, passports, signed
// heartbeats, rollout to label groups with apply acks and rollback, commands, offline and
// rejoin, two Mixers, the HTTP API.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import { stringify } from 'yaml';
import { decodeMessage, encodeMessage, newKeyPair, signBody, verifyBody } from '../src/bus/mixer-protocol.js';
import { agentHeartbeat } from '../src/bus/subjects.js';
import { connect } from '../src/fluxar/mod.js';
import { buildMixerApi } from '../src/mixer/api.js';
import { Mixer, type RackView } from '../src/mixer/mixer.js';
import { loadAgentState, MixerAgent, startingScenario } from '../src/rack/agent.js';
import { Rack } from '../src/rack/rack.js';
import { captureLogs } from './harness/logs.js';
import { NatsServerProcess } from './harness/nats.js';
import { untilAsync } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const fraudWasm = join(root, 'wasm-gears/build/fraud-scorer.wasm');
const cli = join(root, 'dist/src/cli/main.js');
const HEARTBEAT_MS = 200;
const TOKEN = 'test-token';

interface FleetRack {
  rack: Rack;
  agent: MixerAgent;
  stateDir: string;
}

function payments(name: string, racks: unknown[], module = fraudWasm, deploy?: string): string {
  return stringify({
    meta: { name, version: '1' },
    racks,
    gears: [
      { name: 'api', type: 'fluxar', ...(deploy === undefined ? {} : { deploy }), config: { listen: ['tcp://127.0.0.1:0'] } },
      { name: 'fraud', type: 'wasm', ...(deploy === undefined ? {} : { deploy }), config: { module, allow_kv: true } },
    ],
    wires: [
      { from: 'api.out', to: 'fraud.in' },
      { from: 'fraud.out', to: 'api.in' },
      { from: 'fraud.error', to: 'api.in' },
    ],
  });
}

describe('mixer', () => {
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  let mixer: Mixer;
  let api: FastifyInstance;
  let base: string;
  const log = captureLogs('debug');
  const fleet: FleetRack[] = [];
  const children: ChildProcess[] = [];

  async function joinRack(
    name: string,
    labels: Record<string, string> = {},
    stateDir = mkdtempSync(join(tmpdir(), `fluxrig-rack-${name}-`)),
    onBus = false,
  ): Promise<FleetRack> {
    const state = loadAgentState(stateDir);
    const start = startingScenario(state, root);
    // onBus: on the bus for its data too (KV, topics, guaranteed wires), as rack --mixer URL --nats URL.
    const rack = new Rack({ scenario: start.scenario, groups: start.groups, name, natsUrl: onBus ? nats.url : undefined, workers: 0, logger: log.logger });
    await rack.start();
    const agent = new MixerAgent({
      rack,
      natsUrl: nats.url,
      stateDir,
      baseDir: root,
      labels,
      heartbeatMs: HEARTBEAT_MS,
      version: 'test',
      logger: log.logger,
      onShutdown: () => {},
    });
    agent.start();
    const member = { rack, agent, stateDir };
    fleet.push(member);
    return member;
  }

  /** A rack as `fluxrig rack --mixer` runs it, in a process of its own. */
  function rackProcess(name: string): ChildProcess {
    const stateDir = mkdtempSync(join(tmpdir(), `fluxrig-rack-${name}-`));
    const child = spawn(
      process.execPath,
      [cli, 'rack', '--mixer', nats.url, '--name', name, '--workers', '0', '--state-dir', stateDir, '--heartbeat-ms', String(HEARTBEAT_MS)],
      { cwd: root, stdio: 'ignore' },
    );
    children.push(child);
    return child;
  }

  // biome-ignore lint/suspicious/noExplicitAny: the tests read API answers field by field, as JSON
  async function http(method: string, path: string, body?: unknown, token = TOKEN): Promise<{ status: number; body: any }> {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? null : JSON.parse(text) };
  }

  async function rackView(name: string): Promise<RackView | null> {
    const r = await http('GET', `/racks/${name}`);
    return r.status === 200 ? (r.body as RackView) : null;
  }

  before(async () => {
    nats = await NatsServerProcess.start();
    nc = await natsConnect({ servers: nats.url, maxReconnectAttempts: -1 });
    mixer = new Mixer({ nats: nc, logger: log.logger, commandTimeoutMs: 3000 });
    await mixer.start();
    api = await buildMixerApi({ mixer, token: TOKEN, version: 'test' });
    base = await api.listen({ host: '127.0.0.1', port: 0 });
  });

  after(async () => {
    if (process.env.MIXER_TEST_LOGS) for (const l of log.lines) if ((l.level as number) >= 30) console.error(JSON.stringify(l).slice(0, 400));
    for (const c of children) c.kill('SIGKILL');
    for (const m of fleet) {
      await m.agent.stop();
      await m.rack.stop();
    }
    await api.close();
    await mixer.close();
    await nc.close();
    await nats.stop();
  });

  it('enrolls a rack as pending, adopts it with a passport the rack verifies, and refuses an impostor', async () => {
    const edge = await joinRack('edge-a', { site: 'a' });
    await untilAsync(async () => (await rackView('edge-a'))?.status === 'pending', 'edge-a is pending');
    assert.equal(edge.agent.status, 'pending');
    const approved = await http('POST', '/racks/edge-a/approve');
    assert.equal(approved.status, 200);
    await untilAsync(async () => edge.agent.status === 'active', 'edge-a knows it is active');
    const state = loadAgentState(edge.stateDir);
    assert.ok(state.passport !== null && state.mixer_pub !== null);
    const passport = verifyBody(
      { payload: Buffer.from(state.passport.payload, 'base64'), signature: Buffer.from(state.passport.signature, 'base64') },
      Buffer.from(state.mixer_pub, 'base64'),
    );
    assert.equal(passport.name, 'edge-a');
    assert.equal(passport.status, 'active');
    assert.deepEqual(Buffer.from(mixer.publicKey), Buffer.from(state.mixer_pub, 'base64'));

    // Someone who knows the name and the machine id, but not the key.
    const impostor = newKeyPair();
    const heartbeat = signBody(
      { name: 'edge-a', machine_id: state.machine_id, ts: Date.now() + 60_000, workers: 99, connections: 0, rss: 1 },
      impostor.privateKey,
    );
    const reply = decodeMessage((await nc.request(agentHeartbeat('edge-a'), encodeMessage({ heartbeat }))).data);
    assert.equal(reply.status, 'denied');
    assert.match(String(reply.message), /signature/);
    // A body that names another rack than its subject is refused before any key is looked at.
    const elsewhere = decodeMessage((await nc.request(agentHeartbeat('edge-b'), encodeMessage({ heartbeat }))).data);
    assert.equal(elsewhere.status, 'denied');
    assert.match(String(elsewhere.message), /rack edge-a on the subject of edge-b/);
    assert.notEqual((await rackView('edge-a'))?.heartbeat?.workers, 99);
  });

  it('rolls a scenario out to a group by labels, and shows desired and applied versions', async () => {
    const b = await joinRack('edge-b', { site: 'b' }, undefined, true);
    await untilAsync(async () => (await rackView('edge-b'))?.status === 'pending', 'edge-b is pending');
    await http('POST', '/racks/edge-b/approve');
    await untilAsync(async () => b.agent.status === 'active', 'edge-b is active');
    const yaml = payments('payments', [{ group: 'site-a', match: { labels: { site: 'a' } } }], fraudWasm, 'site-a');
    const pushed = await http('POST', '/scenarios', { yaml, file: 'payments.yaml' });
    assert.equal(pushed.status, 200, JSON.stringify(pushed.body));
    assert.deepEqual(pushed.body.targets, { 'edge-a': ['site-a'] });
    await untilAsync(async () => {
      const status = await http('GET', '/scenarios/payments/status');
      return status.body.length === 1 && status.body[0].state === 'applied' && status.body[0].desired === 1 && status.body[0].applied === 1;
    }, 'edge-a applied payments v1');
    const a = fleet.find((m) => m.rack.name === 'edge-a')!;
    assert.equal(a.rack.running.scenario.meta.name, 'payments');
    assert.deepEqual(a.rack.running.gears.sort(), ['api', 'fraud']);
    assert.equal(b.rack.running.scenario.meta.name, 'idle', 'edge-b is not in the group');
    const peer = await connect(a.rack.addresses('api')[0]!);
    assert.equal(((await peer.call('pay', { amount: 5 })) as Record<string, unknown>).decision, 'approved');
    await peer.close();
    await untilAsync(async () => ((await rackView('edge-a'))?.heartbeat?.gears.fraud?.messages ?? 0) >= 1, 'a heartbeat reports the call');
  });

  it('provisions the stream and consumers of a scenario with a guaranteed wire when it is pushed; its racks run the wire', async () => {
    const b = fleet.find((m) => m.rack.name === 'edge-b')!;
    const yaml = stringify({
      meta: { name: 'settle', version: '1' },
      racks: [{ name: 'edge-b' }],
      lanes: { max_age_ms: 3_600_000 },
      gears: [
        { name: 'api', type: 'fluxar', deploy: 'edge-b', config: { listen: ['tcp://127.0.0.1:0'] } },
        { name: 'fraud', type: 'wasm', deploy: 'edge-b', config: { module: fraudWasm, allow_kv: true } },
        { name: 'audit', type: 'log', deploy: 'edge-b' },
      ],
      wires: [
        { from: 'api.out', to: 'fraud.in', lane: 'guaranteed', max_deliver: 3 },
        { from: 'fraud.out', to: 'audit.in' },
        { from: 'fraud.error', to: 'audit.in' },
      ],
    });
    const pushed = await http('POST', '/scenarios', { yaml, file: 'settle.yaml' });
    assert.equal(pushed.status, 200, JSON.stringify(pushed.body));
    const jsm = await jetstreamManager(nc);
    const stream = await jsm.streams.info('FLUX_MSG_settle');
    assert.deepEqual(stream.config.subjects.sort(), ['flux.dlq.settle.*.*', 'flux.msg.edge-b.api.out']);
    assert.equal(stream.config.max_age, 3_600_000 * 1_000_000);
    assert.equal((await jsm.consumers.info('FLUX_MSG_settle', 'api_out__fraud_in')).config.filter_subject, 'flux.msg.edge-b.api.out');
    await untilAsync(async () => (await http('GET', '/scenarios/settle/status')).body[0]?.state === 'applied', 'edge-b applied settle');
    const peer = await connect(b.rack.addresses('api')[0]!);
    const answer = (await peer.call('pay', { amount: 5 })) as Record<string, unknown>;
    assert.deepEqual([answer.stream, answer.lane, answer.duplicate], ['FLUX_MSG_settle', 'flux.msg.edge-b.api.out', false]);
    await peer.close();
    await untilAsync(async () => (b.rack.laneCounts?.acked ?? 0) >= 1, 'edge-b consumed its wire and acked the message');
  });

  it('refuses an invalid scenario with file:line:column before any rack sees it', async () => {
    const bad = 'meta: {name: broken}\ngears:\n  - name: x\n    type: nope\n';
    const res = await http('POST', '/scenarios', { yaml: bad, file: 'broken.yaml' });
    assert.equal(res.status, 400);
    assert.match(res.body.error, /broken\.yaml:4:\d+: .*nope/);
    assert.equal((await http('GET', '/scenarios/broken')).status, 404);
  });

  it('a rack that cannot apply a scenario keeps its last good one and says why', async () => {
    const a = fleet.find((m) => m.rack.name === 'edge-a')!;
    const version = a.rack.running.version;
    const yaml = payments('payments', [{ name: 'edge-a' }], join(root, 'no-such-module.wasm'), 'edge-a');
    const pushed = await http('POST', '/scenarios', { yaml, file: 'payments.yaml' });
    assert.equal(pushed.status, 200);
    await untilAsync(async () => (await http('GET', '/scenarios/payments/status')).body[0]?.state === 'failed', 'the failure is reported');
    const status = await http('GET', '/scenarios/payments/status');
    assert.match(status.body[0].error, /no-such-module\.wasm/);
    assert.equal(status.body[0].applied, 1);
    assert.equal(status.body[0].desired, 2);
    assert.equal(a.rack.running.version, version, 'the rack still runs what it ran');
    const peer = await connect(a.rack.addresses('api')[0]!);
    assert.equal(((await peer.call('pay', { amount: 5 })) as Record<string, unknown>).decision, 'approved');
    await peer.close();
  });

  it('sends commands and hears back: log level, suspend (gears stop) and activate (they come back)', async () => {
    const a = fleet.find((m) => m.rack.name === 'edge-a')!;
    const level = await http('POST', '/racks/edge-a/commands', { command: 'log-level', level: 'warn' });
    assert.deepEqual(level.body, { ok: true, error: null });
    assert.equal(a.rack.log.level, 'warn');
    await http('POST', '/racks/edge-a/commands', { command: 'log-level', level: 'debug' });
    assert.equal((await http('POST', '/racks/nobody/commands', { command: 'reload' })).status, 404);
    assert.equal((await http('POST', '/racks/edge-a/commands', { command: 'sleep' })).status, 400);

    await http('POST', '/racks/edge-a/suspend');
    await untilAsync(async () => a.rack.running.gears.length === 0, 'edge-a stopped its gears');
    assert.equal(a.agent.status, 'suspended');
    await http('POST', '/racks/edge-a/activate');
    await untilAsync(async () => a.rack.running.scenario.meta.name === 'payments', 'edge-a runs payments again');
  });

  it('serves without NATS from its stored state, and rejoins when NATS is back', async () => {
    const a = fleet.find((m) => m.rack.name === 'edge-a')!;
    const before = (await rackView('edge-a'))?.last_seen;
    await a.agent.stop();
    await a.rack.stop();
    fleet.splice(fleet.indexOf(a), 1);
    // NATS goes away (SIGKILL); the rack starts from its state directory alone.
    nats.kill();
    const again = await joinRack('edge-a', { site: 'a' }, a.stateDir);
    assert.equal(again.rack.running.scenario.meta.name, 'payments');
    const peer = await connect(again.rack.addresses('api')[0]!);
    assert.equal(((await peer.call('pay', { amount: 5 })) as Record<string, unknown>).decision, 'approved');
    await nats.restart();
    await untilAsync(
      async () => {
        const v = await rackView('edge-a').catch(() => null);
        return v?.online === true && v.last_seen !== before;
      },
      'edge-a heartbeats again',
      30_000,
    );
    assert.equal(((await peer.call('pay', { amount: 5 })) as Record<string, unknown>).decision, 'approved', 'the same connection still works');
    await peer.close();
  });

  it('shows a rack killed with SIGKILL as offline after 3 missed heartbeats', async () => {
    const child = rackProcess('doomed');
    await untilAsync(async () => (await rackView('doomed'))?.online === true, 'doomed enrolled');
    child.kill('SIGKILL');
    await untilAsync(async () => (await rackView('doomed'))?.online === false, 'doomed offline');
    assert.equal((await rackView('doomed'))?.status, 'pending');
    assert.equal((await http('DELETE', '/racks/doomed')).status, 204);
    assert.equal((await http('GET', '/racks/doomed')).status, 404);
  });

  it('obeys reload and shutdown: a rack process drains and exits 0 when told', async () => {
    assert.deepEqual((await http('POST', '/racks/edge-a/commands', { command: 'reload' })).body, { ok: true, error: null });
    const child = rackProcess('quitter');
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await untilAsync(async () => (await rackView('quitter'))?.online === true, 'quitter enrolled');
    assert.equal((await http('POST', '/racks/quitter/approve')).status, 200);
    assert.deepEqual((await http('POST', '/racks/quitter/commands', { command: 'shutdown' })).body, { ok: true, error: null });
    assert.equal(await exited, 0);
  });

  it('streams changes as server-sent events, and diffs a scenario against the stored one', async () => {
    const controller = new AbortController();
    const res = await fetch(`${base}/events`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: controller.signal });
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const reader = res.body!.getReader();
    let text = '';
    await http('POST', '/racks/quitter/suspend').catch(() => {});
    while (!/event: rack\ndata: \{[^\n]*"name":"quitter"[^\n]*"status":"suspended"/.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    controller.abort();
    assert.match(text, /"status":"suspended"/);
    const stored = (await http('GET', '/scenarios/payments')).body as { yaml: string; version: number };
    const diff = await http('POST', '/scenarios/payments/diff', {
      yaml: stored.yaml.replace('version: "1"', 'version: "2"'),
    });
    assert.equal(diff.body.version, stored.version);
    assert.match(diff.body.diff, /^- {2}version: "1"$/m);
    assert.match(diff.body.diff, /^\+ {2}version: "2"$/m);
  });

  it('runs as several Mixers on one NATS: a Mixer process killed mid-rollout, another closed, the last carries on', async () => {
    // A Mixer process, as `fluxrig mixer --nats URL` runs it.
    const doomed = spawn(
      process.execPath,
      [cli, 'mixer', '--nats', nats.url, '--listen', '127.0.0.1:0', '--token', TOKEN, '--data', mkdtempSync(join(tmpdir(), 'fluxrig-mixer-'))],
      { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    children.push(doomed);
    let out = '';
    doomed.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    await untilAsync(async () => /"api":"(http:[^"]+)"/.test(out), 'the Mixer process listens');
    const doomedApi = /"api":"(http:[^"]+)"/.exec(out)![1]!;
    const viaDoomed = (method: string, path: string, body?: unknown) =>
      fetch(`${doomedApi}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const nc2 = await natsConnect({ servers: nats.url });
    const second = new Mixer({ nats: nc2, logger: log.logger });
    await second.start();
    assert.deepEqual(Buffer.from(second.publicKey), Buffer.from(mixer.publicKey), 'one fleet key');

    const c = await joinRack('edge-c', { site: 'a' });
    await untilAsync(
      async () => ((await (await viaDoomed('GET', '/racks/edge-c')).json()) as { status?: string } | null)?.status === 'pending',
      'edge-c pending (seen by the process)',
    );
    assert.equal((await viaDoomed('POST', '/racks/edge-c/approve')).status, 200);
    await untilAsync(async () => c.agent.status === 'active', 'edge-c active');
    // The push goes out through the process, which dies at once: the rack's ack must land elsewhere.
    assert.equal(
      (await viaDoomed('POST', '/scenarios', { yaml: payments('payments-c', [{ name: 'edge-c' }], fraudWasm, 'edge-c'), file: 'payments-c.yaml' })).status,
      200,
    );
    doomed.kill('SIGKILL');
    // And the in-process first Mixer goes without a goodbye too.
    await mixer.close();
    await nc.close();
    await untilAsync(async () => (await second.rollout('payments-c'))[0]?.state === 'applied', 'edge-c applied, recorded by the last Mixer');
    assert.equal(c.rack.running.scenario.meta.name, 'payments-c');
    const again = await second.push(payments('payments-c', [{ name: 'edge-c' }], fraudWasm, 'edge-c'), 'payments-c.yaml');
    assert.equal(again.version, 2);
    await untilAsync(async () => (await second.rollout('payments-c'))[0]?.applied === 2, 'edge-c applied v2');
    // The test's own API goes on through the last Mixer from here.
    nc = nc2;
    mixer = second;
  });

  it('serves its OpenAPI document and wants the bearer token', async () => {
    const doc = await http('GET', '/openapi.json', undefined, '');
    assert.equal(doc.status, 200);
    assert.equal(doc.body.openapi.slice(0, 2), '3.');
    for (const path of ['/racks', '/racks/{name}/approve', '/scenarios', '/scenarios/{name}/status', '/racks/{name}/commands', '/events'])
      assert.ok(path in doc.body.paths, path);
    assert.equal((await http('GET', '/racks', undefined, 'wrong')).status, 401);
    assert.equal((await http('GET', '/healthz', undefined, '')).status, 200);
  });
});
