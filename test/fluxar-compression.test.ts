// Frame compression (docs/fluxar-spec.md section 7.1): negotiation, zstd, gzip and deflate round
// trips, mixed frames, and compression bombs refused before they cost memory.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { gzipSync, deflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { pino } from 'pino';
import { Compressor } from 'zstd-napi';
import { zstdFrameInfo } from '../src/fluxar/compression.js';
import {
  availableCompressions,
  type Compression,
  COMPRESSIONS,
  connect,
  encodeEnvelope,
  type FluxarServer,
  listen,
  MessageType,
  StreamFrameSplitter,
} from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';
import { transactions } from './harness/documents.js';
import { RawConnection } from './harness/raw.js';
import { ofType, pair } from './harness/session-pair.js';

const quiet = pino({ level: 'silent' });

function zstd(body: Uint8Array, withSize = true): Buffer {
  const c = new Compressor();
  c.setParameters({ contentSizeFlag: withSize });
  return c.compress(body);
}

function callBody(target: string, payload: unknown): Uint8Array {
  return encodeEnvelope({ type: MessageType.Call, id: uuidv7(), ref: null, target, meta: null, payload, error: null });
}

/** The flags byte of every frame in a stream session's output. */
function flagsOf(output: Uint8Array[]): number[] {
  const splitter = new StreamFrameSplitter(16 * 1024 * 1024);
  return output.flatMap((b) => splitter.push(b)).map((f) => f.flags);
}

describe('FLUXAR compression: negotiation', () => {
  it('zstd is offered (zstd-napi built at npm ci), and a default client and server agree on it', () => {
    assert.deepEqual(availableCompressions(), ['zstd', 'gzip', 'deflate']);
    const { events, pump } = pair();
    pump();
    assert.deepEqual(ofType(events.client, 'open')[0]!.info.caps, ['zstd']);
  });

  it("the server takes the client's first choice it supports, and agrees on one at most", () => {
    const cases: Array<[string[], string[] | undefined, string[]]> = [
      [['gzip', 'zstd', 'deflate'], undefined, ['gzip']],
      [['zstd', 'gzip', 'deflate'], ['deflate', 'gzip'], ['gzip']],
      [['zstd'], ['deflate'], []],
      [['brotli', 'deflate'], undefined, ['deflate']],
      [[], undefined, []],
    ];
    for (const [offered, supported, agreed] of cases) {
      const { client, server, events, pump } = pair({ caps: offered }, { caps: supported });
      pump();
      assert.deepEqual(ofType(events.client, 'open')[0]!.info.caps, agreed, `offered ${offered} to ${supported ?? 'the default'}`);
      assert.deepEqual(server.info!.caps, agreed);
      // Whatever was agreed is what both send: a large frame goes compressed only when one was.
      client.call('big', transactions(8192));
      assert.deepEqual(flagsOf(client.takeOutput()), [agreed.length === 1 ? 1 : 0]);
    }
  });

  it('a compressed frame without an agreed compression is a 400 bye', () => {
    const { client, server, events, pump } = pair({ caps: [] });
    pump();
    const body = deflateRawSync(callBody('x', 'y'.repeat(2000)));
    const head = Buffer.alloc(5);
    head.writeUInt32BE(body.length + 1);
    head[4] = 1;
    server.receive(Buffer.concat([head, body]));
    for (const b of server.takeOutput()) client.receive(b);
    pump();
    const closed = ofType(events.client.concat(client.takeEvents()), 'closed')[0]!;
    assert.equal(closed.code, 400);
    assert.match(closed.reason, /no compression was agreed/);
  });
});

