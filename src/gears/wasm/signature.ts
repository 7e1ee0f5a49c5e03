import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { customSection, withCustomSection, withoutCustomSection } from './binary.js';

/** The custom section that carries a module's signature. */
export const SIGNATURE_SECTION = 'fluxrig.signature';
const SIGNATURE_BYTES = 64;
const PUBLIC_KEY_BYTES = 32;
// An Ed25519 public key as SPKI DER is this prefix followed by the 32 raw key bytes.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** SHA-256 of the module without its signature section: what is signed. */
export function moduleDigest(bytes: Uint8Array): Buffer {
  return createHash('sha256').update(withoutCustomSection(bytes, SIGNATURE_SECTION)).digest();
}

export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'public' ? key : createPublicKey(key);
  return pub.export({ format: 'der', type: 'spki' }).subarray(-PUBLIC_KEY_BYTES);
}

export function publicKeyFromRaw(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/**
 * Signs a module with an Ed25519 private key (PEM): the section holds the 64-byte signature
 * over the digest, then the signer's 32-byte public key so a verifier knows which key to check.
 * An existing signature is replaced.
 */
export function signModule(bytes: Uint8Array, privateKeyPem: string | Buffer): Uint8Array {
  const key = createPrivateKey(privateKeyPem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`signing key must be Ed25519, got ${key.asymmetricKeyType}`);
  const unsigned = withoutCustomSection(bytes, SIGNATURE_SECTION);
  const signature = sign(null, moduleDigest(unsigned), key);
  return withCustomSection(unsigned, SIGNATURE_SECTION, Buffer.concat([signature, rawPublicKey(createPublicKey(key))]));
}

export type SignatureCheck = { ok: true; signer: string } | { ok: false; reason: string };

/** Checks a module's signature against trusted Ed25519 public keys (PEM or raw 32 bytes). */
export function verifyModule(bytes: Uint8Array, trustedKeys: Array<string | Uint8Array>): SignatureCheck {
  const section = customSection(bytes, SIGNATURE_SECTION);
  if (section === undefined) return { ok: false, reason: 'the module is not signed' };
  if (section.length !== SIGNATURE_BYTES + PUBLIC_KEY_BYTES) return { ok: false, reason: 'malformed signature section' };
  const signer = Buffer.from(section.subarray(SIGNATURE_BYTES));
  // The signature is checked first, against the key the section names: a module changed after it
  // was signed is reported as tampered, whoever signed it.
  let good: boolean;
  try {
    good = verify(null, moduleDigest(bytes), publicKeyFromRaw(signer), section.subarray(0, SIGNATURE_BYTES));
  } catch {
    good = false;
  }
  if (!good) return { ok: false, reason: 'the signature does not match the module: it was changed after it was signed' };
  const trusted = trustedKeys.some((k) => {
    const raw = typeof k === 'string' ? rawPublicKey(createPublicKey(k)) : Buffer.from(k);
    return raw.equals(signer);
  });
  if (!trusted) return { ok: false, reason: `signed by an untrusted key ${signer.toString('hex').slice(0, 16)}…` };
  return { ok: true, signer: signer.toString('hex') };
}
