// The messages racks and the Mixer exchange on the snake bus (docs/snake-protocol.md): each is a
// fluxMsg whose `data` holds the fields below, CBOR on the wire. What must be proven (a rack's
// hello, heartbeats and acknowledgements; the Mixer's passports) travels as Signed: the CBOR
// bytes of the body and an Ed25519 signature over exactly those bytes, so no canonical encoding
// is needed to verify it.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { decodeCbor, encodeCbor, isCborMap } from '../cbor/profile.js';
import { decodeFluxMsg, encodeFluxMsg } from '../fluxmsg/codec.js';
import { createFluxMsg } from '../fluxmsg/fluxmsg.js';
import { FluxrigError } from '../errors.js';

/** A message of the snake bus that is not what its subject expects. */
export class SnakeProtocolError extends FluxrigError {}

export type RackStatus = 'pending' | 'active' | 'suspended' | 'denied';

export interface Signed {
  payload: Uint8Array;
  signature: Uint8Array;
}

/** An Ed25519 key pair, as PEM text (what a state directory or a KV bucket keeps). */
export interface KeyPairPem {
  privateKey: string;
  publicKey: string;
}

export function newKeyPair(): KeyPairPem {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

/** The public key as the bytes sent on the wire (SPKI DER, 44 bytes for Ed25519). */
export function publicKeyBytes(pem: string): Uint8Array {
  return new Uint8Array(createPublicKey(pem).export({ type: 'spki', format: 'der' }));
}

function publicKeyOf(bytes: Uint8Array): KeyObject {
  try {
    const key = createPublicKey({ key: Buffer.from(bytes), format: 'der', type: 'spki' });
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`an ${key.asymmetricKeyType} key`);
    return key;
  } catch (err) {
    throw new SnakeProtocolError(`not an Ed25519 public key: ${(err as Error).message}`, { cause: err });
  }
}

export function signBody(body: Record<string, unknown>, privateKeyPem: string): Signed {
  const payload = encodeCbor(body);
  return { payload, signature: new Uint8Array(sign(null, payload, createPrivateKey(privateKeyPem))) };
}

/** The body of `signed` if `publicKey` signed it; throws otherwise. */
export function verifyBody(signed: Signed, publicKey: Uint8Array): Record<string, unknown> {
  if (!verify(null, signed.payload, publicKeyOf(publicKey), signed.signature)) throw new SnakeProtocolError('the signature does not match the key');
  return bodyOf(signed);
}

/** The body of `signed`, unverified (to learn whose key verifies it). */
export function bodyOf(signed: Signed): Record<string, unknown> {
  const body = decodeCbor(signed.payload, true);
  if (!isCborMap(body)) throw new SnakeProtocolError('a signed body must be a CBOR map');
  return body;
}

export function asSigned(value: unknown, what: string): Signed {
  if (!isCborMap(value) || !(value.payload instanceof Uint8Array) || !(value.signature instanceof Uint8Array))
    throw new SnakeProtocolError(`${what}: expected {payload: bytes, signature: bytes}`);
  return { payload: value.payload, signature: value.signature };
}

/** A message of the bus: a fluxMsg carrying `data`. */
export function encodeMessage(data: Record<string, unknown>): Uint8Array {
  return encodeFluxMsg(createFluxMsg({ data }));
}

export function decodeMessage(bytes: Uint8Array): Record<string, unknown> {
  try {
    return decodeFluxMsg(bytes).data;
  } catch (err) {
    throw new SnakeProtocolError(`not a fluxMsg: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * What a passport certifies (fluxrig's RackState, in snake_case): the Mixer signs it, the rack
 * keeps it and shows it, and it expires.
 */
export interface RackState {
  mixer_id: string;
  machine_id: string;
  name: string;
  status: RackStatus;
  /** The rack's public key (SPKI DER) the Mixer pinned. */
  rack_pub: Uint8Array;
  mixer_pub: Uint8Array;
  labels: Record<string, string>;
  issued_at: number;
  expires_at: number;
}

/** Reads typed fields from a decoded map, naming what is wrong. */
export class Fields {
  constructor(
    private readonly map: Record<string, unknown>,
    private readonly what: string,
  ) {}
  static of(value: unknown, what: string): Fields {
    if (!isCborMap(value)) throw new SnakeProtocolError(`${what}: expected a map`);
    return new Fields(value, what);
  }
  text(key: string, max = 1024): string {
    const v = this.map[key];
    if (typeof v !== 'string' || v.length > max) throw new SnakeProtocolError(`${this.what}: ${key} must be text of at most ${max} characters`);
    return v;
  }
  optionalText(key: string, max = 4096): string | null {
    return this.map[key] === undefined || this.map[key] === null ? null : this.text(key, max);
  }
  number(key: string): number {
    const v = this.map[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new SnakeProtocolError(`${this.what}: ${key} must be a number`);
    return v;
  }
  bytes(key: string): Uint8Array {
    const v = this.map[key];
    if (!(v instanceof Uint8Array)) throw new SnakeProtocolError(`${this.what}: ${key} must be bytes`);
    return v;
  }
  bool(key: string): boolean {
    const v = this.map[key];
    if (typeof v !== 'boolean') throw new SnakeProtocolError(`${this.what}: ${key} must be true or false`);
    return v;
  }
  labels(key: string): Record<string, string> {
    const v = this.map[key] ?? {};
    if (!isCborMap(v) || Object.values(v).some((x) => typeof x !== 'string')) throw new SnakeProtocolError(`${this.what}: ${key} must map text to text`);
    return v as Record<string, string>;
  }
  raw(key: string): unknown {
    return this.map[key];
  }
}

/** The commands the Mixer sends on notify. */
export const COMMANDS = ['log-level', 'shutdown', 'reload', 'suspend', 'activate'] as const;
export type CommandName = (typeof COMMANDS)[number];
