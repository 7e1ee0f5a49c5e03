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
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { stringify } from 'yaml';
import { certFiles, initCerts, issueCert } from '../src/bus/certs.js';
import { deadLetterSubject, laneStreamName, laneSubject } from '../src/bus/lanes.js';
import { natsTlsConfig, writeNatsConfig } from '../src/bus/permissions.js';
import { agentHeartbeat, agentNotify, rackInboxPrefix, SCENARIO_STREAM, scenarioConsumer, telemetrySubject } from '../src/bus/subjects.js';
import type { BusTls } from '../src/bus/tls.js';
import { Mixer } from '../src/mixer/mixer.js';
import { idleScenario, MixerAgent } from '../src/rack/agent.js';
import { Rack } from '../src/rack/rack.js';
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
    writeNatsConfig(config, natsTlsConfig({ certs, racks: ['north', 'south'] }));
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
    north.subscribe(agentNotify('south', '*'));
    await north.flush();
    const refusals = [/Publish to "flux.telemetry.south.log"/, /Publish to "flux.msg.south.gear.out"/, /Subscription to "fluxrig.agent.notify.south.\*"/];
    await until(() => refusals.every((r) => violations.some((v) => r.test(v))), `the server refuses all three (so far: ${violations.join('; ')})`);
    // Another rack's scenarios are out of reach, and so is making a consumer of its own.
    await assert.rejects(jetstream(north).consumers.get(SCENARIO_STREAM, scenarioConsumer('south')), /Permissions Violation|timeout/i);
    // Its own subjects are open to it; what it sends there is still read strictly by the Mixer.
    const refused = mixer.telemetry.stats.refused;
    await jetstream(north).publish(telemetrySubject('north', 'event'), new Uint8Array([0xff]), { timeout: 3000 });
    await until(() => mixer.telemetry.stats.refused === refused + 1, 'the Mixer refuses an off-shape publication');
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

  it('grants a rack, on a push, the consumers of the guaranteed wires into its gears, and no other rack', async () => {
    // A second Mixer on the same fleet, with the hook the CLI gives its embedded nats-server.
    let granted = new Map<string, string[]>();
    const withGrants = new Mixer({
      nats: nc,
      logger: log.logger,
      commandTimeoutMs: 3000,
      grantLanes: async (grants) => {
        granted = grants;
        writeNatsConfig(config, natsTlsConfig({ certs, racks: ['north', 'south'], grants }));
        await nats.reloaded();
      },
    });
    await withGrants.start();
    cleanups.push(() => withGrants.close());
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

  it('admits a rack certified later once the server has read its users again', async () => {
    await issueCert(certs, 'rack', 'east');
    const eastTls = rackTls('east');
    await assert.rejects(natsConnect({ servers: nats.url, tls: eastTls, maxReconnectAttempts: 0, timeout: 3000 }), /Authorization|auth/i);
    writeNatsConfig(config, natsTlsConfig({ certs, racks: ['north', 'south', 'east'] }));
    nats.reload();
    let east: NatsConnection | undefined;
    await untilAsync(async () => {
      east = await natsConnect({ servers: nats.url, tls: eastTls, maxReconnectAttempts: 0, timeout: 3000 }).catch(() => undefined);
      return east !== undefined;
    }, 'east is admitted');
    await east!.close();
    // JetStream outlives the reload (set by flags, nats-server 2.9 dropped it: no answer after).
    const jsm = await jetstreamManager(nc);
    assert.ok((await jsm.getAccountInfo()).streams > 0, 'the Mixer still reaches its streams');
  });
});
