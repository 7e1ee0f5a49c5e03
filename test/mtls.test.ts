// mTLS on the snake bus, with a real nats-server started on certificates made by fluxrig certs:
// who is admitted, what each rack's permissions let it do, and a rack that enrolls, takes a
// scenario and sends telemetry over it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { stringify } from 'yaml';
import { certFiles, initCerts, issueCert } from '../src/bus/certs.js';
import { deadLetterSubject, laneStreamName, laneSubject } from '../src/bus/lanes.js';
import { natsTlsConfig, writeNatsConfig } from '../src/bus/permissions.js';
import {
  agentHeartbeat,
  agentNotify,
  MODULE_BUCKET,
  RACK_KV_BUCKET,
  rackInboxPrefix,
  SCENARIO_STREAM,
  scenarioConsumer,
  TOPIC_STREAM,
  telemetrySubject,
  topicSubjectQos0,
  topicSubjectQos1,
} from '../src/bus/subjects.js';
import type { BusTls } from '../src/bus/tls.js';
import { Mixer } from '../src/mixer/mixer.js';
import { idleScenario, MixerAgent } from '../src/rack/agent.js';
import { Rack } from '../src/rack/rack.js';
import { decodeFluxMsg } from '../src/fluxmsg/codec.js';
import { tappedLogger } from '../src/telemetry/log-tap.js';
import { TelemetryUplink } from '../src/telemetry/uplink.js';
import { captureLogs } from './harness/logs.js';
import { NatsServerProcess } from './harness/nats.js';
import { until, untilAsync } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const execFileAsync = promisify(execFile);

