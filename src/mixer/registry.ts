import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { MIXER_BUCKETS } from '../bus/subjects.js';
import type { RackStatus } from '../bus/mixer-protocol.js';

/** What a rack last said in a heartbeat. */
export interface HeartbeatReport {
  ts: number;
  workers: number;
  connections: number;
  gears: Record<string, { messages: number; errors: number }>;
  p50_ms: number | null;
  p99_ms: number | null;
  rss: number;
}

export interface ScenarioRef {
  scenario: string;
  version: number;
}

/** A rack as the Mixer keeps it (KV bucket fluxrig-racks, key = the rack's name). */
export interface RackRecord {
  name: string;
  machine_id: string;
  /** The pinned public key: SPKI DER, base64. */
  public_key: string;
  status: RackStatus;
  labels: Record<string, string>;
  version: string;
  heartbeat_ms: number;
  created_at: number;
  updated_at: number;
  last_seen: number;
  heartbeat: HeartbeatReport | null;
  desired: ScenarioRef | null;
  applied: ScenarioRef | null;
  apply_error: string | null;
}

/** A scenario as pushed (KV bucket fluxrig-scenarios, key = its name; the bucket keeps history). */
export interface ScenarioRecord {
  name: string;
  /** The Mixer's version: 1 for the first push of this name, one more per push. */
  version: number;
  /** The scenario's own meta.version. */
  meta_version: string;
  yaml: string;
  pushed_at: number;
  /** The racks it was sent to, and the groups each belongs to in it. */
  targets: Record<string, string[]>;
}

/** Scenario versions the bucket remembers per name (for show and diff). */
const SCENARIO_HISTORY = 16;

/**
 * The Mixer's state, in NATS KV buckets rather than process memory: every Mixer on the same NATS
 * sees the same racks and scenarios, and each change is a compare-and-set on the entry's
 * revision, so two Mixers never overwrite each other.
 */
export class Registry {
  private constructor(
    readonly racks: KV,
    readonly scenarios: KV,
    readonly mixer: KV,
  ) {}

  static async open(nc: NatsConnection): Promise<Registry> {
    const kvm = new Kvm(nc);
    return new Registry(
      await kvm.create(MIXER_BUCKETS.racks, { history: 1 }),
      await kvm.create(MIXER_BUCKETS.scenarios, { history: SCENARIO_HISTORY }),
      await kvm.create(MIXER_BUCKETS.mixer, { history: 1 }),
    );
  }

  async rack(name: string): Promise<RackRecord | null> {
    return read<RackRecord>(this.racks, name);
  }

  async listRacks(): Promise<RackRecord[]> {
    const out: RackRecord[] = [];
    for await (const key of await this.racks.keys()) {
      const r = await this.rack(key);
      if (r !== null) out.push(r);
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Changes a rack's record with `change` (null: no change), retrying when another Mixer changed
   * it in between. `change` gets null when there is no record; returning a record creates it.
   */
  async updateRack(name: string, change: (current: RackRecord | null) => RackRecord | null): Promise<RackRecord | null> {
    return mutate(this.racks, name, change);
  }

  async removeRack(name: string): Promise<boolean> {
    if ((await this.rack(name)) === null) return false;
    await this.racks.purge(name);
    return true;
  }

  async scenario(name: string): Promise<ScenarioRecord | null> {
    return read<ScenarioRecord>(this.scenarios, name);
  }

  async scenarioVersions(name: string): Promise<ScenarioRecord[]> {
    const out: ScenarioRecord[] = [];
    const history = await this.scenarios.history({ key: name });
    for await (const entry of history) if (entry.operation === 'PUT') out.push(entry.json<ScenarioRecord>());
    return out;
  }

  async listScenarios(): Promise<ScenarioRecord[]> {
    const out: ScenarioRecord[] = [];
    for await (const key of await this.scenarios.keys()) {
      const s = await this.scenario(key);
      if (s !== null) out.push(s);
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async updateScenario(name: string, change: (current: ScenarioRecord | null) => ScenarioRecord | null): Promise<ScenarioRecord | null> {
    return mutate(this.scenarios, name, change);
  }

  /** A value written once by whichever Mixer comes first; the others read it. */
  async once(key: string, make: () => string): Promise<string> {
    const existing = await this.mixer.get(key);
    if (existing !== null && existing.operation === 'PUT') return existing.string();
    try {
      await this.mixer.create(key, make());
    } catch {
      // Another Mixer created it first: its value wins.
    }
    const entry = await this.mixer.get(key);
    if (entry === null) throw new Error(`the Mixer's bucket lost ${key}`);
    return entry.string();
  }
}

async function read<T>(kv: KV, key: string): Promise<T | null> {
  const entry = await kv.get(key);
  return entry === null || entry.operation !== 'PUT' ? null : entry.json<T>();
}

async function mutate<T>(kv: KV, key: string, change: (current: T | null) => T | null): Promise<T | null> {
  for (let attempt = 0; ; attempt++) {
    const entry = await kv.get(key);
    const current = entry === null || entry.operation !== 'PUT' ? null : entry.json<T>();
    const next = change(current);
    if (next === null) return current;
    try {
      if (entry === null) await kv.create(key, JSON.stringify(next));
      else await kv.update(key, JSON.stringify(next), entry.revision);
      return next;
    } catch (err) {
      // Another Mixer wrote in between: read again and redo the change on its result.
      if (attempt >= 20) throw err;
    }
  }
}
