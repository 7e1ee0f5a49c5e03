import { createHash, type Hash } from 'node:crypto';
import type { GearSpec } from '../gears/gear.js';

/**
 * A gear's identity across reloads: its type, its config (keys in any order) and what its type's
 * prepare() read (module bytes by their digest, secret files by their content). Equal
 * fingerprints: the running gear is kept, with its state and its connections. Where it is
 * deployed and where it sits in the file are not part of it.
 */
export function gearFingerprint(spec: GearSpec, prepared: unknown): string {
  const hash = createHash('sha256');
  hash.update(spec.type);
  feed(hash, spec.config);
  feed(hash, prepared);
  return hash.digest('base64url');
}

function feed(hash: Hash, value: unknown): void {
  if (value === null || value === undefined) {
    hash.update(value === null ? 'N' : 'U');
  } else if (value instanceof WebAssembly.Module) {
    // Its bytes are known by the digest next to it (PreparedModule.digest).
    hash.update('M');
  } else if (ArrayBuffer.isView(value)) {
    hash.update(`B${value.byteLength}:`);
    hash.update(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
  } else if (Array.isArray(value)) {
    hash.update(`A${value.length}:`);
    for (const item of value) feed(hash, item);
  } else if (typeof value === 'object') {
    const keys = Object.keys(value).sort();
    hash.update(`O${keys.length}:`);
    for (const key of keys) {
      hash.update(`${JSON.stringify(key)}=`);
      feed(hash, (value as Record<string, unknown>)[key]);
    }
  } else {
    hash.update(`${typeof value}:${JSON.stringify(value)};`);
  }
}
