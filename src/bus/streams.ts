import type { JetStreamManager, StreamConfig } from '@nats-io/jetstream';

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
