// The Mixer's side of the module supply chain (fluxrig's catalog): an imported module's vendor
// signature is checked against the trusted vendor keys, the module is checked as a gear, then
// countersigned with the fleet's key (fluxrig.cluster.signature) and put in the module bucket.
// Racks configured with that key (fluxrig wasm cluster-key) load only countersigned modules.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { ModuleBucket } from '../bus/module-bucket.js';
import { MODULE_BUCKET } from '../bus/subjects.js';
import { WasmModuleError } from '../gears/wasm/errors.js';
import { prepareModule } from '../gears/wasm/loader.js';
import { countersignModule, publicKeyOf, rawPublicKey, type TrustedKey, verifyModule } from '../gears/wasm/signature.js';
import { MixerError } from './mixer.js';

export const MODULE_DEFAULTS = {
  bucket: MODULE_BUCKET,
  /** Under the Mixer's data directory: one file per vendor, NAME.pub (raw 32 bytes, as fluxrig keeps them, or PEM). */
  vendor_keys_dir: 'wasm/keys',
  max_module_bytes: 16 * 1024 * 1024,
} as const;

export interface ImportedModule {
  name: string;
  version: string;
  /** The bucket's digest of the countersigned module. */
  digest: string;
  /** The vendor whose key verified it; null when imported unsigned (allow_unsigned). */
  vendor: string | null;
  bytes: number;
  /** A vendor signature in fluxrig-ts's earlier format. */
  deprecated: string | null;
}

/** The trusted vendor keys, read at each import (a key added to the directory counts at once). */
export function vendorKeys(dir: string | undefined): TrustedKey[] {
  if (dir === undefined) return [];
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.pub'));
  } catch {
    return [];
  }
  return names.map((n) => {
    try {
      return { name: n.slice(0, -4), key: publicKeyOf(readFileSync(join(dir, n))) };
    } catch (err) {
      throw new MixerError(`vendor key ${join(dir, n)}: ${(err as Error).message}`, 500, { cause: err });
    }
  });
}

export async function importModule(options: {
  nats: NatsConnection;
  bucket: string;
  vendorKeysDir: string | undefined;
  clusterKeyPem: string;
  bytes: Uint8Array;
  name: string;
  version: string;
  allowUnsigned: boolean;
}): Promise<ImportedModule> {
  const { bytes, name, version } = options;
  const keys = vendorKeys(options.vendorKeysDir);
  const check = verifyModule(bytes, keys);
  if (!check.ok && !options.allowUnsigned)
    throw new MixerError(
      keys.length === 0
        ? `no trusted vendor keys in ${options.vendorKeysDir ?? '(none configured)'}: add NAME.pub there, or import with allow_unsigned`
        : `vendor signature refused: ${check.reason}`,
      400,
    );
  try {
    // As a gear would load it, with every capability granted: only the module itself is judged.
    prepareModule(bytes, `${name}:${version}`, { module: name, allow_kv: true, allow_http: true });
  } catch (err) {
    throw new MixerError(err instanceof WasmModuleError ? err.message : String(err), 400, { cause: err });
  }
  const signed = countersignModule(bytes, options.clusterKeyPem);
  const bucket = await ModuleBucket.open(options.nats, options.bucket);
  const digest = await bucket.import(signed, name, version);
  return {
    name,
    version,
    digest,
    vendor: check.ok ? check.signer : null,
    bytes: signed.length,
    deprecated: check.ok ? (check.deprecated ?? null) : null,
  };
}

/** The fleet's module key as racks configure it: PEM, and the raw 32 bytes in hex. */
export function clusterPublicKey(publicKeyPem: string): { pem: string; raw_hex: string } {
  return { pem: publicKeyPem, raw_hex: rawPublicKey(publicKeyOf(publicKeyPem)).toString('hex') };
}
