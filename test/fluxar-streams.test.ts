// FLUXAR streams through the library over real sockets: the opener's FluxarStream, the
// server's stream handlers, credit and the transport's high-water mark, cancel, slow consumers.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import {
  connect,
  FluxarError,
  type FluxarServer,
  type FluxarStream,
  listen,
  type Peer,
  STREAM_HIGH_WATER_MARK,
  type StreamContext,
} from '../src/fluxar/mod.js';
import { FluxarServerProcess } from './harness/server-process.js';
import { until } from './harness/wait.js';

const quiet = pino({ level: 'silent' });

async function rejectsWith(promise: Promise<unknown>, code: number): Promise<FluxarError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof FluxarError, `expected FluxarError, got ${String(err)}`);
    assert.equal(err.code, code, `code ${err.code}: ${err.message}`);
    return err;
  }
  assert.fail(`expected a ${code} rejection`);
}

async function collect(stream: AsyncIterable<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

/** What the server's handlers saw, for assertions. */
const seen = {
  aborted: [] as number[],
  produced: 0,
  producerWaiting: false,
  afterAbort: 0,
};

describe('FLUXAR streams over sockets', () => {
  let server: FluxarServer;
  let tcp: string;
  let ws: string;

  before(async () => {
    server = await listen({ endpoints: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar'], maxFrame: 64 * 1024, logger: quiet });
    [tcp, ws] = server.addresses as [string, string];
    server
      .handleStream('words', async function* (_chunks, ctx: StreamContext) {
        const words = String((ctx.payload as { text: string }).text).split(' ');
        for (const word of words) yield word;
        return { count: words.length };
      })
      .handleStream('sum', async (chunks) => {
        let total = 0;
        for await (const n of chunks) total += n as number;
        return total;
      })
      .handleStream('upper', async function* (chunks) {
        for await (const s of chunks) yield String(s).toUpperCase();
        return 'done';
      })
      .handleStream('endless', async function* (_chunks, ctx) {
        const size = (ctx.payload as { size?: number } | null)?.size ?? 64;
        const limit = (ctx.payload as { limit?: number } | null)?.limit ?? Number.POSITIVE_INFINITY;
        // Random bytes: deflate would shrink zeros to nothing on the wire.
        const chunk = randomBytes(size);
        seen.produced = 0;
        try {
          while (seen.produced < limit) {
            seen.producerWaiting = true;
            yield chunk;
            seen.producerWaiting = false;
            seen.produced++;
            if (ctx.signal.aborted) seen.afterAbort++;
          }
        } finally {
          if (ctx.signal.aborted) seen.aborted.push((ctx.signal.reason as FluxarError).code);
        }
        return seen.produced;
      })
      .handleStream('countdown', function* (_chunks, ctx) {
        // A plain generator: no promise per chunk.
        let i = ctx.payload as number;
        try {
          while (i > 0) yield i--;
        } finally {
          if (ctx.signal.aborted) seen.aborted.push(499);
        }
        return 'liftoff';
      })
      .handleStream('fails', async function* () {
        yield 'one';
        yield 'two';
        throw new FluxarError(499, 'the producer gave up');
      })
      .handleStream('sized', async function* (_chunks, ctx) {
        const sizes = ctx.payload as number[];
        for (const n of sizes) {
          try {
            await ctx.write(new Uint8Array(n));
          } catch (err) {
            yield { refused: (err as FluxarError).code };
          }
        }
      })
      .handle('echo', (p) => p);
  });
  after(() => server.close());

  for (const kind of ['tcp', 'ws'] as const) {
    it(`out: an async generator streams its values, its return value ends the stream (${kind})`, async () => {
      const peer = await connect(kind === 'tcp' ? tcp : ws);
      const stream = peer.stream('words', { text: 'the quick brown fox' });
      assert.deepEqual(await collect(stream), ['the', 'quick', 'brown', 'fox']);
      assert.deepEqual(await stream.result, { count: 4 });
      await peer.close();
    });
  }

  it('a plain generator streams too, past its credit and its fair share of the thread, and stops on cancel', async () => {
    const peer = await connect(tcp);
    const stream = peer.stream('countdown', 5000, { credit: 100 });
    const got = (await collect(stream)) as number[];
    assert.equal(got.length, 5000);
    assert.deepEqual(got.slice(0, 3), [5000, 4999, 4998]);
    assert.equal(await stream.result, 'liftoff');
    seen.aborted.length = 0;
    const endless = peer.stream('countdown', Number.MAX_SAFE_INTEGER, { credit: 8 });
    for await (const _ of endless) break;
    await until(() => seen.aborted.length === 1, 'the generator was stopped');
    await peer.close();
  });

  it('in: the opener writes and ends; the handler reads them all and answers', async () => {
    const peer = await connect(tcp);
    const stream = peer.stream('sum', null, { mode: 'in' });
    for (let i = 1; i <= 1000; i++) await stream.write(i);
    stream.end();
    assert.equal(await stream.result, 500_500);
    await rejectsWith(stream.write(1), 400);
    await peer.close();
  });

  it('bidi over WebSocket: chunks go both ways at once', async () => {
    const peer = await connect(ws);
    const stream = peer.stream('upper', null, { mode: 'bidi' });
    const reading = collect(stream);
    for (const w of ['a', 'b', 'c']) await stream.write(w);
    stream.end();
    assert.deepEqual(await reading, ['A', 'B', 'C']);
    assert.equal(await stream.result, 'done');
    await peer.close();
  });

  it('credit 3 delivers exactly 3 chunks, then 2 more after resume {credit: 2}', async () => {
    const peer = await connect(tcp);
    const stream = peer.stream('endless', { limit: 100 }, { credit: 3, manualCredit: true });
    const got: unknown[] = [];
    const it = stream[Symbol.asyncIterator]();
    for (let i = 0; i < 3; i++) got.push((await it.next()).value);
    await until(() => seen.producerWaiting && seen.produced === 3, 'the producer waits for credit');
    assert.equal(got.length, 3);
    stream.grant(2);
    for (let i = 0; i < 2; i++) got.push((await it.next()).value);
    await until(() => seen.producerWaiting && seen.produced === 5, 'the producer waits again');
    assert.equal(got.length, 5);
    stream.cancel();
    await rejectsWith(stream.result, 499);
    await peer.close();
  });

  it('cancel from the opener fires the handler signal, and nothing reaches the application after it', async () => {
    const peer = await connect(tcp);
    seen.aborted.length = 0;
    seen.afterAbort = 0;
    const stream = peer.stream('endless', null);
    let read = 0;
    await assert.rejects(
      (async () => {
        for await (const _ of stream) {
          if (++read === 10) stream.cancel();
        }
      })(),
      (err: FluxarError) => err.code === 499,
    );
    assert.equal(read, 10, 'no chunk after the cancel');
    await rejectsWith(stream.result, 499);
    await until(() => seen.aborted.length === 1, 'the handler saw the abort');
    assert.equal(seen.aborted[0], 499);
    assert.equal(seen.afterAbort, 0, 'the generator was stopped at its yield');
    assert.equal(await peer.call('echo', 'still here'), 'still here');
    await peer.close();
  });

  it('breaking out of the loop cancels the stream; an AbortSignal does too', async () => {
    const peer = await connect(tcp);
    seen.aborted.length = 0;
    const stream = peer.stream('endless', null);
    for await (const _ of stream) break;
    await rejectsWith(stream.result, 499);
    await until(() => seen.aborted.length === 1, 'the handler saw the break');

    const controller = new AbortController();
    const second = peer.stream('endless', null, { signal: controller.signal });
    await second[Symbol.asyncIterator]().next();
    controller.abort();
    await rejectsWith(second.result, 499);
    await until(() => seen.aborted.length === 2, 'the handler saw the signal');
    await peer.close();
  });

  it('cancel from the responder: chunks before it arrive, then the iteration fails with its code', async () => {
    const peer = await connect(tcp);
    const stream = peer.stream('fails', null);
    const got: unknown[] = [];
    await assert.rejects(
      (async () => {
        for await (const c of stream) got.push(c);
      })(),
      (err: FluxarError) => err.code === 499 && /gave up/.test(err.message),
    );
    assert.deepEqual(got, ['one', 'two']);
    await peer.close();
  });

  it('a chunk at max_frame goes through; one over it is refused locally with 413 and the stream goes on', async () => {
    const peer = await connect(tcp);
    const maxFrame = 64 * 1024;
    // A chunk envelope: array(1) type(1) id(17) ref(17) target(1) meta(1) error(1), bytes head (3).
    const fits = maxFrame - 42;
    const stream = peer.stream('sized', [fits, fits + 1, 10]);
    const got = await collect(stream);
    assert.deepEqual(
      got.map((c) => (c instanceof Uint8Array ? c.length : c)),
      [fits, { refused: 413 }, 10],
    );
    await peer.close();
  });

  it('credit granted twice at 2^31 keeps the stream going', async () => {
    const peer = await connect(tcp);
    const stream = peer.stream('endless', { limit: 3 }, { credit: 0, manualCredit: true });
    stream.grant(2 ** 31);
    stream.grant(2 ** 31);
    assert.equal(peer.session.streamWindow(stream.key), 2 ** 32);
    assert.equal((await collect(stream)).length, 3);
    assert.equal(await stream.result, 3);
    await peer.close();
  });

  it('a producer holding credit waits on its transport high-water mark when the reader stops reading the socket', async () => {
    const accepted = once(server, 'peer');
    const peer = await connect(tcp);
    const [serverPeer] = (await accepted) as [Peer];
    const stream = peer.stream('endless', { size: 4096 }, { credit: 1_000_000_000, manualCredit: true });
    peer.transport.pause(); // the client stops reading its socket at all
    await until(() => seen.producerWaiting && serverPeer.transportBacklog() >= STREAM_HIGH_WATER_MARK, 'the producer blocks');
    const produced = seen.produced;
    // Credit allowed a billion chunks; the high-water mark plus the kernel's socket buffers stopped it.
    assert.ok(produced * 4096 < 64 * 1024 * 1024, `produced ${produced} chunks of 4 KiB`);
    peer.transport.resume();
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    await until(() => seen.produced > produced, 'the producer goes on once the socket drains');
    stream.cancel();
    await peer.close();
  });

  it('slow consumer: a reader that stops halts the producer; the server memory stays flat over 100,000 chunks; others are served', async () => {
    // The server runs in a process of its own: its RSS is the server's, not the client's.
    const child = await FluxarServerProcess.start();
    try {
      const url = child.url;
      const peer = await connect(url);
      const other = await connect(url);
      const state = async () => (await other.call('state')) as { produced: number; waiting: boolean };
      // 100,000 chunks measured after 30,000 that warm the server up (its JIT, V8's young
      // generation growing to its working size: not the stream's memory).
      const warmUp = 30_000;
      const chunks = warmUp + 100_000;
      const stream = peer.stream('endless', { size: 1024, limit: chunks }, { credit: 64 });
      const it = stream[Symbol.asyncIterator]();
      for (let i = 0; i < 10; i++) await it.next();
      let halted = await state();
      for (const deadline = Date.now() + 10_000; !halted.waiting && Date.now() < deadline; ) halted = await state();
      assert.ok(halted.waiting, 'the producer waits for credit');
      // The producer stopped within one window of the reader, not 100 MB ahead of it; another
      // connection is still served.
      assert.ok(halted.produced <= 10 + 64, `produced ${halted.produced} while the reader took 10`);
      assert.equal(await other.call('echo', 'served'), 'served');
      let read = 10;
      let rssBefore = 0;
      let peakRss = 0;
      for (;;) {
        const step = await it.next();
        if (step.done) break;
        if (++read === warmUp) rssBefore = child.rss;
        if (read > warmUp && read % 5_000 === 0) peakRss = Math.max(peakRss, child.rss);
      }
      assert.equal(read, chunks);
      assert.equal(await stream.result, chunks);
      const growthMb = (peakRss - rssBefore) / (1024 * 1024);
      assert.ok(growthMb < 20, `the server's RSS grew ${growthMb.toFixed(1)} MB over ${chunks - warmUp} chunks of 1 KiB`);
      await other.close();
      await peer.close();
    } finally {
      await child.stop();
    }
  });

  it('streams are symmetric: the server opens one to a client', async () => {
    const accepted = once(server, 'peer');
    const peer: Peer = await connect(tcp, {
      streamHandlers: {
        countdown: async function* (_chunks, ctx) {
          for (let i = ctx.payload as number; i > 0; i--) yield i;
          return 'liftoff';
        },
      },
    });
    const [serverPeer] = (await accepted) as [Peer];
    const stream: FluxarStream = serverPeer.stream('countdown', 3);
    assert.deepEqual(await collect(stream), [3, 2, 1]);
    assert.equal(await stream.result, 'liftoff');
    await peer.close();
  });

  it('unknown stream targets are 404; the peer limit is refused locally with 429', async () => {
    const small = await listen({ endpoints: ['tcp://127.0.0.1:0'], maxStreams: 1, logger: quiet });
    small.handleStream('hold', async (_chunks, ctx) => {
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    });
    try {
      const peer = await connect(small.addresses[0]!);
      await rejectsWith(peer.stream('nothing-here').result, 404);
      const held = peer.stream('hold');
      await rejectsWith(peer.stream('hold').result, 429);
      held.cancel();
      await rejectsWith(held.result, 499);
      await peer.close();
    } finally {
      await small.close();
    }
  });
});
