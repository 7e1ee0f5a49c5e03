// Guaranteed wires on the snake bus: their subjects, their stream and their consumers, in one
// place, for the rack (standalone with --nats, or on rollout) and the Mixer (on rollout).
import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  type JsMsg,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { busWires, type LaneSettings, laneSettings, type WireDelivery, wireDelivery } from '../scenario/lanes.js';
import type { Scenario, WireSpec } from '../scenario/types.js';
import { hopMessageId } from '../fluxmsg/fluxmsg.js';

const NS_PER_MS = 1_000_000;

/** The snake protocol's business subject: what `gear.port` of `rack` sends along a bus wire. */
export const laneSubject = (rack: string, gear: string, port: string) => `flux.msg.${rack}.${gear}.${port}`;
/** Where a message goes once its wire's deliveries are exhausted (in the scenario's stream). */
export const deadLetterSubject = (scenario: string, gear: string, port: string) => `flux.dlq.${scenario}.${gear}.${port}`;
/** The stream of one scenario's bus wires. */
export const laneStreamName = (scenario: string) => `FLUX_MSG_${scenario}`;
/** The durable consumer of one wire: every rack running the wire's target gear shares it. */
export const laneConsumerName = (wire: WireSpec) => `${wire.from.gear}_${wire.from.port}__${wire.to.gear}_${wire.to.port}`;
/** The Nats-Msg-Id of a message sent out of gear.port along a bus wire. */
export const laneMessageId = hopMessageId;

/**
 * The source rack of a wire's subject: the rack its `from` end names, the rack its gear is
 * deployed on, or any (`*`) when the gear runs on a group of racks or on every rack.
 */
export function wireSourceRack(scenario: Scenario, wire: WireSpec): string {
  if (wire.from.rack !== undefined) return wire.from.rack;
  const deploy = scenario.gears.find((g) => g.name === wire.from.gear)?.deploy;
  return deploy !== undefined && scenario.racks.some((r) => r.name === deploy) ? deploy : '*';
}

/** What a wire's consumer reads: the subject of its source gear's port. */
export const wireFilterSubject = (scenario: Scenario, wire: WireSpec) => laneSubject(wireSourceRack(scenario, wire), wire.from.gear, wire.from.port);

export const deliveryOf = (wire: WireSpec): WireDelivery => wire.delivery ?? wireDelivery(undefined);

/** The prefix of every JetStream acknowledgement subject. */
const ACK_PREFIX = '$JS.ACK.';
const DOT = 46;

/**
 * How many times the stream has offered `m` (1 the first time). Read off its acknowledgement
 * subject in place (deliveryCountIn), or by JsMsg.info for a subject of another shape, which
 * then says what is wrong with it.
 */
export function deliveryCount(m: JsMsg): number {
  // nats.js's messages carry their acknowledgement subject as `reply`, outside the JsMsg type: without it, info.
  const reply = (m as { reply?: unknown }).reply;
  const count = typeof reply === 'string' ? deliveryCountIn(reply) : -1;
  return count >= 0 ? count : m.info.deliveryCount;
}

/**
 * The delivery count in a JetStream acknowledgement subject, or -1 when it has neither shape:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>` (9
 * tokens), or with `<domain>.<account hash>` after ACK (11 tokens, 12 with a token at the end);
 * stream and consumer names hold no dots. JsMsg.info splits the subject into a dozen strings and
 * parses every one: on a busy guaranteed wire that was 15 % of what the receiving rack's main
 * thread allocated per message, for the one number read on every message.
 */
export function deliveryCountIn(reply: string): number {
  if (!reply.startsWith(ACK_PREFIX)) return -1;
  // The dots around the count: after tokens 3 and 4 (9 tokens), or after tokens 5 and 6 (11 or more).
  let dots = 0;
  let after3 = -1;
  let after4 = -1;
  let after5 = -1;
  let after6 = -1;
  for (let i = 0; i < reply.length; i++) {
    if (reply.charCodeAt(i) !== DOT) continue;
    dots++;
    if (dots === 4) after3 = i;
    else if (dots === 5) after4 = i;
    else if (dots === 6) after5 = i;
    else if (dots === 7) after6 = i;
  }
  const from = dots === 8 ? after3 + 1 : dots >= 10 ? after5 + 1 : -1;
  const to = dots === 8 ? after4 : dots >= 10 ? after6 : -1;
  if (from < 0 || from >= to) return -1;
  let count = 0;
  for (let i = from; i < to; i++) {
    const digit = reply.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return -1;
    count = count * 10 + digit;
  }
  return count;
}

export const settingsOf = (scenario: Scenario): LaneSettings => scenario.lanes ?? laneSettings(undefined);

