// The eight findings of the attack on a rack, each as a regression case against a real rack
// process (the fluxrig CLI), over real sockets, with a canary connection that must keep getting
// correct answers and a process that must stay up.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { encodeCbor } from '../src/cbor/profile.js';
import { MessageType, type Peer } from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';
import { RawConnection } from './harness/raw.js';
import { quickstartScenario, type RackProcess, startCanaryRack, startRackProcess } from './harness/rack-process.js';
import { until } from './harness/wait.js';

const approved = { amount: 100, merchant: 'm-1', country: 'FR', card_country: 'FR' };
const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

/** A call envelope written by hand around CBOR fragments (hex) for meta and payload. */
function handCall(id: Uint8Array, metaHex: string, payloadHex: string, targetHex = '72 7061796d656e74732e617574686f72697a65'): Buffer {
  return Buffer.concat([hex('87 02 50'), id, hex(`f6 ${targetHex} ${metaHex} ${payloadHex} f6`)]);
}
const APPROVED_HEX = Buffer.from(encodeCbor(approved)).toString('hex');

async function opened(kind: 'tcp' | 'ws', url: string): Promise<RawConnection> {
  const conn = await RawConnection.open(kind, url);
  const answer = await conn.handshake();
  assert.equal(answer.error, null);
  return conn;
}

