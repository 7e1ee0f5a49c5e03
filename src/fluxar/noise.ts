// The part of the Noise Protocol Framework (revision 34, noiseprotocol.org) that FLUXAR's
// end-to-end encryption uses (spec section 19): the patterns NN, NK, IK and NNpsk0 over X25519,
// ChaCha20-Poly1305 and SHA-256, from node:crypto. No I/O: bytes in, bytes out.
//
// What the peers of other implementations got wrong, and how this one avoids it:
// - nonces are 64-bit counters (BigInt), never 32-bit numbers that wrap;
// - a message that fails its tag leaves the counter where it was;
// - the tag is always 16 bytes (authTagLength: 16), so a truncated tag is refused.
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
} from 'node:crypto';

export type NoisePattern = 'NN' | 'NK' | 'IK' | 'NNpsk0';
export const NOISE_PATTERNS: readonly NoisePattern[] = ['NN', 'NK', 'IK', 'NNpsk0'];

export const DH_BYTES = 32;
export const TAG_BYTES = 16;
const HASH_BYTES = 32;
/** The largest nonce a key may use; 2^64 - 1 is reserved for rekey. */
const MAX_NONCE = (1n << 64n) - 2n;

/** A Noise failure: a bad tag, a malformed message, a key that does not fit. */
export class NoiseError extends Error {}

export interface KeyPair {
  publicKey: Uint8Array;
  privateKey: Uint8Array;
}

// X25519 keys travel raw (32 bytes); node:crypto takes them wrapped in PKCS#8 and SPKI.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function privateKeyObject(raw: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== DH_BYTES) throw new NoiseError(`an X25519 public key is ${DH_BYTES} bytes, not ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** A 32-byte key written as 64 hex digits (how keys are stored and pinned), or null when it is not one. */
export function keyFromHex(text: string): Uint8Array | null {
  const hex = text.trim();
  return /^[0-9a-fA-F]{64}$/.test(hex) ? Uint8Array.from(Buffer.from(hex, 'hex')) : null;
}

/** The key pair of a private key (32 raw bytes). */
export function keyPairFrom(privateKey: Uint8Array): KeyPair {
  const spki = createPublicKey(privateKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
  return { privateKey: Uint8Array.from(privateKey), publicKey: Uint8Array.from(spki.subarray(SPKI_PREFIX.length)) };
}

export function generateKeyPair(): KeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  return keyPairFrom(pkcs8.subarray(PKCS8_PREFIX.length));
}

function dh(own: KeyPair, remote: Uint8Array): Buffer {
  try {
    return diffieHellman({ privateKey: privateKeyObject(own.privateKey), publicKey: publicKeyObject(remote) });
  } catch (err) {
    // A low-order point gives an all-zero secret, which OpenSSL refuses: the peer is not honest.
    throw new NoiseError(`X25519 failed: ${(err as Error).message}`);
  }
}

function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

/** Noise's HKDF is RFC 5869 with the chaining key as salt and no info: two or three outputs. */
function hkdf(chainingKey: Uint8Array, input: Uint8Array, outputs: 2 | 3): Buffer[] {
  const okm = Buffer.from(hkdfSync('sha256', input, chainingKey, Buffer.alloc(0), HASH_BYTES * outputs));
  return Array.from({ length: outputs }, (_, i) => okm.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES));
}

/** The 12-byte ChaCha20-Poly1305 nonce of counter n: four zero bytes, then n little-endian. */
function writeNonce(nonce: Buffer, n: bigint): Buffer {
  nonce.writeBigUInt64LE(n, 4);
  return nonce;
}

// One options object for every operation, not one per seal.
const AEAD_OPTIONS = { authTagLength: TAG_BYTES } as const;

/**
 * Ciphertext and tag, written after `headroom` bytes the caller fills (a frame header), so the
 * sealed frame is one buffer with no concatenation. An AEAD operation in node:crypto costs a
 * fixed 7 µs or so before any byte is encrypted; what is left to save is the copies around it.
 */
