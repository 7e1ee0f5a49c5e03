// Telemetry: the log tap and the token bucket; a log flood against a rack's workers; logs,
// events and metrics through a real nats-server to the Mixer, its /metrics, logs and audit
// trail; and an uplink that outlives a NATS restart with exact accounting of what it dropped.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { connect } from '../src/fluxar/mod.js';
import { buildMixerApi } from '../src/mixer/api.js';
import { Mixer } from '../src/mixer/mixer.js';
import { MixerAgent } from '../src/rack/agent.js';
import { LocalLog } from '../src/rack/local-log.js';
import { Rack } from '../src/rack/rack.js';
import { parseScenario } from '../src/scenario/parse.js';
import { pino } from 'pino';
import { lineLevel, lineWriter, tappedLogger } from '../src/telemetry/log-tap.js';
import { TokenBucket } from '../src/telemetry/token-bucket.js';
import { TelemetryUplink } from '../src/telemetry/uplink.js';
import { captureLogs } from './harness/logs.js';
import { NatsServerProcess } from './harness/nats.js';
import { until, untilAsync } from './harness/wait.js';

const root = new URL('../../', import.meta.url).pathname;
const chatty = join(root, 'dist/test-gears/chatty.wasm');
const cli = join(root, 'dist/src/cli/main.js');
const execFileAsync = promisify(execFile);
const TOKEN = 'telemetry-token';

function chattyScenario(name: string) {
  return parseScenario(
    JSON.stringify({
      meta: { name, version: '1' },
      gears: [
        { name: 'api', type: 'fluxar', config: { listen: ['tcp://127.0.0.1:0'] } },
        { name: 'chatty', type: 'wasm', config: { module: chatty, log_rate_per_s: 1_000_000_000 } },
      ],
      wires: [
        { from: 'api.out', to: 'chatty.in' },
        { from: 'chatty.out', to: 'api.in' },
      ],
    }),
    join(root, `${name}.yaml`),
  );
}

function sink(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    stream: new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    }),
  };
}

