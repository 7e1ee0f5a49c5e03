// End-to-end encryption of a FLUXAR session (spec section 19): which Noise pattern a client
// uses, the prologue that binds its hello, and the frame ciphers once the handshake is done.
import { createHash } from 'node:crypto';
import { CborWriter } from '../cbor/writer.js';
import { FrameFlag, STREAM_HEADER_BYTES } from './constants.js';
import { type CipherState, type KeyPair, NoiseError, type NoisePattern, TAG_BYTES } from './noise.js';

/** End-to-end encryption settings of one side. */
export interface E2eOptions {
  /**
   * This side's static key pair: a server needs one for clients that pin its key (NK, IK); a
   * client with one and a pinned server key uses IK, which also proves the client's key.
   */
  staticKey?: KeyPair;
  /** Client: the server's static public key, pinned (NK, or IK with staticKey). */
  serverKey?: Uint8Array;
  /** Server: refuse clients that do not encrypt end to end (400). A client always requires it once configured. */
  require?: boolean;
}

/** Frames per key: each direction rekeys after this many (Noise section 11.3). */
export const REKEY_INTERVAL = 1n << 20n;

/**
 * The client's pattern: NNpsk0 with a PSK, IK when it pins the server key and has its own, NK
 * when it only pins the server key, NN otherwise (which protects against passive observers only).
 */
export function clientPattern(e2e: E2eOptions, psk: unknown): NoisePattern {
  if (psk !== undefined) return 'NNpsk0';
  if (e2e.serverKey !== undefined) return e2e.staticKey !== undefined ? 'IK' : 'NK';
  return 'NN';
}

/** Noise takes a 32-byte PSK; FLUXAR's PSK is any secret, so it goes in as its SHA-256. */
export function noisePsk(psk: Uint8Array | string): Uint8Array {
  return createHash('sha256').update(psk).digest();
}

/** The prologue ends in an empty byte string where the Noise message stood, then the null error. */
const PROLOGUE_TAIL = Uint8Array.of(0x40, 0xf6);

/**
 * The prologue: the client hello's envelope bytes with its Noise message replaced by an empty
 * byte string. The message is the last item before the envelope's error (null), so the
 * receiver finds it from the end, and every other byte of the hello is bound to the handshake.
 * Returns null when the bytes do not end that way.
 */
export function helloPrologue(helloBody: Uint8Array, message: Uint8Array): Uint8Array | null {
  const tail = new CborWriter(message.length + 16);
  tail.bytes(message);
  tail.null();
  const expected = tail.view();
  const at = helloBody.length - expected.length;
  if (at < 0 || !expected.equals(helloBody.subarray(at))) return null;
  const prologue = new Uint8Array(at + PROLOGUE_TAIL.length);
  prologue.set(helloBody.subarray(0, at));
  prologue.set(PROLOGUE_TAIL, at);
  return prologue;
}

/** The transport ciphers of an encrypted session, one per direction. */
export class FrameCiphers {
  /** The associated data of a frame: its 5-byte header as a byte stream writes it. */
  private readonly header = Buffer.alloc(STREAM_HEADER_BYTES);

  constructor(
    private readonly send: CipherState,
    private readonly receive: CipherState,
  ) {}

  private frameHeader(wireBodyLength: number, flags: number): Buffer {
    this.header.writeUInt32BE(wireBodyLength + 1, 0);
    this.header[4] = flags;
    return this.header;
  }

  /**
   * The body sealed, as a whole frame of the session's framing: the flags get the encrypted bit,
   * and the header a byte stream writes is the associated data either way.
   */
  seal(body: Uint8Array, flags: number, framing: 'stream' | 'message'): Buffer {
    const sealedFlags = flags | FrameFlag.Encrypted;
    const ad = this.frameHeader(body.length + TAG_BYTES, sealedFlags);
    const frame = this.send.encryptWithAd(ad, body, framing === 'stream' ? STREAM_HEADER_BYTES : 1);
    if (framing === 'stream') frame.set(ad, 0);
    else frame[0] = sealedFlags;
    if (this.send.nonce % REKEY_INTERVAL === 0n) this.send.rekey();
    return frame;
  }

  /** The body opened; throws NoiseError on a bad tag (the counter stays). */
  open(body: Uint8Array, flags: number): Buffer {
    if (body.length < TAG_BYTES) throw new NoiseError('encrypted frame shorter than its tag');
    const out = this.receive.decryptWithAd(this.frameHeader(body.length, flags), body);
    if (this.receive.nonce % REKEY_INTERVAL === 0n) this.receive.rekey();
    return out;
  }
}
