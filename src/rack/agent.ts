import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AckPolicy, type ConsumerMessages, JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import {
  asSigned,
  type CommandName,
  decodeMessage,
  encodeMessage,
  Fields,
  newKeyPair,
  publicKeyBytes,
  type RackStatus,
  type Signed,
  signBody,
  verifyBody,
} from '../bus/mixer-protocol.js';
import { drainAndClose } from '../bus/close.js';
import { agentAck, agentHeartbeat, agentHello, agentNotify, rackInboxPrefix, rackScenarioSubject, SCENARIO_STREAM, scenarioConsumer } from '../bus/subjects.js';
import type { BusTls } from '../bus/tls.js';
import { parseScenario } from '../scenario/parse.js';
import type { Scenario } from '../scenario/types.js';
import { addHistogram, emptyHistogram } from '../telemetry/histogram.js';
import type { GearMetrics } from '../telemetry/shapes.js';
import type { TelemetryUplink } from '../telemetry/uplink.js';
import type { Rack, RackStats } from './rack.js';

/** What a rack keeps in its state directory to be itself across restarts, with or without the Mixer. */
export interface AgentState {
  machine_id: string;
  private_key: string;
  public_key: string;
  /** The Mixer's key, pinned at the first passport. Base64 SPKI DER. */
  mixer_pub: string | null;
  status: RackStatus | null;
  passport: { payload: string; signature: string } | null;
  /** The last scenario applied: what runs at the next start, Mixer or not. */
  scenario: { name: string; version: number; groups: string[]; yaml: string } | null;
}

/** Reads (or creates) a rack's state directory. */
export function loadAgentState(dir: string): AgentState {
  mkdirSync(dir, { recursive: true });
  try {
    return JSON.parse(readFileSync(join(dir, 'rack-state.json'), 'utf8')) as AgentState;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new Error(`cannot read ${join(dir, 'rack-state.json')}: ${(err as Error).message}`, { cause: err });
  }
  const keys = newKeyPair();
  const state: AgentState = {
    machine_id: randomUUID(),
    private_key: keys.privateKey,
    public_key: keys.publicKey,
    mixer_pub: null,
    status: null,
    passport: null,
    scenario: null,
  };
  saveAgentState(dir, state);
  return state;
}

