/**
 * The shape of a gear type's declaration: its ports, where it runs, and the schema of its
 * config. Each type declares its manifest in its own file (src/gears/<type>.ts); registry.ts
 * lists them.
 */

/** A small JSON-Schema-like description of a config value (what the manifests need, no more). */
export type ConfigSchema =
  | { type: 'string'; description: string; enum?: string[]; pattern?: string; default?: string }
  | { type: 'integer' | 'number'; description: string; minimum?: number; maximum?: number; default?: number }
  | { type: 'boolean'; description: string; default?: boolean }
  | { type: 'array'; description: string; items: ConfigSchema; minItems?: number }
  | {
      type: 'object';
      description: string;
      properties: Record<string, ConfigSchema>;
      required?: string[];
      /** At least one of these keys (aliases, such as a wasm gear's module and source). */
      oneRequired?: string[];
      additionalProperties?: ConfigSchema;
    }
  | { type: 'any'; description: string };

export interface GearManifest {
  type: string;
  summary: string;
  /** main: terminates I/O on the main thread; worker: runs in every worker (shared-nothing). */
  placement: 'main' | 'worker';
  inputs: string[];
  outputs: string[];
  config: Extract<ConfigSchema, { type: 'object' }>;
  /** Longer notes for `fluxrig gears doc`. */
  notes: string[];
}

/** A config with the defaults of `schema`'s properties filled in where it leaves them out. */
export function withDefaults(schema: Extract<ConfigSchema, { type: 'object' }>, config: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { ...config };
  for (const [key, property] of Object.entries(schema.properties)) {
    const fallback = (property as ConfigSchema & { default?: unknown }).default;
    if (out[key] === undefined && fallback !== undefined) out[key] = fallback;
  }
  return out;
}
