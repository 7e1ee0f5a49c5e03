import { type JetStreamManager, type JsMsg, jetstream, type OrderedConsumerOptions, type StreamConfig } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

/**
 * How long a pull of a followed stream waits; the idle heartbeat is half of it, so a restarted
 * server is noticed, and the ordered consumer remade, within seconds.
 */
const FOLLOW_EXPIRES_MS = 5000;

/**
 * Makes a JetStream stream unless it is there. A stream that exists is left as it is: an
 * operator may have tuned its limits, and any Mixer of the fleet may have made it first.
 */
export async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(config.name);
  } catch {
    await jsm.streams.add(config);
  }
}

/**
 * Reads a stream with an ordered consumer (no state on the server; it carries on across
 * reconnects and server restarts) and hands each message to `take`. Returns what stops it.
 * Start by sequence, not by time: the consumer's own restarts add a sequence, and the server
 * refuses a time and a sequence together.
 */
export async function followStream(
  nc: NatsConnection,
  stream: string,
  from: Partial<OrderedConsumerOptions>,
  take: (m: JsMsg) => void,
): Promise<() => Promise<void>> {
  const consumer = await jetstream(nc).consumers.get(stream, from);
  const messages = await consumer.consume({ expires: FOLLOW_EXPIRES_MS });
  void (async () => {
    for await (const m of messages) take(m);
  })();
  return async () => {
    await messages.close();
  };
}
