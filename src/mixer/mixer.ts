import { randomUUID, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { AckPolicy, DiscardPolicy, type JetStreamManager, jetstream, jetstreamManager, RetentionPolicy } from '@nats-io/jetstream';
import { KvWatchInclude } from '@nats-io/kv';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { FluxrigError } from '../errors.js';
import {
  asSigned,
  bodyOf,
  type CommandName,
  decodeMessage,
  encodeMessage,
  Fields,
  newKeyPair,
  publicKeyBytes,
  type RackState,
  type RackStatus,
  signBody,
  SnakeProtocolError,
  verifyBody,
} from '../bus/mixer-protocol.js';
import {
  AGENT_ACK_ALL,
  AGENT_HEARTBEAT_ALL,
  AGENT_HELLO_ALL,
  agentNotify,
  rackOfSubject,
  scenarioConsumer,
  MIXER_QUEUE,
  RACK_NAME,
  RACK_SCENARIO_ALL,
  rackScenarioSubject,
  SCENARIO_STREAM,
} from '../bus/subjects.js';
import { provisionRackResources, RACK_BUCKETS, type RackBuckets } from '../bus/rack-resources.js';
import { ensureStream } from '../bus/streams.js';
import { provisionLanes } from '../bus/lanes.js';
import { laneGrants } from '../bus/permissions.js';
import { parseScenario } from '../scenario/parse.js';
import type { Scenario } from '../scenario/types.js';
import { type Actor, AuditLog, ensureAuditStream } from './audit.js';
import { type HeartbeatReport, type RackRecord, Registry, type ScenarioRecord } from './registry.js';
import { clusterPublicKey, type ImportedModule, importModule, MODULE_DEFAULTS } from './modules.js';
import { FleetKv, type KvValueView, kvKeyProblem } from './kv.js';
import { ensureTelemetryStream, TelemetryStore } from './telemetry.js';

/** What an operator asked for cannot be done (unknown rack, invalid scenario, ...). */
export class MixerError extends FluxrigError {
  constructor(
    message: string,
    readonly status: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A key the gears' KV cannot have is a 400 that says what a key may be. */
function checkKvKey(key: string): void {
  const problem = kvKeyProblem(key);
  if (problem !== null) throw new MixerError(problem, 400);
}

export interface MixerOptions {
  nats: NatsConnection;
  logger: Logger;
  /** A rack's hello must carry it; undefined: any rack may ask to enroll (still pending until adopted). */
  bootstrapSecret?: string;
  /** Adopt every rack that asks, without an operator. */
  autoAdopt?: boolean;
  /** How long a passport is valid. Default 24 h. */
  passportTtlMs?: number;
  /** How long a command waits for the rack's answer. Default 10 s. */
  commandTimeoutMs?: number;
  /** Rack log lines and events kept in memory for queries. Default 10,000. */
  keepLogs?: number;
  /** Trusted vendor keys for module imports: NAME.pub files (raw 32 bytes or PEM). None: only allow_unsigned imports. */
  vendorKeysDir?: string;
  /** The Object Store bucket imported modules go to. Default MODULE_DEFAULTS.bucket. */
  moduleBucket?: string;
  /**
   * Gives racks the bus permissions their guaranteed wires need (laneGrants, per rack, of every
   * stored scenario): called after a push stores its scenario and before any rack gets it. The
   * CLI's embedded nats-server rewrites its users and reloads; a bus run by someone else needs
   * its operator to grant the same (docs/mixer.md).
   */
  grantLanes?: (grants: Map<string, string[]>) => Promise<void>;
}

/** The Mixer acting on its own (not on an operator's request). */
export const MIXER_ITSELF: Actor = { name: 'mixer', address: 'local' };

/** A rack as the API shows it: its record, and whether it is online (a heartbeat within 3 periods). */
export type RackView = RackRecord & { online: boolean };

/** Missed heartbeats before a rack is shown offline. */
export const MISSED_HEARTBEATS = 3;
/** A heartbeat or acknowledgement more than this far from the Mixer's clock is refused (replay). */
const CLOCK_SKEW_MS = 5 * 60_000;

/**
 * The Mixer: enrolls racks, adopts them, issues passports, pushes scenarios and follows what
 * each rack applied, and sends commands. Its state lives in NATS KV (registry.ts), and it takes
 * hello, heartbeat and ack messages in a queue group, so any number of Mixers can serve one
 * fleet side by side: one can die and the others carry on.
 *
 * Events: 'rack' (RackView) whenever a rack's record changes or it goes offline, 'scenario'
 * (ScenarioRecord) when one is pushed; from every Mixer's changes, not only this one's.
 */
export class Mixer extends EventEmitter {
  readonly id = randomUUID();
  private registry!: Registry;
  private jsm!: JetStreamManager;
  private key!: { privateKey: string; publicKey: string };
  private mixerPub!: Uint8Array;
  private fleetKv: FleetKv | undefined;
  private mixerId!: string;
  private readonly subs: Subscription[] = [];
  private watchers: Array<{ stop(): void }> = [];
  private offlineTimer: NodeJS.Timeout | undefined;
  /** Every rack's newest record, from the racks bucket's watch, and whether it was online at the last check. */
  private readonly watched = new Map<string, { record: RackRecord; online: boolean }>();
  private readonly log: Logger;
  /** The racks' telemetry: recent logs and events, and each rack's newest metrics. */
  telemetry!: TelemetryStore;
  audit!: AuditLog;

  constructor(private readonly options: MixerOptions) {
    super();
    this.log = options.logger;
  }

  async start(): Promise<void> {
    const nc = this.options.nats;
    this.registry = await Registry.open(nc);
    // One signing key for the fleet, whichever Mixer made it: passports verify against any Mixer.
    this.key = JSON.parse(await this.registry.once('signing-key', () => JSON.stringify(newKeyPair()))) as { privateKey: string; publicKey: string };
    this.mixerPub = publicKeyBytes(this.key.publicKey);
    this.mixerId = await this.registry.once('mixer-id', () => randomUUID());
    const jsm = await jetstreamManager(nc);
    this.jsm = jsm;
    await ensureStream(jsm, {
      name: SCENARIO_STREAM,
      subjects: [RACK_SCENARIO_ALL],
      retention: RetentionPolicy.Workqueue,
      discard: DiscardPolicy.Old,
      max_msgs_per_subject: 8,
    });
    await ensureTelemetryStream(jsm);
    await ensureAuditStream(jsm);
    await provisionRackResources(nc, this.rackBuckets);
    this.telemetry = new TelemetryStore({ nats: nc, logger: this.log, keep: this.options.keepLogs });
    await this.telemetry.start();
    this.audit = new AuditLog(nc, this.id, this.log);
    await this.audit.start();
    this.serve(AGENT_HELLO_ALL, (data, msg) => this.hello(data, msg));
    this.serve(AGENT_HEARTBEAT_ALL, (data, msg) => this.heartbeat(data, msg.subject));
    this.serve(AGENT_ACK_ALL, (data, msg) => this.applied(data, msg.subject));
    await this.follow();
    this.offlineTimer = setInterval(() => this.checkOnline(), 1000);
    this.log.info({ mixer: this.id, fleet: this.mixerId }, 'mixer started');
  }

  async close(): Promise<void> {
    clearInterval(this.offlineTimer);
    for (const w of this.watchers) w.stop();
    for (const s of this.subs) s.unsubscribe();
    await this.telemetry?.stop();
    await this.audit?.stop();
  }

  /** The buckets the racks share; made at start (an mTLS bus lets racks use them, not make them). */
  get rackBuckets(): RackBuckets {
    return { ...RACK_BUCKETS, modules: this.options.moduleBucket ?? MODULE_DEFAULTS.bucket };
  }

  /** Every rack this Mixer follows, from the racks bucket's watch (no round trip). */
  get fleet(): RackView[] {
    return [...this.watched.values()].map((w) => view(w.record));
  }

  /** Runs an operator's operation and writes it to the audit trail, done or failed. */
  private async audited<T>(actor: Actor, action: string, target: string, detail: string, operation: () => Promise<T>): Promise<T> {
    try {
      const result = await operation();
      await this.audit.record(actor, action, target, detail, null);
      return result;
    } catch (err) {
      await this.audit.record(actor, action, target, detail, (err as Error).message);
      throw err;
    }
  }

  /** The fleet's signing key (SPKI DER): what racks pin. */
  get publicKey(): Uint8Array {
    return this.mixerPub;
  }

  private serve(subject: string, handle: (data: Record<string, unknown>, msg: Msg) => Promise<Record<string, unknown> | undefined>): void {
    const sub = this.options.nats.subscribe(subject, { queue: MIXER_QUEUE });
    this.subs.push(sub);
    void (async () => {
      for await (const msg of sub) {
        let reply: Record<string, unknown> | undefined;
        try {
          reply = await handle(decodeMessage(msg.data), msg);
        } catch (err) {
          const refused = err instanceof SnakeProtocolError || err instanceof MixerError;
          if (!refused) this.log.error({ err, subject }, 'a rack message could not be handled');
          else this.log.warn({ subject, reason: (err as Error).message }, 'a rack message was refused');
          reply = { status: 'denied', message: (err as Error).message };
        }
        if (reply !== undefined && msg.reply !== undefined) msg.respond(encodeMessage(reply));
      }
    })();
  }

  private async hello(data: Record<string, unknown>, msg: Msg): Promise<Record<string, unknown>> {
    const signed = asSigned(data.hello, 'hello');
    const claimed = Fields.of(bodyOf(signed), 'hello');
    const publicKey = claimed.bytes('public_key');
    const body = Fields.of(verifyBody(signed, publicKey), 'hello');
    const name = body.text('name', 64);
    const machineId = body.text('machine_id', 64);
    if (!RACK_NAME.test(name)) throw new MixerError(`rack name ${JSON.stringify(name)} must be 1-64 of a-z 0-9 _ -`, 400);
    if (rackOfSubject(msg.subject) !== name) throw new SnakeProtocolError(`hello: rack ${name} on the subject of ${rackOfSubject(msg.subject)}`);
    const secret = this.options.bootstrapSecret;
    if (secret !== undefined && !sameText(body.optionalText('secret') ?? '', secret)) {
      this.log.warn({ rack: name, from: msg.subject }, 'hello with a wrong bootstrap secret: denied');
      return { status: 'denied', message: 'wrong bootstrap secret' };
    }
    const key = Buffer.from(publicKey).toString('base64');
    const now = Date.now();
    let denied: string | undefined;
    const record = await this.registry.updateRack(name, (current) => {
      denied = undefined;
      if (current !== null && (current.public_key !== key || current.machine_id !== machineId)) {
        denied = `the name ${name} is enrolled with another key: remove it first (fluxrig racks remove ${name})`;
        return null;
      }
      return {
        name,
        machine_id: machineId,
        public_key: key,
        status: current?.status ?? (this.options.autoAdopt === true ? 'active' : 'pending'),
        labels: body.labels('labels'),
        version: body.text('version', 64),
        heartbeat_ms: body.number('heartbeat_ms'),
        created_at: current?.created_at ?? now,
        updated_at: now,
        last_seen: now,
        heartbeat: current?.heartbeat ?? null,
        desired: current?.desired ?? null,
        applied: current?.applied ?? null,
        apply_error: current?.apply_error ?? null,
      };
    });
    if (denied !== undefined || record === null) return { status: 'denied', message: denied ?? 'refused' };
    this.log.info({ rack: name, status: record.status }, 'hello');
    if (record.status === 'active') await this.adopted(name);
    return this.statusReply(record);
  }

  /**
   * What an adopted rack reads its scenarios from, made before it is told it is adopted: an
   * mTLS bus lets a rack read its consumer, not make it, and it follows pushes from then on.
   */
  private async adopted(rack: string): Promise<void> {
    await ensureScenarioConsumer(this.jsm, rack);
  }

  private statusReply(record: RackRecord): Record<string, unknown> {
    const reply: Record<string, unknown> = { status: record.status, mixer_pub: this.mixerPub, message: messageFor(record.status) };
    if (record.status === 'active' || record.status === 'suspended') reply.passport = this.passport(record);
    return reply;
  }

  private passport(record: RackRecord): Record<string, unknown> {
    const now = Date.now();
    const state: RackState = {
      mixer_id: this.mixerId,
      machine_id: record.machine_id,
      name: record.name,
      status: record.status,
      rack_pub: new Uint8Array(Buffer.from(record.public_key, 'base64')),
      mixer_pub: this.mixerPub,
      labels: record.labels,
      issued_at: now,
      expires_at: now + (this.options.passportTtlMs ?? 24 * 3600_000),
    };
    return { ...signBody(state as unknown as Record<string, unknown>, this.key.privateKey) };
  }

  /** A signed message from a known rack: its record and the verified body. */
  private async fromRack(data: Record<string, unknown>, what: string, subjectRack: string): Promise<{ record: RackRecord; body: Fields }> {
    const signed = asSigned(data[what], what);
    const claimed = Fields.of(bodyOf(signed), what);
    const name = claimed.text('name', 64);
    if (subjectRack !== name) throw new SnakeProtocolError(`${what}: rack ${name} on the subject of ${subjectRack}`);
    const record = await this.registry.rack(name);
    if (record === null) throw new MixerError(`unknown rack ${name}: say hello first`, 404);
    const body = Fields.of(verifyBody(signed, new Uint8Array(Buffer.from(record.public_key, 'base64'))), what);
    if (body.text('machine_id', 64) !== record.machine_id) throw new SnakeProtocolError(`${what}: machine_id does not match rack ${name}`);
    const ts = body.number('ts');
    if (Math.abs(ts - Date.now()) > CLOCK_SKEW_MS)
      throw new SnakeProtocolError(`${what}: its time is more than ${CLOCK_SKEW_MS / 60_000} minutes off the Mixer's`);
    return { record, body };
  }

  private async heartbeat(data: Record<string, unknown>, subject: string): Promise<Record<string, unknown>> {
    const { record, body } = await this.fromRack(data, 'heartbeat', rackOfSubject(subject));
    const ts = body.number('ts');
    if (record.heartbeat !== null && ts <= record.heartbeat.ts) throw new SnakeProtocolError('heartbeat: not newer than the last one (a replay?)');
    const report: HeartbeatReport = {
      ts,
      workers: body.number('workers'),
      connections: body.number('connections'),
      gears: (body.raw('gears') ?? {}) as HeartbeatReport['gears'],
      p50_ms: (body.raw('p50_ms') as number | null) ?? null,
      p99_ms: (body.raw('p99_ms') as number | null) ?? null,
      rss: body.number('rss'),
    };
    const scenario = body.optionalText('scenario');
    const updated = await this.registry.updateRack(record.name, (current) =>
      current === null
        ? null
        : {
            ...current,
            last_seen: Date.now(),
            heartbeat: report,
            applied: scenario === null ? current.applied : { scenario, version: body.number('scenario_version') },
          },
    );
    return this.statusReply(updated ?? record);
  }

  private async applied(data: Record<string, unknown>, subject: string): Promise<undefined> {
    const { record, body } = await this.fromRack(data, 'ack', rackOfSubject(subject));
    const ok = body.bool('ok');
    const scenario = body.text('scenario', 256);
    const version = body.number('version');
    const error = body.optionalText('error');
    await this.registry.updateRack(record.name, (current) =>
      current === null
        ? null
        : {
            ...current,
            last_seen: Date.now(),
            applied: ok ? { scenario, version } : current.applied,
            apply_error: ok ? null : error,
          },
    );
    if (ok) this.log.info({ rack: record.name, scenario, version }, 'scenario applied');
    else this.log.warn({ rack: record.name, scenario, version, error }, 'a rack could not apply a scenario and runs its last good one');
    return undefined;
  }

  // ---- operations (the API and the CLI call these) ---------------------------------------------

  async racks(): Promise<RackView[]> {
    return (await this.registry.listRacks()).map((r) => view(r));
  }

  async rack(name: string): Promise<RackView> {
    const record = await this.registry.rack(name);
    if (record === null) throw new MixerError(`no rack named ${name}`, 404);
    return view(record);
  }

  /** approve (pending or denied -> active), suspend, activate, deny; `action` names it in the audit trail. */
  async setStatus(name: string, status: RackStatus, actor: Actor = MIXER_ITSELF, action: string = status): Promise<RackView> {
    return this.audited(actor, action, name, `status ${status}`, () => this.changeStatus(name, status));
  }

  private async changeStatus(name: string, status: RackStatus): Promise<RackView> {
    const record = await this.registry.updateRack(name, (current) => (current === null ? null : { ...current, status, updated_at: Date.now() }));
    if (record === null) throw new MixerError(`no rack named ${name}`, 404);
    this.log.info({ rack: name, status }, 'rack status changed');
    if (status === 'active') await this.adopted(name);
    // Tell it now if it is online; otherwise its next hello or heartbeat reply does.
    const command = status === 'suspended' ? 'suspend' : status === 'active' ? 'activate' : undefined;
    if (command !== undefined) await this.sendCommand(name, command, {}).catch(() => {});
    return view(record);
  }

  /** Per rack, what its guaranteed wires need on the bus, over every stored scenario it was sent. */
  async laneGrants(): Promise<Map<string, string[]>> {
    const grants = new Map<string, Set<string>>();
    for (const record of await this.registry.listScenarios()) {
      let scenario: Scenario;
      try {
        scenario = parseScenario(record.yaml, `${record.name}.yaml`);
      } catch (err) {
        this.log.warn({ err, scenario: record.name }, 'a stored scenario no longer parses: no lane grants from it');
        continue;
      }
      for (const [rack, groups] of Object.entries(record.targets)) {
        const mine = grants.get(rack) ?? new Set<string>();
        for (const grant of laneGrants(scenario, rack, groups)) mine.add(grant);
        grants.set(rack, mine);
      }
    }
    return new Map([...grants].map(([rack, set]) => [rack, [...set]]));
  }

  async remove(name: string, actor: Actor = MIXER_ITSELF): Promise<void> {
    await this.audited(actor, 'remove', name, '', async () => {
      if (!(await this.registry.removeRack(name))) throw new MixerError(`no rack named ${name}`, 404);
      this.telemetry.forget(name);
      this.log.info({ rack: name }, 'rack removed');
    });
  }

  /** Sends a command and waits for the rack's signed answer. */
  async command(
    name: string,
    command: CommandName,
    args: Record<string, unknown>,
    actor: Actor = MIXER_ITSELF,
  ): Promise<{ ok: boolean; error: string | null }> {
    const detail = `${command} ${JSON.stringify(args)}`;
    let answer: { ok: boolean; error: string | null };
    try {
      answer = await this.sendCommand(name, command, args);
    } catch (err) {
      await this.audit.record(actor, 'command', name, detail, (err as Error).message);
      throw err;
    }
    await this.audit.record(actor, 'command', name, detail, answer.ok ? null : (answer.error ?? 'failed'));
    return answer;
  }

  private async sendCommand(name: string, command: CommandName, args: Record<string, unknown>): Promise<{ ok: boolean; error: string | null }> {
    const record = await this.registry.rack(name);
    if (record === null) throw new MixerError(`no rack named ${name}`, 404);
    const id = randomUUID();
    let reply: Msg;
    try {
      reply = await this.options.nats.request(
        agentNotify(record.name, record.machine_id),
        encodeMessage({ id, command, args, passport: this.passport(record) }),
        {
          timeout: this.options.commandTimeoutMs ?? 10_000,
        },
      );
    } catch (err) {
      throw new MixerError(`rack ${name} did not answer the ${command} command: ${(err as Error).message}`, 504, { cause: err });
    }
    const data = decodeMessage(reply.data);
    const { body } = await this.fromRack(data, 'answer', name);
    if (body.text('id', 64) !== id) throw new MixerError(`rack ${name} answered another command`, 502);
    return { ok: body.bool('ok'), error: body.optionalText('error') };
  }

  /**
   * Validates and stores a scenario, then sends it to every rack it names: racks by name (in
   * `racks:` and gears' `deploy`), groups by their labels, resolved against the adopted racks,
   * and any in `extraRacks`. Each rack's queue keeps only the newest push.
   */
  async push(yaml: string, file: string, extraRacks: string[] = [], actor: Actor = MIXER_ITSELF): Promise<ScenarioRecord> {
    return this.audited(actor, 'push', file, `${yaml.length} bytes${extraRacks.length > 0 ? `, racks ${extraRacks.join(',')}` : ''}`, () =>
      this.pushScenario(yaml, file, extraRacks),
    );
  }

  private async pushScenario(yaml: string, file: string, extraRacks: string[]): Promise<ScenarioRecord> {
    let scenario: Scenario;
    try {
      scenario = parseScenario(yaml, file);
    } catch (err) {
      throw new MixerError((err as Error).message, 400, { cause: err });
    }
    const racks = await this.registry.listRacks();
    const targets = resolveTargets(scenario, racks, extraRacks);
    if (Object.keys(targets).length === 0)
      throw new MixerError(`scenario ${scenario.meta.name} names no adopted rack (racks:, deploy: or a group's match_labels); name one with --rack`, 400);
    // The guaranteed wires' stream and consumers exist before any rack runs the scenario (a
    // rack confined by bus permissions could not make them itself).
    try {
      const changes = await provisionLanes(this.jsm, scenario);
      if (changes.length > 0) this.log.info({ scenario: scenario.meta.name, changes }, 'guaranteed lanes provisioned');
    } catch (err) {
      throw new MixerError(`cannot provision the guaranteed lanes of scenario ${scenario.meta.name}: ${(err as Error).message}`, 409, { cause: err });
    }
    const stored = await this.registry.updateScenario(scenario.meta.name, (current) => ({
      name: scenario.meta.name,
      version: (current?.version ?? 0) + 1,
      meta_version: scenario.meta.version,
      yaml,
      pushed_at: Date.now(),
      targets,
    }));
    const record = stored!;
    if (this.options.grantLanes !== undefined) {
      try {
        await this.options.grantLanes(await this.laneGrants());
      } catch (err) {
        throw new MixerError(`cannot grant the racks of scenario ${record.name} their guaranteed wires on the bus: ${(err as Error).message}`, 500, {
          cause: err,
        });
      }
    }
    const js = jetstream(this.options.nats);
    for (const [rackName, groups] of Object.entries(targets)) {
      const rack = racks.find((r) => r.name === rackName)!;
      const subject = rackScenarioSubject(rackName);
      // Desired first: the rack's ack may come back before publish() returns.
      await this.registry.updateRack(rackName, (current) =>
        current === null ? null : { ...current, desired: { scenario: record.name, version: record.version }, apply_error: null },
      );
      // Only the newest matters to a rack that was offline: older pushes leave its queue.
      await this.jsm.streams.purge(SCENARIO_STREAM, { filter: subject });
      // The Mixer makes each rack's consumer: on an mTLS bus a rack may read it, never make one.
      await ensureScenarioConsumer(this.jsm, rackName);
      await js.publish(
        subject,
        encodeMessage({
          name: record.name,
          version: record.version,
          rack_name: rackName,
          machine_id: rack.machine_id,
          scenario: yaml,
          groups,
          timestamp: record.pushed_at,
        }),
        { msgID: `${record.name}-${record.version}-${rackName}` },
      );
    }
    this.log.info({ scenario: record.name, version: record.version, racks: Object.keys(targets) }, 'scenario pushed');
    return record;
  }

  /**
   * Imports a gear module for the fleet: its vendor signature is checked against the trusted
   * vendor keys (unless allowUnsigned), then the Mixer countersigns it and puts it in the module
   * bucket as NAME:VERSION (urn:wasm:NAME:VERSION in scenarios).
   */
  async importModule(bytes: Uint8Array, name: string, version: string, allowUnsigned: boolean, actor: Actor = MIXER_ITSELF): Promise<ImportedModule> {
    return this.audited(actor, 'import', `${name}:${version}`, `${bytes.length} bytes${allowUnsigned ? ', unsigned allowed' : ''}`, () =>
      importModule({
        nats: this.options.nats,
        bucket: this.rackBuckets.modules,
        vendorKeysDir: this.options.vendorKeysDir,
        clusterKeyPem: this.key.privateKey,
        bytes,
        name,
        version,
        allowUnsigned,
      }),
    );
  }

  /** The gears' KV bucket, as operators read and change it (fluxrig kv). */
  get kv(): FleetKv {
    this.fleetKv ??= new FleetKv(this.options.nats, this.rackBuckets.kv);
    return this.fleetKv;
  }

  async kvGet(key: string): Promise<KvValueView> {
    checkKvKey(key);
    const view = await this.kv.get(key);
    if (view === null) throw new MixerError(`no key ${JSON.stringify(key)} in the gears' KV`, 404);
    return view;
  }

  /** Sets a key of the gears' KV for every rack; audited. */
  async kvPut(key: string, value: Uint8Array, actor: Actor = MIXER_ITSELF): Promise<{ key: string; revision: number; bytes: number }> {
    return this.audited(actor, 'kv-put', key, `${value.length} bytes`, async () => {
      checkKvKey(key);
      const limit = this.kv.maxValueBytes;
      if (value.length > limit) throw new MixerError(`a KV value of at most ${limit} bytes (the server's max_payload); got ${value.length}`, 413);
      return { key, revision: await this.kv.put(key, value), bytes: value.length };
    });
  }

  /** Deletes a key of the gears' KV; a key it does not have is a 404, so a typo is not silent. Audited. */
  async kvDelete(key: string, actor: Actor = MIXER_ITSELF): Promise<void> {
    await this.audited(actor, 'kv-delete', key, '', async () => {
      checkKvKey(key);
      if (!(await this.kv.delete(key))) throw new MixerError(`no key ${JSON.stringify(key)} in the gears' KV`, 404);
    });
  }

  /** The key racks check module countersignatures with (fluxrig wasm cluster-key). */
  get moduleKey(): { pem: string; raw_hex: string } {
    return clusterPublicKey(this.key.publicKey);
  }

  async scenarios(): Promise<ScenarioRecord[]> {
    return this.registry.listScenarios();
  }

  async scenario(name: string): Promise<ScenarioRecord> {
    const s = await this.registry.scenario(name);
    if (s === null) throw new MixerError(`no scenario named ${name}`, 404);
    return s;
  }

  /** Desired and applied version for each rack the scenario was sent to. */
  async rollout(
    name: string,
  ): Promise<Array<{ rack: string; desired: number | null; applied: number | null; online: boolean; error: string | null; state: string }>> {
    const scenario = await this.scenario(name);
    const out = [];
    for (const rackName of Object.keys(scenario.targets)) {
      const rack = await this.registry.rack(rackName);
      const desired = rack?.desired?.scenario === name ? rack.desired.version : null;
      const applied = rack?.applied?.scenario === name ? rack.applied.version : null;
      const error = rack?.apply_error ?? null;
      const state = rack === null ? 'removed' : error !== null ? 'failed' : applied !== null && applied === desired ? 'applied' : 'pending';
      out.push({ rack: rackName, desired, applied, online: rack === null ? false : view(rack).online, error, state });
    }
    return out;
  }

  private async follow(): Promise<void> {
    // Racks from their last values on: the offline check reads this, not the bucket.
    const racks = await this.registry.racks.watch({ include: KvWatchInclude.LastValue });
    const scenarios = await this.registry.scenarios.watch({ include: KvWatchInclude.UpdatesOnly });
    this.watchers.push(racks, scenarios);
    void (async () => {
      for await (const e of racks) {
        if (e.operation === 'PUT') {
          const v = view(e.json<RackRecord>());
          this.watched.set(v.name, { record: v, online: v.online });
          this.emit('rack', v);
        } else {
          this.watched.delete(e.key);
          this.emit('rack-removed', { name: e.key });
        }
      }
    })();
    void (async () => {
      for await (const e of scenarios) if (e.operation === 'PUT') this.emit('scenario', e.json<ScenarioRecord>());
    })();
  }

  /** Racks whose heartbeats stopped become offline; the event says so once. */
  private checkOnline(): void {
    for (const entry of this.watched.values()) {
      const rack = view(entry.record);
      const was = entry.online;
      entry.online = rack.online;
      if (was && !rack.online) {
        this.log.warn({ rack: rack.name, last_seen: rack.last_seen }, `rack offline: ${MISSED_HEARTBEATS} heartbeats missed`);
        this.emit('rack', rack);
      }
    }
  }
}

/** The durable consumer a rack reads its scenarios from (idempotent). */
export async function ensureScenarioConsumer(jsm: JetStreamManager, rack: string): Promise<void> {
  await jsm.consumers.add(SCENARIO_STREAM, {
    durable_name: scenarioConsumer(rack),
    filter_subject: rackScenarioSubject(rack),
    ack_policy: AckPolicy.Explicit,
    max_ack_pending: 1,
  });
}

function view(record: RackRecord): RackView {
  return { ...record, online: Date.now() - record.last_seen <= MISSED_HEARTBEATS * record.heartbeat_ms };
}

function messageFor(status: RackStatus): string {
  switch (status) {
    case 'pending':
      return 'waiting for adoption: fluxrig racks approve NAME';
    case 'active':
      return 'adopted';
    case 'suspended':
      return 'suspended by the Mixer: gears stopped';
    case 'denied':
      return 'denied by the Mixer';
  }
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The racks a scenario goes to, each with the groups it belongs to in it: named racks, and the
 * adopted racks whose labels match a group's match_labels.
 */
export function resolveTargets(scenario: Scenario, racks: RackRecord[], extra: string[]): Record<string, string[]> {
  const adopted = racks.filter((r) => r.status === 'active');
  const targets: Record<string, string[]> = {};
  const add = (name: string, group?: string) => {
    if (!adopted.some((r) => r.name === name)) return;
    const groups = (targets[name] ??= []);
    if (group !== undefined && !groups.includes(group)) groups.push(group);
  };
  for (const spec of scenario.racks) {
    if (spec.name !== undefined) add(spec.name);
    if (spec.group !== undefined) {
      const want = Object.entries(spec.matchLabels);
      for (const r of adopted) if (want.length > 0 && want.every(([k, v]) => r.labels[k] === v)) add(r.name, spec.group);
    }
  }
  for (const g of scenario.gears) if (g.deploy !== undefined && !scenario.racks.some((r) => r.group === g.deploy)) add(g.deploy);
  for (const name of extra) {
    if (!adopted.some((r) => r.name === name)) throw new MixerError(`rack ${name} is not an adopted rack`, 400);
    add(name);
  }
  return targets;
}