describe('telemetry: the log tap and the token bucket', () => {
  it('reads the level of a pino line without parsing it', () => {
    assert.equal(lineLevel('{"level":40,"time":1,"msg":"x"}\n'), 40);
    assert.equal(lineLevel('{"level":5'), 5);
    assert.equal(lineLevel('not json'), 0);
  });

  it('sends each line where its level reaches: the local log, telemetry, both or neither', async () => {
    const local = sink();
    const { logger, tap } = tappedLogger('t', 'error', 'warn', local.stream);
    const tapped: string[] = [];
    tap.sink = (line) => tapped.push(line);
    assert.equal(logger.level, 'warn', 'the logger runs at the lower of the two levels');
    logger.info('neither');
    logger.warn('telemetry only');
    logger.error('both');
    await until(() => local.lines.length === 1, 'the local line');
    assert.deepEqual(
      tapped.map((l) => JSON.parse(l).msg),
      ['telemetry only', 'both'],
    );
    assert.equal(JSON.parse(local.lines[0]!).msg, 'both');
    logger.level = tap.setLevels({ telemetry: 'silent', local: 'info' });
    logger.info('local now');
    await until(() => local.lines.length === 2, 'the second local line');
    assert.equal(tapped.length, 2);
  });

  it("writes a gear's lines as pino would, byte for byte, from text or bytes, and only at the logger's level", async () => {
    const local = sink();
    const { logger, tap } = tappedLogger('t', 'info', 'silent', local.stream);
    const write = lineWriter(logger, { gear: 'g"1' });
    assert.ok(write !== undefined);
    const texts = [
      'plain',
      '',
      'with "quotes" and \\ back',
      'tab\tnew\nline\u0001 \b\f\r\u001f\u007f',
      'ünïcödé ✓ 🚀',
      '%s %d %o',
      'x'.repeat(150),
      'y'.repeat(20_000),
    ];
    const child = logger.child({ gear: 'g"1' });
    for (const text of texts) {
      child.warn(text);
      write.text(40, text);
      write.utf8(40, Buffer.from(text));
    }
    // Bytes that are not UTF-8 read as TextDecoder reads them, replacement characters and all.
    const invalid = Uint8Array.of(0x61, 0xff, 0xc3, 0x62);
    child.error(new TextDecoder().decode(invalid));
    write.utf8(50, invalid);
    write.text(20, 'below the level');
    write.utf8(20, Buffer.from('below the level'));
    const expected = texts.length * 3 + 2;
    await until(() => local.lines.length === expected, 'the lines');
    const withoutTime = (line: string) => line.replace(/"time":\d+/, '"time":0');
    for (let i = 0; i < texts.length; i++) {
      const [byPino, byText, byBytes] = local.lines.slice(3 * i, 3 * i + 3).map((l) => withoutTime(l!));
      assert.equal(byText, byPino, `text ${i}`);
      assert.equal(byBytes, byPino, `bytes ${i}`);
      assert.equal(JSON.parse(byBytes!).msg, texts[i]);
    }
    assert.equal(withoutTime(local.lines[expected - 1]!), withoutTime(local.lines[expected - 2]!));
    logger.level = tap.setLevels({ local: 'debug' });
    write.utf8(20, Buffer.from('now at the level'));
    await until(() => local.lines.length === expected + 1, 'the debug line');
    assert.equal(JSON.parse(local.lines.at(-1)!).level, 20);
    assert.equal(lineWriter(pino({ level: 'info' }, local.stream), { gear: 'g' }), undefined, 'a logger of other options is left to pino');
  });

  it('hands a line built as bytes to the local log and to the telemetry sink, as bytes or as text', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'fluxrig-tap-')), 'local.log');
    const local = new LocalLog({ dest: file });
    const { logger, tap } = tappedLogger('t', 'error', 'warn', local);
    const write = lineWriter(logger, { gear: 'g' })!;
    const asText: string[] = [];
    tap.sink = (line) => asText.push(line);
    write.utf8(40, Buffer.from('to the uplink'));
    const asBytes: string[] = [];
    tap.sinkUtf8 = (line) => asBytes.push(Buffer.from(line).toString());
    write.utf8(50, Buffer.from('to both, "quoted"'));
    write.utf8(30, Buffer.from('below both levels'));
    write.text(50, 'text to both');
    assert.deepEqual(
      asText.map((l) => JSON.parse(l).msg),
      ['to the uplink', 'text to both'],
      'bytes go to the text sink while there is no bytes sink; a line built as text always does',
    );
    assert.deepEqual(
      asBytes.map((l) => JSON.parse(l).msg),
      ['to both, "quoted"'],
    );
    await local.drained();
    const written = readFileSync(file, 'utf8');
    assert.ok(written.endsWith('\n'));
    assert.deepEqual(
      written
        .trimEnd()
        .split('\n')
        .map((l) => [JSON.parse(l).level, JSON.parse(l).msg]),
      [
        [50, 'to both, "quoted"'],
        [50, 'text to both'],
      ],
    );
  });

  it('grants tokens at its rate, up to its burst', () => {
    const bucket = new TokenBucket(100, 10, 0);
    assert.equal(bucket.take(50, 0), 10, 'a full bucket gives its burst');
    assert.equal(bucket.take(50, 0), 0);
    assert.equal(bucket.take(50, 50), 5, '50 ms at 100/s');
    assert.equal(bucket.take(50, 10_000), 10, 'never more than the burst');
    assert.throws(() => new TokenBucket(0, 1, 0), /rate > 0/);
  });
});

