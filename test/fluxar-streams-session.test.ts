// FLUXAR streams in the sans-I/O Session (docs/fluxar-spec.md section 13): credit, ending,
// cancel, limits, violations, and a property test of the states against a model.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ControlTarget,
  decodeEnvelope,
  type Envelope,
  encodeEnvelope,
  encodeStreamFrame,
  FluxarError,
  MessageType,
  type Session,
  type StreamMode,
} from '../src/fluxar/mod.js';
import { uuidv7 } from '../src/fluxmsg/mod.js';

const STREAM_HEADER_BYTES = 5;
import { errorsIn, ofType, pair } from './harness/session-pair.js';

/** An open pair with one stream from the client: its key on both sides (they are equal). */
function openStream(mode: StreamMode, credit = 0, serverOptions = {}) {
  const p = pair({}, serverOptions);
  p.pump();
  const key = p.client.openStream('s', { prompt: 'hi' }, { mode, credit });
  p.pump();
  const [opened] = ofType(p.events.server, 'stream');
  assert.ok(opened, 'the server saw the stream open');
  assert.equal(opened.key, key);
  return { ...p, key };
}

function codeOf(fn: () => void): number {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FluxarError, String(err));
    return err.code;
  }
  return 0;
}

/** Sends the server as many chunks as it may: returns how many went. */
function sendAll(session: Session, key: string, max = 100): number {
  let n = 0;
  while (n < max && session.streamCredit(key) > 0) session.sendChunk(key, n++);
  return n;
}

/** A raw envelope from the client, bypassing its session's checks. */
function raw(p: ReturnType<typeof pair>, env: Partial<Envelope> & { type: Envelope['type'] }): void {
  const full: Envelope = { id: uuidv7(), ref: null, target: null, meta: null, payload: null, error: null, ...env };
  p.server.receive(encodeStreamFrame(0, encodeEnvelope(full)));
}

