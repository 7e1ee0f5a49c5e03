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
