// Session resume (docs/fluxar-spec.md section 20): positions, acks, the resume handshake, and a
// loopback proxy that cuts connections in the middle of streams, pipelined calls and QoS 1
// subscriptions. After each resume everything arrives exactly once, in order, and every handler
// ran once.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { ErrorCode } from '../src/fluxar/codes.js';
import {
  connect,
  decodeEnvelope,
  encodeEnvelope,
  type FluxarError,
  type FluxarServer,
  listen,
  MessageType,
  type Peer,
  type SessionEvent,
  StreamFrameSplitter,
} from '../src/fluxar/mod.js';
import { generateKeyPair } from '../src/fluxar/noise.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';
import { CuttingProxy } from './harness/proxy.js';
import { RawConnection } from './harness/raw.js';
import { Clock, ofType, pair } from './harness/session-pair.js';
import { until } from './harness/wait.js';

const quiet = pino({ level: 'silent' });

/** A random integer in [from, to). */
function between(from: number, to: number): number {
  return from + Math.floor(Math.random() * (to - from));
}

describe('FLUXAR resume: positions and acks (sans-I/O)', () => {
  it('positions count envelopes of types 2 to 7 per direction, never hellos, pings or byes', () => {
    const { client, server, pump } = pair({ resume: true });
    pump();
    assert.deepEqual(client.positions, { sent: 0, received: 0, peerReceived: 0, retained: 0 });
    client.call('a', 1);
    client.call('b', 2);
    pump();
    for (const e of ofType(server.takeEvents(), 'call')) server.respond(e.key, null);
    const calls = server.positions.received;
    assert.equal(calls, 2);
    pump();
    assert.equal(client.positions.sent, 2);
    assert.equal(client.positions.received, 0, 'the answers were not pumped yet');
  });

  it('a receiver reports its position every 256 envelopes, and the sender lets go of what the peer has', () => {
    const { client, server, events, pump } = pair({ resume: true });
    pump();
    for (let i = 0; i < 600; i++) client.call('x', i);
    assert.equal(client.positions.retained, 600);
    pump();
    assert.equal(server.positions.received, 600);
    // Acked at 256 and 512: what is left is the tail after the last report.
    assert.equal(client.positions.peerReceived, 512);
    assert.equal(client.positions.retained, 88);
    for (const e of ofType(events.server, 'call')) server.respond(e.key, e.payload);
    pump();
    assert.equal(ofType(events.client, 'result').length, 600);
  });

  it('nothing is retained when the server does not agree to resume', () => {
    const { client, server, events, pump } = pair({ resume: true }, { resumeMs: 0 });
    pump();
    assert.deepEqual(ofType(events.client, 'open')[0]!.info.caps, ['zstd']);
    assert.equal(ofType(events.client, 'open')[0]!.info.resumeMs, 0);
    client.call('x', 1);
    pump();
    assert.equal(client.positions.retained, 0);
    assert.equal(server.positions.received, 1);
  });

  it('a position report beyond what was sent is a 400 bye', () => {
    const { client, server, events, pump } = pair({ resume: true });
    pump();
    const ack = encodeEnvelope({ type: MessageType.Hello, id: uuidv7(), ref: null, target: 'ack', meta: null, payload: { pos: 5 }, error: null });
    const frame = Buffer.alloc(5 + ack.length);
    frame.writeUInt32BE(ack.length + 1, 0);
    frame.set(ack, 5);
    server.receive(frame);
    pump();
    const closed = ofType(events.server, 'closed')[0]!;
    assert.equal(closed.code, 400);
    assert.match(closed.reason, /position 5, but only 0 envelopes were sent/);
    assert.equal(client.state, 'closed');
  });

  it('while the resume buffer is full the session says so, and an ack makes it writable', () => {
    const { client, server, events, pump } = pair({ resume: true, resumeBuffer: 512 });
    pump();
    for (let i = 0; i < 512; i++) client.call('x', i);
    assert.equal(client.resumeBufferFull, true);
    pump();
    assert.equal(client.resumeBufferFull, false);
    assert.equal(ofType(events.client, 'writable').length, 1);
    assert.equal(server.positions.received, 512);
  });

  it('a dropped connection detaches a resumable session, which expires after resume_ms with 503 for what was pending', () => {
    const clock = new Clock();
    const { client, server, events, pump } = pair({ resume: true }, { resumeMs: 1000 }, clock);
    pump();
    client.call('x', 1);
    pump();
    server.transportClosed('cut');
    client.transportClosed('cut');
    assert.equal(ofType(server.takeEvents(), 'detached').length, 1);
    assert.equal(ofType(client.takeEvents(), 'detached').length, 1);
    assert.equal(server.detached, true);
    assert.equal(server.nextDeadline(), clock.t + 1000);
    assert.equal(client.nextDeadline(), clock.t + 2000, 'a client waits twice resume_ms, so the server has the last word');
    clock.t += 1000;
    server.tick();
    client.tick();
    const closed = ofType(server.takeEvents(), 'closed')[0]!;
    assert.equal(closed.code, ErrorCode.Unavailable);
    assert.match(closed.reason, /not resumed within 1000 ms/);
    assert.equal(client.state, 'open');
    clock.t += 1000;
    client.tick();
    const result = ofType(client.takeEvents(), 'result')[0]!;
    assert.equal(result.error?.code, ErrorCode.Unavailable);
    assert.equal(events.client.length > 0, true);
  });
});

