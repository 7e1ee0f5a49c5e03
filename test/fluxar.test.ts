// FLUXAR over real sockets: every transport, auth, RPC semantics and hostile peers.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { pino } from 'pino';
import { connect, FluxarError, type FluxarServer, listen, type Peer, secretTable, Session, StreamFrameSplitter, decodeEnvelope } from '../src/fluxar/mod.js';
import { makeTestCerts, type TestCerts } from './harness/tls.js';
import { until } from './harness/wait.js';

const quiet = pino({ level: 'silent' });
const run = promisify(execFile);

async function rejectsWith(promise: Promise<unknown>, code: number, message?: RegExp): Promise<FluxarError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof FluxarError, `expected FluxarError, got ${String(err)}`);
    assert.equal(err.code, code, `code ${err.code}: ${err.message}`);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected a ${code} rejection`);
}

/** A raw TCP client speaking FLUXAR by hand (through a client Session) for hostile tests. */
async function rawClient(url: string): Promise<{ socket: Socket; session: Session; frames: ReturnType<typeof decodeEnvelope>[] }> {
  const { port } = new URL(url);
  const socket = netConnect(Number(port), '127.0.0.1');
  await once(socket, 'connect');
  const session = new Session({ role: 'client', framing: 'stream' });
  const frames: ReturnType<typeof decodeEnvelope>[] = [];
  const splitter = new StreamFrameSplitter(16 * 1024 * 1024);
  socket.on('data', (chunk) => {
    for (const f of splitter.push(chunk)) frames.push(decodeEnvelope(f.body));
    if (session.state === 'handshake') {
      session.receive(chunk);
      session.takeEvents();
    }
  });
  socket.write(Buffer.concat(session.takeOutput()));
  await until(() => session.state === 'open', 'raw handshake');
  frames.length = 0;
  return { socket, session, frames };
}

describe('FLUXAR over sockets', () => {
  let certs: TestCerts;
  let server: FluxarServer;
  const sock = join(tmpdir(), `fluxrig-test-${process.pid}.sock`);

  before(async () => {
    certs = makeTestCerts();
    server = await listen({
      endpoints: ['tcp://127.0.0.1:0', 'tls://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar', 'wss://127.0.0.1:0/fluxar', `unix://${sock}`],
      tls: { key: certs.serverKey, cert: certs.serverCert },
      maxInFlight: 10_000,
      logger: quiet,
    });
    server
      .handle('echo', (payload) => payload)
      .handle('whoami', (_p, ctx) => ctx.principal)
      .handle('sleep', async (ms, ctx) => {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(resolve, ms as number);
          ctx.signal.addEventListener('abort', () => {
            clearTimeout(timer);
            aborted.push((ctx.signal.reason as FluxarError).code);
            reject(ctx.signal.reason);
          });
        });
        return ms;
      })
      .handle('boom', () => {
        throw new Error('database on fire');
      })
      .handle('forbidden', () => {
        throw new FluxarError(403, 'not for you', { data: { need: 'admin' } });
      })
      .handle('big', (n) => new Uint8Array(n as number));
  });
  after(() => server.close());
  const aborted: number[] = [];

  const tlsClient = () => ({ ca: certs.ca });

  it('serves the same handlers over tcp, tls, ws, wss and unix', async () => {
    const kinds = server.addresses.map((a) => a.split(':')[0]);
    assert.deepEqual(kinds, ['tcp', 'tls', 'ws', 'wss', 'unix']);
    for (const url of server.addresses) {
      const peer = await connect(url, { tls: tlsClient() });
      assert.deepEqual(await peer.call('echo', { url, n: 42, bytes: new Uint8Array([1, 2]) }), { url, n: 42, bytes: Buffer.from([1, 2]) });
      await peer.close();
    }
  });

  it('TLS is 1.3 and checks the server certificate', async () => {
    const tlsUrl = server.addresses[1]!;
    await rejectsWith(connect(tlsUrl), 503, /self-signed|unable to verify|certificate/i);
    const peer = await connect(tlsUrl, { tls: tlsClient() });
    const socket = (peer.transport as unknown as { socket: import('node:tls').TLSSocket }).socket;
    assert.equal(socket.getProtocol(), 'TLSv1.3');
    await peer.close();
  });

  it('requires client certificates when configured', async () => {
    const mtls = await listen({
      endpoints: ['tls://127.0.0.1:0'],
      tls: { key: certs.serverKey, cert: certs.serverCert, ca: certs.ca, requireClientCert: true },
      logger: quiet,
    });
    mtls.handle('echo', (p) => p);
    try {
      const [url] = mtls.addresses;
      const refused = connect(url!, { tls: tlsClient(), timeoutMs: 2000 }).then((p) => p.call('echo', 1));
      await assert.rejects(refused, FluxarError);
      const peer = await connect(url!, { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } });
      assert.equal(await peer.call('echo', 7), 7);
      await peer.close();
    } finally {
      await mtls.close();
    }
  });

  describe('auth schemes', () => {
    let authed: FluxarServer;
    before(async () => {
      const tokens = secretTable({ t0ken: { id: 'svc-a' } });
      const keys = secretTable({ k3y: { id: 'svc-b' } });
      authed = await listen({
        endpoints: ['tcp://127.0.0.1:0'],
        logger: quiet,
        auth: {
          bearer: ({ token }) => tokens(token),
          api_key: ({ key }) => keys(key),
          credentials: async ({ username, password }) => (username === 'ada' && password === 'lovelace' ? { id: 'ada' } : null),
          custom: { hmac: ({ data }) => (data === 'signed' ? { id: 'custom-user' } : null) },
        },
      });
      authed.handle('whoami', (_p, ctx) => ctx.principal?.id);
    });
    after(() => authed.close());

    const cases = [
      ['bearer', { scheme: 'bearer', token: 't0ken' }, { scheme: 'bearer', token: 'nope' }, 'svc-a'],
      ['api_key', { scheme: 'api_key', key: 'k3y' }, { scheme: 'api_key', key: 'k3' }, 'svc-b'],
      ['credentials', { scheme: 'credentials', username: 'ada', password: 'lovelace' }, { scheme: 'credentials', username: 'ada', password: 'x' }, 'ada'],
      ['custom', { scheme: 'custom', name: 'hmac', data: 'signed' }, { scheme: 'custom', name: 'other', data: 'signed' }, 'custom-user'],
    ] as const;
    for (const [name, good, bad, principal] of cases) {
      it(`${name}: accepted with the principal handed to handlers, refused with 401`, async () => {
        const peer = await connect(authed.addresses[0]!, { credentials: good });
        assert.equal(await peer.call('whoami'), principal);
        await peer.close();
        await rejectsWith(connect(authed.addresses[0]!, { credentials: bad }), 401, /unauthenticated/);
      });
    }

    it('no credentials: refused when verifiers are configured', async () => {
      await rejectsWith(connect(authed.addresses[0]!), 401);
    });
  });

  it('PSK peer trust over TCP', async () => {
    const psk = await listen({ endpoints: ['tcp://127.0.0.1:0'], psk: 'shared-secret', logger: quiet });
    psk.handle('echo', (p) => p);
    try {
      const peer = await connect(psk.addresses[0]!, { psk: 'shared-secret' });
      assert.equal(await peer.call('echo', 'trusted'), 'trusted');
      await peer.close();
      await rejectsWith(connect(psk.addresses[0]!, { psk: 'guess' }), 401, /PSK/);
      await rejectsWith(connect(psk.addresses[0]!), 401, /requires PSK/);
    } finally {
      await psk.close();
    }
  });

  it('answers out of order with thousands in flight on one connection', async () => {
    const peer = await connect(server.addresses[0]!);
    const slow = peer.call('sleep', 200);
    const fast = peer.call('echo', 'fast');
    const order: string[] = [];
    await Promise.all([slow.then(() => order.push('slow')), fast.then(() => order.push('fast'))]);
    assert.deepEqual(order, ['fast', 'slow'], 'a slow call delays no other');
    const many = await Promise.all(Array.from({ length: 5000 }, (_, i) => peer.call('echo', i)));
    assert.deepEqual(
      many,
      Array.from({ length: 5000 }, (_, i) => i),
    );
    await peer.close();
  });

  it('error paths: 404, 500 without a stack, a handler FluxarError with data, 413 for an oversize answer', async () => {
    const peer = await connect(server.addresses[0]!, { maxFrame: 64 * 1024 });
    await rejectsWith(peer.call('missing'), 404, /no handler for missing/);
    const boom = await rejectsWith(peer.call('boom'), 500, /^database on fire$/);
    assert.equal(boom.message.includes(' at '), false);
    const forbidden = await rejectsWith(peer.call('forbidden'), 403, /not for you/);
    assert.deepEqual(forbidden.data, { need: 'admin' });
    await rejectsWith(peer.call('big', 200 * 1024), 413, /exceeds the peer's maximum frame of 65536/);
    assert.equal(((await peer.call('big', 1000)) as Uint8Array).length, 1000, 'the connection survives');
    await rejectsWith(peer.call('echo', new Uint8Array(100 * 1024)), 413);
    await peer.close();
  });

  it('cancellation aborts the handler (499) and rejects the caller with 499', async () => {
    const peer = await connect(server.addresses[0]!);
    aborted.length = 0;
    const controller = new AbortController();
    const pending = peer.call('sleep', 5000, { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort();
    await rejectsWith(pending, 499, /cancelled/);
    await until(() => aborted.includes(499), 'the handler to see the cancel');
    await peer.close();
  });

  it('deadlines fire the handler signal and the caller gets 408', async () => {
    const peer = await connect(server.addresses[0]!);
    aborted.length = 0;
    // Only the callee enforces this deadline: with the caller enforcing the same budget, its
    // cancel (499) could reach the handler before the callee's own deadline fired.
    await rejectsWith(peer.call('sleep', 5000, { meta: { deadline_ms: 60 } }), 408, /deadline exceeded/);
    await until(() => aborted.includes(408), 'the handler to see the deadline');
    await peer.close();
  });

  it('answers 429 past the in-flight limit', async () => {
    const limited = await listen({ endpoints: ['tcp://127.0.0.1:0'], maxInFlight: 2, logger: quiet });
    limited.handle('sleep', (ms) => new Promise((resolve) => setTimeout(() => resolve(ms), ms as number)));
    try {
      const peer = await connect(limited.addresses[0]!);
      const results = await Promise.allSettled([peer.call('sleep', 100), peer.call('sleep', 100), peer.call('sleep', 100)]);
      assert.deepEqual(
        results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as FluxarError).code)),
        ['ok', 'ok', 429],
      );
      await peer.close();
    } finally {
      await limited.close();
    }
  });

  it('is symmetric: the server calls a connected client', async () => {
    const seen = once(server, 'peer');
    const peer = await connect(server.addresses[0]!, { handlers: { 'client.hello': (p) => `client says hi to ${String(p)}` } });
    const [serverSide] = (await seen) as [Peer];
    assert.equal(await serverSide.call('client.hello', 'server'), 'client says hi to server');
    await peer.close();
  });

  it('bye: in-flight calls finish, then the connection closes', async () => {
    const peer = await connect(server.addresses[0]!);
    const inFlight = peer.call('sleep', 100);
    const closing = peer.close();
    assert.equal(await inFlight, 100);
    await closing;
    await rejectsWith(peer.call('echo', 1), 503);
  });

  it('lost heartbeats close the connection and fail pending calls with 503', async () => {
    // A server that completes the handshake and then goes silent.
    const { createServer } = await import('node:net');
    const silent = createServer((socket) => {
      const session = new Session({ role: 'server', framing: 'stream', heartbeatMs: 50 });
      socket.on('data', (chunk) => {
        if (session.state !== 'handshake') return; // silent from now on
        session.receive(chunk);
        for (const e of session.takeEvents()) if (e.type === 'authenticate') session.accept({ id: 'x' });
        socket.write(Buffer.concat(session.takeOutput()));
      });
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    try {
      const port = (silent.address() as import('node:net').AddressInfo).port;
      const peer = await connect(`tcp://127.0.0.1:${port}`);
      const started = Date.now();
      await rejectsWith(peer.call('anything'), 503, /silent for 3 heartbeats/);
      assert.ok(Date.now() - started >= 100, 'after about three intervals');
      await peer.closed;
    } finally {
      silent.close();
    }
  });

  it('closes a connection that never says hello', async () => {
    const quick = await listen({ endpoints: ['tcp://127.0.0.1:0'], handshakeTimeoutMs: 150, logger: quiet });
    try {
      const socket = netConnect(Number(new URL(quick.addresses[0]!).port), '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.on('data', (c) => chunks.push(c));
      await once(socket, 'close');
      const [frame] = new StreamFrameSplitter(1 << 20).push(Buffer.concat(chunks));
      const env = decodeEnvelope(frame!.body);
      assert.equal(env.error?.code, 408);
      assert.match(env.error!.message, /no handshake within 150 ms/);
    } finally {
      await quick.close();
    }
  });

  it('refuses an oversize frame with 413 before its body is sent', async () => {
    const raw = await rawClient(server.addresses[0]!);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(64 * 1024 * 1024, 0); // claims 64 MiB; only the header is sent
    raw.socket.write(header);
    await once(raw.socket, 'close');
    assert.equal(raw.frames.at(-1)?.error?.code, 413);
  });

  it('survives random garbage from many connections and keeps serving', async () => {
    const port = Number(new URL(server.addresses[0]!).port);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 512 }), async (bytes) => {
        const socket = netConnect(port, '127.0.0.1');
        await once(socket, 'connect');
        socket.end(bytes);
        socket.resume();
        await once(socket, 'close');
      }),
      { numRuns: 60 },
    );
    const peer = await connect(server.addresses[0]!);
    assert.equal(await peer.call('echo', 'still here'), 'still here');
    await peer.close();
  });

  it('disconnects a peer that never reads once its write buffer is full', async () => {
    const bounded = await listen({ endpoints: ['tcp://127.0.0.1:0'], maxWriteBuffer: 1024 * 1024, maxFrame: 4 * 1024 * 1024, logger: quiet });
    bounded.handle('big', (n) => randomBytes(n as number)); // incompressible: deflate must not shrink it
    try {
      const raw = await rawClient(bounded.addresses[0]!);
      raw.socket.pause(); // never reads again
      for (let i = 0; i < 64; i++) {
        raw.session.call('big', 512 * 1024);
      }
      raw.socket.write(Buffer.concat(raw.session.takeOutput()));
      await until(() => bounded.peers.size === 0, 'the server to drop the non-reading peer', 15_000);
      const peer = await connect(bounded.addresses[0]!);
      assert.equal(((await peer.call('big', 10)) as Uint8Array).length, 10, 'the server keeps serving others');
      await peer.close();
      raw.socket.destroy();
    } finally {
      await bounded.close();
    }
  });

  it('listen() holds the same connection limits as a rack: per-IP cap (503 bye, HTTP 503 on ws) and the upgrade timeout', async () => {
    const limited = await listen({ endpoints: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0'], maxConnectionsPerIp: 2, upgradeTimeoutMs: 200, logger: quiet });
    limited.handle('echo', (p) => p);
    try {
      const [tcp, ws] = limited.addresses as [string, string];
      const { hostname, port } = new URL(ws);
      const idle = netConnect(Number(port), hostname);
      idle.on('error', () => {});
      const seen: string[] = [];
      for (const e of ['connect', 'data', 'end', 'close']) idle.on(e, () => seen.push(e));
      await until(() => seen.includes('close'), 'the listener to close a connection that never upgrades');
      assert.ok(!seen.includes('data'), 'closed without an answer: it was admitted, then timed out');
      const held = [await connect(tcp), await connect(tcp)];
      await assert.rejects(
        connect(tcp),
        (err: unknown) => err instanceof FluxarError && err.code === 503 && /limit of 2 connections from one address/.test(err.message),
      );
      await Promise.all(held.map((p) => p.close()));
      const wsHeld = [await connect(ws), await connect(ws)];
      await assert.rejects(connect(ws), /503/);
      await Promise.all(wsHeld.map((p) => p.close()));
    } finally {
      await limited.close();
    }
  });

  it('the fluxrig call CLI prints the answer', async () => {
    const bin = new URL('../src/cli/main.js', import.meta.url).pathname;
    const { stdout } = await run(process.execPath, [bin, 'call', server.addresses[0]!, 'echo', '{"amount": 100}']);
    assert.deepEqual(JSON.parse(stdout), { amount: 100 });
    await assert.rejects(
      run(process.execPath, [bin, 'call', server.addresses[0]!, 'missing', 'null']),
      (err: { code: number; stderr: string }) => err.code === 1 && /404 not_found: no handler for missing/.test(err.stderr),
    );
  });
});