describe('FLUXAR compression: round trips', () => {
  for (const compression of COMPRESSIONS) {
    it(`${compression}: frames over 1 KiB go compressed both ways and arrive intact; smaller ones go plain`, () => {
      const { client, server, events, pump } = pair({ caps: [compression] });
      pump();
      const big = transactions(64 * 1024);
      client.call('big', big);
      client.call('small', 'tiny');
      const out = client.takeOutput();
      assert.deepEqual(flagsOf(out), [1, 0]);
      const wire = out.reduce((n, b) => n + b.length, 0);
      assert.ok(wire < JSON.stringify(big).length / 4, `${compression} sent ${wire} bytes`);
      for (const b of out) server.receive(b);
      pump();
      const calls = ofType(events.server.concat(server.takeEvents()), 'call');
      assert.deepEqual(calls[0]!.payload, big);
      server.respond(calls[0]!.key, big);
      const back = server.takeOutput();
      assert.deepEqual(flagsOf(back), [1]);
      for (const b of back) client.receive(b);
      pump();
      assert.deepEqual(ofType(events.client.concat(client.takeEvents()), 'result')[0]!.payload, big);
    });
  }

  it('any document of any size comes through every compression unchanged (property)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...COMPRESSIONS), fc.jsonValue({ maxDepth: 4 }), fc.integer({ min: 0, max: 3000 }), (compression, value, pad) => {
        // The profile refuses a __proto__ key anywhere (tested in cbor-strict): not a document to send.
        fc.pre(!JSON.stringify(value).includes('"__proto__"'));
        const { client, events, pump } = pair({ caps: [compression] });
        pump();
        const payload = { value, pad: 'p'.repeat(pad) };
        client.call('x', payload);
        pump();
        assert.deepEqual(ofType(events.server, 'call')[0]!.payload, JSON.parse(JSON.stringify(payload)));
      }),
      { numRuns: 300 },
    );
  });

  it('a session takes compressed and plain frames mixed, whatever their size', () => {
    const { server, events, pump } = pair({ caps: ['zstd'] });
    pump();
    const frame = (body: Uint8Array, flags: number) => {
      const head = Buffer.alloc(5);
      head.writeUInt32BE(body.length + 1);
      head[4] = flags;
      return Buffer.concat([head, body]);
    };
    const bodies = [callBody('a', transactions(4096)), callBody('b', 'small'), callBody('c', transactions(2048)), callBody('d', 'x')];
    server.receive(frame(bodies[0]!, 0)); // a sender may always send a frame plain
    server.receive(frame(zstd(bodies[1]!), 1)); // and may compress a small one
    server.receive(frame(zstd(bodies[2]!), 1));
    server.receive(frame(bodies[3]!, 0));
    pump();
    assert.deepEqual(
      ofType(events.server.concat(server.takeEvents()), 'call').map((c) => c.target),
      ['a', 'b', 'c', 'd'],
    );
  });

  describe('over real sockets', () => {
    let server: FluxarServer;
    before(async () => {
      server = await listen({ endpoints: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar'], logger: quiet });
      server.handle('echo', (payload) => payload);
    });
    after(() => server.close());

    for (const compression of COMPRESSIONS)
      it(`${compression} over TCP and WebSocket: a 64 KiB document both ways`, async () => {
        const doc = transactions(64 * 1024);
        for (const url of server.addresses) {
          const peer = await connect(url, { caps: [compression] });
          assert.deepEqual(peer.session.info!.caps, [compression]);
          assert.deepEqual(await peer.call('echo', doc), doc);
          await peer.close();
        }
      });
  });
});