function seal(key: Uint8Array, nonce: Buffer, ad: Uint8Array, plaintext: Uint8Array, headroom = 0): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, AEAD_OPTIONS);
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  const body = cipher.update(plaintext);
  cipher.final();
  const out = Buffer.allocUnsafe(headroom + body.length + TAG_BYTES);
  out.set(body, headroom);
  out.set(cipher.getAuthTag(), headroom + body.length);
  return out;
}

function open(key: Uint8Array, nonce: Buffer, ad: Uint8Array, ciphertext: Uint8Array): Buffer {
  if (ciphertext.length < TAG_BYTES) throw new NoiseError('ciphertext shorter than its tag');
  const body = ciphertext.subarray(0, ciphertext.length - TAG_BYTES);
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, AEAD_OPTIONS);
  decipher.setAAD(ad, { plaintextLength: body.length });
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_BYTES));
  try {
    const plain = decipher.update(body);
    decipher.final();
    return plain;
  } catch {
    throw new NoiseError('bad authentication tag');
  }
}

/** One direction's key and nonce (Noise section 5.1). */
export class CipherState {
  private key: Uint8Array | null = null;
  /** The next nonce: a 64-bit counter. */
  nonce = 0n;
  private readonly nonceBytes = Buffer.alloc(12);

  initializeKey(key: Uint8Array | null): void {
    this.key = key === null ? null : Uint8Array.from(key);
    this.nonce = 0n;
  }

  get hasKey(): boolean {
    return this.key !== null;
  }

  /** Encrypts; the result starts with `headroom` bytes left for the caller to fill. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array, headroom = 0): Buffer {
    if (this.key === null) {
      const out = Buffer.allocUnsafe(headroom + plaintext.length);
      out.set(plaintext, headroom);
      return out;
    }
    if (this.nonce > MAX_NONCE) throw new NoiseError('nonce exhausted');
    const out = seal(this.key, writeNonce(this.nonceBytes, this.nonce), ad, plaintext, headroom);
    this.nonce++;
    return out;
  }

  /** Decrypts; on a bad tag it throws and the nonce does not advance. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Buffer {
    if (this.key === null) return Buffer.from(ciphertext);
    if (this.nonce > MAX_NONCE) throw new NoiseError('nonce exhausted');
    const out = open(this.key, writeNonce(this.nonceBytes, this.nonce), ad, ciphertext);
    this.nonce++;
    return out;
  }

  /** Noise section 11.3: the next key is the first 32 bytes of encrypting zeros at nonce 2^64 - 1. */
  rekey(): void {
    if (this.key === null) return;
    this.key = seal(this.key, writeNonce(Buffer.alloc(12), MAX_NONCE + 1n), new Uint8Array(0), new Uint8Array(32)).subarray(0, 32);
  }
}

class SymmetricState {
  readonly cipher = new CipherState();
  chainingKey: Buffer;
  hash: Buffer;

  constructor(protocolName: string) {
    const name = Buffer.from(protocolName, 'ascii');
    this.hash = name.length <= HASH_BYTES ? Buffer.concat([name, Buffer.alloc(HASH_BYTES - name.length)]) : sha256(name);
    this.chainingKey = this.hash;
  }

  mixKey(input: Uint8Array): void {
    const [ck, k] = hkdf(this.chainingKey, input, 2);
    this.chainingKey = ck!;
    this.cipher.initializeKey(k!);
  }

  mixHash(data: Uint8Array): void {
    this.hash = sha256(this.hash, data);
  }

  mixKeyAndHash(input: Uint8Array): void {
    const [ck, h, k] = hkdf(this.chainingKey, input, 3);
    this.chainingKey = ck!;
    this.mixHash(h!);
    this.cipher.initializeKey(k!);
  }

  encryptAndHash(plaintext: Uint8Array): Buffer {
    const out = this.cipher.encryptWithAd(this.hash, plaintext);
    this.mixHash(out);
    return out;
  }