describe('mTLS on the bus', () => {
  const certs = mkdtempSync(join(tmpdir(), 'fluxrig-certs-'));
  const files = certFiles(certs);
  const config = join(certs, 'nats.conf');
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  let mixer: Mixer;
  const log = captureLogs('info');
  const cleanups: Array<() => Promise<void>> = [];
  /** Racks with a certificate, each a user of nats-server. */
  const certified = ['north', 'south'];

  const tlsOf = (cert: string, key: string, ca = files.ca): BusTls => ({
    ca: readFileSync(ca, 'utf8'),
    cert: readFileSync(cert, 'utf8'),
    key: readFileSync(key, 'utf8'),
  });
  const rackTls = (name: string) => tlsOf(files.rack(name), files.rackKey(name));

  before(async () => {
    // The certificates as an operator makes them, through the CLI.
    await execFileAsync(process.execPath, [cli, 'certs', 'init', '--dir', certs]);
    await execFileAsync(process.execPath, [cli, 'certs', 'issue', 'rack', 'north', '--dir', certs]);
    await issueCert(certs, 'rack', 'south');
    writeNatsConfig(config, natsTlsConfig({ certs, racks: certified }));
    nats = await NatsServerProcess.start({ config });
    nc = await natsConnect({ servers: nats.url, tls: tlsOf(files.mixer, files.mixerKey), maxReconnectAttempts: -1 });
    mixer = new Mixer({ nats: nc, logger: log.logger, autoAdopt: true, commandTimeoutMs: 3000 });
    await mixer.start();
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c();
    await mixer.close();
    await nc.close();
    await nats.stop();
  });

  it('refuses a client without a certificate, or with one from another CA', async () => {
    await assert.rejects(natsConnect({ servers: nats.url, tls: { ca: readFileSync(files.ca, 'utf8') }, maxReconnectAttempts: 0, timeout: 3000 }));
    const other = mkdtempSync(join(tmpdir(), 'fluxrig-other-ca-'));
    await initCerts(other);
    await issueCert(other, 'rack', 'north');
    const foreign = certFiles(other);
    await assert.rejects(
      natsConnect({ servers: nats.url, tls: tlsOf(foreign.rack('north'), foreign.rackKey('north')), maxReconnectAttempts: 0, timeout: 3000 }),
    );
    // A second init would orphan every certificate the CA signed: refused.
    await assert.rejects(initCerts(certs), /exists already/);
  });

  it('lets a rack publish and read only its own subjects', async () => {
    const north = await natsConnect({ servers: nats.url, tls: rackTls('north'), inboxPrefix: rackInboxPrefix('north') });
    cleanups.push(() => north.close());
    const violations: string[] = [];
    void (async () => {
      for await (const s of north.status()) if (s.type === 'error') violations.push(String(s.error?.message));
    })();
    await assert.rejects(
      north.request(agentHeartbeat('south'), new Uint8Array(1), { timeout: 2000 }),
      /Permissions Violation for Publish to "fluxrig.agent.heartbeat.south"/,
    );
    north.publish(telemetrySubject('south', 'log'), new Uint8Array(1));
    north.publish('flux.msg.south.gear.out', new Uint8Array(1));
    // A topic publication in another rack's name (that rack would skip it as its own).
    north.publish(topicSubjectQos0('south', 'news'), new Uint8Array(1));
    north.publish(topicSubjectQos1('south', 'news'), new Uint8Array(1));
    north.subscribe(agentNotify('south', '*'));
    await north.flush();
    const refusals = [
      /Publish to "flux.telemetry.south.log"/,
      /Publish to "flux.msg.south.gear.out"/,
      /Publish to "flux.topic.0.south.news"/,
      /Publish to "flux.topic.q.south.news"/,
      /Subscription to "fluxrig.agent.notify.south.\*"/,
    ];
    await until(() => refusals.every((r) => violations.some((v) => r.test(v))), `the server refuses all five (so far: ${violations.join('; ')})`);
    // Another rack's scenarios are out of reach, and so is making a consumer of its own.
    await assert.rejects(jetstream(north).consumers.get(SCENARIO_STREAM, scenarioConsumer('south')), /Permissions Violation|timeout/i);
    // Its own subjects are open to it; what it sends there is still read strictly by the Mixer.
    const refused = mixer.telemetry.stats.refused;
    await jetstream(north).publish(telemetrySubject('north', 'event'), new Uint8Array([0xff]), { timeout: 3000 });
    await until(() => mixer.telemetry.stats.refused === refused + 1, 'the Mixer refuses an off-shape publication');
    // Topics under its own name, QoS 1 through the stream the Mixer made.
    const stored = await jetstream(north).publish(topicSubjectQos1('north', 'news'), new Uint8Array(1), { timeout: 3000 });
    assert.equal(stored.stream, TOPIC_STREAM);
  });

  it('carries a rack through enrollment, a scenario and telemetry with its certificate', async () => {
    const { logger, tap } = tappedLogger('north', 'error', 'warn', new Writable({ write: (_c, _e, done) => done() }));
    const rack = new Rack({ scenario: idleScenario(root), name: 'north', workers: 0, logger, logTap: tap });
    await rack.start();
    const uplink = new TelemetryUplink({ rack: 'north', flushMs: 50 });
    tap.sink = (line) => uplink.log(line);
    const agent = new MixerAgent({
      rack,
      natsUrl: nats.url,
      stateDir: mkdtempSync(join(tmpdir(), 'fluxrig-north-')),
      baseDir: root,
      labels: {},
      heartbeatMs: 200,
      version: 'test',
      logger,
      telemetry: uplink,
      tls: rackTls('north'),
      onShutdown: () => {},
    });
    agent.start();
    cleanups.push(async () => {
      await agent.stop();
      await rack.stop();
    });
    await until(() => agent.status === 'active', 'north is adopted');
    const yaml = stringify({
      meta: { name: 'north-pay', version: '1' },
      racks: [{ name: 'north' }],
      gears: [{ name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } }],
      wires: [],
    });
    await mixer.push(yaml, 'north-pay.yaml');
    await untilAsync(async () => (await mixer.rollout('north-pay'))[0]?.state === 'applied', 'north applied the scenario');
    assert.equal(rack.running.scenario.meta.name, 'north-pay');
    rack.log.warn('over mTLS');
    await until(() => mixer.telemetry.logs({ rack: 'north' }).some((r) => r.msg === 'over mTLS'), 'the log line at the Mixer');
    assert.ok(mixer.telemetry.logs({ rack: 'north', kind: 'event' }).some((r) => r.msg === 'scenario-applied'));
    const answer = await mixer.command('north', 'log-level', { telemetry: 'info' });
    assert.deepEqual(answer, { ok: true, error: null }, 'a command and its answer cross the bus');
  });

  /**
   * Another Mixer on the same fleet, with the hook the CLI gives its embedded nats-server. It
   * adopts too: any Mixer of the fleet may answer a rack's hello.
   */
  async function grantingMixer(onGrants: (grants: Map<string, string[]>) => void = () => {}): Promise<Mixer> {
    const mixer = new Mixer({
      nats: nc,
      logger: log.logger,
      autoAdopt: true,
      commandTimeoutMs: 3000,
      grantLanes: async (grants) => {
        onGrants(grants);
        writeNatsConfig(config, natsTlsConfig({ certs, racks: certified, grants }));
        await nats.reloaded();
      },
    });
    await mixer.start();
    cleanups.push(() => mixer.close());
    return mixer;
  }

  it('grants a rack, on a push, the consumers of the guaranteed wires into its gears, and no other rack', async () => {
    let granted = new Map<string, string[]>();
    const withGrants = await grantingMixer((grants) => {
      granted = grants;
    });
    const name = 'north-lane';
    const scenario = {
      meta: { name, version: '1' },
      racks: [{ name: 'north' }],
      lanes: { storage: 'memory' },
      gears: [
        { name: 'gen', type: 'generator', deploy: 'north', config: { rate_per_s: 1, count: 1 } },
        { name: 'sink', type: 'nats', deploy: 'north', config: { subject: 'flux.msg.north.sink.seen', mode: 'publish' } },
      ],
      wires: [{ from: 'gen.out', to: 'sink.in', lane: 'guaranteed' }],
    };
    await withGrants.push(stringify(scenario), `${name}.yaml`);
    const stream = laneStreamName(name);
    const consumer = 'gen_out__sink_in';
    assert.ok(granted.get('north')?.includes(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`), `north may pull its wire (${[...granted]})`);
    assert.equal(granted.get('south'), undefined, 'south runs none of its gears');

    // What the grants open, with the racks' own certificates: a message on the wire is read and
    // acked by north, and dead-lettered by it; south reaches neither.
    await jetstream(nc).publish(laneSubject('north', 'gen', 'out'), new Uint8Array([1]), { timeout: 3000 });
    const north = await natsConnect({ servers: nats.url, tls: rackTls('north'), inboxPrefix: rackInboxPrefix('north') });
    const south = await natsConnect({ servers: nats.url, tls: rackTls('south'), inboxPrefix: rackInboxPrefix('south') });
    cleanups.push(async () => {
      await north.close();
      await south.close();
    });
    const wire = await jetstream(north).consumers.get(stream, consumer);
    const m = await wire.next({ expires: 3000 });
    assert.deepEqual([...(m?.data ?? [])], [1], 'north reads the message on its wire');
    assert.equal(await m!.ackAck({ timeout: 3000 }), true, 'and its ack is taken');
    await jetstream(north).publish(deadLetterSubject(name, 'sink', 'in'), new Uint8Array([2]), { timeout: 3000 });
    await assert.rejects(jetstream(south).consumers.get(stream, consumer), /Permissions Violation|timeout/i);
    await assert.rejects(
      jetstream(south).publish(deadLetterSubject(name, 'sink', 'in'), new Uint8Array([3]), { timeout: 2000 }),
      /Permissions Violation|timeout|no responders/i,
    );
  });

  it('runs a guaranteed wire between two racks, a Wasm gear from the module bucket and the gears KV, each rack on its own certificate', async () => {
    // Two racks certified for this test, each enrolled through its agent (the Mixer grants the
    // lanes of the racks a scenario targets).
    const [west, central] = ['west', 'central'];
    for (const rack of [west, central]) await issueCert(certs, 'rack', rack);
    certified.push(west, central);
    const fleet = await grantingMixer();
    writeNatsConfig(config, natsTlsConfig({ certs, racks: certified }));
    await nats.reloaded();
    await fleet.importModule(readFileSync(join(root, 'wasm-gears/build/fraud-scorer.wasm')), 'fraud-scorer', '1.0.0', true);
    const kv = await new Kvm(nc).open(RACK_KV_BUCKET);
    await kv.put('fraud/blocklist', 'm-666');
    const rackLog = captureLogs('info');
    const racks = [west, central].map((rack) => {
      const r = new Rack({
        scenario: idleScenario(root),
        name: rack,
        workers: 1,
        natsUrl: nats.url,
        natsTls: rackTls(rack),
        moduleBucket: MODULE_BUCKET,
        kv: { [`started/${rack}`]: 'yes' },
        logger: rackLog.logger,
      });
      const agent = new MixerAgent({
        rack: r,
        natsUrl: nats.url,
        stateDir: mkdtempSync(join(tmpdir(), `fluxrig-${rack}-`)),
        baseDir: root,
        labels: {},
        heartbeatMs: 200,
        version: 'test',
        logger: rackLog.logger,
        tls: rackTls(rack),
        onShutdown: () => {},
      });
      return { rack: r, agent };
    });
    for (const { rack, agent } of racks) {
      await rack.start();
      agent.start();
      cleanups.push(async () => {
        await agent.stop();
        await rack.stop();
      });
    }
    await until(() => racks.every(({ agent }) => agent.status === 'active'), 'both racks are adopted');

    const name = 'cross-mtls';
    // A blocklisted merchant abroad is rejected (the gear reads the blocklist from the gears' KV).
    const generator = (merchant: string, count: number) => ({ rate_per_s: 200, count, data: { amount: 2500, merchant, country: 'FR', card_country: 'US' } });
    const scenario = {
      meta: { name, version: '1' },
      racks: [{ name: west }, { name: central }],
      lanes: { storage: 'memory' },
      gears: [
        { name: 'payments', type: 'generator', deploy: west, config: generator('m-1', 200) },
        { name: 'blocked', type: 'generator', deploy: west, config: generator('m-666', 20) },
        { name: 'fraud', type: 'wasm', deploy: central, config: { module: 'urn:wasm:fraud-scorer:1.0.0', allow_kv: true } },
        { name: 'approved', type: 'nats', deploy: central, config: { subject: `flux.msg.${central}.approved.seen`, mode: 'publish' } },
        { name: 'rejected', type: 'nats', deploy: central, config: { subject: `flux.msg.${central}.rejected.seen`, mode: 'publish' } },
      ],
      // From west to central: through JetStream.
      wires: [
        { from: 'payments.out', to: 'fraud.in', lane: 'guaranteed' },
        { from: 'blocked.out', to: 'fraud.in', lane: 'guaranteed' },
        { from: 'fraud.out', to: 'approved.in' },
        { from: 'fraud.error', to: 'rejected.in' },
      ],
    };
    const seen = { approved: new Set<string>(), rejected: new Set<string>() };
    const sub = nc.subscribe(`flux.msg.${central}.*.seen`, {
      callback: (_err, m) => {
        seen[m.subject.split('.')[3] as 'approved' | 'rejected'].add(Buffer.from(decodeFluxMsg(m.data).id).toString('hex'));
      },
    });
    cleanups.push(async () => sub.unsubscribe());
    await fleet.push(stringify(scenario), `${name}.yaml`);
    await untilAsync(async () => (await fleet.rollout(name)).every((r) => r.state === 'applied'), 'both racks applied the scenario');
    await until(() => seen.approved.size === 200 && seen.rejected.size === 20, '200 approved and 20 rejected crossed from west to central', 20_000);
    for (const rack of [west, central]) assert.equal(new TextDecoder().decode((await kv.get(`started/${rack}`))?.value), 'yes', `${rack} wrote the gears' KV`);
    const problems = rackLog.lines.filter((l) => Number(l.level) >= 40 || /Permissions Violation/i.test(JSON.stringify(l)));
    assert.deepEqual(problems, [], 'no rack met a refusal of the bus');
  });

  it('admits a rack certified later once the server has read its users again', async () => {
    await issueCert(certs, 'rack', 'east');
    const eastTls = rackTls('east');
    await assert.rejects(natsConnect({ servers: nats.url, tls: eastTls, maxReconnectAttempts: 0, timeout: 3000 }), /Authorization|auth/i);
    writeNatsConfig(config, natsTlsConfig({ certs, racks: [...certified, 'east'] }));
    nats.reload();
    let east: NatsConnection | undefined;
    await untilAsync(async () => {
      east = await natsConnect({ servers: nats.url, tls: eastTls, maxReconnectAttempts: 0, timeout: 3000 }).catch(() => undefined);
      return east !== undefined;
    }, 'east is admitted');
    await east!.close();
    // JetStream outlives the reload (set by flags, nats-server 2.9 dropped it: no answer after).
    // The server takes up the account's JetStream again a moment after it reads its users: until
    // then its API has no responders.
    let streams = 0;
    await untilAsync(async () => {
      streams = await jetstreamManager(nc)
        .then((jsm) => jsm.getAccountInfo())
        .then((info) => info.streams)
        .catch(() => 0);
      return streams > 0;
    }, 'the Mixer reaches its streams after the reload');
    assert.ok(streams > 0);
  });
});
