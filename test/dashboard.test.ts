// The Mixer's dashboard in a real browser (Debian's Chromium, driven by playwright-core) against
// a real Mixer and two real rack processes on a real nats-server: sign-in, the fleet live,
// adoption by a click, a broken and a good push, the traffic chart, the log tail, and a rack
// killed with SIGKILL. A screenshot of each view goes to dist/test-output/dashboard.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { stringify } from 'yaml';
import { connect } from '../src/fluxar/mod.js';
import { buildMixerApi } from '../src/mixer/api.js';
import { Mixer } from '../src/mixer/mixer.js';
import { CHROMIUM_HINT, findChromium, launchChromium } from './harness/browser.js';
import { captureLogs } from './harness/logs.js';
import { NatsServerProcess } from './harness/nats.js';
import { freePort } from './harness/ports.js';
import { untilAsync } from './harness/wait.js';
import { FRAUD_WASM } from './harness/rack-process.js';

const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const OUT = join(root, 'dist/test-output/dashboard');
const TOKEN = 'dashboard-test-token';
const HEARTBEAT_MS = 300;
const WAIT_MS = 20_000;
const chromiumPath = findChromium();

/** Each rack its own fluxar gear and port and its own fraud scorer: both racks on one machine. */
function payments(ports: Record<string, number>): string {
  const racks = Object.keys(ports);
  return stringify({
    meta: { name: 'payments', version: '1' },
    racks: racks.map((name) => ({ name })),
    gears: racks.flatMap((r) => [
      { name: `api-${r}`, type: 'fluxar', deploy: r, config: { listen: [`tcp://127.0.0.1:${ports[r]}`] } },
      { name: `fraud-${r}`, type: 'wasm', deploy: r, config: { module: FRAUD_WASM, allow_kv: true } },
    ]),
    wires: racks.flatMap((r) => [
      { from: `api-${r}.out`, to: `fraud-${r}.in` },
      { from: `fraud-${r}.out`, to: `api-${r}.in` },
      { from: `fraud-${r}.error`, to: `api-${r}.in` },
    ]),
  });
}

