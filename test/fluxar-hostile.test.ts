// Hostile input against the FLUXAR state machine alone (bytes in, bytes out, a fake clock): the
// sans-I/O half of the rules in docs/fluxar-spec.md sections 1, 2, 7, 8 and 11.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import {
  decodeEnvelope,
  encodeEnvelope,
  type Envelope,
  MessageType,
  Session,
  type SessionEvent,
  type SessionOptions,
  StreamFrameSplitter,
} from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';

class Clock {
  t = 1_000_000;
  now = () => this.t;
}

function frame(body: Uint8Array, flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length + 1, 0);
  head[4] = flags;
  return Buffer.concat([head, body]);
}

function helloBody(payload: Record<string, unknown>): Uint8Array {
  return encodeEnvelope({
    type: MessageType.Hello,
    id: uuidv7(),
    ref: null,
    target: null,
    meta: null,
    payload: { versions: [1], caps: [], nonce: new Uint8Array(16), ...payload },
    error: null,
  });
}

function hello(payload: Record<string, unknown>): Buffer {
  return frame(helloBody(payload));
}

function call(target: string, payload: unknown, meta: Record<string, unknown> | null = null): { id: Uint8Array; bytes: Buffer } {
  const id = uuidv7();
  return { id, bytes: frame(encodeEnvelope({ type: MessageType.Call, id, ref: null, target, meta, payload, error: null })) };
}

/** A server session driven by hand: what it sends is decoded, calls are answered by echo. */
function server(options: Partial<SessionOptions> = {}, clock = new Clock()) {
  const session = new Session({ role: 'server', framing: 'stream', clock: clock.now, ...options });
  const sent: Envelope[] = [];
  const events: SessionEvent[] = [];
  const splitter = new StreamFrameSplitter(16 * 1024 * 1024);
  const drive = () => {
    for (let i = 0; i < 10; i++) {
      for (const out of session.takeOutput()) for (const f of splitter.push(out)) sent.push(decodeEnvelope(f.flags & 1 ? inflateRawSync(f.body) : f.body));
      const evs = session.takeEvents();
      if (evs.length === 0) return;
      for (const e of evs) {
        events.push(e);
        if (e.type === 'authenticate') session.accept({ id: 'test' });
        if (e.type === 'call') session.respond(e.key, e.payload);
      }
    }
  };
  const feed = (bytes: Uint8Array) => {
    session.receive(bytes);
    drive();
  };
  const fatal = () => sent.find((e) => e.target === 'bye' && e.error !== null)?.error;
  const answerTo = (id: Uint8Array) => sent.find((e) => e.ref !== null && Buffer.compare(e.ref, id) === 0);
  return { session, sent, events, feed, fatal, answerTo, clock, drive };
}

