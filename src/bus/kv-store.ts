import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { KvStore } from '../gears/kv.js';

/**
 * The rack's KV store when it is on the bus: a NATS KV bucket, mirrored in memory so gears read
 * synchronously. Writes go to the bucket (and the mirror at once); changes from anywhere (other
 * racks, the Mixer, `nats kv put`) arrive through a watch and reach every worker's replica.
 */
export class NatsKvStore implements KvStore {
  private readonly map = new Map<string, { value: Uint8Array; revision: number }>();
  private readonly listeners = new Set<(key: string, value: Uint8Array | undefined) => void>();
  private watcher: { stop(): void } | undefined;

  private constructor(
    private readonly kv: KV,
    private readonly logger?: Logger,
  ) {}

  /** Opens (or creates) the bucket and loads its current values before returning. */
  static async open(nc: NatsConnection, bucket: string, logger?: Logger): Promise<NatsKvStore> {
    const kv = await new Kvm(nc).create(bucket);
    const store = new NatsKvStore(kv, logger);
    for await (const key of await kv.keys()) {
      const entry = await kv.get(key);
      if (entry !== null && entry.operation === 'PUT') store.map.set(key, { value: entry.value, revision: entry.revision });
    }
    void store.follow();
    return store;
  }

  private async follow(): Promise<void> {
    const watch = await this.kv.watch();
    this.watcher = watch;
    for await (const entry of watch) {
      const known = this.map.get(entry.key);
      if (known !== undefined && known.revision >= entry.revision) continue; // already have it (our own write, or the initial load)
      if (entry.operation === 'PUT') {
        this.map.set(entry.key, { value: entry.value, revision: entry.revision });
        for (const l of this.listeners) l(entry.key, entry.value);
      } else if (this.map.delete(entry.key)) {
        for (const l of this.listeners) l(entry.key, undefined);
      }
    }
  }

  get(key: string): Uint8Array | undefined {
    return this.map.get(key)?.value;
  }

  put(key: string, value: Uint8Array): void {
    // Visible here at once; the bucket's revision replaces this placeholder when it is stored.
    this.map.set(key, { value, revision: this.map.get(key)?.revision ?? 0 });
    for (const l of this.listeners) l(key, value);
    this.kv.put(key, value).then(
      (revision) => {
        const current = this.map.get(key);
        if (current !== undefined && current.value === value && current.revision < revision) current.revision = revision;
      },
      (err: Error) => this.logger?.error({ key, err: err.message }, 'KV write to the bucket failed'),
    );
  }

  delete(key: string): void {
    if (!this.map.delete(key)) return;
    for (const l of this.listeners) l(key, undefined);
    this.kv.delete(key).catch((err: Error) => this.logger?.error({ key, err: err.message }, 'KV delete failed'));
  }

  *entries(): IterableIterator<[string, Uint8Array]> {
    for (const [key, { value }] of this.map) yield [key, value];
  }

  watch(listener: (key: string, value: Uint8Array | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stop(): void {
    this.watcher?.stop();
  }
}