describe("a worker's local log", () => {
  const dir = mkdtempSync(join(tmpdir(), 'fluxrig-local-log-'));
  const lines = (file: string) =>
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '');

  it('writes every line, in order, in batches', async () => {
    const file = join(dir, 'order.log');
    const log = new LocalLog({ dest: openSync(file, 'w') });
    // More than one batch's worth in one turn, then a few more in the next.
    for (let i = 0; i < 500; i++) log.write(`line ${i} ${'x'.repeat(40)}\n`);
    await new Promise((resolve) => setImmediate(resolve));
    for (let i = 500; i < 510; i++) log.write(`line ${i} ${'x'.repeat(40)}\n`);
    await log.drained();
    assert.deepEqual(
      lines(file).map((l) => Number(l.split(' ')[1])),
      Array.from({ length: 510 }, (_, i) => i),
    );
  });

  it('drops the lines that find both buffers full, counting every one, and keeps writing afterwards', async () => {
    const file = join(dir, 'drop.log');
    const dropped: number[] = [];
    const log = new LocalLog({ dest: openSync(file, 'w'), maxBytes: 1000, onDrop: (n) => dropped.push(n) });
    for (let i = 0; i < 5; i++) log.write(`kept ${i}\n`);
    await log.drained();
    // 20 lines of 100 bytes in one turn, against two buffers of 500: one fills and goes out,
    // the other fills while it is written, and the rest are dropped.
    for (let i = 0; i < 20; i++) log.write(`${i.toString().padStart(2, '0')}${'d'.repeat(97)}\n`);
    await log.drained();
    log.write('after\n');
    await log.drained();
    const written = lines(file);
    assert.deepEqual(written.slice(0, 5), ['kept 0', 'kept 1', 'kept 2', 'kept 3', 'kept 4']);
    assert.equal(written.at(-1), 'after');
    const floods = written.slice(5, -1);
    assert.deepEqual(
      floods.map((l) => l.slice(0, 2)),
      Array.from({ length: 10 }, (_, i) => i.toString().padStart(2, '0')),
      'the first lines, whole and in order',
    );
    assert.ok(floods.every((l) => l.length === 99));
    assert.equal(
      dropped.reduce((a, b) => a + b, 0),
      10,
      'every other line counted',
    );
  });

  it('gathers a flood into few writes, and a line logged alone still reaches the file', async () => {
    const file = join(dir, 'few.log');
    const log = new LocalLog({ dest: openSync(file, 'w') });
    // The file's size after each of 20 turns that log 100 lines (7 KB) each.
    const sizes: number[] = [];
    for (let turn = 0; turn < 20; turn++) {
      for (let i = 0; i < 100; i++) log.write(`t${turn} l${i} ${'x'.repeat(60)}\n`);
      await new Promise((resolve) => setImmediate(resolve));
      sizes.push(readFileSync(file).length);
    }
    await log.drained();
    assert.equal(lines(file).length, 2000);
    // A write per turn made the file grow on nearly every turn; gathered, it grows a few times.
    const grew = sizes.filter((size, i) => size !== (sizes[i - 1] ?? 0)).length;
    assert.ok(grew < 10, `the file grew on ${grew} of 20 turns`);
    log.write('alone\n');
    await until(() => lines(file).at(-1) === 'alone', 'the lone line written', 2000);
  });

  it('waits out a full non-blocking pipe (stdout read slowly) and loses no line', async () => {
    const file = join(dir, 'pipe.log');
    // A reader that starts reading only when told: until then the pipe fills and writes get EAGAIN.
    const reader = spawn(
      process.execPath,
      ['-e', `process.once('message', () => process.stdin.pipe(require('fs').createWriteStream(${JSON.stringify(file)})))`],
      { stdio: ['pipe', 'ignore', 'inherit', 'ipc'] },
    );
    const fd = (reader.stdin as unknown as { _handle: { fd: number } })._handle.fd;
    const dropped: number[] = [];
    const log = new LocalLog({ dest: fd, onDrop: (n) => dropped.push(n) });
    for (let i = 0; i < 3000; i++) log.write(`line ${i} ${'p'.repeat(90)}\n`);
    const drained = log.drained();
    reader.send('go');
    await drained;
    const exited = new Promise((resolve) => reader.once('exit', resolve));
    reader.stdin!.end();
    await exited;
    assert.deepEqual(
      lines(file).map((l) => Number(l.split(' ')[1])),
      Array.from({ length: 3000 }, (_, i) => i),
    );
    assert.deepEqual(dropped, []);
  });

  it('writes what it holds before returning from flushSync (a thread that exits)', () => {
    const file = join(dir, 'exit.log');
    const log = new LocalLog({ dest: openSync(file, 'w') });
    log.write('one\n');
    log.write('two\n');
    log.flushSync();
    assert.deepEqual(lines(file), ['one', 'two']);
  });
});