describe('FLUXAR resume: cut connections, over a loopback proxy', () => {
  let server: FluxarServer;
  let proxy: CuttingProxy;
  let url: string;
  const ran = new Map<number, number>();
  let streamsRun = 0;

  before(async () => {
    server = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet, resumeMs: 5000 });
    server.handle('echo', (payload) => {
      const n = payload as number;
      ran.set(n, (ran.get(n) ?? 0) + 1);
      return n * 2;
    });
    server.handleStream('count', function* (_chunks, ctx) {
      streamsRun++;
      const n = ctx.payload as number;
      for (let i = 0; i < n; i++) yield { i, pad: 'x'.repeat(40) };
      return { done: n };
    });
    const port = Number(new URL(server.addresses[0]!.replace('tcp:', 'http:')).port);
    proxy = new CuttingProxy(port);
    url = await proxy.start();
  });

  after(async () => {
    await server.close();
    await proxy.close();
  });

  async function resumingClient(): Promise<{ peer: Peer; resumes: () => number }> {
    const peer = await connect(url, { resume: { minDelayMs: 10, maxDelayMs: 100 }, logger: quiet, caps: [] });
    let resumes = 0;
    peer.on('resumed', () => resumes++);
    return { peer, resumes: () => resumes };
  }

  for (const mode of ['both', 'half-open'] as const) {
    it(`a 10,000-chunk stream cut at a random byte (${mode}) arrives whole, once, in order, from one handler run`, async () => {
      const { peer, resumes } = await resumingClient();
      const before = streamsRun;
      // Each chunk is about 70 bytes on the wire: cut somewhere in the middle 80%.
      proxy.cutAfterDown(between(70_000, 560_000), mode);
      const stream = peer.stream('count', 10_000);
      let next = 0;
      for await (const chunk of stream) {
        assert.equal((chunk as { i: number }).i, next, 'chunks in order, none twice, none missing');
        next++;
      }
      assert.equal(next, 10_000);
      assert.deepEqual(await stream.result, { done: 10_000 });
      assert.equal(resumes(), 1);
      assert.equal(streamsRun - before, 1, 'the handler ran once');
      await peer.close();
    });

    it(`1,000 pipelined calls cut at a random byte (${mode}) are each answered once, and each handler ran once`, async () => {
      const { peer, resumes } = await resumingClient();
      const base = mode === 'both' ? 0 : 100_000;
      // A call is about 40 bytes up: cut inside the burst.
      proxy.cutAfterUp(between(2_000, 20_000), mode);
      const answers = await Promise.all(Array.from({ length: 1000 }, (_, i) => peer.call('echo', base + i)));
      assert.deepEqual(
        answers,
        Array.from({ length: 1000 }, (_, i) => (base + i) * 2),
      );
      for (let i = 0; i < 1000; i++) assert.equal(ran.get(base + i), 1, `call ${i} ran once`);
      assert.equal(resumes(), 1);
      await peer.close();
    });
  }

  it('a QoS 1 subscription cut mid-flow delivers every message once and in order', async () => {
    const { peer, resumes } = await resumingClient();
    const seen: number[] = [];
    const sub = peer.subscribe('ticks.>', {
      qos: 1,
      callback: (m) => {
        seen.push(m.payload as number);
        m.ack();
      },
    });
    await sub.ready;
    proxy.cutAfterDown(between(20_000, 60_000));
    for (let i = 0; i < 2000; i++) server.publish('ticks.a', i, { qos: 1 });
    await until(() => seen.length >= 2000, 'every message delivered');
    assert.deepEqual(
      seen,
      Array.from({ length: 2000 }, (_, i) => i),
    );
    assert.equal(resumes(), 1);
    await peer.close();
  });

  it('a replayed resume hello is refused with 404: the token it carries was rotated', async () => {
    const { peer, resumes } = await resumingClient();
    const first = proxy.connections;
    proxy.cut();
    await until(() => resumes() === 1, 'the resume');
    assert.equal(await peer.call('echo', 7), 14);
    // The resume connection's first bytes are its hello: sent again, on a connection of their own.
    const replay = proxy.sentOn(first);
    const splitter = new StreamFrameSplitter(1 << 20);
    const hello = splitter.push(replay)[0]!;
    assert.equal(decodeEnvelope(hello.body).type, MessageType.Hello);
    const raw = await RawConnection.open('tcp', server.addresses[0]!);
    raw.sendFrame(hello.body);
    const refusal = await raw.waitFor((e) => e.error !== null, 'the refusal');
    assert.equal(refusal.error!.code, ErrorCode.NotFound);
    await raw.waitClosed();
    assert.equal(await peer.call('echo', 8), 16, 'the live session is untouched');
    await peer.close();
  });

  it('a session not resumed within resume_ms is refused with 404, and what waited fails with it', async () => {
    const short = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet, resumeMs: 150 });
    short.handle('slow', () => new Promise(() => {}));
    const port = Number(new URL(short.addresses[0]!.replace('tcp:', 'http:')).port);
    const p = new CuttingProxy(port);
    try {
      const peerUrl = await p.start();
      const peer = await connect(peerUrl, { resume: { minDelayMs: 50, maxDelayMs: 50 }, logger: quiet });
      const pending = peer.call('slow', null).then(
        () => assert.fail('the call cannot succeed'),
        (e: unknown) => e as FluxarError,
      );
      await until(() => short.peers.size === 1, 'the server side');
      p.refusing = true;
      p.cut();
      await until(() => [...short.peers].every((x) => x.session.state === 'closed') || short.peers.size === 0, 'the server to expire the session', 5000);
      p.refusing = false;
      const err = await pending;
      assert.equal(err.code, ErrorCode.NotFound);
      assert.match(err.message, /could not be resumed/);
      const closed = await peer.closed;
      assert.equal(closed.code, ErrorCode.NotFound);
    } finally {
      await short.close();
      await p.close();
    }
  });

  it('closing a detached session ends it at once, and what waited fails with 503', async () => {
    const peer = await connect(url, { resume: { minDelayMs: 20, maxDelayMs: 20 }, logger: quiet });
    const pending = peer.call('echo', 'never').then(
      () => 'answered',
      (e: unknown) => (e as FluxarError).code,
    );
    proxy.refusing = true;
    try {
      proxy.cut();
      await until(() => peer.detached, 'the client to detach');
      await peer.close();
      const closed = await peer.closed;
      assert.equal(closed.code, ErrorCode.Unavailable);
      assert.match(closed.reason, /closed while waiting to be resumed/);
      const outcome = await pending;
      assert.ok(outcome === ErrorCode.Unavailable || outcome === 'answered', `the call failed with 503 or was answered before the cut (${outcome})`);
    } finally {
      proxy.refusing = false;
    }
  });

  it('a resume on a server that does not offer it is refused: the client session ends with the cut (503)', async () => {
    const plain = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet, resumeMs: 0 });
    try {
      const peer = await connect(plain.addresses[0]!, { resume: true, logger: quiet });
      assert.equal(peer.session.info!.resumeMs, 0);
      [...plain.peers][0]!.transport.destroy();
      const closed = await peer.closed;
      assert.equal(closed.code, ErrorCode.Unavailable);
    } finally {
      await plain.close();
    }
  });
});

