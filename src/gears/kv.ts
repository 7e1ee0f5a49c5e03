/** A key-value store gears read and write (an in-memory one standalone, NATS KV on the bus). */
export interface KvStore {
  get(key: string): Uint8Array | undefined;
  put(key: string, value: Uint8Array): void;
  delete(key: string): void;
  entries(): IterableIterator<[string, Uint8Array]>;
  /** Calls `listener` after every change (value undefined: deleted). Returns the unsubscribe. */
  watch(listener: (key: string, value: Uint8Array | undefined) => void): () => void;
}

export class MemoryKvStore implements KvStore {
  private readonly map = new Map<string, Uint8Array>();
  private readonly listeners = new Set<(key: string, value: Uint8Array | undefined) => void>();

  get(key: string): Uint8Array | undefined {
    return this.map.get(key);
  }
  put(key: string, value: Uint8Array): void {
    this.map.set(key, value);
    for (const l of this.listeners) l(key, value);
  }
  delete(key: string): void {
    if (!this.map.delete(key)) return;
    for (const l of this.listeners) l(key, undefined);
  }
  entries(): IterableIterator<[string, Uint8Array]> {
    return this.map.entries();
  }
  watch(listener: (key: string, value: Uint8Array | undefined) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/**
 * A worker's local copy of the store: reads are synchronous map lookups (a guest's flux_kv_get
 * cannot wait), writes apply locally at once and are forwarded to the store, which sends every
 * change back to all replicas.
 */
export class KvReplica {
  private readonly map: Map<string, Uint8Array>;
  constructor(
    snapshot: Iterable<[string, Uint8Array]>,
    private readonly forward: (key: string, value: Uint8Array) => void,
  ) {
    this.map = new Map(snapshot);
  }
  get(key: string): Uint8Array | undefined {
    return this.map.get(key);
  }
  put(key: string, value: Uint8Array): void {
    this.map.set(key, value);
    this.forward(key, value);
  }
  /** A change from the store. */
  apply(key: string, value: Uint8Array | undefined): void {
    if (value === undefined) this.map.delete(key);
    else this.map.set(key, value);
  }
}