describe('telemetry: a log flood in the workers', () => {
  it('never blocks a gear: every call is answered, and what the ring cannot hold is dropped and counted exactly', async () => {
    const { logger, tap } = tappedLogger('flood', 'error', 'warn', sink().stream);
    const rack = new Rack({ scenario: chattyScenario('flood'), name: 'flood', workers: 2, logger, logTap: tap });
    await rack.start();
    let replaced = 0;
    rack.on('worker-replaced', () => replaced++);
    const peer = await connect(rack.addresses('api')[0]!);
    try {
      const CALLS = 400;
      const LINES = 100;
      const answers = await Promise.all(Array.from({ length: CALLS }, (_, i) => peer.call('log', { log_lines: LINES, i })));
      assert.equal(answers.length, CALLS);
      const telemetry = rack.workerTelemetry!;
      // Nothing drains the rings here (no uplink): each line is either waiting or counted as dropped.
      assert.equal(telemetry.pending() + telemetry.dropped(), CALLS * LINES);
      assert.ok(telemetry.dropped() > (CALLS * LINES) / 2, `most lines dropped (${telemetry.dropped()})`);
      assert.equal(replaced, 0, 'no worker stalled');
      const taken = telemetry.take(10);
      assert.equal(taken.length, 10);
      assert.match(JSON.parse(taken[0]!).msg, /^chatty line \d+$/);
    } finally {
      await peer.close();
      await rack.stop();
    }
  });
});

