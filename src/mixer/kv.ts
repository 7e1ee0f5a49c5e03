// The gears' KV bucket as an operator sees it through the Mixer (`fluxrig kv`, the API's /kv):
// list, read, set and delete keys, each change audited. Racks follow the bucket with a watch
// (src/bus/kv-store.ts), so a key set here reaches every rack's gears without a restart.
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';

/** NATS KV's own rule for keys (letters, digits, `_ - / = .`, no dot at either end), and a length. */
const KV_KEY = /^(?!\.)[-/=.\w]{1,512}(?<!\.)$/;

/** Why `key` cannot be a key of the bucket, or null when it can. */
export function kvKeyProblem(key: string): string | null {
  return KV_KEY.test(key) ? null : `${JSON.stringify(key)} is not a KV key: 1-512 letters, digits and _ - / = . (not starting or ending with a dot)`;
}

/**
 * Room a value leaves in the server's largest message for the put's subject and headers: a value
 * past `max_payload` minus this is refused before it is sent.
 */
const PUT_OVERHEAD_BYTES = 4096;

export interface KvEntryView {
  key: string;
  /** The bucket's revision of this value. */
  revision: number;
  /** When it was set, ms since the epoch. */
  updated: number;
  bytes: number;
}

export interface KvValueView extends KvEntryView {
  /** The value as text, when it is valid UTF-8 (null otherwise: read `base64`). */
  value: string | null;
  base64: string;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function textOf(bytes: Uint8Array): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}

export class FleetKv {
  private bucket: Promise<KV> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly name: string,
  ) {}

  /** The bucket, opened on first use (the Mixer made it at start). */
  private kv(): Promise<KV> {
    this.bucket ??= new Kvm(this.nc).open(this.name).catch((err: unknown) => {
      this.bucket = undefined;
      throw err;
    });
    return this.bucket;
  }

  async list(): Promise<KvEntryView[]> {
    const kv = await this.kv();
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    keys.sort();
    const views: KvEntryView[] = [];
    for (const key of keys) {
      const entry = await kv.get(key);
      // Deleted between the listing and the read: not there any more.
      if (entry === null || entry.operation !== 'PUT') continue;
      views.push({ key, revision: entry.revision, updated: entry.created.getTime(), bytes: entry.length });
    }
    return views;
  }

  /** The key's value, or null when the bucket does not have it. */
  async get(key: string): Promise<KvValueView | null> {
    const entry = await (await this.kv()).get(key);
    if (entry === null || entry.operation !== 'PUT') return null;
    return {
      key,
      revision: entry.revision,
      updated: entry.created.getTime(),
      bytes: entry.length,
      value: textOf(entry.value),
      base64: Buffer.from(entry.value).toString('base64'),
    };
  }

  /** The largest value the server takes in one put. */
  get maxValueBytes(): number {
    return (this.nc.info?.max_payload ?? 1024 * 1024) - PUT_OVERHEAD_BYTES;
  }

  /** Sets a key; resolves with the bucket's revision once the server stored it. */
  async put(key: string, value: Uint8Array): Promise<number> {
    return (await this.kv()).put(key, value);
  }

  /** Deletes a key; false when the bucket did not have it. */
  async delete(key: string): Promise<boolean> {
    const kv = await this.kv();
    const entry = await kv.get(key);
    if (entry === null || entry.operation !== 'PUT') return false;
    await kv.delete(key);
    return true;
  }
}