describe('dashboard', { skip: chromiumPath === undefined ? CHROMIUM_HINT : false }, () => {
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  let mixer: Mixer;
  let api: FastifyInstance;
  let base: string;
  let browser: Browser;
  let page: Page;
  const racks = new Map<string, ChildProcess>();
  const ports: Record<string, number> = {};
  const log = captureLogs('info');

  function startRack(name: string): ChildProcess {
    const child = spawn(
      process.execPath,
      [
        cli,
        'rack',
        '--mixer',
        nats.url,
        '--name',
        name,
        '--labels',
        `site=${name}`,
        '--workers',
        '1',
        '--heartbeat-ms',
        String(HEARTBEAT_MS),
        '--telemetry-level',
        'info',
        '--state-dir',
        mkdtempSync(join(tmpdir(), `fluxrig-dashboard-${name}-`)),
      ],
      { cwd: root, stdio: 'ignore' },
    );
    racks.set(name, child);
    return child;
  }

  async function get(path: string): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    return { status: res.status, body: await res.json() };
  }

  // The page's CSP refuses eval, so conditions are read through locators, not waitForFunction.
  const number = async (selector: string, attribute: string) =>
    Number((await page.locator(selector).first().getAttribute(attribute, { timeout: WAIT_MS })) || 0);
  const shot = (name: string) => page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
  const view = async (name: string) => {
    await page.getByRole('link', { name }).click();
    await page.getByRole('heading', { level: 2, name: name === 'Traffic' ? 'Traffic' : name }).waitFor({ timeout: WAIT_MS });
  };

  before(async () => {
    mkdirSync(OUT, { recursive: true });
    nats = await NatsServerProcess.start();
    nc = await natsConnect({ servers: nats.url, maxReconnectAttempts: -1 });
    mixer = new Mixer({ nats: nc, logger: log.logger, commandTimeoutMs: 5000 });
    await mixer.start();
    api = await buildMixerApi({ mixer, token: TOKEN, version: 'test' });
    base = await api.listen({ host: '127.0.0.1', port: 0 });
    for (const name of ['north', 'south']) {
      ports[name] = await freePort();
      startRack(name);
    }
    browser = await launchChromium(chromiumPath!);
    page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  });

  after(async () => {
    for (const child of racks.values()) child.kill('SIGKILL');
    await browser?.close();
    await api?.close();
    await mixer?.close();
    await nc?.close();
    await nats?.stop();
  });

  it('shows nothing without an accepted token, and the fleet once given one', async () => {
    await page.goto(base);
    await page.getByLabel('API token').fill('wrong-token');
    await page.getByRole('button', { name: 'Open the dashboard' }).click();
    await page.getByText('That token was refused.').waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('table').count(), 0, 'no fleet data without the token');
    assert.equal(await page.getByRole('link', { name: 'Fleet' }).count(), 0);
    // By keyboard: the token field has the focus, Enter opens.
    await page.keyboard.type(TOKEN);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Fleet' }).waitFor({ timeout: WAIT_MS });
    // Kept for the session: a reload does not ask again.
    await page.reload();
    await page.getByRole('heading', { name: 'Fleet' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.getByLabel('API token').count(), 0);
  });

  it('lists both racks, pending', async () => {
    for (const name of ['north', 'south']) await page.locator(`tr[data-rack="${name}"] [data-status="pending"]`).waitFor({ timeout: WAIT_MS });
    assert.match((await page.locator('tr[data-rack="north"]').textContent()) ?? '', /site=north/);
  });

  it('approves a pending rack with a click, and its row turns active without a reload', async () => {
    await page.evaluate('globalThis.sameDocument = true');
    for (const name of ['north', 'south']) {
      await page.getByRole('button', { name: `Approve ${name}` }).click();
      const dialog = page.getByRole('dialog');
      assert.match((await dialog.textContent()) ?? '', new RegExp(`Adopt ${name}`));
      await dialog.getByRole('button', { name: 'Approve' }).click();
      await page.locator(`tr[data-rack="${name}"] [data-status="active"]`).waitFor({ timeout: WAIT_MS });
      await page.getByText(`Approve: done for ${name}.`).waitFor({ timeout: WAIT_MS });
    }
    assert.equal(await page.evaluate('globalThis.sameDocument'), true, 'the page was not reloaded');
    assert.equal(((await get('/racks/north')).body as { status: string }).status, 'active');
  });

  it("shows a broken scenario's problems with their line, and pushes nothing", async () => {
    await view('Scenarios');
    const broken = 'meta: {name: broken, version: "1"}\ngears:\n  - name: api\n    type: fluxr\n';
    await page.setInputFiles('#scenario-file', { name: 'broken.yaml', mimeType: 'application/yaml', buffer: Buffer.from(broken) });
    await page.getByRole('button', { name: 'Validate and push' }).click();
    const problem = page.locator('#push-problems li').first();
    await problem.waitFor({ timeout: WAIT_MS });
    assert.match((await problem.textContent()) ?? '', /^broken\.yaml:4:\d+: .*fluxr/);
    assert.match((await page.locator('#push-problems').textContent()) ?? '', /no rack received it/);
    assert.equal((await get('/scenarios/broken')).status, 404);
    await shot('scenario-error');
  });

  it("pushes a good scenario, draws it, and shows both racks' applied versions update", async () => {
    await page.setInputFiles('#scenario-file', { name: 'payments.yaml', mimeType: 'application/yaml', buffer: Buffer.from(payments(ports)) });
    await page.getByRole('button', { name: 'Validate and push' }).click();
    for (const name of ['north', 'south']) await page.locator(`.rollout-table tr[data-rack="${name}"][data-state="applied"]`).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('#push-problems li').count(), 0, 'the earlier problems are gone');
    assert.match((await page.locator('.rollout').textContent()) ?? '', /2 of 2 racks applied/);
    for (const gear of ['api-north', 'fraud-north', 'api-south', 'fraud-south']) assert.equal(await page.locator(`.graph [data-gear="${gear}"]`).count(), 1);
    assert.equal(await page.locator('.graph .wire.hot').count(), 6);
    await shot('scenarios');
    await view('Fleet');
    for (const name of ['north', 'south']) await page.locator(`tr[data-rack="${name}"] td[data-applied="payments:1"]`).waitFor({ timeout: WAIT_MS });
    // Every control of every view has a label a screen reader reads.
    const unlabelled = await page
      .locator('input, select')
      .evaluateAll((controls) => controls.filter((c) => c.id === '' || c.ownerDocument.querySelector(`label[for="${c.id}"]`) === null).map((c) => c.outerHTML));
    assert.deepEqual(unlabelled, []);
  });

  it('draws the traffic chart after calls, and the fleet shows their rate', async () => {
    const peer = await connect(`tcp://127.0.0.1:${ports.north}`);
    let calling = true;
    let answered = 0;
    let refused = 0;
    // Calls run on while the page is read: the fleet's row shows a rate, not the quiet after it.
    const traffic = (async () => {
      while (calling) {
        if (((await peer.call('pay', { amount: 5, merchant: 'm-1' })) as { decision: string }).decision === 'approved') answered++;
        else refused++;
      }
    })();
    // Checked at the end; until then a failure must not go unhandled.
    traffic.catch(() => {});
    await view('Traffic');
    for (const chart of ['calls', 'p99'])
      await untilAsync(async () => (await number(`#chart-${chart}`, 'data-max')) > 0, `the ${chart} chart has data`, WAIT_MS);
    const canvas = await page.locator('#chart-calls canvas').boundingBox();
    assert.ok(canvas !== null && canvas.width > 300 && canvas.height > 100, 'the chart has a canvas of its size');
    assert.match((await page.locator('#chart-calls').textContent()) ?? '', /north/);
    await shot('traffic');
    // The fleet's row reads the same samples.
    await view('Fleet');
    await untilAsync(async () => (await number('tr[data-rack="north"] td[data-calls]', 'data-calls')) > 0, "north's row shows its calls/s", WAIT_MS);
    await shot('fleet');
    calling = false;
    await traffic;
    await peer.close();
    assert.ok(answered > 0 && refused === 0, `${answered} approved, ${refused} not`);
  });

  it("tails the fleet's logs, filtered by rack and level", async () => {
    await view('Logs');
    await page.locator('.log-lines li[data-rack="north"]').first().waitFor({ timeout: WAIT_MS });
    await page.getByLabel('Rack', { exact: true }).selectOption('south');
    await page.locator('.log-lines li[data-rack="south"]').first().waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator('.log-lines li[data-rack="north"]').count(), 0, 'only south once filtered');
    await page.getByLabel('Level', { exact: true }).selectOption('error');
    await untilAsync(async () => (await page.locator('.log-lines li.event').count()) === 0, 'events (info) leave the tail at level error', WAIT_MS);
    await page.getByLabel('Rack', { exact: true }).selectOption('');
    await page.getByLabel('Level', { exact: true }).selectOption('info');
    await page.locator('.log-lines li.event').first().waitFor({ timeout: WAIT_MS });
    await shot('logs');
  });

  it('suspends, activates and commands a rack from the page, each confirmed and reported; Cancel does nothing', async () => {
    await view('Fleet');
    const act = async (button: string, confirm: string) => {
      await page.getByRole('button', { name: button }).click();
      await page.getByRole('dialog').getByRole('button', { name: confirm }).click();
    };
    await page.getByRole('button', { name: 'Remove north' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    assert.equal(await page.getByRole('dialog').count(), 0);
    // Escape cancels too, and the focus starts on Cancel: a stray Enter removes nothing.
    await page.getByRole('button', { name: 'Remove north' }).click();
    assert.equal(
      await page
        .getByRole('dialog')
        .getByRole('button', { name: 'Cancel' })
        .evaluate((b) => b === b.ownerDocument.activeElement),
      true,
    );
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal((await get('/racks/north')).status, 200, 'cancelled: north is still enrolled');

    await act('Suspend north', 'Suspend');
    await page.locator('tr[data-rack="north"] [data-status="suspended"]').waitFor({ timeout: WAIT_MS });
    await page.getByText('Suspend: done for north.').waitFor({ timeout: WAIT_MS });
    await act('Activate north', 'Activate');
    await page.locator('tr[data-rack="north"] [data-status="active"]').waitFor({ timeout: WAIT_MS });

    await page.getByRole('button', { name: 'Send a command to north' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByLabel('Command').selectOption('log-level');
    await dialog.getByLabel('Level sent to the Mixer').selectOption('debug');
    await dialog.getByRole('button', { name: 'Send' }).click();
    await page.getByText('log-level: north did it.').waitFor({ timeout: WAIT_MS });
    const audit = (await get('/audit?target=north')).body as Array<{ action: string; actor: string; detail: string; ok: boolean }>;
    assert.ok(audit.length > 0 && audit.every((a) => a.actor === 'dashboard'), 'the page names itself in the audit trail');
    assert.deepEqual(
      audit.filter((a) => a.action !== 'approve').map((a) => [a.action, a.ok]),
      [
        ['suspend', true],
        ['activate', true],
        ['command', true],
      ],
    );
    assert.match(audit.at(-1)!.detail, /log-level .*"telemetry":"debug"/);
  });

  it('shows a rack killed with SIGKILL as offline', async () => {
    await view('Fleet');
    racks.get('south')!.kill('SIGKILL');
    await page.locator('tr[data-rack="south"] [data-status="offline"]').waitFor({ timeout: WAIT_MS });
    await page.locator('tr[data-rack="north"] [data-status="active"]').waitFor({ timeout: WAIT_MS });
    await shot('fleet-offline');
    await page.getByRole('button', { name: 'Remove south' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Remove' }).click();
    await page.locator('table.fleet tr[data-rack="south"]').waitFor({ state: 'detached', timeout: WAIT_MS });
    assert.equal((await get('/racks/south')).status, 404);
  });

  it('serves the page without the token, and no data without it', async () => {
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    assert.equal((await fetch(`${base}/dashboard/main.js`)).status, 200);
    assert.equal((await fetch(`${base}/series`)).status, 401);
    assert.equal((await fetch(`${base}/scenarios/payments/graph`)).status, 401);
  });
});