describe('a rack under hostile input', () => {
  let rack: RackProcess;
  let canary: Peer;
  let tcp: string;
  let ws: string;

  before(async () => {
    ({ rack, canary, tcp, ws } = await startCanaryRack());
  });
  after(async () => {
    await canary.close();
    assert.equal(await rack.stop(), 0);
  });
  afterEach(async () => {
    assert.equal(rack.exitCode(), null, 'the rack process is still running');
    const answer = (await canary.call('payments.authorize', approved, { timeoutMs: 5000 })) as Record<string, unknown>;
    assert.equal(answer.decision, 'approved', 'the canary still gets correct answers');
    assert.ok(!rack.lines.some((l) => /Maximum call stack|uncaught|unhandled/i.test(JSON.stringify(l))), 'nothing escaped to the process');
  });

  it('runs with the Node flags of the executable: a young generation small enough to spare the main thread endless marking', () => {
    const started = rack.lines.find((l) => l.msg === 'rack started');
    assert.ok((started?.node_flags as string[]).includes('--max-semi-space-size=4'), JSON.stringify(started?.node_flags));
  });

  it('1: a WebSocket message over the limit before any hello is refused with close 1009; the process lives', async () => {
    const conn = await RawConnection.open('ws', ws);
    conn.sendRaw(Buffer.alloc(3 * 1024 * 1024, 0x41));
    await conn.waitClosed();
    assert.equal(conn.closeCode, 1009);
  });

  it('1: a stream frame over the limit before any hello gets a 413 bye', async () => {
    const conn = await RawConnection.open('tcp', tcp);
    conn.sendRaw(hex('00300001 00'));
    await conn.waitClosed();
    assert.equal(conn.fatalBye?.error?.code, 413);
  });

  for (const kind of ['tcp', 'ws'] as const) {
    it(`2: calls whose meta holds bigints are answered, and so is the call after them in the same write (${kind})`, async () => {
      const conn = await opened(kind, kind === 'tcp' ? tcp : ws);
      const ids = [uuidv7(), uuidv7(), uuidv7(), uuidv7()];
      const bodies = [
        handCall(ids[0]!, 'a1 63 626967 1b 1000000000000000', APPROVED_HEX), // {big: 2^60}
        handCall(ids[1]!, 'a1 63 736d6c 1b 0000000000000005', APPROVED_HEX), // {sml: 5 in 8 bytes}
        handCall(ids[2]!, 'a1 63 62676e c2 49 010000000000000000', APPROVED_HEX), // {bgn: bignum 2^64}
        handCall(ids[3]!, 'f6', APPROVED_HEX),
      ];
      const frames = bodies.map((b) => (kind === 'tcp' ? Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), b]) : b));
      if (kind === 'tcp') {
        for (const [i, f] of frames.entries()) f.writeUInt32BE(bodies[i]!.length + 1, 0);
        conn.sendRaw(Buffer.concat(frames));
      } else for (const b of bodies) conn.sendFrame(b);
      for (const id of ids) {
        const answer = await conn.waitFor((e) => e.ref !== null && Buffer.compare(e.ref, id) === 0, 'each answer');
        assert.equal(answer.error, null);
        assert.equal((answer.payload as Record<string, unknown>).decision, 'approved');
      }
      conn.close();
    });
  }

  it('2: a cyclic-structure tag (28/29) fails its call with 400, never the call after it', async () => {
    const conn = await opened('tcp', tcp);
    const bad = uuidv7();
    const good = uuidv7();
    conn.sendFrame(handCall(bad, 'a1 61 78 d8 1c 81 d8 1d 00', APPROVED_HEX));
    conn.sendFrame(handCall(good, 'f6', APPROVED_HEX));
    assert.equal((await conn.waitFor((e) => e.ref !== null && Buffer.compare(e.ref, bad) === 0, 'the 400')).error?.code, 400);
    assert.equal((await conn.waitFor((e) => e.ref !== null && Buffer.compare(e.ref, good) === 0, 'the good answer')).error, null);
    conn.close();
  });

  it('3: a hello offering a 64-bit version is refused at once with 400, not left to the 408', async () => {
    const conn = await RawConnection.open('tcp', tcp);
    const answer = await conn.handshake({ versions: [2n ** 64n - 1n] });
    assert.equal(answer.error?.code, 400);
    assert.match(answer.error!.message, /unsupported version/);
    await conn.waitClosed();
  });

  it('4: "__proto__" is refused under a tag too (tag 42 here), with a 400 answer', async () => {
    const conn = await opened('tcp', tcp);
    const id = uuidv7();
    conn.sendFrame(handCall(id, 'f6', 'd8 2a a1 69 5f5f70726f746f5f5f 01'));
    const answer = await conn.waitFor((e) => e.ref !== null && Buffer.compare(e.ref, id) === 0, 'the 400');
    assert.equal(answer.error?.code, 400);
    assert.match(answer.error!.message, /tag 42 is not allowed/);
    const inside = uuidv7();
    conn.sendFrame(handCall(inside, 'f6', '81 a1 69 5f5f70726f746f5f5f 01'));
    assert.match((await conn.waitFor((e) => e.ref !== null && Buffer.compare(e.ref, inside) === 0, 'the 400')).error!.message, /"__proto__" is not allowed/);
    conn.close();
  });

  describe('5: CBOR conformance', () => {
    const refused: Array<[string, string, RegExp]> = [
      ['a duplicate amount (the last one must not win)', 'a2 66 616d6f756e74 18 64 66 616d6f756e74 19 09c4', /duplicate map key "amount"/],
      ['invalid UTF-8 in text', 'a1 68 6d65726368616e74 62 c328', /invalid UTF-8/],
      ['a non-text map key', 'a1 01 02', /map keys must be text strings/],
      ['1,000 levels of nesting', `${'81'.repeat(1000)}00`, /nesting deeper than 64 levels/],
      ['a huge declared count', '9b 00000000ffffffff', /exceeds the limit/],
    ];
    for (const [name, payloadHex, pattern] of refused) {
      it(`refuses ${name} with a 400 in our own words`, async () => {
        const conn = await opened('tcp', tcp);
        const id = uuidv7();
        conn.sendFrame(handCall(id, 'f6', payloadHex));
        const answer = await conn.waitFor((e) => e.ref !== null && Buffer.compare(e.ref, id) === 0, 'the 400');
        assert.equal(answer.error?.code, 400);
        assert.match(answer.error!.message, pattern);
        assert.doesNotMatch(answer.error!.message, /Cannot|property|undefined|stack/);
        conn.close();
      });
    }

    it('refuses a float where the type must be an integer with a 400 bye', async () => {
      const conn = await opened('tcp', tcp);
      conn.sendFrame(Buffer.concat([hex('87 f9 4000 50'), uuidv7(), hex('f6 61 74 f6 f6 f6')]));
      await conn.waitClosed();
      assert.equal(conn.fatalBye?.error?.code, 400);
      assert.match(conn.fatalBye!.error!.message, /type must be an unsigned integer, got a float/);
    });

    it('accepts an 8-byte type, an indefinite-length target and indefinite-length payload strings', async () => {
      const conn = await opened('ws', ws);
      const id = uuidv7();
      const target = '7f 68 7061796d656e7473 6a 2e617574686f72697a65 ff';
      const payload = 'bf 66 616d6f756e74 18 64 68 6d65726368616e74 7f 62 6d2d 61 31 ff ff';
      conn.sendFrame(Buffer.concat([hex('87 1b0000000000000002 50'), id, hex(`f6 ${target} f6 ${payload} f6`)]));
      const answer = await conn.waitFor((e) => e.ref !== null && Buffer.compare(e.ref, id) === 0, 'the answer');
      assert.equal(answer.error, null);
      assert.deepEqual(answer.payload, { amount: 100, merchant: 'm-1', fraud_score: 0, decision: 'approved' });
      conn.close();
    });
  });

  it('6: frames are held to the agreed maximum: a client that declared 4096 cannot send 5026 bytes', async () => {
    const conn = await RawConnection.open('tcp', tcp);
    await conn.handshake({ max_frame: 4096 });
    conn.call('payments.authorize', { ...approved, pad: 'x'.repeat(4950) });
    await conn.waitClosed();
    assert.equal(conn.fatalBye?.error?.code, 413);
  });

  it('7: a WebSocket text message gets the 400 bye of spec section 7', async () => {
    const socket = new WebSocket(ws);
    const frames: Buffer[] = [];
    socket.on('message', (d: Buffer) => frames.push(d));
    await once(socket, 'open');
    socket.send('hello?');
    await once(socket, 'close');
    const bye = frames.map((f) => f.subarray(1)).find((b) => b[1] === MessageType.Hello);
    assert.ok(bye !== undefined, 'a bye came before the close');
    assert.match(Buffer.from(bye).toString('latin1'), /text WebSocket messages are not FLUXAR frames/);
  });
});

