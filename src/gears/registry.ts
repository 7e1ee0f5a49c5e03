import { fluxarGear } from './fluxar.js';
import type { GearType, GearSpec } from './gear.js';
import { generatorGear } from './generator.js';
import { logGear } from './log.js';
import type { GearManifest } from './manifest.js';
import { natsGear } from './nats.js';
import { routerGear, routerPorts } from './router.js';
import { wasmGear } from './wasm.js';

/**
 * Every gear type, by name: one file each in this folder. Validation, `fluxrig gears list|doc`,
 * the JSON Schema and the rack read this table and nothing else.
 */
export const GEAR_TYPES: Readonly<Record<string, GearType>> = {
  fluxar: fluxarGear,
  wasm: wasmGear,
  router: routerGear,
  log: logGear,
  generator: generatorGear,
  nats: natsGear,
};

export const GEAR_MANIFESTS: Readonly<Record<string, GearManifest>> = Object.fromEntries(Object.entries(GEAR_TYPES).map(([name, t]) => [name, t.manifest]));

/** The out ports a gear has, given its config (a router's are named by its routes). */
export function outputPorts(type: string, config: unknown): string[] {
  if (type === 'router') return routerPorts(config);
  return GEAR_MANIFESTS[type]?.outputs ?? [];
}

/** The type of a gear of a parsed scenario (validation has checked that it exists). */
export function gearType(spec: GearSpec): GearType {
  return GEAR_TYPES[spec.type]!;
}
