// NATS subjects of the snake bus that fluxrig-ts uses, in one place (a compatibility switch with
// fluxrig's naming stays a one-line change here).

/** FLUXAR publications between racks (spec section 14), apart from flux.msg.> (gear-to-gear traffic). */
export const TOPIC_PREFIX = 'flux.topic';
/** QoS 0 publications: core NATS, at most once. */
export const topicSubjectQos0 = (topic: string) => `${TOPIC_PREFIX}.0.${topic}`;
/** QoS 1 and 2 publications: the JetStream stream TOPIC_STREAM, deduplicated by publication id. */
export const topicSubjectQos1 = (topic: string) => `${TOPIC_PREFIX}.q.${topic}`;
export const TOPIC_QOS0_ALL = `${TOPIC_PREFIX}.0.>`;
export const TOPIC_QOS1_ALL = `${TOPIC_PREFIX}.q.>`;
/** The JetStream stream of QoS 1 and 2 publications between racks. */
export const TOPIC_STREAM = 'FLUX_TOPICS';
/** Each rack's durable consumer of TOPIC_STREAM. */
export const topicConsumer = (rack: string) => `rack-${rack.replace(/[^A-Za-z0-9_-]/g, '_')}`;

/** The topic of a topic subject, or null when the subject is not one. */
export function topicOfSubject(subject: string): string | null {
  for (const prefix of [`${TOPIC_PREFIX}.0.`, `${TOPIC_PREFIX}.q.`]) if (subject.startsWith(prefix)) return subject.slice(prefix.length);
  return null;
}

// The Mixer's subjects (the snake protocol document's names; docs/snake-protocol.md).
/** rack -> Mixer, request/reply: enroll, or say who it is after a restart. */
export const AGENT_HELLO = 'fluxrig.agent.hello';
/** rack -> Mixer, request/reply: periodic status; the reply carries the rack's status and passport. */
export const AGENT_HEARTBEAT = 'fluxrig.agent.heartbeat';
/** rack -> Mixer: a scenario was applied, or could not be (signed). */
export const AGENT_ACK = 'fluxrig.agent.ack';
/** Mixer -> rack, request/reply: a command; the rack's signed reply says how it went. */
export const agentNotify = (machineId: string) => `fluxrig.agent.notify.${machineId}`;
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
/** Rack names are subject tokens and KV keys (and scenario rack names: [a-z0-9_-]+). */
export const RACK_NAME = /^[a-z0-9_-]{1,64}$/;
