// The socket transport over real TCP connections: when it gives a written frame's buffer back
// for reuse (a buffer given back too early would send another flush's bytes in its place), and
// a client's reads into slabs (what it hands on must not change under the reader).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { connect, listen } from '../src/fluxar/mod.js';
import { SocketTransport } from '../src/fluxar/transport.js';
import { until } from './harness/wait.js';

const FRAME_BYTES = 256 * 1024;
/** 16 MiB: more than loopback's kernel buffers hold, so the socket has to queue. */
const FRAMES = 64;

describe('SocketTransport gives buffers back', () => {
  let receiver: Socket;
  let sender: Socket;
  let close: () => Promise<void>;

  before(async () => {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'connection');
    const port = (server.address() as { port: number }).port;
    sender = tcpConnect(port, '127.0.0.1');
    await once(sender, 'connect');
    [receiver] = (await accepted) as [Socket];
    receiver.pause();
    close = async () => {
      sender.destroy();
      receiver.destroy();
      server.close();
      await once(server, 'close');
    };
  });
  after(() => close());

  it('only once the kernel has every byte, at once when it took them in the write', async () => {
    const transport = new SocketTransport('tcp', sender);
    const givenBack: number[] = [];
    let givenBackInWrite = 0;
    let writing = -1;
    const frames: Uint8Array[] = Array.from({ length: FRAMES }, (_, i) => Buffer.alloc(FRAME_BYTES, i));
    for (let i = 0; i < FRAMES; i++) {
      writing = i;
      transport.write([frames[i]!], (frame) => {
        const index = frames.indexOf(frame);
        assert.ok(index >= 0, 'a frame it was given');
        if (index === writing) givenBackInWrite++;
        givenBack.push(index);
        // What a session does with a buffer given back: the next flush writes into it.
        frame.fill(0xee);
      });
    }
    writing = -1;
    assert.ok(transport.backlog > 0, 'the receiver is not reading: the socket queues');
    assert.ok(givenBack.length < FRAMES, 'frames still queued are not given back');

    receiver.resume();
    let received = 0;
    const wrong: string[] = [];
    receiver.on('data', (bytes: Buffer) => {
      for (let i = 0; i < bytes.length; i++) {
        const expected = Math.floor((received + i) / FRAME_BYTES);
        if (bytes[i] !== expected && wrong.length < 3) wrong.push(`byte ${received + i}: ${bytes[i]}, expected ${expected}`);
      }
      received += bytes.length;
    });
    await until(() => received === FRAMES * FRAME_BYTES, 'every byte at the receiver');
    assert.deepEqual(wrong, [], 'every frame arrived as written: none was reused while queued');
    await until(() => givenBack.length === FRAMES, 'every frame given back once the socket drained');
    assert.deepEqual(
      [...givenBack].sort((a, b) => a - b),
      frames.map((_, i) => i),
      'each frame once',
    );
    assert.ok(givenBackInWrite > 0, 'a frame the kernel took whole is given back in its write');
  });
});

/**
 * Chunk `i`: bytes from a generator seeded with i. Incompressible, so frames are not compressed
 * (an inflated payload is a copy, not a view of the read), and each chunk's bytes are its own.
 */
function numbered(i: number, size: number): Buffer {
  const bytes = Buffer.allocUnsafe(size);
  let x = (i + 1) * 2654435761;
  for (let at = 0; at < size; at++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[at] = x & 0xff;
  }
  return bytes;
}

describe('A client socket reads into slabs', () => {
  // Each chunk a view of the slab its read went into: small ones (many reads share a slab) and
  // 4 KiB ones (reads fill slabs, and new slabs follow), 400 KB and 2 MB.
  for (const [chunks, size] of [
    [2000, 200],
    [500, 4096],
  ] as const) {
    it(`and what it hands on stays as it arrived: ${chunks} chunks of ${size} B kept across many reads are intact`, async () => {
      const server = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: pino({ level: 'silent' }) });
      server.handleStream('numbered', function* () {
        for (let i = 0; i < chunks; i++) yield numbered(i, size);
      });
      const peer = await connect(server.addresses[0]!);
      try {
        const kept: Uint8Array[] = [];
        const stream = peer.stream('numbered', null, { credit: 64 });
        for await (const chunk of stream) kept.push(chunk as Uint8Array);
        await stream.result;
        assert.equal(kept.length, chunks);
        // A frame cut between two reads is copied whole; the others are views that a reuse would change.
        const views = kept.filter((chunk) => chunk.buffer.byteLength === 64 * 1024).length;
        assert.ok(views >= chunks / 2, `most chunks are views of a read slab (${views} of ${chunks})`);
        const wrong = kept.findIndex((chunk, i) => !numbered(i, size).equals(chunk));
        assert.equal(wrong, -1, `chunk ${wrong} changed after it was handed on`);
      } finally {
        await peer.close();
        await server.close();
      }
    });
  }

  it('and with copyBuffers a payload is a copy of its own, holding no slab', async () => {
    const server = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: pino({ level: 'silent' }) });
    server.handleStream('numbered', function* () {
      for (let i = 0; i < 200; i++) yield numbered(i, 200);
    });
    const peer = await connect(server.addresses[0]!, { copyBuffers: true });
    try {
      const kept: Uint8Array[] = [];
      const stream = peer.stream('numbered', null, { credit: 64 });
      for await (const chunk of stream) kept.push(chunk as Uint8Array);
      await stream.result;
      assert.equal(kept.length, 200);
      const wrong = kept.findIndex((chunk, i) => !numbered(i, 200).equals(chunk));
      assert.equal(wrong, -1, `chunk ${wrong} as sent`);
      const slabViews = kept.filter((chunk) => chunk.buffer.byteLength === 64 * 1024).length;
      assert.equal(slabViews, 0, 'no payload is a view of a read slab');
    } finally {
      await peer.close();
      await server.close();
    }
  });
});