describe('FLUXAR resume: with PSK, end-to-end encryption and WebSocket', () => {
  const serverKey = generateKeyPair();
  const psk = 'resume-test-psk-0123456789';

  async function cutCalls(options: { listen: Parameters<typeof listen>[0]; connect: Parameters<typeof connect>[1]; ws?: boolean }): Promise<void> {
    const server = await listen(options.listen);
    const ran = new Map<number, number>();
    server.handle('echo', (payload) => {
      const n = payload as number;
      ran.set(n, (ran.get(n) ?? 0) + 1);
      return n + 1;
    });
    const address = new URL(server.addresses[0]!.replace(/^(tcp|ws):/, 'http:'));
    const proxy = new CuttingProxy(Number(address.port));
    try {
      const base = await proxy.start();
      const url = options.ws ? `${base.replace('tcp:', 'ws:')}${address.pathname}` : base;
      const peer = await connect(url, { ...options.connect, resume: { minDelayMs: 10 }, logger: quiet });
      let resumes = 0;
      peer.on('resumed', () => resumes++);
      // 500 calls are about 16 KB up: cut inside the first half of the burst.
      proxy.cutAfterUp(between(1_000, 8_000));
      const answers = await Promise.all(Array.from({ length: 500 }, (_, i) => peer.call('echo', i)));
      assert.deepEqual(
        answers,
        Array.from({ length: 500 }, (_, i) => i + 1),
      );
      for (let i = 0; i < 500; i++) assert.equal(ran.get(i), 1, `call ${i} ran once`);
      assert.equal(resumes, 1);
      assert.equal(server.peers.size, 1, 'the resumed connection replaced the old one');
      await peer.close();
    } finally {
      await server.close();
      await proxy.close();
    }
  }

  it('resumes a PSK session: the resume proves the PSK again', () =>
    cutCalls({ listen: { endpoints: ['tcp://127.0.0.1:0'], logger: quiet, psk }, connect: { psk, caps: [] } }));

  it('resumes an end-to-end encrypted session with new keys: the token and position travel sealed', () =>
    cutCalls({
      listen: { endpoints: ['tcp://127.0.0.1:0'], logger: quiet, e2e: { staticKey: serverKey } },
      connect: { e2e: { serverKey: serverKey.publicKey }, caps: [] },
    }));

  it('resumes over WebSocket, compressed', () =>
    cutCalls({ listen: { endpoints: ['ws://127.0.0.1:0/fluxar'], logger: quiet }, connect: { caps: ['zstd'] }, ws: true }));

  it('a resume whose position the server cannot meet is refused with 409, and the live session is untouched', async () => {
    const server = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet });
    server.handle('echo', (payload) => payload);
    try {
      const peer = await connect(server.addresses[0]!, { resume: true, logger: quiet });
      const info = peer.session.info!;
      const raw = await RawConnection.open('tcp', server.addresses[0]!);
      const hello = await raw.handshake({ caps: ['resume'], resume: { session: info.id, token: info.resumeToken, pos: 1_000_000 } });
      assert.equal(hello.error?.code, ErrorCode.Conflict);
      assert.match(hello.error!.message, /cannot resume from position 1000000/);
      await raw.waitClosed();
      assert.equal(await peer.call('echo', 'still here'), 'still here');
      await peer.close();
    } finally {
      await server.close();
    }
  });
});

export type { SessionEvent };