  decryptAndHash(ciphertext: Uint8Array): Buffer {
    const out = this.cipher.decryptWithAd(this.hash, ciphertext);
    this.mixHash(ciphertext);
    return out;
  }

  split(): [CipherState, CipherState] {
    const [k1, k2] = hkdf(this.chainingKey, new Uint8Array(0), 2);
    const c1 = new CipherState();
    const c2 = new CipherState();
    c1.initializeKey(k1!);
    c2.initializeKey(k2!);
    return [c1, c2];
  }
}

type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss' | 'psk';

/** The message patterns (Noise section 7.4), initiator first; and whether the responder's static is pre-known. */
const PATTERNS: Record<NoisePattern, { messages: Token[][]; responderStaticKnown: boolean }> = {
  NN: { messages: [['e'], ['e', 'ee']], responderStaticKnown: false },
  NK: {
    messages: [
      ['e', 'es'],
      ['e', 'ee'],
    ],
    responderStaticKnown: true,
  },
  IK: {
    messages: [
      ['e', 'es', 's', 'ss'],
      ['e', 'ee', 'se'],
    ],
    responderStaticKnown: true,
  },
  NNpsk0: {
    messages: [
      ['psk', 'e'],
      ['e', 'ee'],
    ],
    responderStaticKnown: false,
  },
};

export function protocolName(pattern: NoisePattern): string {
  return `Noise_${pattern}_25519_ChaChaPoly_SHA256`;
}

/** Whether a pattern needs the responder's static key known to the initiator in advance. */
export function needsResponderStatic(pattern: NoisePattern): boolean {
  return PATTERNS[pattern].responderStaticKnown;
}

export interface HandshakeOptions {
  pattern: NoisePattern;
  initiator: boolean;
  prologue: Uint8Array;
  /** This side's static key pair (the responder in NK and IK, the initiator in IK). */
  staticKey?: KeyPair;
  /** The responder's static public key, known in advance by the initiator (NK, IK). */
  remoteStaticKey?: Uint8Array;
  /** The pre-shared key of NNpsk0 (32 bytes). */
  psk?: Uint8Array;
  /** A fixed ephemeral key pair: for the test vectors only. */
  ephemeral?: KeyPair;
}

/** A handshake in progress (Noise section 5.3); split() gives the transport ciphers. */
export class HandshakeState {
  private readonly symmetric: SymmetricState;
  private readonly messages: Token[][];
  private readonly initiator: boolean;
  private readonly s: KeyPair | undefined;
  private e: KeyPair | undefined;
  private rs: Uint8Array | undefined;
  private re: Uint8Array | undefined;
  private readonly psk: Uint8Array | undefined;
  private readonly pskMode: boolean;
  private step = 0;

  constructor(options: HandshakeOptions) {
    const pattern = PATTERNS[options.pattern];
    this.symmetric = new SymmetricState(protocolName(options.pattern));
    this.messages = pattern.messages;
    this.initiator = options.initiator;
    this.s = options.staticKey;
    this.e = options.ephemeral;
    this.rs = options.remoteStaticKey;
    this.psk = options.psk;
    this.pskMode = options.pattern.includes('psk');
    if (this.pskMode && (this.psk === undefined || this.psk.length !== 32)) throw new NoiseError('NNpsk0 needs a 32-byte pre-shared key');
    this.symmetric.mixHash(options.prologue);
    if (pattern.responderStaticKnown) {
      const responderStatic = this.initiator ? this.rs : this.s?.publicKey;
      if (responderStatic === undefined) throw new NoiseError(`${options.pattern} needs the responder's static key`);
      this.symmetric.mixHash(responderStatic);
    }
    if (options.pattern === 'IK' && this.initiator && this.s === undefined) throw new NoiseError('IK needs the initiator static key');
  }

  /** Whether every handshake message has been written or read. */
  get complete(): boolean {
    return this.step === this.messages.length;
  }

