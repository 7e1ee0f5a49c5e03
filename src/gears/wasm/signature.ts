// Module signatures in fluxrig's format (jaab-tech/fluxrig, pkg/wasm/catalog), so modules signed
// by either implementation verify in the other:
//   - the vendor's: custom section `fluxrig.signature`, a raw 64-byte Ed25519 signature over the
//     SHA-256 of the module without its signature sections;
//   - the Mixer's countersignature, added when a module is imported into the fleet's bucket:
//     `fluxrig.cluster.signature`, a raw 64-byte Ed25519 signature over the SHA-256 of the module
//     as imported (vendor section included) without the cluster section.
// Our earlier format (a 96-byte vendor section: the signature, then the signer's public key)
// still verifies, with a deprecation notice.
import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { customSection, withCustomSection, withoutCustomSection } from './binary.js';

/** The vendor's signature. */
export const SIGNATURE_SECTION = 'fluxrig.signature';
/** The Mixer's countersignature. */
export const CLUSTER_SIGNATURE_SECTION = 'fluxrig.cluster.signature';
const SIGNATURE_BYTES = 64;
const PUBLIC_KEY_BYTES = 32;
const LEGACY_SECTION_BYTES = SIGNATURE_BYTES + PUBLIC_KEY_BYTES;
// Ed25519 keys as DER are these prefixes followed by the 32 raw key bytes.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** A key a module may be signed by: a name (a vendor's, from its file) and the key. */
export interface TrustedKey {
  name: string;
  key: KeyObject;
}

/** SHA-256 of the module without either signature section: what the vendor signs. */
export function moduleDigest(bytes: Uint8Array): Buffer {
  return createHash('sha256')
    .update(withoutCustomSection(withoutCustomSection(bytes, CLUSTER_SIGNATURE_SECTION), SIGNATURE_SECTION))
    .digest();
}

/** SHA-256 of the module without its cluster section: what the Mixer signs. */
export function clusterDigest(bytes: Uint8Array): Buffer {
  return createHash('sha256').update(withoutCustomSection(bytes, CLUSTER_SIGNATURE_SECTION)).digest();
}

export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'public' ? key : createPublicKey(key);
  return pub.export({ format: 'der', type: 'spki' }).subarray(-PUBLIC_KEY_BYTES);
}

export function publicKeyFromRaw(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

function isPem(bytes: Uint8Array | string): boolean {
  return typeof bytes === 'string' || Buffer.from(bytes.subarray(0, 11)).toString('latin1') === '-----BEGIN ';
}

/** Raw key bytes (a string is PEM text, never raw). */
function raw(bytes: Uint8Array | string): Uint8Array {
  if (typeof bytes === 'string') throw new Error('a key given as text must be PEM');
  return bytes;
}

/**
 * An Ed25519 private key from a file's bytes: PEM (PKCS#8), or raw as fluxrig keeps them (the
 * 32-byte seed, or Go's 64-byte seed followed by the public key).
 */
export function privateKeyOf(bytes: Uint8Array | string): KeyObject {
  let key: KeyObject;
  if (isPem(bytes)) key = createPrivateKey(typeof bytes === 'string' ? bytes : Buffer.from(bytes));
  else if (bytes.length === 32 || bytes.length === 64)
    key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, raw(bytes).subarray(0, 32)]), format: 'der', type: 'pkcs8' });
  else throw new Error(`not an Ed25519 private key: PEM, or 32 or 64 raw bytes (got ${bytes.length} bytes)`);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`signing key must be Ed25519, got ${key.asymmetricKeyType}`);
  return key;
}