export function laneStreamConfig(scenario: Scenario): Partial<StreamConfig> & { name: string; subjects: string[] } {
  const settings = settingsOf(scenario);
  const subjects = [...new Set(busWires(scenario).map((w) => wireFilterSubject(scenario, w)))];
  subjects.push(deadLetterSubject(scenario.meta.name, '*', '*'));
  return {
    name: laneStreamName(scenario.meta.name),
    subjects,
    retention: RetentionPolicy.Limits,
    storage: settings.storage === 'memory' ? StorageType.Memory : StorageType.File,
    num_replicas: settings.replicas,
    max_age: settings.maxAgeMs * NS_PER_MS,
    max_bytes: settings.maxBytes,
    // A full stream refuses new publishes (the publisher hears it) instead of dropping old ones.
    discard: DiscardPolicy.New,
    duplicate_window: Math.min(settings.duplicateWindowMs, settings.maxAgeMs) * NS_PER_MS,
  };
}

export function laneConsumerConfig(scenario: Scenario, wire: WireSpec): Partial<ConsumerConfig> & { durable_name: string } {
  const d = deliveryOf(wire);
  return {
    durable_name: laneConsumerName(wire),
    filter_subject: wireFilterSubject(scenario, wire),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: d.ackWaitMs * NS_PER_MS,
    // Counted by the rack (WIRE_DELIVERY_SCHEMA): the server never gives up on a message itself.
    max_deliver: -1,
    max_ack_pending: d.maxAckPending,
  };
}

/**
 * Makes or updates a scenario's stream and its wires' consumers, and removes consumers of
 * wires the scenario no longer has. Idempotent: every rack of the scenario and the Mixer may
 * run it. Returns what it changed, for the log.
 */
export async function provisionLanes(jsm: JetStreamManager, scenario: Scenario): Promise<string[]> {
  const wires = busWires(scenario);
  if (wires.length === 0) return [];
  const changes: string[] = [];
  const wanted = laneStreamConfig(scenario);
  changes.push(...(await takeOverSubjects(jsm, wanted.name, wanted.subjects)));
  const existing = await jsm.streams.info(wanted.name).catch(() => null);
  if (existing === null) {
    await jsm.streams.add(wanted);
    changes.push(`stream ${wanted.name} created`);
  } else {
    const c = existing.config;
    const same =
      sameSet(c.subjects ?? [], wanted.subjects) &&
      c.num_replicas === wanted.num_replicas &&
      c.max_age === wanted.max_age &&
      c.max_bytes === wanted.max_bytes &&
      c.duplicate_window === wanted.duplicate_window;
    if (!same) {
      // Storage and retention cannot change on a stream that exists: only what may is sent.
      const { name: _name, storage: _storage, retention: _retention, ...update } = wanted;
      await jsm.streams.update(wanted.name, update);
      changes.push(`stream ${wanted.name} updated`);
    }
  }
  const names = new Set<string>();
  for (const wire of wires) {
    const config = laneConsumerConfig(scenario, wire);
    if (names.has(config.durable_name)) continue;
    names.add(config.durable_name);
    const info = await jsm.consumers.info(wanted.name, config.durable_name).catch(() => null);
    if (info === null) {
      await jsm.consumers.add(wanted.name, config);
      changes.push(`consumer ${config.durable_name} created`);
    } else if (
      info.config.filter_subject !== config.filter_subject ||
      info.config.ack_wait !== config.ack_wait ||
      info.config.max_ack_pending !== config.max_ack_pending
    ) {
      await jsm.consumers.update(wanted.name, config.durable_name, config);
      changes.push(`consumer ${config.durable_name} updated`);
    }
  }
  for await (const info of jsm.consumers.list(wanted.name)) {
    if (names.has(info.name)) continue;
    await jsm.consumers.delete(wanted.name, info.name);
    changes.push(`consumer ${info.name} removed (its wire is gone)`);
  }
  return changes;
}

/**
 * A subject belongs to the scenario rolled out last: another scenario's stream that captures one
 * of ours (a rack moved to a renamed scenario, say) lets go of it, and keeps what it holds for
 * the consumers still reading it.
 */
async function takeOverSubjects(jsm: JetStreamManager, ours: string, subjects: string[]): Promise<string[]> {
  const changes: string[] = [];
  for await (const info of jsm.streams.list()) {
    const name = info.config.name;
    if (name === ours || !name.startsWith(laneStreamName(''))) continue;
    const theirs = info.config.subjects ?? [];
    const kept = theirs.filter((s) => !subjects.some((o) => subjectsOverlap(s, o)));
    if (kept.length === theirs.length) continue;
    await jsm.streams.update(name, { subjects: kept.length > 0 ? kept : [`flux.dlq.${name}.retired`] });
    changes.push(`stream ${name} let go of ${theirs.filter((s) => !kept.includes(s)).join(', ')}`);
  }
  return changes;
}

/** Whether two subjects (with * and >) can match one subject. */
export function subjectsOverlap(a: string, b: string): boolean {
  const x = a.split('.');
  const y = b.split('.');
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] === '>' || y[i] === '>') return true;
    if (x[i] === undefined || y[i] === undefined) return false;
    if (x[i] !== '*' && y[i] !== '*' && x[i] !== y[i]) return false;
  }
  return true;
}

function sameSet(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
