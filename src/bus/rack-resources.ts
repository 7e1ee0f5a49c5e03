// What the racks of a fleet share on the bus. The Mixer makes these at start: on an mTLS bus a
// rack may use them (src/bus/permissions.ts) but not make a stream, and a rack alone on a bus
// makes what is missing itself.
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { Objm } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import { MODULE_BUCKET, RACK_KV_BUCKET } from './subjects.js';
import { ensureTopicStream } from './topic-bridge.js';

/** The buckets racks share. */
export interface RackBuckets {
  /** The gears' KV bucket: read and written by every rack. */
  kv: string;
  /** The module bucket: read by every rack, written by the Mixer only. */
  modules: string;
}

export const RACK_BUCKETS: RackBuckets = { kv: RACK_KV_BUCKET, modules: MODULE_BUCKET };

/**
 * Makes the gears' KV bucket, the module bucket and the stream of topic publications, each
 * unless it exists, with the settings a rack would make it with itself (NatsKvStore,
 * ModuleBucket, TopicBridge), so that which of them made it first does not matter.
 */
export async function provisionRackResources(nc: NatsConnection, buckets: RackBuckets = RACK_BUCKETS): Promise<void> {
  await new Kvm(nc).create(buckets.kv);
  await new Objm(nc).create(buckets.modules);
  await ensureTopicStream(await jetstreamManager(nc));
}
