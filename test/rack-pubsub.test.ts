// FLUXAR pub/sub through a rack: topics cross the workers, a generator gear publishes, gears
// process clients' publications, and the fluxrig sub / pub commands, with workers and inline.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { connect, type FluxarMessage, type Peer } from '../src/fluxar/mod.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { captureLogs } from './harness/logs.js';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const enrich = join(root, 'wasm-gears/build/enrich.wasm');
const dir = mkdtempSync(join(tmpdir(), 'fluxrig-pubsub-'));

function scenarioOf(name: string, doc: Record<string, unknown>) {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(doc));
  return parseScenario(stringify(doc), file);
}

async function first(sub: AsyncIterable<FluxarMessage>): Promise<FluxarMessage> {
  for await (const m of sub) {
    m.ack();
    return m;
  }
  assert.fail('the subscription ended without a message');
}

for (const workers of [2, 0])
  describe(`pub/sub through a rack (workers: ${workers})`, () => {
    let rack: Rack;
    let url: string;
    let processed: Rack;
    let processedUrl: string;

    before(async () => {
      rack = new Rack({
        scenario: scenarioOf(`direct-${workers}`, {
          meta: { name: 'pubsub', version: '1' },
          gears: [
            { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
            {
              name: 'ticks',
              type: 'generator',
              config: { rate_per_s: 50, data: { price: 1.08 }, meta: { 'fluxar.topic': 'prices.eurusd', 'fluxar.qos': '1' } },
            },
          ],
          wires: [{ from: 'ticks.out', to: 'api.in' }],
        }),
        workers,
        logger: captureLogs().logger,
      });
      await rack.start();
      [url] = rack.addresses() as [string];
      processed = new Rack({
        scenario: scenarioOf(`processed-${workers}`, {
          meta: { name: 'pubsub-processed', version: '1' },
          gears: [
            { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
            { name: 'enrich', type: 'wasm', config: { module: enrich } },
          ],
          wires: [
            { from: 'api.out', to: 'enrich.in' },
            { from: 'enrich.out', to: 'api.in' },
          ],
        }),
        workers,
        logger: captureLogs().logger,
      });
      await processed.start();
      [processedUrl] = processed.addresses() as [string];
    });
    after(async () => {
      await rack.stop();
      await processed.stop();
    });

    for (const qos of [0, 1, 2] as const) {
      it(`a subscriber gets what a client on another connection publishes, whatever worker each is on (QoS ${qos})`, async () => {
        // Connections go to workers in turn: of three clients, two share none.
        const peers: Peer[] = await Promise.all([connect(url), connect(url), connect(url)]);
        const subs = peers.slice(0, 2).map((p) => p.subscribe(`orders.q${qos}.>`, { qos }));
        await Promise.all(subs.map((s) => s.ready));
        const outcome = await peers[2]!.publish(`orders.q${qos}.new`, { id: 1 }, { qos });
        if (qos > 0) assert.equal(outcome?.duplicate, false);
        for (const sub of subs) {
          const m = await first(sub);
          assert.deepEqual([m.topic, m.payload, m.qos], [`orders.q${qos}.new`, { id: 1 }, qos]);
        }
        await Promise.all(peers.map((p) => p.close()));
      });
    }

    it('a generator gear publishes: a message with fluxar.topic that reaches the fluxar gear is published', async () => {
      const peer = await connect(url);
      const sub = peer.subscribe('prices.*', { qos: 1 });
      await sub.ready;
      const m = await first(sub);
      assert.equal(m.topic, 'prices.eurusd');
      assert.equal((m.payload as { price: number }).price, 1.08);
      assert.equal(m.qos, 1);
      await peer.close();
    });

    it('with out wired, a publication goes through the gears and what they send back is published', async () => {
      const subscriber = await connect(processedUrl);
      const sub = subscriber.subscribe('payments.>', { qos: 1 });
      await sub.ready;
      const publisher = await connect(processedUrl);
      const outcome = await publisher.publish('payments.eu', { amount: 2500, currency: 'eur' }, { qos: 1 });
      // subscribers counts the publishing worker's own subscriptions; the others get it through the rings.
      assert.equal(outcome?.duplicate, false);
      const m = await first(sub);
      assert.equal(m.topic, 'payments.eu');
      assert.deepEqual(m.payload, { amount: 2500, currency: 'EUR', risk_band: 'high', enriched: true });
      await Promise.all([subscriber.close(), publisher.close()]);
    });

    it('fluxrig sub prints what fluxrig pub publishes', { skip: workers === 0 }, async () => {
      const sub = spawn(process.execPath, [cli, 'sub', url, 'cli.>', '--qos', '1', '--count', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = once(sub, 'exit');
      // It says on stderr when the rack has the subscription.
      const [ready] = (await once(createInterface({ input: sub.stderr! }), 'line')) as [string];
      assert.match(ready, /subscribed to cli\.> \(QoS 1\)/);
      const printed = once(createInterface({ input: sub.stdout! }), 'line');
      const { stdout } = await run(process.execPath, [cli, 'pub', url, 'cli.hello', '{"n": 1}', '--qos', '1']);
      assert.equal(JSON.parse(stdout).duplicate, false);
      const [line] = (await printed) as [string];
      assert.deepEqual(JSON.parse(line), { topic: 'cli.hello', payload: { n: 1 }, attempt: 1 });
      const [code] = await exited;
      assert.equal(code, 0);
    });
  });