  /** Whether the next message is this side's to write. */
  get myTurn(): boolean {
    return !this.complete && this.step % 2 === (this.initiator ? 0 : 1);
  }

  /** The handshake hash: a value both sides share, bound to every byte of the handshake. */
  get handshakeHash(): Uint8Array {
    return this.symmetric.hash;
  }

  /** The remote static key learnt in the handshake (IK's initiator, seen by the responder). */
  get remoteStaticKey(): Uint8Array | undefined {
    return this.rs;
  }

  writeMessage(payload: Uint8Array): Buffer {
    if (!this.myTurn) throw new NoiseError('not this side’s handshake message to write');
    const out: Uint8Array[] = [];
    for (const token of this.messages[this.step]!) {
      switch (token) {
        case 'e':
          this.e ??= generateKeyPair();
          out.push(this.e.publicKey);
          this.symmetric.mixHash(this.e.publicKey);
          if (this.pskMode) this.symmetric.mixKey(this.e.publicKey);
          break;
        case 's':
          out.push(this.symmetric.encryptAndHash(this.s!.publicKey));
          break;
        case 'psk':
          this.symmetric.mixKeyAndHash(this.psk!);
          break;
        default:
          this.symmetric.mixKey(this.dhToken(token));
      }
    }
    out.push(this.symmetric.encryptAndHash(payload));
    this.step++;
    return Buffer.concat(out);
  }

  readMessage(message: Uint8Array): Buffer {
    if (this.complete || this.myTurn) throw new NoiseError('not the peer’s handshake message to read');
    let at = 0;
    const take = (n: number) => {
      if (at + n > message.length) throw new NoiseError('handshake message cut short');
      const part = message.subarray(at, at + n);
      at += n;
      return part;
    };
    for (const token of this.messages[this.step]!) {
      switch (token) {
        case 'e':
          this.re = Uint8Array.from(take(DH_BYTES));
          this.symmetric.mixHash(this.re);
          if (this.pskMode) this.symmetric.mixKey(this.re);
          break;
        case 's':
          this.rs = Uint8Array.from(this.symmetric.decryptAndHash(take(this.symmetric.cipher.hasKey ? DH_BYTES + TAG_BYTES : DH_BYTES)));
          break;
        case 'psk':
          this.symmetric.mixKeyAndHash(this.psk!);
          break;
        default:
          this.symmetric.mixKey(this.dhToken(token));
      }
    }
    const payload = this.symmetric.decryptAndHash(message.subarray(at));
    this.step++;
    return payload;
  }

  /** The transport ciphers: [this side sends with, this side receives with]. */
  split(): { send: CipherState; receive: CipherState } {
    if (!this.complete) throw new NoiseError('the handshake is not complete');
    const [initiatorToResponder, responderToInitiator] = this.symmetric.split();
    return this.initiator ? { send: initiatorToResponder, receive: responderToInitiator } : { send: responderToInitiator, receive: initiatorToResponder };
  }

  /** ee, es, se, ss: the first letter is the initiator's key, the second the responder's. */
  private dhToken(token: 'ee' | 'es' | 'se' | 'ss'): Buffer {
    const need = <T>(v: T | undefined, what: string): T => {
      if (v === undefined) throw new NoiseError(`${token} needs ${what}`);
      return v;
    };
    const initiatorKey = token[0] === 'e' ? 'e' : 's';
    const responderKey = token[1] === 'e' ? 'e' : 's';
    if (this.initiator) {
      const own = need(initiatorKey === 'e' ? this.e : this.s, `the initiator's ${initiatorKey}`);
      return dh(own, need(responderKey === 'e' ? this.re : this.rs, `the responder's ${responderKey}`));
    }
    const own = need(responderKey === 'e' ? this.e : this.s, `the responder's ${responderKey}`);
    return dh(own, need(initiatorKey === 'e' ? this.re : this.rs, `the initiator's ${initiatorKey}`));
  }
}
