// End-to-end encryption (docs/fluxar-spec.md section 19): every pattern over real sockets through
// a recording proxy, tampering in transit (bit flips, replays, reordering, truncated tags,
// stripped capabilities, edited hellos), forward secrecy, rekeying, and a rack that holds its key
// in its workers.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { FrameCiphers, helloPrologue, REKEY_INTERVAL } from '../src/fluxar/e2e.js';
import {
  connect,
  decodeEnvelope,
  encodeEnvelope,
  type Envelope,
  type FluxarServer,
  FrameFlag,
  generateKeyPair,
  keyPairFrom,
  listen,
  MessageType,
  secretTable,
  Session,
  StreamFrameSplitter,
} from '../src/fluxar/mod.js';
import { CipherState, HandshakeState } from '../src/fluxar/noise.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { errorOf } from './harness/errors.js';
import { ofType, pair } from './harness/session-pair.js';

const quiet = pino({ level: 'silent' });
const run = promisify(execFile);
const SECRET = 'the-payload-nobody-between-may-read';

/** A TCP proxy that records what passes each way. */
async function recordingProxy(target: string): Promise<{ url: string; up: Buffer[]; down: Buffer[]; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const up: Buffer[] = [];
  const down: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = netConnect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.on('data', (b) => {
      up.push(b);
      upstream.write(b);
    });
    upstream.on('data', (b) => {
      down.push(b);
      client.write(b);
    });
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      a.on('close', () => b.destroy());
      a.on('error', () => {});
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address() as { port: number };
  return {
    url: `tcp://127.0.0.1:${address.port}`,
    up,
    down,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

function frames(chunks: Buffer[]): Array<{ flags: number; body: Uint8Array }> {
  return new StreamFrameSplitter(16 * 1024 * 1024).push(Buffer.concat(chunks));
}

describe('FLUXAR end-to-end encryption over real sockets', () => {
  const serverKey = generateKeyPair();
  let server: FluxarServer;
  let pskServer: FluxarServer;
  before(async () => {
    const tokens = secretTable({ 't0ken-sealed': { id: 'svc-a' } });
    server = await listen({
      endpoints: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar'],
      logger: quiet,
      e2e: { staticKey: serverKey },
      auth: { bearer: ({ token }) => tokens(token), allowAnonymous: true },
    });
    server.handle('echo', (payload, ctx) => ({ payload, by: ctx.principal?.id, key: ctx.peer.session.peerStaticKey?.length ?? 0 }));
    pskServer = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet, psk: 'shared-secret' });
    pskServer.handle('echo', (payload) => payload);
  });
  after(async () => {
    await server.close();
    await pskServer.close();
  });

  const clientKey = generateKeyPair();
  for (const [pattern, e2e] of [
    ['NN', {}],
    ['NK', { serverKey: serverKey.publicKey }],
    ['IK', { serverKey: serverKey.publicKey, staticKey: clientKey }],
  ] as const) {
    it(`${pattern}: calls go through, and the wire carries only sealed frames after the client hello`, async () => {
      const proxy = await recordingProxy(server.addresses[0]!);
      try {
        const peer = await connect(proxy.url, { e2e, credentials: { scheme: 'bearer', token: 't0ken-sealed' } });
        assert.ok(peer.session.info!.caps.includes('noise'));
        const answer = (await peer.call('echo', { secret: SECRET, pad: 'x'.repeat(3000) })) as { payload: { secret: string }; by: string; key: number };
        assert.equal(answer.payload.secret, SECRET);
        assert.equal(answer.by, 'svc-a', 'the sealed credentials were verified');
        assert.equal(answer.key, pattern === 'IK' ? 32 : 0, 'IK proves the client key to the server');
        await peer.close();
        const wire = Buffer.concat([...proxy.up, ...proxy.down]);
        assert.equal(wire.indexOf(SECRET), -1, 'the payload never crosses in the clear');
        assert.equal(wire.indexOf('t0ken-sealed'), -1, 'nor do the credentials');
        const [clientHello, ...sealedUp] = frames(proxy.up);
        const [serverHello, ...sealedDown] = frames(proxy.down);
        assert.equal(clientHello!.flags, 0);
        assert.equal(serverHello!.flags, 0);
        assert.ok(sealedUp.length > 0 && sealedDown.length > 0);
        for (const f of [...sealedUp, ...sealedDown]) assert.equal(f.flags & 2, 2, 'every later frame is sealed');
      } finally {
        await proxy.close();
      }
    });
  }

  it('NNpsk0: a client with the PSK gets in, one with another PSK gets 401', async () => {
    const peer = await connect(pskServer.addresses[0]!, { psk: 'shared-secret', e2e: {} });
    assert.equal(await peer.call('echo', 'hi'), 'hi');
    await peer.close();
    const wrong = await errorOf(connect(pskServer.addresses[0]!, { psk: 'another', e2e: {} }));
    assert.equal(wrong.code, 401);
  });

  it('over WebSocket too, and a frame of nearly max_frame fits sealed on both transports', async () => {
    for (const url of server.addresses) {
      const peer = await connect(url, { e2e: { serverKey: serverKey.publicKey }, caps: [] });
      assert.equal(((await peer.call('echo', 'ws')) as { payload: string }).payload, 'ws');
      const big = randomBytes(1024 * 1024 - 200);
      const answer = (await peer.call('echo', big)) as { payload: Uint8Array };
      assert.ok(Buffer.from(answer.payload).equals(big), url);
      await peer.close();
    }
  });

  it('`fluxrig e2e keygen` writes a key; `fluxrig call --server-key` pins it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-e2e-cli-'));
    const cli = join(new URL('../../', import.meta.url).pathname, 'dist/src/cli/main.js');
    const { stdout: publicHex } = await run(process.execPath, [cli, 'e2e', 'keygen', '--out', join(dir, 'server.key')]);
    const privateHex = readFileSync(join(dir, 'server.key'), 'utf8').trim();
    assert.match(privateHex, /^[0-9a-f]{64}$/);
    assert.equal(Buffer.from(keyPairFrom(Buffer.from(privateHex, 'hex')).publicKey).toString('hex'), publicHex.trim());
    const keyed = await listen({
      endpoints: ['tcp://127.0.0.1:0'],
      logger: quiet,
      e2e: { staticKey: keyPairFrom(Buffer.from(privateHex, 'hex')), require: true },
    });
    try {
      keyed.handle('echo', (p) => p);
      const { stdout } = await run(process.execPath, [cli, 'call', keyed.addresses[0]!, 'echo', '{"n": 7}', '--server-key', publicHex.trim()]);
      assert.deepEqual(JSON.parse(stdout), { n: 7 });
      const wrong = await run(process.execPath, [cli, 'call', keyed.addresses[0]!, 'echo', '1', '--server-key', '00'.repeat(32)]).then(
        () => '',
        (err: { stderr: string }) => err.stderr,
      );
      assert.match(wrong, /400 bad_request: end-to-end handshake failed/);
    } finally {
      await keyed.close();
    }
  });

  it('a client that pins another key is refused; a server that requires E2E refuses a plain client', async () => {
    const pinnedWrong = await errorOf(connect(server.addresses[0]!, { e2e: { serverKey: generateKeyPair().publicKey } }));
    assert.equal(pinnedWrong.code, 400);
    assert.match(pinnedWrong.message, /end-to-end handshake failed/);
    const strict = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet, e2e: { require: true } });
    try {
      const plain = await errorOf(connect(strict.addresses[0]!));
      assert.equal(plain.code, 400);
      assert.match(plain.message, /requires end-to-end encryption/);
    } finally {
      await strict.close();
    }
  });

  it('a client that asked for E2E refuses a server that answers in plaintext', async () => {
    const plainOnly = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet, e2e: false });
    try {
      const err = await errorOf(connect(plainOnly.addresses[0]!, { e2e: {} }));
      assert.equal(err.code, 400);
      assert.match(err.message, /did not agree to end-to-end encryption/);
    } finally {
      await plainOnly.close();
    }
  });
});

