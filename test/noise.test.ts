// The Noise handshake and transport ciphers (src/fluxar/noise.ts) against the cacophony test
// vectors of the four patterns FLUXAR uses, and the failures the spec names.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CipherState, generateKeyPair, HandshakeState, keyPairFrom, NoiseError, type NoisePattern } from '../src/fluxar/noise.js';

interface Vector {
  protocol_name: string;
  init_prologue: string;
  init_static?: string;
  init_ephemeral: string;
  init_remote_static?: string;
  init_psks?: string[];
  resp_prologue: string;
  resp_static?: string;
  resp_ephemeral: string;
  resp_psks?: string[];
  handshake_hash: string;
  messages: Array<{ payload: string; ciphertext: string }>;
}

const { vectors } = JSON.parse(readFileSync(new URL('../../test/fixtures/noise-vectors.json', import.meta.url), 'utf8')) as { vectors: Vector[] };
const hex = (s: string) => Buffer.from(s, 'hex');

describe('Noise (the official test vectors)', () => {
  for (const v of vectors) {
    it(v.protocol_name, () => {
      const pattern = v.protocol_name.split('_')[1] as NoisePattern;
      const initiator = new HandshakeState({
        pattern,
        initiator: true,
        prologue: hex(v.init_prologue),
        staticKey: v.init_static === undefined ? undefined : keyPairFrom(hex(v.init_static)),
        ephemeral: keyPairFrom(hex(v.init_ephemeral)),
        remoteStaticKey: v.init_remote_static === undefined ? undefined : hex(v.init_remote_static),
        psk: v.init_psks === undefined ? undefined : hex(v.init_psks[0]!),
      });
      const responder = new HandshakeState({
        pattern,
        initiator: false,
        prologue: hex(v.resp_prologue),
        staticKey: v.resp_static === undefined ? undefined : keyPairFrom(hex(v.resp_static)),
        ephemeral: keyPairFrom(hex(v.resp_ephemeral)),
        psk: v.resp_psks === undefined ? undefined : hex(v.resp_psks[0]!),
      });
      let sides: { i: ReturnType<HandshakeState['split']>; r: ReturnType<HandshakeState['split']> } | undefined;
      for (const [n, m] of v.messages.entries()) {
        const fromInitiator = n % 2 === 0;
        if (sides === undefined) {
          const [writer, reader] = fromInitiator ? [initiator, responder] : [responder, initiator];
          const ciphertext = writer.writeMessage(hex(m.payload));
          assert.equal(ciphertext.toString('hex'), m.ciphertext, `handshake message ${n}`);
          assert.equal(reader.readMessage(ciphertext).toString('hex'), m.payload);
          if (initiator.complete) {
            assert.equal(Buffer.from(initiator.handshakeHash).toString('hex'), v.handshake_hash);
            assert.equal(Buffer.from(responder.handshakeHash).toString('hex'), v.handshake_hash);
            sides = { i: initiator.split(), r: responder.split() };
          }
          continue;
        }
        const [send, receive] = fromInitiator ? [sides.i.send, sides.r.receive] : [sides.r.send, sides.i.receive];
        const ciphertext = send.encryptWithAd(new Uint8Array(0), hex(m.payload));
        assert.equal(ciphertext.toString('hex'), m.ciphertext, `transport message ${n}`);
        assert.equal(receive.decryptWithAd(new Uint8Array(0), ciphertext).toString('hex'), m.payload);
      }
      assert.ok(sides, 'the handshake completed');
    });
  }
});

describe('Noise transport ciphers', () => {
  const pair = () => {
    const key = generateKeyPair().privateKey;
    const send = new CipherState();
    const receive = new CipherState();
    send.initializeKey(key);
    receive.initializeKey(key);
    return { send, receive };
  };

  it('a bad tag throws and the nonce does not advance: the next good message still opens', () => {
    const { send, receive } = pair();
    const ad = Buffer.from([0, 0, 0, 9, 2]);
    const good = send.encryptWithAd(ad, Buffer.from('hello'));
    const flipped = Buffer.from(good);
    flipped[2]! ^= 1;
    assert.throws(() => receive.decryptWithAd(ad, flipped), NoiseError);
    assert.equal(receive.nonce, 0n);
    assert.throws(() => receive.decryptWithAd(Buffer.from([0, 0, 0, 9, 3]), good), NoiseError, 'the associated data is bound');
    assert.equal(receive.decryptWithAd(ad, good).toString(), 'hello');
    assert.equal(receive.nonce, 1n);
  });

  it('a truncated tag, a replayed and a reordered message are refused', () => {
    const { send, receive } = pair();
    const ad = new Uint8Array(0);
    const a = send.encryptWithAd(ad, Buffer.from('a'));
    const b = send.encryptWithAd(ad, Buffer.from('b'));
    assert.throws(() => receive.decryptWithAd(ad, a.subarray(0, a.length - 12)), NoiseError, 'a 4-byte tag');
    assert.throws(() => receive.decryptWithAd(ad, b), NoiseError, 'out of order');
    receive.decryptWithAd(ad, a);
    assert.throws(() => receive.decryptWithAd(ad, a), NoiseError, 'replayed');
    assert.equal(receive.decryptWithAd(ad, b).toString(), 'b');
  });

  it('nonces are 64-bit: a counter past 2^32 keeps working, rekey changes the key on both sides alike', () => {
    const { send, receive } = pair();
    send.nonce = receive.nonce = 2n ** 32n + 5n;
    const ad = new Uint8Array(0);
    assert.equal(receive.decryptWithAd(ad, send.encryptWithAd(ad, Buffer.from('x'))).toString(), 'x');
    send.rekey();
    const afterRekey = send.encryptWithAd(ad, Buffer.from('y'));
    assert.throws(() => receive.decryptWithAd(ad, afterRekey), NoiseError, 'the old key no longer opens it');
    receive.rekey();
    assert.equal(receive.decryptWithAd(ad, afterRekey).toString(), 'y');
  });

  it('an edited prologue breaks the handshake at the first encrypted payload', () => {
    const server = generateKeyPair();
    const i = new HandshakeState({ pattern: 'NK', initiator: true, prologue: Buffer.from('hello A'), remoteStaticKey: server.publicKey });
    const r = new HandshakeState({ pattern: 'NK', initiator: false, prologue: Buffer.from('hello B'), staticKey: server });
    assert.throws(() => r.readMessage(i.writeMessage(Buffer.from('payload'))), NoiseError);
  });
});
