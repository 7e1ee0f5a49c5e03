// FLUXAR streams through a rack: chunks become fluxMsgs, a Wasm gear's fan-out becomes chunks
// back, credit crosses the ring (a client that does not read stops the chunks at the gear), over
// TCP and WebSocket, with workers and inline.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { connect, type FluxarError, type Peer } from '../src/fluxar/mod.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { captureLogs } from './harness/logs.js';
import { until } from './harness/wait.js';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const tokenizer = join(root, 'wasm-gears/build/tokenizer.wasm');
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-streams-'));

function scenario(window: number) {
  const doc = {
    meta: { name: 'streams', version: '1' },
    gears: [
      { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0', 'ws://127.0.0.1:0/fluxar'], stream_window: window } },
      { name: 'tokenizer', type: 'wasm', config: { module: tokenizer } },
    ],
    wires: [
      { from: 'api.out', to: 'tokenizer.in' },
      { from: 'tokenizer.out', to: 'api.in' },
      { from: 'tokenizer.error', to: 'api.in' },
    ],
  };
  const file = join(dir, `streams-${window}.yaml`);
  writeFileSync(file, stringify(doc));
  return parseScenario(stringify(doc), file);
}

async function collect(stream: AsyncIterable<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i}`).join(' ');

for (const workers of [2, 0])
  describe(`streams through a rack (workers: ${workers})`, () => {
    const window = 8;
    let rack: Rack;
    let tcp: string;
    let ws: string;

    before(async () => {
      rack = new Rack({ scenario: scenario(window), workers, logger: captureLogs().logger });
      await rack.start();
      [tcp, ws] = rack.addresses() as [string, string];
    });
    after(() => rack.stop());

    for (const kind of ['tcp', 'ws'] as const) {
      it(`a Wasm gear's fan-out streams back as chunks, and its end message ends the stream (${kind})`, async () => {
        const peer = await connect(kind === 'tcp' ? tcp : ws);
        const stream = peer.stream('llm.generate', { text: 'streams flow through gears' });
        const chunks = (await collect(stream)) as Array<{ token: string; index: number }>;
        assert.deepEqual(
          chunks.map((c) => c.token),
          ['streams', 'flow', 'through', 'gears'],
        );
        assert.deepEqual(
          chunks.map((c) => c.index),
          [0, 1, 2, 3],
        );
        assert.deepEqual(await stream.result, { tokens: 4 });
        await peer.close();
      });
    }

    it('bidi: each chunk up enters the scenario in order; the client end ends the stream', async () => {
      const peer = await connect(tcp);
      const stream = peer.stream('llm.chat', null, { mode: 'bidi' });
      const reading = collect(stream);
      for (const line of ['hello world', 'how are', 'you']) await stream.write({ text: line });
      stream.end();
      const tokens = ((await reading) as Array<{ token: string }>).map((c) => c.token);
      assert.deepEqual(tokens, ['hello', 'world', 'how', 'are', 'you']);
      assert.equal(await stream.result, null);
      await peer.close();
    });

    it('the rack sends no more chunks than the client granted: 2, then the rest after a grant', async () => {
      const peer = await connect(tcp);
      const stream = peer.stream('llm.generate', { text: words(1000) }, { credit: 2, manualCredit: true });
      const it = stream[Symbol.asyncIterator]();
      const first = [(await it.next()).value, (await it.next()).value] as Array<{ token: string }>;
      assert.deepEqual(
        first.map((c) => c.token),
        ['w0', 'w1'],
      );
      assert.equal(peer.session.streamWindow(stream.key), 0);
      // A chunk past the credit would have closed the connection with a 400 bye.
      assert.deepEqual(await peer.call('count', { text: 'a b' }), { tokens: 2 }, 'the connection is open and served');
      stream.grant(998);
      let rest = 0;
      for (;;) {
        const step = await it.next();
        if (step.done) break;
        rest++;
      }
      assert.equal(rest, 998);
      assert.deepEqual(await stream.result, { tokens: 1000 });
      await peer.close();
    });

    it('a client that does not read stops the chunks at the gear: no credit up while chunks wait to go down', async () => {
      const peer = await connect(tcp);
      const stream = peer.stream('llm.chat', null, { mode: 'bidi', credit: 0, manualCredit: true });
      let written = 0;
      const writing = (async () => {
        for (let i = 0; i < 100; i++) {
          await stream.write({ text: `chunk ${i}` });
          written++;
        }
        stream.end();
      })();
      writing.catch(() => {}); // awaited below; a failure before that is the test's, not unhandled
      // The rack granted one window; its first chunk's tokens wait for credit down, so it grants no more.
      await until(() => written === window && peer.session.streamCredit(stream.key) === 0, 'the writer waits for credit');
      assert.deepEqual(await peer.call('count', { text: 'a b' }), { tokens: 2 });
      assert.equal(written, window, 'no credit came back while the client did not read');
      assert.equal(peer.session.streamCredit(stream.key), 0);
      // Reading again lets everything through.
      stream.grant(1_000);
      const tokens = await collect(stream);
      await writing;
      assert.equal(tokens.length, 200);
      assert.equal(await stream.result, null);
      await peer.close();
    });

    it('cancel: the stream ends with 499 and the connection goes on', async () => {
      const peer = await connect(ws);
      const stream = peer.stream('llm.generate', { text: words(100) }, { credit: 1, manualCredit: true });
      await stream[Symbol.asyncIterator]().next();
      stream.cancel();
      await assert.rejects(stream.result, (err: FluxarError) => err.code === 499);
      const again = peer.stream('llm.generate', { text: 'once more' });
      assert.equal((await collect(again)).length, 2);
      await peer.close();
    });

    it('fluxrig call --stream prints each chunk as it arrives, then the final payload', { skip: workers === 0 }, async () => {
      const { stdout } = await run(process.execPath, [cli, 'call', '--stream', tcp, 'llm.generate', '{"text": "one two three"}']);
      const lines = stdout.trim().split('\n');
      assert.deepEqual(
        lines.slice(0, 3).map((l) => JSON.parse(l).token),
        ['one', 'two', 'three'],
      );
      assert.deepEqual(JSON.parse(lines.slice(3).join('\n')), { tokens: 3 });
    });

    it('a stream through a gear that knows no streams ends once its answer came back: never left open', async () => {
      const plain = new Rack({
        scenario: (() => {
          const doc = {
            meta: { name: 'plain', version: '1' },
            gears: [
              { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
              { name: 'enrich', type: 'wasm', config: { module: join(root, 'wasm-gears/build/enrich.wasm') } },
            ],
            wires: [
              { from: 'api.out', to: 'enrich.in' },
              { from: 'enrich.out', to: 'api.in' },
            ],
          };
          const file = join(dir, `plain-${workers}.yaml`);
          writeFileSync(file, stringify(doc));
          return parseScenario(stringify(doc), file);
        })(),
        workers,
        logger: captureLogs().logger,
      });
      await plain.start();
      try {
        const peer = await connect(plain.addresses()[0]!);
        const stream = peer.stream('x', { amount: 5 });
        const chunks = (await collect(stream)) as Array<Record<string, unknown>>;
        assert.equal(chunks.length, 1, 'the enriched message came back as one chunk');
        assert.equal(chunks[0]!.risk_band, 'low');
        assert.equal(await stream.result, null, 'and the stream ended after it');
        await peer.close();
      } finally {
        await plain.stop();
      }
    });

    it('a stream to a rack whose scenario cannot answer it gets an error, never a hang', async () => {
      const peer: Peer = await connect(tcp);
      // meta.stream is reserved for streams: a bad value is answered 400 by the session.
      await assert.rejects(peer.call('x', null, { meta: { stream: 'sideways' } }), (err: FluxarError) => err.code === 400);
      await peer.close();
    });
  });