/** Two sans-I/O sessions with E2E, open, and a call's sealed frame from the client. */
function openPair(clientE2e = {}, serverE2e = {}) {
  const p = pair({ e2e: clientE2e }, { e2e: serverE2e });
  p.pump();
  assert.equal(p.client.state, 'open');
  return p;
}

function sealedCall(client: Session, payload: unknown): Buffer {
  client.call('echo', payload);
  return Buffer.concat(client.takeOutput());
}

function closedWith(session: Session): { code: number; reason: string } | undefined {
  return ofType(session.takeEvents(), 'closed')[0];
}

describe('FLUXAR end-to-end encryption under tampering (sans-I/O)', () => {
  it('a flipped bit in a sealed frame is a 400 bye', () => {
    const { client, server } = openPair();
    for (const at of [4, 5, 20, -1]) {
      const p = openPair();
      const frame = sealedCall(p.client, 'hello');
      frame[at < 0 ? frame.length + at : at]! ^= 1;
      p.server.receive(frame);
      const closed = closedWith(p.server);
      assert.equal(closed?.code, 400, `bit flipped at ${at}`);
    }
    assert.equal(client.state, 'open');
    assert.equal(server.state, 'open');
  });

  it('a replayed frame and a reordered pair fail; the genuine order goes through', () => {
    const replay = openPair();
    const one = sealedCall(replay.client, 1);
    replay.server.receive(one);
    replay.server.receive(one);
    assert.match(closedWith(replay.server)?.reason ?? '', /authentication tag/);

    const reorder = openPair();
    sealedCall(reorder.client, 'a');
    const b = sealedCall(reorder.client, 'b');
    reorder.server.receive(b);
    assert.equal(closedWith(reorder.server)?.code, 400);

    const inOrder = openPair();
    inOrder.server.receive(sealedCall(inOrder.client, 'a'));
    inOrder.server.receive(sealedCall(inOrder.client, 'b'));
    assert.deepEqual(
      ofType(inOrder.server.takeEvents(), 'call').map((c) => c.payload),
      ['a', 'b'],
    );
  });

  it('a truncated tag (a 4-byte tag) and a plaintext frame in an encrypted session are refused', () => {
    const p = openPair();
    const frame = sealedCall(p.client, 'hello');
    const cut = Buffer.from(frame.subarray(0, frame.length - 12));
    cut.writeUInt32BE(cut.length - 4, 0);
    p.server.receive(cut);
    assert.equal(closedWith(p.server)?.code, 400);

    const q = openPair();
    const plain = encodeEnvelope({ type: MessageType.Call, id: Buffer.alloc(16, 1), ref: null, target: 'echo', meta: null, payload: 1, error: null });
    const head = Buffer.alloc(5);
    head.writeUInt32BE(plain.length + 1);
    q.server.receive(Buffer.concat([head, plain]));
    assert.match(closedWith(q.server)?.reason ?? '', /plaintext frame in an end-to-end encrypted session/);
  });

  /** The client's hello, decoded and edited by `edit`, handed to the server. */
  function tamperClientHello(edit: (payload: Record<string, unknown>) => void, serverE2e = {}, clientE2e = {}) {
    const client = new Session({ role: 'client', framing: 'stream', e2e: clientE2e });
    const server = new Session({ role: 'server', framing: 'stream', e2e: serverE2e });
    const [hello] = frames(client.takeOutput().map((b) => Buffer.from(b)));
    const env = decodeEnvelope(hello!.body, { copyBuffers: true }) as Envelope;
    edit(env.payload as Record<string, unknown>);
    const body = encodeEnvelope(env);
    const head = Buffer.alloc(5);
    head.writeUInt32BE(body.length + 1);
    server.receive(Buffer.concat([head, body]));
    for (const e of server.takeEvents()) if (e.type === 'authenticate') server.accept({ id: 'x' });
    for (const b of server.takeOutput()) client.receive(b);
    return { client, server };
  }

  it('a stripped noise capability is detected by the client', () => {
    const { client } = tamperClientHello((p) => {
      p.caps = (p.caps as string[]).filter((c) => c !== 'noise');
    });
    assert.match(closedWith(client)?.reason ?? '', /did not agree to end-to-end encryption/);
  });

  it('an edited client hello breaks the handshake: the client refuses (NN), the server refuses (NK)', () => {
    const nn = tamperClientHello((p) => {
      p.max_frame = 4096;
    });
    assert.match(closedWith(nn.client)?.reason ?? '', /end-to-end handshake failed/);
    const key = generateKeyPair();
    const nk = tamperClientHello(
      (p) => {
        p.caps = ['deflate', 'noise'];
      },
      { staticKey: key },
      { serverKey: key.publicKey },
    );
    // The server's refusal reaches the client as the answer to its hello.
    assert.match(closedWith(nk.client)?.reason ?? '', /end-to-end handshake failed: bad authentication tag/);
    assert.equal(nk.server.state, 'closed');
  });

  it('an edited server hello (a compression stripped from its caps) is detected by the client', () => {
    const client = new Session({ role: 'client', framing: 'stream', e2e: {} });
    const server = new Session({ role: 'server', framing: 'stream' });
    for (const b of client.takeOutput()) server.receive(b);
    for (const e of server.takeEvents()) if (e.type === 'authenticate') server.accept({ id: 'x' });
    const [hello] = frames(server.takeOutput().map((b) => Buffer.from(b)));
    const env = decodeEnvelope(hello!.body, { copyBuffers: true }) as Envelope;
    const p = env.payload as Record<string, unknown>;
    p.caps = (p.caps as string[]).filter((c) => c !== 'zstd');
    const body = encodeEnvelope(env);
    const head = Buffer.alloc(5);
    head.writeUInt32BE(body.length + 1);
    client.receive(Buffer.concat([head, body]));
    assert.match(closedWith(client)?.reason ?? '', /edited in transit/);
  });

  it("a recorded session cannot be opened with the server's long-term key (forward secrecy)", () => {
    const serverKey = generateKeyPair();
    const client = new Session({ role: 'client', framing: 'stream', e2e: { serverKey: serverKey.publicKey } });
    const server = new Session({ role: 'server', framing: 'stream', e2e: { staticKey: serverKey } });
    const recordedUp: Buffer[] = [];
    const pump = () => {
      for (let i = 0; i < 10; i++) {
        const up = client.takeOutput().map((b) => Buffer.from(b));
        recordedUp.push(...up);
        for (const b of up) server.receive(b);
        for (const b of server.takeOutput()) client.receive(b);
        for (const e of server.takeEvents()) if (e.type === 'authenticate') server.accept({ id: 'x' });
      }
    };
    pump();
    client.call('echo', SECRET);
    pump();
    const [hello, ...sealed] = frames(recordedUp);
    // An attacker with the server's private key replays the client hello into a new responder:
    // the first message reads (es uses the long-term key), but ee needs the server's ephemeral
    // of that session, which is gone: the keys it derives open none of the recorded frames.
    const env = decodeEnvelope(hello!.body, { copyBuffers: true });
    const offer = (env.payload as { noise: { msg: Uint8Array } }).noise;
    const prologueBody = Buffer.from(hello!.body);
    const attacker = new HandshakeState({ pattern: 'NK', initiator: false, prologue: helloPrologue(prologueBody, offer.msg)!, staticKey: serverKey });
    attacker.readMessage(offer.msg);
    attacker.writeMessage(new Uint8Array(0));
    const { receive } = attacker.split();
    const ciphers = new FrameCiphers(new CipherState(), receive);
    for (const f of sealed) assert.throws(() => ciphers.open(f.body, f.flags));
  });

  it('each direction rekeys every 2^20 frames, in step on both sides', () => {
    const key = generateKeyPair().privateKey;
    const make = () => {
      const c = new CipherState();
      c.initializeKey(key);
      c.nonce = REKEY_INTERVAL - 2n;
      return c;
    };
    const sender = new FrameCiphers(make(), new CipherState());
    const receiver = new FrameCiphers(new CipherState(), make());
    // A receiver that never rekeys loses step at the boundary.
    const staleReceive = make();
    staleReceive.rekey = () => {};
    const stale = new FrameCiphers(new CipherState(), staleReceive);
    for (let i = 0; i < 4; i++) {
      const frame = sender.seal(Buffer.from(`frame ${i}`), 0, 'message');
      assert.equal(frame[0], FrameFlag.Encrypted);
      const sealed = frame.subarray(1);
      assert.equal(receiver.open(sealed, FrameFlag.Encrypted).toString(), `frame ${i}`);
      const opened = (() => {
        try {
          return stale.open(sealed, FrameFlag.Encrypted).toString();
        } catch {
          return null;
        }
      })();
      assert.equal(opened, i < 2 ? `frame ${i}` : null, `frame ${i}, the stale receiver`);
    }
  });
});