describe('a rack with connection limits', () => {
  let rack: RackProcess;
  let tcp: string;
  let ws: string;

  before(async () => {
    rack = await startRackProcess(
      quickstartScenario({ listen: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar'], max_connections_per_ip: 3, upgrade_timeout_ms: 300 }),
      { drain_timeout_ms: 300 },
    );
    [tcp, ws] = rack.addresses as [string, string];
  });
  after(() => rack.stop());

  it('7: refuses a connection past the per-IP cap with a 503 bye, and takes one again once a slot frees', async () => {
    const held = await Promise.all([0, 1, 2].map(() => opened('tcp', tcp)));
    const refused = await RawConnection.open('tcp', tcp);
    await refused.waitClosed();
    assert.equal(refused.fatalBye?.error?.code, 503);
    assert.match(refused.fatalBye!.error!.message, /limit of 3 connections from one address/);
    held[0]!.close();
    // The slot frees once the rack has seen that close; until then a new connection is refused.
    const deadline = Date.now() + 10_000;
    let again: RawConnection | undefined;
    while (again === undefined) {
      assert.ok(Date.now() < deadline, 'a new connection was accepted within 10 s');
      const c = await RawConnection.open('tcp', tcp);
      if ((await c.handshake()).error === null) again = c;
      else c.close();
    }
    for (const c of [...held, again]) c.close();
  });

  it('7: refuses a WebSocket upgrade past the cap with HTTP 503', async () => {
    const held = await Promise.all([0, 1, 2].map(() => opened('ws', ws)));
    const socket = new WebSocket(ws);
    const [, response] = (await once(socket, 'unexpected-response')) as [unknown, { statusCode: number }];
    assert.equal(response.statusCode, 503);
    for (const c of held) c.close();
  });

  it('7: closes a WebSocket connection that never upgrades at upgrade_timeout_ms', async () => {
    const { hostname, port } = new URL(ws);
    const socket = netConnect(Number(port), hostname);
    const seen: string[] = [];
    for (const e of ['connect', 'data', 'end', 'close', 'error']) socket.on(e, () => seen.push(e));
    await once(socket, 'connect');
    socket.write('GET /fluxar HTTP/1.1\r\nHost: x\r\n'); // headers never finished
    await until(() => seen.includes('close'), `the rack to close the connection (saw ${seen.join(', ')})`);
  });

  it('8: drain sends the 503 bye to a peer that never answers bye, then closes; the rack exits 0', async () => {
    const conn = await opened('tcp', tcp);
    const code = rack.stop();
    await conn.waitFor((e) => e.target === 'bye' && e.error === null, 'the graceful bye');
    await conn.waitClosed();
    assert.equal(conn.fatalBye?.error?.code, 503);
    assert.match(conn.fatalBye!.error!.message, /drain timeout/);
    assert.equal(await code, 0);
  });
});
