import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { FluxrigError } from '../errors.js';
import { TELEMETRY_DEFAULTS } from '../telemetry/uplink.js';
import { RACK_DEFAULTS } from './defaults.js';

/** A rack's settings. Sources, later ones winning: defaults, the config file, FLUXRIG_<SECTION>_<KEY>, flags. */
export interface RackConfig {
  rack: {
    name: string | undefined;
    scenario: string;
    workers: number;
    drain_timeout_ms: number;
    lane_queue_size: number;
    lane_send_timeout_ms: number;
    ring_bytes: number;
  };
  nats: { url: string | undefined; kv_bucket: string; module_bucket: string | undefined };
  log: { level: string };
  /** What the rack sends the Mixer (with --mixer): docs/snake-protocol.md, Telemetry. */
  telemetry: { level: string; rate_per_s: number; burst: number; queue_entries: number; queue_bytes: number };
  wasm: { module_store: string | undefined; trusted_keys: string[]; cluster_keys: string[] };
  /** KV entries the rack starts with (text values). */
  kv: Record<string, string>;
}

export class RackConfigError extends FluxrigError {}

export function defaultRackConfig(): RackConfig {
  return {
    rack: {
      name: undefined,
      scenario: RACK_DEFAULTS.scenario,
      workers: availableParallelism(),
      drain_timeout_ms: RACK_DEFAULTS.drain_timeout_ms,
      lane_queue_size: RACK_DEFAULTS.lane_queue_size,
      lane_send_timeout_ms: RACK_DEFAULTS.lane_send_timeout_ms,
      ring_bytes: RACK_DEFAULTS.ring_bytes,
    },
    nats: { url: undefined, kv_bucket: RACK_DEFAULTS.kv_bucket, module_bucket: undefined },
    log: { level: RACK_DEFAULTS.log_level },
    telemetry: {
      level: TELEMETRY_DEFAULTS.level,
      rate_per_s: TELEMETRY_DEFAULTS.rate_per_s,
      burst: TELEMETRY_DEFAULTS.burst,
      queue_entries: TELEMETRY_DEFAULTS.queue_entries,
      queue_bytes: TELEMETRY_DEFAULTS.queue_bytes,
    },
    wasm: { module_store: undefined, trusted_keys: [], cluster_keys: [] },
    kv: {},
  };
}

type Section = Record<string, unknown>;

/** Sets section.key from text, converted to the type the default has. */
function assign(config: RackConfig, section: string, key: string, raw: unknown, source: string): void {
  const target = (config as unknown as Record<string, Section>)[section];
  if (target === undefined) throw new RackConfigError(`${source}: unknown section ${section} (expected ${Object.keys(config).join(', ')})`);
  if (section === 'kv') {
    target[key] = String(raw);
    return;
  }
  if (!(key in target)) throw new RackConfigError(`${source}: unknown key ${section}.${key} (expected ${Object.keys(target).join(', ')})`);
  const current = target[key];
  if (typeof current === 'number') {
    const n = Number(raw);
    if (!Number.isFinite(n)) throw new RackConfigError(`${source}: ${section}.${key} must be a number, got ${JSON.stringify(raw)}`);
    target[key] = n;
  } else if (Array.isArray(current))
    target[key] = Array.isArray(raw)
      ? raw.map(String)
      : String(raw)
          .split(',')
          .filter((s) => s !== '');
  else target[key] = raw === undefined || raw === null ? undefined : String(raw);
}

export interface ConfigSources {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Flags as section.key -> value. */
  flags?: Record<string, unknown>;
}

export function loadRackConfig(sources: ConfigSources = {}): RackConfig {
  const config = defaultRackConfig();
  if (sources.file !== undefined) {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(sources.file, 'utf8'));
    } catch (err) {
      throw new RackConfigError(`cannot read rack config ${sources.file}: ${(err as Error).message}`, { cause: err });
    }
    for (const [section, values] of Object.entries((doc ?? {}) as Record<string, unknown>)) {
      if (values === null || typeof values !== 'object') throw new RackConfigError(`${sources.file}: section ${section} must be a map`);
      for (const [key, value] of Object.entries(values as Section)) assign(config, section, key, value, sources.file);
    }
  }
  for (const [name, value] of Object.entries(sources.env ?? {})) {
    const m = /^FLUXRIG_([A-Z0-9]+)_([A-Z0-9_]+)$/.exec(name);
    if (m === null || value === undefined) continue;
    const section = m[1]!.toLowerCase();
    if (section === 'kv') continue; // KV keys are not upper-case identifiers; set them in the file
    if (section === 'mixer') continue; // FLUXRIG_MIXER_*: the Mixer's and its CLI's (token, API, secret)
    assign(config, section, m[2]!.toLowerCase(), value, `environment ${name}`);
  }
  for (const [path, value] of Object.entries(sources.flags ?? {})) {
    if (value === undefined) continue;
    const [section, key] = path.split('.') as [string, string];
    assign(config, section, key, value, `flag ${path}`);
  }
  return config;
}