function saveAgentState(dir: string, state: AgentState): void {
  const file = join(dir, 'rack-state.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** A rack with no scenario yet (or suspended): no gears. */
export function idleScenario(baseDir: string): Scenario {
  return parseScenario('meta: {name: idle, version: "0"}\ngears: []\nwires: []\n', join(baseDir, 'idle.yaml'));
}

/** The scenario a rack starts with: the last one it applied, unless it was suspended. */
export function startingScenario(state: AgentState, baseDir: string): { scenario: Scenario; groups: string[] } {
  if (state.scenario === null || state.status === 'suspended') return { scenario: idleScenario(baseDir), groups: [] };
  return { scenario: parseScenario(state.scenario.yaml, join(baseDir, `${state.scenario.name}.yaml`)), groups: state.scenario.groups };
}

export interface MixerAgentOptions {
  rack: Rack;
  /** The Mixer's NATS. */
  natsUrl: string;
  stateDir: string;
  /** Where relative paths of pushed scenarios resolve. */
  baseDir: string;
  labels: Record<string, string>;
  /** TLS with a client certificate for the Mixer's bus (mTLS), if it asks for one. */
  tls?: BusTls;
  /** The bootstrap secret the Mixer asks for, if any. */
  secret?: string;
  heartbeatMs: number;
  version: string;
  logger: Logger;
  /**
   * Where the rack's telemetry goes (logs at the telemetry level, metrics, events); attached to
   * the Mixer's bus once connected. None: the rack sends no telemetry.
   */
  telemetry?: TelemetryUplink;
  /** The Mixer asked for a graceful shutdown. */
  onShutdown(): void;
}

const HELLO_BACKOFF_MS = [500, 1000, 2000, 5000, 10_000];

export const AGENT_DEFAULTS = { heartbeat_ms: 5000 } as const;

/**
 * The rack's side of the Mixer (docs/mixer.md): it says hello until adopted, sends signed
 * heartbeats, applies the scenarios pushed to it with Rack.reload and acknowledges each, and
 * carries out commands. Without NATS or the Mixer it keeps serving its last scenario and keeps
 * trying; it rejoins without restarting a gear.
 */
export class MixerAgent {
  private nc: NatsConnection | undefined;
  private state: AgentState;
  private stopped = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private notify: Subscription | undefined;
  private consuming: ConsumerMessages | undefined;
  private lastTs = 0;
  private readonly log: Logger;
  /** Per-gear counts since this agent started (telemetry metrics are cumulative). */
  private readonly totals: Record<string, GearMetrics> = {};

  constructor(private readonly options: MixerAgentOptions) {
    this.state = loadAgentState(options.stateDir);
    this.log = options.logger;
  }

  get status(): RackStatus | null {
    return this.state.status;
  }

  get machineId(): string {
    return this.state.machine_id;
  }

  /** Connects in the background: the rack serves meanwhile, and whenever NATS is away. */
  start(): void {
    void this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.heartbeatTimer);
    this.options.telemetry?.event('stopping');
    await this.options.telemetry?.stop();
    await this.consuming?.close();
    if (this.nc !== undefined) await drainAndClose(this.nc);
  }

  private async run(): Promise<void> {
    this.nc = await natsConnect({
      servers: this.options.natsUrl,
      name: `fluxrig-rack-${this.options.rack.name}`,
      waitOnFirstConnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      inboxPrefix: rackInboxPrefix(this.options.rack.name),
      ...(this.options.tls === undefined ? {} : { tls: this.options.tls }),
    });
    this.log.info({ nats: this.options.natsUrl }, 'connected to the Mixer bus');
    this.options.telemetry?.attach(this.nc);
    this.options.telemetry?.event('started', { version: this.options.version, machine_id: this.state.machine_id });
    this.notify = this.nc.subscribe(agentNotify(this.options.rack.name, this.state.machine_id));
    void this.serveCommands(this.notify);
    await this.hello();
    this.beat();
  }

  private sign(body: Record<string, unknown>): Signed {
    // Strictly increasing: the Mixer refuses a heartbeat that is not newer than the last.
    this.lastTs = Math.max(Date.now(), this.lastTs + 1);
    return signBody({ ...body, name: this.options.rack.name, machine_id: this.state.machine_id, ts: this.lastTs }, this.state.private_key);
  }

  /** Hello until the Mixer answers (pending, active, suspended or denied). */
  private async hello(): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        const hello = this.sign({
          nonce: randomBytes(4).toString('hex'),
          version: this.options.version,
          labels: this.options.labels,
          public_key: publicKeyBytes(this.state.public_key),
          secret: this.options.secret ?? null,
          heartbeat_ms: this.options.heartbeatMs,
        });
        const reply = await this.nc!.request(agentHello(this.options.rack.name), encodeMessage({ hello }), { timeout: 2000 });
        await this.onStatus(decodeMessage(reply.data));
        return;
      } catch (err) {
        const wait = HELLO_BACKOFF_MS[Math.min(attempt, HELLO_BACKOFF_MS.length - 1)]!;
        this.log.debug({ err: (err as Error).message, retry_ms: wait }, 'hello: no answer from the Mixer yet');
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }

  /** A hello or heartbeat reply: the status, and the passport that proves it. */
  private async onStatus(reply: Record<string, unknown>): Promise<void> {
    const f = Fields.of(reply, 'status reply');
    const status = f.text('status', 16) as RackStatus;
    if (status === 'denied') {
      this.log.error({ reason: f.optionalText('message') }, 'the Mixer denied this rack');
      return this.setStatus('denied');
    }
    const mixerPub = reply.mixer_pub;
    if (mixerPub instanceof Uint8Array) {
      const pub = Buffer.from(mixerPub).toString('base64');
      if (this.state.mixer_pub === null) {
        this.state.mixer_pub = pub;
        this.save();
      } else if (this.state.mixer_pub !== pub) {
        this.log.error('the Mixer answered with another key than the one pinned: ignored (remove the state directory to enroll with a new Mixer)');
        return;
      }
    }
    if (reply.passport !== undefined) {
      const passport = asSigned(reply.passport, 'passport');
      verifyBody(passport, this.mixerKey());
      this.keepPassport(passport);
    }
    await this.setStatus(status);
  }

  /** A passport the Mixer's key verified: the newest is what the rack keeps. */
  private keepPassport(passport: Signed): void {
    this.state.passport = { payload: Buffer.from(passport.payload).toString('base64'), signature: Buffer.from(passport.signature).toString('base64') };
  }

  private mixerKey(): Uint8Array {
    if (this.state.mixer_pub === null) throw new Error('no Mixer key pinned yet');
    return new Uint8Array(Buffer.from(this.state.mixer_pub, 'base64'));
  }

  private async setStatus(status: RackStatus): Promise<void> {
    const was = this.state.status;
    this.state.status = status;
    this.save();
    if (was === status) {
      if (status === 'active' && this.consuming === undefined) await this.consumeScenarios();
      return;
    }
    this.log.info({ status, was }, 'status from the Mixer');
    this.options.telemetry?.event('status', { status, was });
    if (status === 'suspended') {
      await this.consuming?.close();
      this.consuming = undefined;
      await this.options.rack.reload(idleScenario(this.options.baseDir), []);
    } else if (status === 'active') {
      if (was === 'suspended') await this.restore();
      await this.consumeScenarios();
    }
  }

  /** Runs the last good scenario again (after a suspension, or on a reload command). */
  private async restore(): Promise<void> {
    const { scenario, groups } = startingScenario(this.state, this.options.baseDir);
    await this.options.rack.reload(scenario, groups);
  }

  private beat(): void {
    if (this.stopped) return;
    this.heartbeatTimer = setTimeout(async () => {
      try {
        const stats = await this.options.rack.takeStats();
        const running = this.options.rack.running;
        const applied = this.state.scenario;
        this.recordMetrics(stats, applied);
        const heartbeat = this.sign({
          status: this.state.status,
          scenario: applied?.name ?? null,
          scenario_version: applied?.version ?? 0,
          running: running.scenario.meta.name,
          workers: this.options.rack.workers,
          connections: this.options.rack.connectionCount,
          gears: stats.gears,
          p50_ms: stats.p50Ms,
          p99_ms: stats.p99Ms,
          rss: process.memoryUsage.rss(),
        });
        const reply = decodeMessage((await this.nc!.request(agentHeartbeat(this.options.rack.name), encodeMessage({ heartbeat }), { timeout: 2000 })).data);
        if (reply.status === 'denied' && /say hello/.test(String(reply.message))) await this.hello();
        else await this.onStatus(reply);
      } catch (err) {
        this.log.debug({ err: (err as Error).message }, 'heartbeat: no answer from the Mixer');
      }
      this.beat();
    }, this.options.heartbeatMs);
  }

  /** Adds a heartbeat's counts to the totals and hands the uplink the newest snapshot. */
  private recordMetrics(stats: RackStats, applied: AgentState['scenario']): void {
    const telemetry = this.options.telemetry;
    if (telemetry === undefined) return;
    for (const [gear, c] of Object.entries(stats.gears)) {
      const total = (this.totals[gear] ??= { messages: 0, errors: 0 });
      total.messages += c.messages;
      total.errors += c.errors;
    }
    for (const [gear, h] of Object.entries(stats.calls)) {
      const total = (this.totals[gear] ??= { messages: 0, errors: 0 });
      addHistogram((total.calls ??= emptyHistogram()), h);
    }
    telemetry.setMetrics({
      time: Date.now(),
      gears: this.totals,
      connections: this.options.rack.connectionCount,
      workers: this.options.rack.workers,
      rss: process.memoryUsage.rss(),
      scenario: applied?.name ?? this.options.rack.running.scenario.meta.name,
      scenario_version: applied?.version ?? 0,
      local_log_dropped: this.options.rack.localLogDropped,
    });
  }

  private async consumeScenarios(): Promise<void> {
    if (this.stopped || this.consuming !== undefined) return;
    const name = this.options.rack.name;
    try {
      // The Mixer makes the consumer when it pushes; a rack makes it only where it may (no mTLS).
      const js = jetstream(this.nc!);
      const consumer = await js.consumers.get(SCENARIO_STREAM, scenarioConsumer(name)).catch(async (err: unknown) => {
        if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
        const jsm = await jetstreamManager(this.nc!);
        await jsm.consumers.add(SCENARIO_STREAM, {
          durable_name: scenarioConsumer(name),
          filter_subject: rackScenarioSubject(name),
          ack_policy: AckPolicy.Explicit,
          max_ack_pending: 1,
        });
        return js.consumers.get(SCENARIO_STREAM, scenarioConsumer(name));
      });
      this.consuming = await consumer.consume({ max_messages: 1 });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot follow scenario pushes yet; retrying at the next heartbeat');
      return;
    }
    void (async () => {
      for await (const m of this.consuming!) {
        await this.apply(decodeMessage(m.data));
        m.ack();
      }
    })();
  }

  /** Applies a pushed scenario; the running one stays when it cannot. The Mixer learns either way. */
  private async apply(push: Record<string, unknown>): Promise<void> {
    const f = Fields.of(push, 'scenario push');
    const name = f.text('name', 256);
    const version = f.number('version');
    const yaml = f.text('scenario', 1 << 20);
    const groups = ((push.groups ?? []) as unknown[]).map(String);
    let error: string | null = null;
    try {
      const scenario = parseScenario(yaml, join(this.options.baseDir, `${name}.yaml`));
      await this.options.rack.reload(scenario, groups);
      this.state.scenario = { name, version, groups, yaml };
      this.save();
      this.log.info({ scenario: name, version }, 'scenario from the Mixer applied');
      this.options.telemetry?.event('scenario-applied', { scenario: name, version });
    } catch (err) {
      error = (err as Error).message;
      this.log.error({ scenario: name, version, error }, 'a scenario from the Mixer could not be applied; the last good one runs on');
      this.options.telemetry?.event('scenario-refused', { scenario: name, version, error });
    }
    this.nc!.publish(agentAck(this.options.rack.name), encodeMessage({ ack: this.sign({ scenario: name, version, ok: error === null, error }) }));
  }

  private async serveCommands(sub: Subscription): Promise<void> {
    for await (const msg of sub) {
      let id = '';
      let commandName = '';
      let error: string | null = null;
      let after: (() => void) | undefined;
      try {
        const data = decodeMessage(msg.data);
        // Only the Mixer holds the key its passports verify with: a command must carry one of ours.
        const signed = asSigned(data.passport, 'command passport');
        const passport = Fields.of(verifyBody(signed, this.mixerKey()), 'passport');
        if (passport.text('machine_id', 64) !== this.state.machine_id) throw new Error('the passport is for another rack');
        this.keepPassport(signed);
        const f = Fields.of(data, 'command');
        id = f.text('id', 64);
        commandName = f.text('command', 32);
        after = await this.execute(commandName as CommandName, Fields.of(data.args ?? {}, 'args'));
      } catch (err) {
        error = (err as Error).message;
      }
      this.options.telemetry?.event('command', { id, command: commandName, ok: error === null, error });
      if (msg.reply !== undefined) msg.respond(encodeMessage({ answer: this.sign({ id, ok: error === null, error }) }));
      after?.();
    }
  }

  /** Carries out a command; returns what must happen after the answer is sent. */
  private async execute(command: CommandName, args: Fields): Promise<(() => void) | undefined> {
    this.log.info({ command }, 'command from the Mixer');
    switch (command) {
      case 'log-level': {
        // {level} sets the local log, {telemetry} what the Mixer receives; either or both.
        const local = args.optionalText('level', 16) ?? undefined;
        const telemetry = args.optionalText('telemetry', 16) ?? undefined;
        if (local === undefined && telemetry === undefined) throw new Error('log-level needs level, telemetry or both');
        this.options.rack.setLogLevels({ local, telemetry });
        return undefined;
      }
      case 'reload':
        await this.restore();
        return undefined;
      case 'suspend':
        await this.setStatus('suspended');
        return undefined;
      case 'activate':
        await this.setStatus('active');
        return undefined;
      case 'shutdown':
        return () => this.options.onShutdown();
      default:
        throw new Error(`unknown command ${JSON.stringify(command)}`);
    }
  }

  private save(): void {
    saveAgentState(this.options.stateDir, this.state);
  }
}
