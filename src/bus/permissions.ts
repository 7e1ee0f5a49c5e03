// What each certificate may do on the bus (nats-server permissions, docs/snake-protocol.md):
// the Mixer everything; a rack only its own subjects. The config is JSON, which nats-server's
// configuration format accepts as it is.
import { writeFileSync } from 'node:fs';
import { busWires } from '../scenario/lanes.js';
import { gearsOnRack } from '../scenario/placement.js';
import type { Scenario } from '../scenario/types.js';
import { certFiles, certSubject } from './certs.js';
import { RACK_BUCKETS, type RackBuckets } from './rack-resources.js';
import { deadLetterSubject, laneConsumerName, laneStreamName } from './lanes.js';
import {
  agentAck,
  agentHeartbeat,
  agentHello,
  agentNotify,
  rackInboxPrefix,
  rackMessageSubjects,
  rackTopicSubjects,
  SCENARIO_STREAM,
  scenarioConsumer,
  TOPIC_QOS0_ALL,
  TOPIC_STREAM,
  telemetrySubject,
  topicConsumer,
} from './subjects.js';

export interface Permissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
  /** May answer requests sent to it (the Mixer's commands), and only those. */
  allow_responses?: boolean;
}

/**
 * What a rack needs on the guaranteed wires into the gears it runs in `scenario` (on a group
 * named in `groups`, or by name): read and ack each wire's consumer, and dead-letter what
 * exhausts its deliveries. Nothing on the wires into other racks' gears, and it cannot make or
 * change a consumer: the Mixer provisions them. Sending along a wire needs nothing more (its
 * subject is among the rack's own, flux.msg.RACK.>).
 */
export function laneGrants(scenario: Scenario, rack: string, groups: readonly string[]): string[] {
  const mine = new Set(gearsOnRack(scenario, rack, groups).map((g) => g.name));
  const stream = laneStreamName(scenario.meta.name);
  const grants: string[] = [];
  for (const wire of busWires(scenario)) {
    if (!mine.has(wire.to.gear)) continue;
    grants.push(...consumerReading(stream, laneConsumerName(wire)), deadLetterSubject(scenario.meta.name, wire.to.gear, wire.to.port));
  }
  return [...new Set(grants)];
}

/** What reading a pull consumer the Mixer made takes: its info, its next messages, their acks. */
function consumerReading(stream: string, consumer: string): string[] {
  const name = `${stream}.${consumer}`;
  return [`$JS.API.CONSUMER.INFO.${name}`, `$JS.API.CONSUMER.MSG.NEXT.${name}`, `$JS.ACK.${name}.>`];
}

/**
 * What reading a stream through the JetStream client takes: its info, direct and stored message
 * gets, and ordered consumers (made, read, flow-controlled and deleted by the reader). KV and
 * Object Store reads are made of these.
 */
function streamReading(stream: string): string[] {
  const api = '$JS.API';
  return [
    `${api}.STREAM.INFO.${stream}`,
    `${api}.STREAM.MSG.GET.${stream}`,
    `${api}.DIRECT.GET.${stream}`,
    `${api}.DIRECT.GET.${stream}.>`,
    `${api}.CONSUMER.CREATE.${stream}`,
    `${api}.CONSUMER.CREATE.${stream}.>`,
    `${api}.CONSUMER.INFO.${stream}.>`,
    `${api}.CONSUMER.MSG.NEXT.${stream}.>`,
    `${api}.CONSUMER.DELETE.${stream}.>`,
    `$JS.FC.${stream}.>`,
  ];
}

/**
 * A rack publishes its own hello, heartbeat, acks, telemetry and gear traffic; reads its own
 * commands and replies, and its scenarios through the consumer the Mixer made for it (info,
 * next, ack: it cannot make or change a consumer, nor read another rack's). `grants`: more it may
 * publish to (laneGrants of the scenarios rolled out to it).
 *
 * What racks share by design: the gears' KV bucket (read and write), the module bucket (read),
 * and the fleet's topics (publish any topic under its own name, read QoS 0 and, through a durable
 * consumer of its own, QoS 1 and 2). None of them can make a stream: the Mixer makes these at start.
 */
export function rackPermissions(rack: string, grants: readonly string[] = [], buckets: RackBuckets = RACK_BUCKETS): Permissions {
  const topics = topicConsumer(rack);
  return {
    publish: {
      allow: [
        agentHello(rack),
        agentHeartbeat(rack),
        agentAck(rack),
        telemetrySubject(rack, '>'),
        rackMessageSubjects(rack),
        ...consumerReading(SCENARIO_STREAM, scenarioConsumer(rack)),
        // Every JetStream client asks for the account's info first.
        '$JS.API.INFO',
        `$KV.${buckets.kv}.>`,
        ...streamReading(`KV_${buckets.kv}`),
        ...streamReading(`OBJ_${buckets.modules}`),
        ...rackTopicSubjects(rack),
        `$JS.API.STREAM.INFO.${TOPIC_STREAM}`,
        `$JS.API.CONSUMER.DURABLE.CREATE.${TOPIC_STREAM}.${topics}`,
        `$JS.API.CONSUMER.CREATE.${TOPIC_STREAM}.${topics}`,
        `$JS.API.CONSUMER.CREATE.${TOPIC_STREAM}.${topics}.>`,
        ...consumerReading(TOPIC_STREAM, topics),
        ...grants,
      ],
    },
    subscribe: { allow: [agentNotify(rack, '*'), `${rackInboxPrefix(rack)}.>`, TOPIC_QOS0_ALL] },
    allow_responses: true,
  };
}

export const MIXER_PERMISSIONS: Permissions = { publish: { allow: ['>'] }, subscribe: { allow: ['>'] } };

export interface TlsServerConfig {
  /** The certificates directory (fluxrig certs init). */
  certs: string;
  /** Racks with a certificate: each becomes a user with rackPermissions. */
  racks: string[];
  /** Per rack, what it may publish to besides its own subjects (Mixer.laneGrants). */
  grants?: ReadonlyMap<string, readonly string[]>;
  /** The buckets racks share (the Mixer's module bucket when it is not the default). */
  buckets?: RackBuckets;
}

/** A nats-server configuration: TLS with client certificates required and mapped to users. */
export function natsTlsConfig(options: TlsServerConfig): Record<string, unknown> {
  const files = certFiles(options.certs);
  return {
    tls: { cert_file: files.server, key_file: files.serverKey, ca_file: files.ca, verify_and_map: true, timeout: 5 },
    authorization: {
      users: [
        { user: certSubject.mixer, permissions: MIXER_PERMISSIONS },
        ...options.racks.map((rack) => ({ user: certSubject.rack(rack), permissions: rackPermissions(rack, options.grants?.get(rack), options.buckets) })),
      ],
    },
  };
}

export function writeNatsConfig(file: string, config: Record<string, unknown>): void {
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}