describe('telemetry through the Mixer', () => {
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  let mixer: Mixer;
  let api: FastifyInstance;
  let base: string;
  let rack: Rack;
  let agent: MixerAgent;
  let uplink: TelemetryUplink;
  const mixerLog = captureLogs('info');
  const QUEUE = 500;

  // biome-ignore lint/suspicious/noExplicitAny: the tests read API answers field by field, as JSON
  async function http(method: string, path: string, body?: unknown, actor?: string): Promise<{ status: number; body: any; text: string }> {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${TOKEN}`,
        ...(actor === undefined ? {} : { 'x-fluxrig-actor': actor }),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: res.status, body: parsed, text };
  }

  async function metricsFamilies() {
    const res = await http('GET', '/metrics');
    assert.equal(res.status, 200);
    return parsePrometheusTextFormat(res.text);
  }

  const cliEnv = () => ({ ...process.env, FLUXRIG_MIXER_API: base, FLUXRIG_MIXER_TOKEN: TOKEN, FLUXRIG_ACTOR: 'cli@test' });

  before(async () => {
    nats = await NatsServerProcess.start();
    nc = await natsConnect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    mixer = new Mixer({ nats: nc, logger: mixerLog.logger, autoAdopt: true, commandTimeoutMs: 3000 });
    await mixer.start();
    api = await buildMixerApi({ mixer, token: TOKEN, version: 'test' });
    base = await api.listen({ host: '127.0.0.1', port: 0 });
    const { logger, tap } = tappedLogger('tele', 'error', 'warn', sink().stream);
    rack = new Rack({ scenario: chattyScenario('tele'), name: 'tele', workers: 2, logger, logTap: tap });
    await rack.start();
    uplink = new TelemetryUplink({ rack: 'tele', workers: rack.workerTelemetry, queueEntries: QUEUE, ratePerS: 1_000_000, burst: 1_000_000, flushMs: 50 });
    tap.sink = (line) => uplink.log(line);
    agent = new MixerAgent({
      rack,
      natsUrl: nats.url,
      stateDir: mkdtempSync(join(tmpdir(), 'fluxrig-tele-')),
      baseDir: root,
      labels: {},
      heartbeatMs: 200,
      version: 'test',
      logger,
      telemetry: uplink,
      onShutdown: () => {},
    });
    agent.start();
    await until(() => agent.status === 'active', 'the rack is adopted');
  });

  after(async () => {
    await agent.stop();
    await rack.stop();
    await api.close();
    await mixer.close();
    await nc.close();
    await nats.stop();
  });

  it('brings logs, events and per-gear metrics to the Mixer, its /metrics, its logs API and fluxrig logs', async () => {
    const peer = await connect(rack.addresses('api')[0]!);
    for (let i = 0; i < 10; i++) await peer.call('log', { log_lines: 2 });
    await peer.close();
    await until(() => mixer.telemetry.logs({ rack: 'tele', kind: 'log', limit: 1000 }).filter((r) => /^chatty line/.test(r.msg)).length === 20, 'the 20 lines');
    const events = mixer.telemetry.logs({ rack: 'tele', kind: 'event' }).map((r) => r.msg);
    assert.ok(events.includes('started') && events.includes('status'), `events: ${events}`);
    await until(
      () =>
        (mixer.telemetry
          .metrics()
          .get('tele')
          ?.metrics.gears.api?.calls?.counts.reduce((a, b) => a + b, 0) ?? 0) >= 10,
      'the calls in the metrics',
    );

    const families = await metricsFamilies();
    const family = (name: string) => {
      const f = families.find((x) => x.name === name);
      assert.ok(f !== undefined, `${name} in /metrics`);
      return f;
    };
    assert.equal(family('fluxrig_racks').type, 'GAUGE');
    assert.equal(family('fluxrig_rack_online').metrics.find((m) => m.labels?.rack === 'tele')?.value, '1');
    const messages = family('fluxrig_gear_messages_total').metrics.find((m) => m.labels?.rack === 'tele' && m.labels.gear === 'chatty');
    assert.ok(Number(messages?.value) >= 10);
    const calls = family('fluxrig_gear_call_duration_seconds');
    assert.equal(calls.type, 'HISTOGRAM');
    // The parser flattens labelled histograms (it keeps one set of buckets): the samples are read as lines.
    assert.ok(calls.metrics[0]?.buckets?.['+Inf'] !== undefined);
    const text = (await http('GET', '/metrics')).text;
    const count = Number(/^fluxrig_gear_call_duration_seconds_count\{rack="tele",gear="api"\} (\d+)$/m.exec(text)?.[1]);
    const inf = Number(/^fluxrig_gear_call_duration_seconds_bucket\{rack="tele",gear="api",le="\+Inf"\} (\d+)$/m.exec(text)?.[1]);
    assert.ok(
      count >= 10 && inf === count,
      `the histogram counts every call:\n${text
        .split('\n')
        .filter((l) => l.includes('call_duration'))
        .join('\n')}`,
    );
    assert.ok(family('fluxrig_rack_telemetry_dropped_total').metrics.some((m) => m.labels?.rack === 'tele' && m.labels.kind === 'log'));

    const listed = await http('GET', '/logs?rack=tele&level=warn&limit=5');
    assert.equal(listed.status, 200);
    assert.equal(listed.body.length, 5);
    assert.ok(listed.body.every((r: { level: string }) => r.level === 'warn'));
    assert.equal((await http('GET', '/logs?level=loud')).status, 400, 'an unknown level is refused');
    const { stdout } = await execFileAsync(process.execPath, [cli, 'logs', '--rack', 'tele', '--limit', '3'], { env: cliEnv() });
    assert.match(stdout, /tele WARN {2}chatty line/);
  });

  it('follows new log lines as server-sent events', async () => {
    const controller = new AbortController();
    const res = await fetch(`${base}/logs/follow?rack=tele&kind=log&limit=1`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: controller.signal });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    rack.log.warn('followed line');
    const deadline = Date.now() + 10_000;
    while (!text.includes('followed line') && Date.now() < deadline) text += (await reader.read()).value ?? '';
    controller.abort();
    assert.match(text, /event: log\ndata: .*followed line/);
  });

  it('takes the telemetry level from the log-level command, and keeps an audit trail of who did what', async () => {
    const set = await http('POST', '/racks/tele/commands', { command: 'log-level', telemetry: 'info' }, 'alice@ops');
    assert.equal(set.status, 200, set.text);
    assert.equal(set.body.ok, true);
    assert.deepEqual(rack.logLevels, { local: 'error', telemetry: 'info' });
    rack.log.info('an info line');
    await until(() => mixer.telemetry.logs({ rack: 'tele' }).some((r) => r.msg === 'an info line'), 'the info line');
    await http('POST', '/racks/tele/commands', { command: 'log-level', telemetry: 'warn' }, 'alice@ops');
    const refused = await http('POST', '/racks/tele/commands', { command: 'log-level' }, 'alice@ops');
    assert.equal(refused.status, 400);

    const scenario = `meta: {name: audited, version: "1"}\nracks: [{name: tele}]\ngears: []\nwires: []\n`;
    assert.equal((await http('POST', '/scenarios', { yaml: scenario, file: 'audited.yaml' }, 'bob@ops')).status, 200);
    assert.equal((await http('POST', '/racks/nobody/suspend', undefined, 'bob@ops')).status, 404);
    await until(() => mixer.audit.list().length >= 4, 'the audit entries');
    const trail = (await http('GET', '/audit?limit=10')).body as Array<Record<string, unknown>>;
    const find = (action: string, actor: string) => trail.find((e) => e.action === action && e.actor === actor);
    assert.equal(find('command', 'alice@ops')?.target, 'tele');
    assert.equal(find('command', 'alice@ops')?.ok, true);
    assert.equal(find('push', 'bob@ops')?.target, 'audited.yaml');
    assert.equal(find('suspend', 'bob@ops')?.ok, false, 'a refused operation is in the trail too');
    assert.match(String(find('suspend', 'bob@ops')?.error), /no rack named nobody/);
    const { stdout } = await execFileAsync(process.execPath, [cli, 'audit', '--actor', 'bob@ops'], { env: cliEnv() });
    assert.match(stdout, /bob@ops\s+push\s+audited\.yaml/);
  });

  it('survives a NATS restart: what the queue held arrives afterwards, what overflowed is counted', async () => {
    await until(() => uplink.logsWaiting() === 0, 'the uplink has published every line it had');
    const droppedBefore = uplink.counters().dropped.log;
    await nats.down();
    const LINES = 2000;
    for (let n = 0; n < LINES; n++) rack.log.warn({ n }, 'outage line');
    assert.equal(uplink.counters().dropped.log - droppedBefore, LINES - QUEUE, 'the oldest lines beyond the bound were dropped, and counted');
    await nats.up();
    await untilAsync(
      async () => mixer.telemetry.logs({ rack: 'tele', limit: 5000 }).filter((r) => r.msg === 'outage line').length === QUEUE,
      'the queued lines arrive after the restart',
      30_000,
    );
    const kept = mixer.telemetry
      .logs({ rack: 'tele', limit: 5000 })
      .filter((r) => r.msg === 'outage line')
      .map((r) => JSON.parse(r.fields).n as number)
      .sort((a, b) => a - b);
    assert.deepEqual(
      kept,
      Array.from({ length: QUEUE }, (_, i) => LINES - QUEUE + i),
      'the newest lines were kept, each once',
    );
    await untilAsync(async () => {
      const dropped = (await metricsFamilies()).find((f) => f.name === 'fluxrig_rack_telemetry_dropped_total');
      return Number(dropped?.metrics.find((m) => m.labels?.rack === 'tele' && m.labels.kind === 'log')?.value) >= LINES - QUEUE;
    }, 'the Mixer shows the drops');
  });
});
