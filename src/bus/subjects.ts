// NATS subjects of the snake bus that fluxrig-ts uses, in one place (a compatibility switch with
// fluxrig's naming stays a one-line change here).

/**
 * FLUXAR publications between racks (spec section 14), apart from flux.msg.> (gear-to-gear
 * traffic). The publishing rack is the subject's first token after the QoS one, so that the bus's
 * permissions confine a rack to its own (a header could say any rack's name: one rack could have
 * made the others skip a publication as their own).
 */
export const TOPIC_PREFIX = 'flux.topic';
/** QoS 0 publications: core NATS, at most once. */
export const topicSubjectQos0 = (rack: string, topic: string) => `${TOPIC_PREFIX}.0.${rack}.${topic}`;
/** QoS 1 and 2 publications: the JetStream stream TOPIC_STREAM, deduplicated by publication id. */
export const topicSubjectQos1 = (rack: string, topic: string) => `${TOPIC_PREFIX}.q.${rack}.${topic}`;
export const TOPIC_QOS0_ALL = `${TOPIC_PREFIX}.0.>`;
export const TOPIC_QOS1_ALL = `${TOPIC_PREFIX}.q.>`;
/** What one rack may publish of topics: its own subjects of both QoS. */
export const rackTopicSubjects = (rack: string) => [`${TOPIC_PREFIX}.0.${rack}.>`, `${TOPIC_PREFIX}.q.${rack}.>`];
/** The JetStream stream of QoS 1 and 2 publications between racks. */
export const TOPIC_STREAM = 'FLUX_TOPICS';
/** Each rack's durable consumer of TOPIC_STREAM. */
export const topicConsumer = (rack: string) => `rack-${rack.replace(/[^A-Za-z0-9_-]/g, '_')}`;

/** The publishing rack and the topic of a topic subject, or null when the subject is not one. */
export function topicOfSubject(subject: string): { rack: string; topic: string } | null {
  for (const prefix of [`${TOPIC_PREFIX}.0.`, `${TOPIC_PREFIX}.q.`]) {
    if (!subject.startsWith(prefix)) continue;
    const dot = subject.indexOf('.', prefix.length);
    if (dot <= prefix.length || dot === subject.length - 1) return null;
    return { rack: subject.slice(prefix.length, dot), topic: subject.slice(dot + 1) };
  }
  return null;
}

// The Mixer's subjects (the snake protocol document's names; docs/snake-protocol.md).
// Each rack-to-Mixer subject ends with the rack's name, so that the bus itself can confine a
// rack to its own (the mTLS permissions, docs/snake-protocol.md); the Mixer refuses a message
// whose body names another rack than its subject. (The protocol document's subjects have no
// name token: fluxrig.agent.hello, fluxrig.agent.heartbeat, fluxrig.agent.notify.{machine_id}.)
/** rack -> Mixer, request/reply: enroll, or say who it is after a restart. */
export const agentHello = (rack: string) => `fluxrig.agent.hello.${rack}`;
/** rack -> Mixer, request/reply: periodic status; the reply carries the rack's status and passport. */
export const agentHeartbeat = (rack: string) => `fluxrig.agent.heartbeat.${rack}`;
/** rack -> Mixer: a scenario was applied, or could not be (signed). */
export const agentAck = (rack: string) => `fluxrig.agent.ack.${rack}`;
export const AGENT_HELLO_ALL = agentHello('*');
export const AGENT_HEARTBEAT_ALL = agentHeartbeat('*');
export const AGENT_ACK_ALL = agentAck('*');
/** The rack a rack-to-Mixer subject is from (its last token). */
export const rackOfSubject = (subject: string) => subject.slice(subject.lastIndexOf('.') + 1);
/** Mixer -> rack, request/reply: a command; the rack's signed reply says how it went. */
export const agentNotify = (rack: string, machineId: string) => `fluxrig.agent.notify.${rack}.${machineId}`;
/** A rack's own inbox prefix: replies to it (JetStream acks, Mixer answers) and to nobody else. */
export const rackInboxPrefix = (rack: string) => `_INBOX_RACK.${rack}`;
/** Mixer -> rack, JetStream (WorkQueue): the scenario a rack is to run. */
export const rackScenarioSubject = (rack: string) => `fluxrig.rack.${rack}.scenario`;
export const RACK_SCENARIO_ALL = 'fluxrig.rack.*.scenario';
/** The WorkQueue stream of scenario pushes. */
export const SCENARIO_STREAM = 'FLUXRIG_SCENARIOS';
/** Each rack's durable consumer of SCENARIO_STREAM. */
export const scenarioConsumer = (rack: string) => `scenario-${rack}`;
/** Mixers share hello, heartbeat and ack subscriptions in this queue group: any one answers. */
export const MIXER_QUEUE = 'fluxrig-mixer';
/** The Mixer's registry: racks, scenarios, and its own identity (KV buckets). */
export const MIXER_BUCKETS = { racks: 'fluxrig-racks', scenarios: 'fluxrig-scenarios', mixer: 'fluxrig-mixer' } as const;
/** The gears' KV bucket every rack on the bus shares (a rack's nats.kv_bucket by default). */
export const RACK_KV_BUCKET = 'fluxrig-kv';
/** The Object Store bucket of gear modules the Mixer imports into and racks load from. */
export const MODULE_BUCKET = 'fluxrig-modules';
/** Rack names are subject tokens and KV keys (and scenario rack names: [a-z0-9_-]+). */
export const RACK_NAME = /^[a-z0-9_-]{1,64}$/;

// Telemetry (docs/snake-protocol.md): apart from business traffic, throttled at the rack.
/** rack -> JetStream: logs, metrics and events of one rack. */
export const telemetrySubject = (rack: string, kind: string) => `flux.telemetry.${rack}.${kind}`;
export const TELEMETRY_ALL = 'flux.telemetry.>';
/** The stream of telemetry, with limits (age, bytes): the oldest goes first. */
export const TELEMETRY_STREAM = 'FLUXRIG_TELEMETRY';
/** Mixer -> JetStream: who approved, pushed or commanded what. */
export const AUDIT_SUBJECT = 'fluxrig.audit';
export const AUDIT_STREAM = 'FLUXRIG_AUDIT';
/** A rack's gear-to-gear traffic on the bus (the snake protocol's business subjects). */
export const rackMessageSubjects = (rack: string) => `flux.msg.${rack}.>`;