describe('FLUXAR compression: bombs', () => {
  const MAX_FRAME = 1024 * 1024;
  let server: FluxarServer;
  before(async () => {
    server = await listen({ endpoints: ['tcp://127.0.0.1:0'], maxFrame: MAX_FRAME, logger: quiet });
    server.handle('echo', (payload) => payload);
  });
  after(() => server.close());

  /** A zstd frame that declares `claimed` bytes and holds one raw block of 5. */
  function forgedZstd(claimed: number): Buffer {
    const head = Buffer.alloc(9);
    head.writeUInt32LE(0xfd2fb528, 0);
    head[4] = (2 << 6) | 0x20; // 4-byte content size, single segment
    head.writeUInt32LE(claimed, 5);
    const block = Buffer.from([1 | (5 << 3), 0, 0, 1, 2, 3, 4, 5]); // last block, raw, 5 bytes
    return Buffer.concat([head, block]);
  }

  async function bombed(caps: Compression[], body: Uint8Array): Promise<{ code: number; message: string; grew: number }> {
    const raw = await RawConnection.open('tcp', server.addresses[0]!);
    await raw.handshake({ caps });
    // Decompressed bytes would live in ArrayBuffers, which is what is measured.
    const before = process.memoryUsage().arrayBuffers;
    raw.sendFrame(body, 1);
    const bye = await raw.waitFor((e) => e.target === 'bye' && e.error !== null, 'the bye');
    await raw.waitClosed();
    const grew = process.memoryUsage().arrayBuffers - before;
    return { code: bye.error!.code, message: bye.error!.message, grew };
  }

  it('a small zstd frame that claims 1 GiB: 413, refused from its header', async () => {
    const b = await bombed(['zstd'], forgedZstd(2 ** 30));
    assert.equal(b.code, 413);
    assert.match(b.message, /decompresses past 1048576 bytes/);
    assert.ok(b.grew < 2 * MAX_FRAME, `memory grew ${b.grew} bytes`);
  });

  it('a real zstd bomb (64 MiB of zeros in a few KiB): 413, and memory stays under 2 x max_frame', async () => {
    const bomb = zstd(callBody('echo', Buffer.alloc(64 * 1024 * 1024)));
    assert.ok(bomb.length < 64 * 1024, `${bomb.length} bytes`);
    const b = await bombed(['zstd'], bomb);
    assert.equal(b.code, 413);
    assert.ok(b.grew < 2 * MAX_FRAME, `memory grew ${b.grew} bytes`);
  });

  it('a zstd frame without a content size: 400', async () => {
    const b = await bombed(['zstd'], zstd(callBody('echo', 'x'.repeat(4000)), false));
    assert.equal(b.code, 400);
    assert.match(b.message, /does not declare its content size/);
  });

  it('two zstd frames back to back: 400', async () => {
    const one = zstd(callBody('echo', 'x'.repeat(4000)));
    const b = await bombed(['zstd'], Buffer.concat([one, one]));
    assert.equal(b.code, 400);
    assert.match(b.message, /more than one zstd frame/);
  });

  it('a zstd frame that holds more than it declares: 400, never more than declared is written', async () => {
    const real = zstd(callBody('echo', 'x'.repeat(40_000)));
    const lying = Buffer.from(real);
    assert.ok(zstdFrameInfo(real).contentSize! > 1000);
    // Rewrite the declared size smaller, in the same field: the content no longer fits it.
    const descriptor = lying[4]!;
    const at = descriptor & 0x20 ? 5 : 6;
    if (descriptor >> 6 === 1) lying.writeUInt16LE(1000 - 256, at);
    else if (descriptor >> 6 === 2) lying.writeUInt32LE(1000, at);
    else assert.fail(`unexpected size field in descriptor 0x${descriptor.toString(16)}`);
    assert.equal(zstdFrameInfo(lying).contentSize, 1000);
    const b = await bombed(['zstd'], lying);
    assert.equal(b.code, 400);
  });

  it('a gzip bomb and a deflate bomb: 413 at max_frame, memory stays under 2 x max_frame', async () => {
    const zeros = callBody('echo', Buffer.alloc(64 * 1024 * 1024));
    for (const [caps, bomb] of [
      [['gzip'], gzipSync(zeros)],
      [['deflate'], deflateRawSync(zeros)],
    ] as const) {
      const b = await bombed([...caps], bomb);
      assert.equal(b.code, 413, caps[0]);
      assert.ok(b.grew < 2 * MAX_FRAME, `${caps[0]}: memory grew ${b.grew} bytes`);
    }
  });

  it('garbage flagged as compressed is a 400 under every compression, never a crash', async () => {
    for (const compression of COMPRESSIONS) {
      const b = await bombed([compression], randomBytes(3000));
      assert.equal(b.code, 400, compression);
    }
    // The server still serves.
    const peer = await connect(server.addresses[0]!);
    assert.equal(await peer.call('echo', 'still here'), 'still here');
    await peer.close();
  });

  it('the zstd header reader never throws anything but a 400 on random bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.boolean(), (bytes, magic) => {
        const body = magic ? Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), bytes]) : Buffer.from(bytes);
        try {
          zstdFrameInfo(body);
        } catch (err) {
          assert.equal((err as { code?: number }).code, 400);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
