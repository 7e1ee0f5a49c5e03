// FLUXAR topics across racks (docs/fluxar-spec.md section 14, docs/rack.md): publications of
// QoS 0 travel on core NATS, QoS 1 and 2 through a JetStream stream deduplicated by publication
// id (Nats-Msg-Id). Each rack reads the stream with a durable consumer of its own, hands each
// publication to its workers, then acks it; what a rack publishes itself comes back and is
// skipped (the subject names the publishing rack: docs/snake-protocol.md). A QoS 1 or 2
// publication counts as sent once JetStream acknowledged it, and is retried until then
// (nats-server restarts included), up to PUBLISH_DEADLINE_MS.
import { AckPolicy, type ConsumerMessages, DeliverPolicy, type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers as natsHeaders, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { decodeCbor, encodeCbor } from '../cbor/profile.js';
import { BYTE_HEX } from '../fluxmsg/uuid.js';
import { ensureStream } from './streams.js';
import { TOPIC_QOS0_ALL, TOPIC_QOS1_ALL, TOPIC_STREAM, topicConsumer, topicOfSubject, topicSubjectQos0, topicSubjectQos1 } from './subjects.js';

/** How long JetStream remembers a publication id (the spec's dedupe window). */
const DUPLICATE_WINDOW_MS = 120_000;
/** How long a QoS 1 or 2 publication is retried before the publisher is told it failed. */
export const PUBLISH_DEADLINE_MS = 30_000;
const RETRY_MS = 250;
const QOS = 'Flux-Qos';

/** A FLUXAR QoS (the fluxar layer's Qos; the bus sits below it). */
type Qos = 0 | 1 | 2;

/** A publication as it crosses racks. */
export interface BridgedPublication {
  topic: string;
  id: Uint8Array;
  qos: Qos;
  payload: unknown;
}

function hexOf(id: Uint8Array): string {
  let hex = '';
  for (const b of id) hex += BYTE_HEX[b]!;
  return hex;
}

/** Makes the stream of QoS 1 and 2 publications unless it exists (a rack on an mTLS bus cannot: the Mixer does). */
export function ensureTopicStream(jsm: JetStreamManager): Promise<void> {
  return ensureStream(jsm, { name: TOPIC_STREAM, subjects: [TOPIC_QOS1_ALL], duplicate_window: DUPLICATE_WINDOW_MS * 1_000_000, max_age: 3600 * 1e9 });
}

export class TopicBridge {
  private readonly js: JetStreamClient;
  private core: Subscription | undefined;
  private messages: ConsumerMessages | undefined;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly rack: string,
    private readonly log: Logger,
    /** A publication from another rack, for this rack's workers. */
    private readonly deliver: (p: BridgedPublication) => void,
  ) {
    this.js = jetstream(nc);
  }

  async start(): Promise<void> {
    const jsm = await jetstreamManager(this.nc);
    await ensureTopicStream(jsm);
    const durable = topicConsumer(this.rack);
    try {
      await jsm.consumers.info(TOPIC_STREAM, durable);
    } catch {
      // From now on: what was published before this rack first joined is not its business.
      await jsm.consumers.add(TOPIC_STREAM, { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New, ack_wait: 30e9 });
    }
    this.core = this.nc.subscribe(TOPIC_QOS0_ALL, {
      callback: (err, msg) => {
        if (err === null) this.take(msg.subject, msg.data, 0);
      },
    });
    const consumer = await this.js.consumers.get(TOPIC_STREAM, durable);
    this.messages = await consumer.consume();
    void (async () => {
      for await (const m of this.messages!) {
        const qos = Number(m.headers?.get(QOS) ?? 1) === 2 ? 2 : 1;
        this.take(m.subject, m.data, qos, m.headers?.get('Nats-Msg-Id') ?? '');
        // Handed to the workers' rings (or ours): this hop is done.
        m.ack();
      }
    })().catch((err: unknown) => {
      if (!this.closed) this.log.error({ err }, 'reading topics from JetStream failed');
    });
  }

  private take(subject: string, data: Uint8Array, qos: Qos, idHex = ''): void {
    const of = topicOfSubject(subject);
    if (of === null || of.rack === this.rack) return;
    try {
      const [idBytes, payload] = decodeCbor(data, true) as [Uint8Array, unknown];
      this.deliver({ topic: of.topic, id: idBytes, qos, payload });
    } catch (err) {
      this.log.warn({ err, subject, id: idHex }, 'a publication from the bus could not be read; dropped');
    }
  }

  /**
   * Sends a publication to the other racks. QoS 0 resolves at once; QoS 1 and 2 once JetStream
   * has it, retrying until PUBLISH_DEADLINE_MS, and reject past it.
   */
  async publish(p: BridgedPublication): Promise<void> {
    const data = encodeCbor([p.id, p.payload]);
    const h = natsHeaders();
    h.set(QOS, String(p.qos));
    if (p.qos === 0) {
      this.nc.publish(topicSubjectQos0(this.rack, p.topic), data, { headers: h });
      return;
    }
    const deadline = Date.now() + PUBLISH_DEADLINE_MS;
    for (;;) {
      try {
        await this.js.publish(topicSubjectQos1(this.rack, p.topic), data, { headers: h, msgID: hexOf(p.id), timeout: 5000 });
        return;
      } catch (err) {
        if (this.closed || Date.now() >= deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.core?.unsubscribe();
    await this.messages?.close();
  }
}