describe('FLUXAR session under hostile input', () => {
  it('holds received frames to the agreed maximum, not its own (finding 6)', () => {
    const s = server();
    s.feed(hello({ max_frame: 4096 }));
    assert.equal(s.session.state, 'open');
    assert.equal(s.session.maxFrame, 4096);
    s.feed(call('echo', 'x'.repeat(5000)).bytes);
    assert.equal(s.fatal()?.code, 413);
    assert.match(s.fatal()!.message, /exceeds the maximum of 4096/);
  });

  it('refuses a frame that inflates past the agreed maximum (finding 6)', () => {
    const s = server();
    s.feed(hello({ max_frame: 4096, caps: ['deflate'] }));
    const c = call('echo', 'x'.repeat(5000));
    s.feed(frame(deflateRawSync(c.bytes.subarray(5)), 1));
    assert.equal(s.fatal()?.code, 413);
    assert.match(s.fatal()!.message, /decompresses past 4096/);
  });

  it('max_frame: missing means 1 MiB, under 1024 (0 too) or not an integer is refused with 400', () => {
    const missing = server();
    missing.feed(hello({ max_frame: undefined }));
    assert.equal(missing.session.maxFrame, 1024 * 1024);
    for (const bad of [0, 100, -1, 'big', 4096.5]) {
      const s = server();
      s.feed(hello({ max_frame: bad }));
      const refusal = s.sent.find((e) => e.type === MessageType.Hello && e.error !== null);
      assert.equal(refusal?.error?.code, 400, String(bad));
      assert.equal(s.session.state, 'closed');
    }
  });

  it('refuses a hello offering a 64-bit version at once with 400, not at the handshake timeout (finding 3)', () => {
    const s = server();
    s.feed(hello({ versions: [2n ** 64n - 1n] }));
    const refusal = s.sent.find((e) => e.type === MessageType.Hello && e.error !== null);
    assert.equal(refusal?.error?.code, 400);
    assert.match(refusal!.error!.message, /unsupported version: offered \[18446744073709551615\]/);
    assert.equal(s.session.state, 'closed');
  });

  it('refuses a float version even when it is whole (1.0)', () => {
    const s = server();
    const body = Buffer.from(helloBody({ versions: [9] }));
    // versions: [9] is 0x81 0x09; write it as [1.0], a half float.
    const at = body.indexOf(Buffer.from([0x81, 0x09]));
    const patched = Buffer.concat([body.subarray(0, at), Buffer.from([0x81, 0xf9, 0x3c, 0x00]), body.subarray(at + 2)]);
    s.feed(frame(patched));
    assert.equal(s.sent.find((e) => e.error !== null)?.error?.code, 400);
  });

  it('an unknown auth scheme is 401; a malformed auth map is 400', () => {
    const unknown = server();
    unknown.feed(hello({ auth: { scheme: 'kerberos', ticket: 'x' } }));
    assert.equal(unknown.sent.find((e) => e.error !== null)?.error?.code, 401);
    const malformed = server();
    malformed.feed(hello({ auth: { scheme: 'bearer' } }));
    assert.equal(malformed.sent.find((e) => e.error !== null)?.error?.code, 400);
  });

  it('a call pipelined behind the hello is a protocol violation: 400 bye', () => {
    const s = new Session({ role: 'server', framing: 'stream' });
    s.receive(Buffer.concat([hello({}), call('echo', 1).bytes]));
    const sent = s.takeOutput().map((f) => decodeEnvelope(f.subarray(5)));
    assert.equal(sent.at(-1)?.target, 'bye');
    assert.equal(sent.at(-1)?.error?.code, 400);
  });

  it('a request with a bad payload is answered 400 and the connection carries on (finding 2)', () => {
    const s = server();
    s.feed(hello({}));
    const good = call('echo', 'after');
    const badId = uuidv7();
    const bad = encodeEnvelope({ type: MessageType.Call, id: badId, ref: null, target: 'echo', meta: null, payload: { a: 1, b: 2 }, error: null });
    // Turn key "b" into a second "a": a duplicate key.
    const dup = Buffer.from(bad);
    dup[dup.lastIndexOf(0x62)] = 0x61;
    s.feed(Buffer.concat([frame(dup), good.bytes]));
    assert.equal(s.answerTo(badId)?.error?.code, 400);
    assert.match(s.answerTo(badId)!.error!.message, /duplicate map key "a"/);
    assert.equal(s.answerTo(good.id)?.payload, 'after');
    assert.equal(s.session.state, 'open');
  });

  it('meta values that decode to bigints reach the host; the next call in the same write is answered (finding 2)', () => {
    const s = server();
    s.feed(hello({}));
    const big = call('echo', 1, { huge: 2n ** 60n, neg: -(2n ** 70n) });
    const next = call('echo', 2);
    s.feed(Buffer.concat([big.bytes, next.bytes]));
    const seen = s.events.find((e) => e.type === 'call' && e.meta !== null);
    assert.deepEqual((seen as { meta: Record<string, unknown> }).meta, { huge: 2n ** 60n, neg: -(2n ** 70n) });
    assert.equal(s.answerTo(big.id)?.payload, 1);
    assert.equal(s.answerTo(next.id)?.payload, 2);
  });

  it('closes a peer silent for three heartbeats with a 503 bye', () => {
    const clock = new Clock();
    const s = server({ heartbeatMs: 100 }, clock);
    s.feed(hello({}));
    for (let t = 0; t < 4; t++) {
      clock.t += 100;
      s.session.tick();
      s.drive();
    }
    assert.equal(s.fatal()?.code, 503);
    assert.match(s.fatal()!.message, /silent for 3 heartbeats/);
  });

  it('spends an inflate budget per connection and closes a deflate bomb with 429 (finding 7)', () => {
    const clock = new Clock();
    const s = server({ inflateBytesPerSecond: 64 * 1024, maxFrame: 16 * 1024 }, clock);
    s.feed(hello({ caps: ['deflate'] }));
    const bomb = frame(deflateRawSync(call('echo', 'x'.repeat(15_000)).bytes.subarray(5)), 1);
    let frames = 0;
    while (s.fatal() === undefined && frames < 100) {
      s.feed(bomb);
      frames++;
    }
    assert.equal(s.fatal()?.code, 429);
    assert.match(s.fatal()!.message, /inflate budget of 65536 bytes per second/);
    // The bucket holds max(rate, two largest frames): about 64 KiB, so about 5 frames got through.
    assert.ok(frames <= 6, `${frames} frames inflated`);
  });

  it('the inflate budget refills with time: a steady legal rate is never cut', () => {
    const clock = new Clock();
    const s = server({ inflateBytesPerSecond: 64 * 1024, maxFrame: 16 * 1024 }, clock);
    s.feed(hello({ caps: ['deflate'] }));
    for (let i = 0; i < 50; i++) {
      const c = call('echo', 'x'.repeat(15_000));
      s.feed(frame(deflateRawSync(c.bytes.subarray(5)), 1));
      clock.t += 250; // 4 frames of 15 kB a second: under 64 KiB/s
      assert.equal(s.fatal(), undefined, `frame ${i}`);
    }
  });

  it('spends a decode budget in CBOR items and closes a flood of tiny items with 429 (finding 7)', () => {
    const s = server({ decodeItemsPerSecond: 100_000, maxFrame: 64 * 1024 });
    s.feed(hello({}));
    const flood = call('echo', new Array(60_000).fill(0));
    s.feed(flood.bytes);
    s.feed(flood.bytes);
    s.feed(flood.bytes);
    s.feed(flood.bytes);
    assert.equal(s.fatal()?.code, 429);
    assert.match(s.fatal()!.message, /decode budget of 100000 CBOR items per second/);
  });

  it('reassembles a frame in 128-byte pieces with linear work (finding 7)', () => {
    const body = Buffer.alloc(256 * 1024, 7);
    const bytes = frame(body);
    const whole = new StreamFrameSplitter(1024 * 1024);
    const pieces = new StreamFrameSplitter(1024 * 1024);
    const out = [];
    for (let at = 0; at < bytes.length; at += 128) out.push(...pieces.push(bytes.subarray(at, at + 128)));
    assert.equal(out.length, 1);
    assert.deepEqual(out[0]!.body, whole.push(bytes)[0]!.body);
    // Each byte is copied once into its piece and once when the frame is joined.
    assert.ok(pieces.bytesCopied <= 2 * bytes.length, `${pieces.bytesCopied} bytes copied for a ${bytes.length}-byte frame`);
  });
});