/** An Ed25519 public key from a file's bytes: PEM (SPKI), or the raw 32 bytes fluxrig's .pub files hold. */
export function publicKeyOf(bytes: Uint8Array | string): KeyObject {
  let key: KeyObject;
  if (isPem(bytes)) key = createPublicKey(typeof bytes === 'string' ? bytes : Buffer.from(bytes));
  else if (bytes.length === PUBLIC_KEY_BYTES) key = publicKeyFromRaw(raw(bytes));
  else throw new Error(`not an Ed25519 public key: PEM, or 32 raw bytes (got ${bytes.length} bytes)`);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a trusted key must be Ed25519, got ${key.asymmetricKeyType}`);
  return key;
}

function trusted(keys: Array<TrustedKey | string | Uint8Array>): TrustedKey[] {
  return keys.map((k) => {
    if (typeof k === 'object' && 'key' in k) return k;
    const key = publicKeyOf(k);
    return { name: rawPublicKey(key).toString('hex').slice(0, 16), key };
  });
}

/**
 * Signs a module as a vendor, in fluxrig's format: any earlier signature (and countersignature,
 * which the new signature would invalidate) is removed first.
 */
export function signModule(bytes: Uint8Array, privateKey: Uint8Array | string): Uint8Array {
  const key = privateKeyOf(privateKey);
  const unsigned = withoutCustomSection(withoutCustomSection(bytes, CLUSTER_SIGNATURE_SECTION), SIGNATURE_SECTION);
  return withCustomSection(unsigned, SIGNATURE_SECTION, sign(null, moduleDigest(unsigned), key));
}

/** Adds (or replaces) the Mixer's countersignature. */
export function countersignModule(bytes: Uint8Array, clusterKey: Uint8Array | string): Uint8Array {
  const unsigned = withoutCustomSection(bytes, CLUSTER_SIGNATURE_SECTION);
  return withCustomSection(unsigned, CLUSTER_SIGNATURE_SECTION, sign(null, clusterDigest(unsigned), privateKeyOf(clusterKey)));
}

export type SignatureCheck = { ok: true; signer: string; deprecated?: string } | { ok: false; reason: string };

/** Checks a module's vendor signature against trusted Ed25519 public keys (PEM, raw 32 bytes, or named). */
export function verifyModule(bytes: Uint8Array, trustedKeys: Array<TrustedKey | string | Uint8Array>): SignatureCheck {
  const section = customSection(bytes, SIGNATURE_SECTION);
  if (section === undefined) return { ok: false, reason: `the module is not signed (no ${SIGNATURE_SECTION} section)` };
  const digest = moduleDigest(bytes);
  const keys = trusted(trustedKeys);
  if (section.length === SIGNATURE_BYTES) {
    for (const k of keys) if (verify(null, digest, k.key, section)) return { ok: true, signer: k.name };
    return { ok: false, reason: 'the signature matches no trusted key: signed by another vendor, or changed after it was signed' };
  }
  if (section.length !== LEGACY_SECTION_BYTES)
    return { ok: false, reason: `malformed signature section (${section.length} bytes, expected ${SIGNATURE_BYTES})` };
  // The earlier format names its signer: a module changed after signing is reported as tampered,
  // whoever signed it.
  const signer = Buffer.from(section.subarray(SIGNATURE_BYTES));
  let good: boolean;
  try {
    good = verify(null, digest, publicKeyFromRaw(signer), section.subarray(0, SIGNATURE_BYTES));
  } catch {
    good = false;
  }
  if (!good) return { ok: false, reason: 'the signature does not match the module: it was changed after it was signed' };
  const known = keys.find((k) => rawPublicKey(k.key).equals(signer));
  if (known === undefined) return { ok: false, reason: `signed by an untrusted key ${signer.toString('hex').slice(0, 16)}…` };
  return {
    ok: true,
    signer: known.name,
    deprecated: `signed in fluxrig-ts's earlier format (a ${LEGACY_SECTION_BYTES}-byte section): sign it again with fluxrig wasm sign`,
  };
}

/** Checks the Mixer's countersignature against the cluster's public keys. */
export function verifyCountersignature(bytes: Uint8Array, clusterKeys: Array<TrustedKey | string | Uint8Array>): SignatureCheck {
  const section = customSection(bytes, CLUSTER_SIGNATURE_SECTION);
  if (section === undefined) return { ok: false, reason: `no ${CLUSTER_SIGNATURE_SECTION}: import it through the Mixer (fluxrig wasm import --mixer)` };
  if (section.length !== SIGNATURE_BYTES) return { ok: false, reason: `malformed cluster signature (${section.length} bytes, expected ${SIGNATURE_BYTES})` };
  const digest = clusterDigest(bytes);
  for (const k of trusted(clusterKeys)) if (verify(null, digest, k.key, section)) return { ok: true, signer: k.name };
  return { ok: false, reason: "the cluster signature does not match: not countersigned by this fleet's Mixer, or changed after" };
}