describe('FLUXAR streams (sans-I/O)', () => {
  it('credit 3 delivers exactly 3 chunks, then 2 more after resume {credit: 2}', () => {
    const { client, server, events, pump, key } = openStream('out', 3);
    assert.equal(server.streamCredit(key), 3);
    assert.equal(sendAll(server, key), 3);
    assert.equal(
      codeOf(() => server.sendChunk(key, 'no credit')),
      429,
    );
    pump();
    assert.deepEqual(
      ofType(events.client, 'chunk').map((c) => [c.seq, c.payload]),
      [
        [0, 0],
        [1, 1],
        [2, 2],
      ],
    );
    client.grantCredit(key, 2);
    pump();
    assert.equal(ofType(events.server, 'credit').length, 1);
    assert.equal(sendAll(server, key), 2);
    pump();
    assert.equal(ofType(events.client, 'chunk').length, 5);
    server.respond(key, { tokens: 5 });
    pump();
    const [result] = ofType(events.client, 'result');
    assert.deepEqual([result!.key, result!.payload, result!.error], [key, { tokens: 5 }, null]);
    assert.equal(client.hasStream(key), false);
    assert.equal(server.hasStream(key), false);
  });

  it('a chunk is written straight into the outbox as the envelope encoder writes it, for any payload', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.uint8Array({ maxLength: 64 }), (json, bytes) => {
        // The strict profile refuses a __proto__ key anywhere (tested in cbor-strict): not a chunk to read back.
        fc.pre(!JSON.stringify(json).includes('"__proto__"'));
        const { server, key } = openStream('out', 2);
        server.takeOutput();
        for (const payload of [json, bytes]) {
          server.sendChunk(key, payload);
          const [out] = server.takeOutput();
          const body = out!.subarray(STREAM_HEADER_BYTES);
          const env = decodeEnvelope(body);
          assert.deepEqual(Buffer.from(encodeEnvelope(env)), Buffer.from(body));
          assert.equal(env.type, MessageType.Stream);
          assert.equal(Buffer.from(env.ref!).toString('latin1'), key);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('chunks with meta take the full decoder and keep their meta; a plain chunk with a bad payload is a 400 bye', () => {
    const p = openStream('in');
    p.server.grantCredit(p.key, 3);
    p.pump();
    p.client.sendChunk(p.key, 'plain');
    p.client.sendChunk(p.key, 'with meta', { part: 2 });
    p.pump();
    assert.deepEqual(
      ofType(p.events.server, 'chunk').map((c) => [c.payload, c.meta]),
      [
        ['plain', null],
        ['with meta', { part: 2 }],
      ],
    );
    // [3, id, ref, null, null, {"a": 1, "a": 2}, null]: the plain form, but the payload breaks the profile.
    const env = Buffer.from(
      encodeEnvelope({
        type: MessageType.Stream,
        id: uuidv7(),
        ref: Buffer.from(p.key, 'latin1'),
        target: null,
        meta: null,
        payload: { a: 1, b: 2 },
        error: null,
      }),
    );
    const b = env.lastIndexOf(Buffer.from([0x61, 0x62, 0x02])) + 1; // the key "b" becomes a second "a"
    env[b] = 0x61;
    p.server.receive(encodeStreamFrame(0, env));
    const closed = ofType(p.server.takeEvents(), 'closed');
    assert.equal(closed[0]!.code, 400);
    assert.match(closed[0]!.reason, /duplicate map key "a"/);
  });

  it('a chunk without credit is a protocol violation: 400 bye', () => {
    const p = openStream('in');
    // The server granted nothing; a chunk from the client breaks the rule.
    raw(p, { type: MessageType.Stream, ref: Buffer.from(p.key, 'latin1'), payload: 'unasked' });
    assert.equal(p.server.state, 'closed');
    const closed = ofType(p.server.takeEvents(), 'closed');
    assert.deepEqual([closed[0]!.code, closed[0]!.reason], [400, 'a stream chunk without credit']);
  });

  it('in: the responder grants, the opener writes and ends, the response closes the stream', () => {
    const { client, server, events, pump, key } = openStream('in');
    assert.equal(
      codeOf(() => client.sendChunk(key, 'early')),
      429,
    );
    server.grantCredit(key, 2);
    pump();
    assert.equal(sendAll(client, key), 2);
    client.endStream(key);
    assert.equal(
      codeOf(() => client.sendChunk(key, 'after end')),
      400,
    );
    pump();
    assert.deepEqual(
      ofType(events.server, 'chunk').map((c) => c.payload),
      [0, 1],
    );
    assert.equal(ofType(events.server, 'end').length, 1);
    assert.equal(
      codeOf(() => server.sendChunk(key, 'down')),
      400,
      'an "in" stream has no down direction',
    );
    server.respond(key, { bytes: 2 });
    pump();
    assert.deepEqual(ofType(events.client, 'result')[0]!.payload, { bytes: 2 });
  });

  it('bidi: both directions carry chunks under their own credit', () => {
    const { client, server, events, pump, key } = openStream('bidi', 1);
    server.grantCredit(key, 1);
    pump();
    client.sendChunk(key, 'up');
    server.sendChunk(key, 'down');
    pump();
    assert.deepEqual(
      ofType(events.server, 'chunk').map((c) => c.payload),
      ['up'],
    );
    assert.deepEqual(
      ofType(events.client, 'chunk').map((c) => c.payload),
      ['down'],
    );
  });

  it('pause withdraws unspent credit; chunks already in flight are still accepted', () => {
    const { client, server, events, pump, key } = openStream('out', 10);
    server.sendChunk(key, 'in flight');
    client.pauseStream(key);
    // The chunk crosses the pause on the wire.
    pump();
    assert.equal(server.streamCredit(key), 0);
    assert.equal(ofType(events.client, 'chunk').length, 1);
    assert.equal(client.state, 'open');
    client.grantCredit(key, 1);
    pump();
    assert.equal(server.streamCredit(key), 1);
  });

  it('cancel by the opener: the responder gets cancel 499 and answers it; nothing reaches the opener after', () => {
    const { client, server, events, pump, key } = openStream('out', 10);
    server.sendChunk(key, 'before');
    pump();
    server.sendChunk(key, 'crossing');
    client.cancelStream(key);
    assert.equal(client.hasStream(key), true, 'CANCELLING until the response confirms it');
    pump();
    const [cancel] = ofType(events.server, 'cancel');
    assert.deepEqual([cancel!.key, cancel!.code], [key, 499]);
    assert.deepEqual(
      ofType(events.client, 'chunk').map((c) => c.payload),
      ['before'],
    );
    assert.equal(ofType(events.client, 'result').length, 0, 'the application already has its outcome');
    assert.equal(client.hasStream(key), false);
    assert.equal(server.hasStream(key), false);
    assert.equal(
      codeOf(() => server.sendChunk(key, 'late')),
      404,
    );
  });

  it('cancel by the responder: its response with 499, or a cancel envelope read as one', () => {
    const a = openStream('out', 10);
    a.server.fail(a.key, 499, 'producer gave up');
    a.pump();
    assert.equal(ofType(a.events.client, 'result')[0]!.error!.code, 499);

    const b = openStream('out', 10);
    b.server.receive(new Uint8Array(0)); // nothing
    const cancel = encodeStreamFrame(
      0,
      encodeEnvelope({
        type: MessageType.Stream,
        id: uuidv7(),
        ref: Buffer.from(b.key, 'latin1'),
        target: ControlTarget.Cancel,
        meta: null,
        payload: null,
        error: null,
      }),
    );
    b.client.receive(cancel);
    b.pump();
    assert.equal(ofType(b.events.client, 'result')[0]!.error!.code, 499);
    assert.equal(b.client.hasStream(b.key), false);
  });

  it('credit granted twice at 2^31 keeps the stream going: counters are 53-bit', () => {
    const { client, server, events, pump, key } = openStream('out', 0);
    client.grantCredit(key, 2 ** 31);
    client.grantCredit(key, 2 ** 31);
    pump();
    assert.equal(server.streamCredit(key), 2 ** 32);
    assert.equal(client.streamWindow(key), 2 ** 32);
    server.sendChunk(key, 'a');
    server.sendChunk(key, 'b');
    pump();
    assert.equal(ofType(events.client, 'chunk').length, 2);
    assert.equal(server.streamCredit(key), 2 ** 32 - 2);
    // Up to 2^53 - 1 in all; one more unit is refused before it is sent.
    client.grantCredit(key, Number.MAX_SAFE_INTEGER - 2 ** 32 + 2);
    pump();
    assert.equal(server.streamCredit(key), Number.MAX_SAFE_INTEGER);
    assert.equal(
      codeOf(() => client.grantCredit(key, 1)),
      400,
    );
    assert.equal(client.state, 'open');
  });

  it('a resume that would pass 2^53 - 1, or is not a positive integer, is a 400 bye', () => {
    for (const credit of [0, -1, 1.5, 'many', 2 ** 53]) {
      const p = openStream('in');
      raw(p, { type: MessageType.Stream, ref: Buffer.from(p.key, 'latin1'), target: 'resume', payload: { credit } });
      // A resume from the client grants down credit, which an "in" stream has not: still checked.
      assert.equal(p.server.state, 'closed', `credit ${String(credit)}`);
    }
    const p = openStream('out', Number.MAX_SAFE_INTEGER);
    raw(p, { type: MessageType.Stream, ref: Buffer.from(p.key, 'latin1'), target: 'resume', payload: { credit: 1 } });
    assert.equal(p.server.state, 'closed');
    assert.match(ofType(p.server.takeEvents(), 'closed')[0]!.reason, /2\^53/);
  });

  it('a chunk at max_frame goes through; one over it is refused locally with 413 and the stream goes on', () => {
    const { client, server, events, pump, key } = openStream('out', 5);
    const maxFrame = server.maxFrame;
    // Envelope overhead of a chunk with a byte-string payload: array, type, id, ref, nulls, bytes head.
    const overhead = 1 + 1 + 17 + 17 + 1 + 1 + 1 + 5;
    assert.equal(
      codeOf(() => server.sendChunk(key, new Uint8Array(maxFrame - overhead + 1))),
      413,
    );
    assert.equal(server.streamCredit(key), 5, 'nothing spent');
    server.sendChunk(key, new Uint8Array(maxFrame - overhead));
    pump();
    const [chunk] = ofType(events.client, 'chunk');
    assert.equal((chunk!.payload as Uint8Array).length, maxFrame - overhead);
    assert.equal(client.state, 'open');
  });

  it('max_streams: 429 beyond the limit, locally when the opener knows it, else from the responder', () => {
    const p = pair({}, { maxStreams: 2 });
    p.pump();
    assert.equal(p.client.info!.maxStreams, 2);
    p.client.openStream('a', null, { mode: 'out' });
    const second = p.client.openStream('b', null, { mode: 'out' });
    assert.equal(
      codeOf(() => p.client.openStream('c', null, { mode: 'out' })),
      429,
    );
    p.pump();
    // Once one closes, another may open.
    p.server.respond(second, null);
    p.pump();
    p.client.openStream('c', null, { mode: 'out' });
    p.pump();
    assert.equal(ofType(p.events.server, 'stream').length, 3);
    // A peer that ignores the limit is answered 429.
    raw(p, { type: MessageType.Call, target: 'd', meta: { stream: 'out' } });
    assert.deepEqual(errorsIn(p.server.takeOutput()), [429]);
  });

  it('refuses a bad opening with a 400 answer, and ignores frames for unknown streams', () => {
    const p = pair();
    p.pump();
    raw(p, { type: MessageType.Call, target: 'x', meta: { stream: 'sideways' } });
    raw(p, { type: MessageType.Call, target: 'x', meta: { stream: 'out', credit: -1 } });
    raw(p, { type: MessageType.Stream, payload: 'no ref' });
    assert.deepEqual(errorsIn(p.server.takeOutput()), [400, 400, 400]);
    for (const target of [null, 'resume', 'pause', 'end', 'cancel']) {
      raw(p, { type: MessageType.Stream, ref: uuidv7(), target, payload: target === 'resume' ? { credit: 1 } : null });
    }
    assert.deepEqual(p.server.takeOutput(), []);
    assert.equal(p.server.state, 'open');
    raw(p, { type: MessageType.Stream, ref: uuidv7(), target: 'rewind' });
    assert.equal(p.server.state, 'closed', 'an unknown stream control is a violation');
  });

  it('a chunk after end, and end from the responder, are 400 byes', () => {
    const a = openStream('in');
    a.server.grantCredit(a.key, 5);
    a.pump();
    a.client.endStream(a.key);
    a.pump();
    raw(a, { type: MessageType.Stream, ref: Buffer.from(a.key, 'latin1'), payload: 'after end' });
    assert.equal(a.server.state, 'closed');

    const b = openStream('out', 1);
    const end = encodeStreamFrame(
      0,
      encodeEnvelope({ type: MessageType.Stream, id: uuidv7(), ref: Buffer.from(b.key, 'latin1'), target: 'end', meta: null, payload: null, error: null }),
    );
    b.client.receive(end);
    assert.equal(b.client.state, 'closed');
  });

  it('deadline_ms bounds the whole stream: 408 on both sides', () => {
    const p = pair();
    p.pump();
    const key = p.client.openStream('slow', null, { mode: 'out', credit: 1, deadlineMs: 100 });
    p.pump();
    p.clock.t += 100;
    p.server.tick();
    p.client.tick();
    p.pump();
    assert.equal(ofType(p.events.server, 'cancel')[0]!.code, 408);
    assert.equal(ofType(p.events.client, 'result')[0]!.error!.code, 408);
    assert.equal(p.client.hasStream(key), false);
    assert.equal(p.server.hasStream(key), false);
  });

  it('a connection that ends closes every stream: the opener fails with its code, the responder is cancelled', () => {
    const { client, server, events, pump, key } = openStream('bidi', 1);
    server.abort(503, 'going away');
    pump();
    assert.equal(ofType(events.server, 'cancel')[0]!.key, key);
    assert.equal(ofType(events.client, 'result')[0]!.error!.code, 503);
    assert.equal(client.hasStream(key), false);
  });

  it('a graceful close waits for open streams', () => {
    const { client, server, events, pump, key } = openStream('out', 1);
    client.close();
    pump();
    assert.equal(client.state, 'closing');
    server.sendChunk(key, 'last');
    server.respond(key, 'done');
    pump();
    assert.equal(ofType(events.client, 'chunk').length, 1);
    assert.equal(client.state, 'closed');
    assert.equal(server.state, 'closed');
  });
});

// The model: what each side's state should be after every step, with every frame delivered.
type Op =
  | { op: 'open'; mode: StreamMode; credit: number }
  | { op: 'grant'; n: number }
  | { op: 'pause' }
  | { op: 'down' }
  | { op: 'up' }
  | { op: 'end' }
  | { op: 'cancel' }
  | { op: 'respond' }
  | { op: 'pump' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('open' as const), mode: fc.constantFrom<StreamMode>('out', 'in', 'bidi'), credit: fc.integer({ min: 0, max: 4 }) }),
  fc.record({ op: fc.constant('grant' as const), n: fc.integer({ min: 1, max: 4 }) }),
  fc.constant({ op: 'pause' as const }),
  fc.constant({ op: 'down' as const }),
  fc.constant({ op: 'up' as const }),
  fc.constant({ op: 'end' as const }),
  fc.constant({ op: 'cancel' as const }),
  fc.constant({ op: 'respond' as const }),
  fc.constant({ op: 'pump' as const }),
);

interface ModelStream {
  key: string;
  mode: StreamMode;
  opener: 'active' | 'cancelling' | 'closed';
  responder: 'active' | 'closed';
  /** Chunks the opener granted (down) and the responder granted (up) in all. */
  downGranted: number;
  upGranted: number;
  downSent: number;
  upSent: number;
  upEnded: boolean;
  downAfterCancel: number;
}

describe('FLUXAR stream states (property)', () => {
  it('honest peers never violate the protocol, whatever crosses on the wire; states follow the table', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
        const p = pair();
        p.pump();
        const { client, server, events } = p;
        const streams: ModelStream[] = [];
        let chunksBeforeCancel = new Map<string, number>();
        const current = () => streams.at(-1);
        for (const o of ops) {
          const s = current();
          switch (o.op) {
            case 'open': {
              const key = client.openStream('t', null, { mode: o.mode, credit: o.credit });
              streams.push({
                key,
                mode: o.mode,
                opener: 'active',
                responder: 'active',
                downGranted: o.mode === 'in' ? 0 : o.credit,
                upGranted: 0,
                downSent: 0,
                upSent: 0,
                upEnded: false,
                downAfterCancel: 0,
              });
              break;
            }
            case 'grant':
              // Each side grants what it receives.
              if (s === undefined) break;
              if (s.mode !== 'in' && s.opener === 'active') {
                client.grantCredit(s.key, o.n);
                s.downGranted += o.n;
              }
              if (s.mode !== 'out' && server.hasStream(s.key) && !s.upEnded) {
                server.grantCredit(s.key, o.n);
                s.upGranted += o.n;
              }
              break;
            case 'pause':
              if (s !== undefined) client.pauseStream(s.key);
              break;
            case 'down':
              if (s !== undefined && server.streamCredit(s.key) > 0) {
                server.sendChunk(s.key, s.downSent++);
                if (s.opener === 'cancelling') s.downAfterCancel++;
              }
              break;
            case 'up':
              if (s !== undefined && client.streamCredit(s.key) > 0) client.sendChunk(s.key, s.upSent++);
              break;
            case 'end':
              if (s !== undefined && s.opener === 'active' && s.mode !== 'out') {
                client.endStream(s.key);
                s.upEnded = true;
              }
              break;
            case 'cancel':
              if (s !== undefined && s.opener === 'active') {
                client.cancelStream(s.key);
                s.opener = 'cancelling';
                chunksBeforeCancel = new Map(chunksBeforeCancel).set(s.key, ofType(events.client, 'chunk').filter((c) => c.key === s.key).length);
              }
              break;
            case 'respond':
              if (s !== undefined && server.hasStream(s.key)) {
                server.respond(s.key, 'final');
                s.responder = 'closed';
              }
              break;
            case 'pump':
              p.pump();
              for (const m of streams) {
                if (!client.hasStream(m.key)) m.opener = 'closed';
                if (!server.hasStream(m.key)) m.responder = 'closed';
              }
              break;
          }
          // Honest peers: never a violation, whatever crossed.
          assert.equal(client.state, 'open');
          assert.equal(server.state, 'open');
        }
        p.pump();
        for (const m of streams) {
          const down = ofType(events.client, 'chunk').filter((c) => c.key === m.key);
          const up = ofType(events.server, 'chunk').filter((c) => c.key === m.key);
          // A receiver never holds more than it granted; order holds within a stream.
          assert.ok(down.length <= m.downGranted, `down ${down.length} <= granted ${m.downGranted}`);
          assert.ok(up.length <= m.upGranted, `up ${up.length} <= granted ${m.upGranted}`);
          assert.deepEqual(
            down.map((c) => c.seq),
            down.map((_, i) => i),
          );
          assert.deepEqual(
            up.map((c) => c.payload),
            up.map((_, i) => i),
          );
          // Nothing reaches the application after its cancel.
          const before = chunksBeforeCancel.get(m.key);
          if (before !== undefined) {
            assert.equal(down.length, before, 'no chunk after cancel');
            assert.equal(ofType(events.client, 'result').filter((r) => r.key === m.key).length, 0, 'no result after cancel');
          }
          // Every stream the responder answered, or the opener cancelled, is CLOSED on both sides once quiet.
          if (m.responder === 'closed' || m.opener !== 'active') {
            assert.equal(client.hasStream(m.key), false);
            assert.equal(server.hasStream(m.key), false);
          } else {
            assert.equal(client.hasStream(m.key), true);
            assert.equal(server.hasStream(m.key), true);
          }
          if (m.responder === 'closed' && before === undefined) {
            assert.equal(ofType(events.client, 'result').filter((r) => r.key === m.key).length, 1);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
