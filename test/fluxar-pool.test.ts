// PeerPool over real sockets: each call to the open connection with the fewest calls in flight,
// so the calls made on one connection's answers leave on it together; closed connections are
// passed over, and a pool that cannot open says why.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { FluxarError, type FluxarServer, listen, type Peer, PeerPool } from '../src/fluxar/mod.js';
import { freePort } from './harness/ports.js';
import { until } from './harness/wait.js';

describe('PeerPool', () => {
  let server: FluxarServer;
  /** The server side of each call, by its payload, and how to answer it. */
  const held = new Map<number, { conn: Peer; answer: () => void }>();

  before(async () => {
    server = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: pino({ level: 'silent' }) });
    server.handle('hold', (payload, ctx) => new Promise((resolve) => held.set(payload as number, { conn: ctx.peer, answer: () => resolve(payload) })));
    server.handle('echo', (payload) => payload);
  });
  after(async () => {
    await server.close();
  });

  it('sends each call to the connection with the fewest in flight, so calls made on answers leave together on the connection that answered', async () => {
    const pool = await PeerPool.connect(server.addresses[0]!, { size: 3, e2e: {} });
    try {
      const calls = [0, 1, 2, 3, 4, 5].map((n) => pool.call('hold', n));
      await until(() => held.size === 6, 'the six calls at the server');
      const conns = [...new Set([...held.values()].map((h) => h.conn))];
      assert.equal(conns.length, 3, 'spread over the three connections');
      // Equal loads: two each, in turn.
      assert.deepEqual(
        [0, 1, 2, 3, 4, 5].map((n) => conns.indexOf(held.get(n)!.conn)),
        [0, 1, 2, 0, 1, 2],
      );
      // The second connection answers its two: the next two calls go to it, not round the pool.
      held.get(1)!.answer();
      held.get(4)!.answer();
      assert.deepEqual(await Promise.all([calls[1], calls[4]]), [1, 4]);
      const more = [6, 7].map((n) => pool.call('hold', n));
      await until(() => held.size === 8, 'the two new calls at the server');
      assert.deepEqual(
        [6, 7].map((n) => conns.indexOf(held.get(n)!.conn)),
        [1, 1],
      );
      for (const h of held.values()) h.answer();
      assert.deepEqual(await Promise.all([...calls, ...more]), [0, 1, 2, 3, 4, 5, 6, 7]);
    } finally {
      held.clear();
      await pool.close();
    }
  });

  it('passes over a closed connection; with none open, a call fails with the reason', async () => {
    const pool = await PeerPool.connect(server.addresses[0]!, { size: 2 });
    pool.peers[0]!.destroy('gone');
    await until(() => !pool.peers[0]!.isOpen, 'the first connection closed');
    const answers = await Promise.all(Array.from({ length: 10 }, (_, n) => pool.call('echo', n)));
    assert.deepEqual(answers, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await pool.close();
    await assert.rejects(pool.call('echo', 1), (err: unknown) => err instanceof FluxarError && err.code === 503);
  });

  it('refuses a size below one, and fails to open with the connection error', async () => {
    await assert.rejects(PeerPool.connect(server.addresses[0]!, { size: 0 }), /a pool needs at least one connection, not 0/);
    const port = await freePort();
    await assert.rejects(
      PeerPool.connect(`tcp://127.0.0.1:${port}`, { size: 2 }),
      (err: unknown) => err instanceof FluxarError && /cannot connect/.test(err.message),
    );
  });
});