describe('a rack with end-to-end encryption', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fluxrig-e2e-'));
  const key = generateKeyPair();
  let rack: Rack;
  before(async () => {
    writeFileSync(join(dir, 'rack.key'), Buffer.from(key.privateKey).toString('hex'));
    const root = new URL('../../', import.meta.url).pathname;
    const doc = {
      meta: { name: 'e2e', version: '1' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'], e2e: { static_key: 'file:rack.key', require: true } } },
        { name: 'probe', type: 'wasm', config: { module: join(root, 'dist/test-gears/probe.wasm') } },
      ],
      wires: [
        { from: 'api.out', to: 'probe.in' },
        { from: 'probe.out', to: 'api.in' },
      ],
    };
    const file = join(dir, 'scenario.yaml');
    writeFileSync(file, stringify(doc));
    rack = new Rack({ scenario: parseScenario(stringify(doc), file), workers: 2, logger: quiet });
    await rack.start();
  });
  after(() => rack.stop());

  it('its workers hold the key: a client pinning it calls through; a plain client is refused', async () => {
    const peer = await connect(rack.addresses()[0]!, { e2e: { serverKey: key.publicKey } });
    const answer = (await peer.call('anything', { secret: SECRET })) as Record<string, unknown>;
    assert.equal(answer.secret, SECRET);
    await peer.close();
    const plain = await errorOf(connect(rack.addresses()[0]!));
    assert.equal(plain.code, 400);
  });
});
