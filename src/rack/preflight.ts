import { dirname } from 'node:path';
import { frameLimits } from '../fluxar/constants.js';
import type { GearSpec, PrepareContext } from '../gears/gear.js';
import { gearType } from '../gears/registry.js';
import { wasmConfig } from '../gears/wasm.js';
import { loadModule } from '../gears/wasm/loader.js';
import type { ModuleSource } from '../gears/wasm/store.js';
import { maxRecordBytes, RECORD_HEADER_BYTES } from '../ring/layout.js';
import type { Scenario } from '../scenario/types.js';
import { RACK_DEFAULTS } from './defaults.js';
import { busWires } from '../scenario/lanes.js';

export interface PreflightOptions {
  /** The rack is on the bus (NATS): guaranteed wires and wires between racks can run. */
  onBus: boolean;
  /** Where `env:NAME` secret references are read. */
  env: NodeJS.ProcessEnv;
  /** Where urn:wasm: modules come from. */
  moduleStore?: ModuleSource;
  /** Vendor keys: with any, only modules signed by one of them load. */
  trustedKeys?: Array<string | Uint8Array>;
  /** The fleet's Mixer keys: with any, only modules it countersigned load. */
  clusterKeys?: Array<string | Uint8Array>;
  ringBytes?: number;
}

/** One thing that stops a rack from starting, at the gear or wire it concerns ("file:line:column"). */
export interface Problem {
  at: string;
  message: string;
}

/**
 * Everything a rack checks about its scenario before it starts anything: wires it cannot run,
 * frames that do not fit its rings, and each gear type's preparation (Wasm modules found,
 * parsed, signed and within their grants and memory limit; secrets readable; endpoints valid).
 * The rack and `fluxrig scenario validate` both run it, so validation says what the rack would.
 */
export async function preflight(
  scenario: Scenario,
  gears: GearSpec[],
  options: PreflightOptions,
): Promise<{ prepared: Record<string, unknown>; problems: Problem[] }> {
  const problems: Problem[] = [];
  const names = new Set(gears.map((g) => g.name));
  for (const w of busWires(scenario)) {
    if (options.onBus || !(names.has(w.from.gear) || names.has(w.to.gear))) continue;
    problems.push({
      at: w.at,
      message: `${w.from.gear}.${w.from.port} -> ${w.to.gear}.${w.to.port} (${w.crossRack ? 'across racks' : 'lane: guaranteed'}) travels over the snake bus (NATS JetStream); start the rack with --nats URL (or FLUXRIG_NATS_URL, or nats.url in the rack config). A rack-local durable lane without NATS is not provided (docs/rack.md, Lanes)`,
    });
  }
  const ringBytes = options.ringBytes ?? RACK_DEFAULTS.ring_bytes;
  const maxRecord = maxRecordBytes(ringBytes);
  for (const gear of gears.filter((g) => g.type === 'fluxar')) {
    // A WebSocket message travels as one ring record: the largest one must fit in half a ring.
    const { maxFrame, maxMessage } = frameLimits(gear.config.max_frame as number | undefined);
    if (maxMessage > maxRecord) {
      problems.push({
        at: gear.at,
        message: `gear ${gear.name}: max_frame ${maxFrame} does not fit the rack's rings (ring_bytes ${ringBytes} takes records up to ${maxRecord} bytes); raise rack.ring_bytes to at least ${2 * (maxMessage + RECORD_HEADER_BYTES)} or lower max_frame`,
      });
    }
  }
  const baseDir = dirname(scenario.file);
  const ctx: PrepareContext = {
    baseDir,
    env: options.env,
    loadModule: (spec) =>
      loadModule(wasmConfig(spec), { baseDir, store: options.moduleStore, trustedKeys: options.trustedKeys, clusterKeys: options.clusterKeys }),
  };
  const prepared: Record<string, unknown> = {};
  for (const spec of gears) {
    const type = gearType(spec);
    if (type.prepare === undefined) continue;
    try {
      prepared[spec.name] = await type.prepare(spec, ctx);
    } catch (err) {
      problems.push({ at: spec.at, message: `gear ${spec.name}: ${(err as Error).message}` });
    }
  }
  return { prepared, problems };
}
