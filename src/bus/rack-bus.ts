import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { type KvStore, MemoryKvStore } from '../gears/kv.js';
import type { ModuleSource } from '../gears/wasm/store.js';
import { drainAndClose } from './close.js';
import { NatsKvStore } from './kv-store.js';
import { ModuleBucket } from './module-bucket.js';
import { rackInboxPrefix } from './subjects.js';
import type { BusTls } from './tls.js';

export interface RackBusOptions {
  rack: string;
  /** No URL: the rack runs alone (KV in memory, modules from the local store). */
  natsUrl?: string;
  /** The rack's certificate on an mTLS bus (the one it presents to the Mixer's bus). */
  tls?: BusTls;
  /** NATS KV bucket behind the gears' KV. */
  kvBucket: string;
  /** NATS Object Store bucket of gear modules. */
  moduleBucket?: string;
  /** KV entries to start with; on the bus they seed only keys the bucket does not have. */
  kv?: Record<string, string>;
  /** Where urn:wasm: modules come from when there is no module bucket. */
  moduleStore?: ModuleSource;
  logger: Logger;
}

/** What a rack uses of the bus: the connection, the gears' KV store and where modules come from. */
export interface RackBus {
  nats: NatsConnection | undefined;
  kv: KvStore;
  modules: ModuleSource | undefined;
  close(): Promise<void>;
}

/** Connects a rack to the snake bus, or sets it up to run alone when no NATS URL is given. */
export async function connectRackBus(options: RackBusOptions): Promise<RackBus> {
  const seed = Object.entries(options.kv ?? {});
  if (options.natsUrl === undefined) {
    const kv = new MemoryKvStore();
    for (const [k, v] of seed) kv.put(k, Buffer.from(v));
    options.logger.info({ rack: options.rack }, 'standalone: no NATS configured; the rack runs alone (hot lanes only, KV in memory)');
    return { nats: undefined, kv, modules: options.moduleStore, close: async () => {} };
  }
  // Replies come under the rack's own inbox prefix: an mTLS bus lets a rack read no other.
  const nats = await natsConnect({
    servers: options.natsUrl,
    name: `fluxrig-rack-${options.rack}`,
    inboxPrefix: rackInboxPrefix(options.rack),
    ...(options.tls === undefined ? {} : { tls: options.tls }),
  });
  try {
    const kv = await NatsKvStore.open(nats, options.kvBucket, options.logger);
    for (const [k, v] of seed) if (kv.get(k) === undefined) kv.put(k, Buffer.from(v));
    const modules = options.moduleBucket === undefined ? options.moduleStore : await ModuleBucket.open(nats, options.moduleBucket);
    options.logger.info(
      { rack: options.rack, nats: options.natsUrl, mtls: options.tls !== undefined, kv_bucket: options.kvBucket, module_bucket: options.moduleBucket },
      'connected to NATS',
    );
    return {
      nats,
      kv,
      modules,
      async close() {
        kv.stop();
        await drainAndClose(nats);
      },
    };
  } catch (err) {
    await nats.close();
    throw err;
  }
}
