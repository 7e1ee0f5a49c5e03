// The FLUXAR state machine alone: bytes in, bytes and events out, time told by a fake clock.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeEnvelope, encodeStreamFrame, MessageType, Session } from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';
import { Clock, errorsIn, ofType, pair } from './harness/session-pair.js';

describe('FLUXAR session (sans-I/O)', () => {
  it('handshakes and agrees on version, caps and max frame', () => {
    const { client, server, events, pump } = pair({ maxFrame: 64 * 1024 }, { heartbeatMs: 1000 });
    pump();
    assert.equal(client.state, 'open');
    assert.equal(server.state, 'open');
    const [open] = ofType(events.client, 'open');
    assert.equal(open!.info.maxFrame, 64 * 1024);
    assert.equal(open!.info.heartbeatMs, 1000);
    assert.deepEqual(open!.info.caps, ['zstd']);
    assert.equal(open!.info.id.length, 16);
    assert.equal(open!.info.resumeToken.length, 16);
  });

  it('runs a call and its answer; responses may come in any order', () => {
    const { client, server, events, pump } = pair();
    pump();
    const a = client.call('svc.a', 1);
    const b = client.call('svc.b', 2);
    pump();
    const calls = ofType(events.server, 'call');
    assert.deepEqual(
      calls.map((c) => c.target),
      ['svc.a', 'svc.b'],
    );
    server.respond(calls[1]!.key, 'second');
    server.respond(calls[0]!.key, 'first');
    pump();
    const results = ofType(events.client, 'result');
    assert.deepEqual(
      results.map((r) => [r.key === a ? 'a' : r.key === b ? 'b' : '?', r.payload]),
      [
        ['b', 'second'],
        ['a', 'first'],
      ],
    );
  });

  it('refuses an unsupported version with 400 and closes', () => {
    const server = new Session({ role: 'server', framing: 'stream' });
    server.receive(
      encodeStreamFrame(
        0,
        encodeEnvelope({
          type: MessageType.Hello,
          id: uuidv7(),
          ref: null,
          target: null,
          meta: null,
          payload: { versions: [9], nonce: new Uint8Array(16) },
          error: null,
        }),
      ),
    );
    assert.equal(server.state, 'closed');
    const [closed] = ofType(server.takeEvents(), 'closed');
    assert.equal(closed!.code, 400);
    assert.match(closed!.reason, /unsupported version/);
  });

  it('accepts nothing before the handshake (400 and close)', () => {
    const server = new Session({ role: 'server', framing: 'stream' });
    server.receive(
      encodeStreamFrame(0, encodeEnvelope({ type: MessageType.Call, id: uuidv7(), ref: null, target: 'x', meta: null, payload: null, error: null })),
    );
    const [closed] = ofType(server.takeEvents(), 'closed');
    assert.equal(closed!.code, 400);
    assert.match(closed!.reason, /first message must be a hello/);
  });

  it('closes a connection with no handshake after the timeout', () => {
    const clock = new Clock();
    const server = new Session({ role: 'server', framing: 'stream', clock: clock.now, handshakeTimeoutMs: 5000 });
    clock.t += 4999;
    server.tick();
    assert.equal(server.state, 'handshake');
    clock.t += 1;
    server.tick();
    const [closed] = ofType(server.takeEvents(), 'closed');
    assert.equal(closed!.code, 408);
    assert.match(closed!.reason, /no handshake within 5000 ms/);
  });

  it('refuses an oversize frame with 413 before buffering its body', () => {
    const server = new Session({ role: 'server', framing: 'stream', maxFrame: 1024 });
    const header = Buffer.alloc(5);
    header.writeUInt32BE(2 * 1024 * 1024, 0);
    server.receive(header);
    const [closed] = ofType(server.takeEvents(), 'closed');
    assert.equal(closed!.code, 413);
    assert.match(closed!.reason, /exceeds the maximum of 1024/);
    assert.ok(server.takeOutput().length === 1, 'the peer is told why');
  });

  it('answers ping with pong, and closes after three silent heartbeats failing calls with 503', () => {
    const { client, server, pump, clock } = pair({}, { heartbeatMs: 100 });
    pump();
    const key = client.call('slow', null);
    pump();
    // Heartbeats flow both ways while both are alive.
    clock.t += 100;
    client.tick();
    server.tick();
    pump();
    assert.equal(client.state, 'open');
    // The server goes silent: the client hears nothing for three intervals.
    for (let i = 0; i < 3; i++) {
      clock.t += 100;
      client.tick();
      client.takeOutput();
    }
    assert.equal(client.state, 'closed');
    const [result] = ofType(client.takeEvents(), 'result');
    assert.equal(result!.key, key);
    assert.equal(result!.error!.code, 503);
    assert.match(result!.error!.message, /silent for 3 heartbeats/);
  });

  it('enforces deadlines on both sides (408)', () => {
    const { client, server, events, pump, clock } = pair();
    pump();
    const key = client.call('slow', null, { deadlineMs: 50 });
    pump();
    const [call] = ofType(events.server, 'call');
    assert.equal(call!.meta?.deadline_ms, 50);
    clock.t += 50;
    server.tick();
    pump();
    const [cancel] = ofType(events.server, 'cancel');
    assert.deepEqual([cancel!.key, cancel!.code], [call!.key, 408]);
    const [result] = ofType(events.client, 'result');
    assert.equal(result!.key, key);
    assert.equal(result!.error!.code, 408);
    server.respond(call!.key, 'too late'); // ignored
    pump();
    assert.equal(ofType(events.client, 'result').length, 1);
  });

  it('cancels a call: the handler side gets cancel 499, the late answer is dropped', () => {
    const { client, server, events, pump } = pair();
    pump();
    const key = client.call('slow', null);
    pump();
    client.cancel(key);
    pump();
    const [cancel] = ofType(events.server, 'cancel');
    assert.equal(cancel!.code, 499);
    assert.equal(server.inFlight.incoming, 0);
  });

  it('answers 429 past the in-flight limit and 409 for a duplicate id; a QoS 0 publish needs no answer', () => {
    const { client, events, pump } = pair({}, { maxInFlight: 2 });
    pump();
    client.call('a', null);
    client.call('b', null);
    const third = client.call('c', null);
    pump();
    const result = ofType(events.client, 'result').find((r) => r.key === third)!;
    assert.equal(result.error!.code, 429);
    assert.match(result.error!.message, /more than 2 calls in flight/);

    const id = uuidv7();
    const dup = encodeStreamFrame(0, encodeEnvelope({ type: MessageType.Call, id, ref: null, target: 'x', meta: null, payload: null, error: null }));
    const { server: s2, pump: p2 } = pair();
    p2();
    s2.receive(dup);
    s2.receive(dup);
    assert.deepEqual(errorsIn(s2.takeOutput()), [409]);
    const pub = encodeStreamFrame(
      0,
      encodeEnvelope({ type: MessageType.Publish, id: uuidv7(), ref: null, target: 'topic', meta: null, payload: 1, error: null }),
    );
    s2.receive(pub);
    assert.deepEqual(errorsIn(s2.takeOutput()), [], 'a QoS 0 publish is taken without an answer');
    assert.equal(ofType(s2.takeEvents(), 'publish').length, 1);
    assert.equal(s2.state, 'open');
  });

  it('bye: no new calls, in-flight ones finish, then both close', () => {
    const { client, server, events, pump } = pair();
    pump();
    const key = client.call('work', null);
    pump();
    client.close();
    pump();
    assert.equal(client.state, 'closing');
    assert.equal(server.state, 'closing');
    assert.throws(() => server.call('x', null), /closing/);
    const [call] = ofType(events.server, 'call');
    server.respond(call!.key, 'done');
    pump();
    const [result] = ofType(events.client, 'result');
    assert.deepEqual([result!.key, result!.payload], [key, 'done']);
    assert.equal(client.state, 'closed');
    assert.equal(server.state, 'closed');
    assert.equal(ofType(events.client, 'closed')[0]!.code, 0);
  });

  it('PSK: both prove the key; a wrong key is refused with 401 either way', () => {
    const ok = pair({ psk: 'secret' }, { psk: 'secret' });
    ok.pump();
    assert.equal(ok.client.state, 'open');
    assert.equal(ok.server.state, 'open');
    assert.ok(ok.client.info!.caps.includes('psk'));

    const badClient = pair({ psk: 'wrong' }, { psk: 'secret' });
    badClient.pump();
    assert.equal(badClient.client.state, 'closed');
    assert.equal(ofType(badClient.events.client, 'closed')[0]!.code, 401);
    assert.match(ofType(badClient.events.client, 'closed')[0]!.reason, /server failed the PSK proof/);

    const noPsk = pair({}, { psk: 'secret' });
    noPsk.pump();
    assert.equal(ofType(noPsk.events.client, 'closed')[0]!.code, 401);
  });

  it('compresses large frames when deflate is agreed, and the payload arrives intact', () => {
    const { client, server, events, pump } = pair({ caps: ['deflate'] });
    pump();
    const big = 'x'.repeat(100_000);
    client.call('big', big);
    const frames = client.takeOutput();
    assert.ok(frames[0]!.length < 10_000, `compressed to ${frames[0]!.length} bytes`);
    assert.equal(frames[0]![4]! & 1, 1, 'the compressed flag is set');
    for (const f of frames) server.receive(f);
    pump();
    assert.equal(ofType(events.server.concat(server.takeEvents()), 'call')[0]!.payload, big);
  });

  it('random bytes never throw; the session closes with 400/413 or waits for more', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (chunks) => {
        const server = new Session({ role: 'server', framing: 'stream', maxFrame: 4096 });
        for (const chunk of chunks) server.receive(chunk);
        const closed = ofType(server.takeEvents(), 'closed');
        if (closed.length > 0) assert.ok([400, 413, 501].includes(closed[0]!.code), `closed with ${closed[0]!.code}`);
      }),
      { numRuns: 2000 },
    );
  });
});
