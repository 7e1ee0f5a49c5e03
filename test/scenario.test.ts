import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { loadScenario, parseScenario } from '../src/scenario/parse.js';
import { scenarioJsonSchema } from '../src/scenario/schema.js';
import { ScenarioError } from '../src/scenario/types.js';
import { loadRackConfig } from '../src/rack/config.js';

const run = promisify(execFile);
const cli = new URL('../src/cli/main.js', import.meta.url).pathname;
const root = new URL('../../', import.meta.url).pathname;

function problems(text: string): string[] {
  try {
    parseScenario(text, 'test.yaml');
  } catch (err) {
    assert.ok(err instanceof ScenarioError, String(err));
    return err.issues.map((i) => `${i.line}:${i.column}: ${i.message}`);
  }
  assert.fail('the scenario should be invalid');
}

const base = `meta: {name: t, version: "1"}
gears:
  - name: api
    type: fluxar
    config: {listen: ["tcp://127.0.0.1:0"]}
  - name: fraud
    type: wasm
    config: {module: x.wasm}
`;

describe('scenario validation', () => {
  it('accepts the quickstart scenario', async () => {
    const s = await loadScenario(join(root, 'scenarios/quickstart.yaml'));
    assert.equal(s.meta.name, 'quickstart');
    assert.deepEqual(
      s.gears.map((g) => `${g.name}:${g.type}`),
      ['api:fluxar', 'fraud:wasm'],
    );
    assert.deepEqual(
      s.wires.map((w) => `${w.from.gear}.${w.from.port}->${w.to.gear}.${w.to.port}`),
      ['api.out->fraud.in', 'fraud.out->api.in', 'fraud.error->api.in'],
    );
    assert.match(s.wires[0]!.at, /quickstart\.yaml:\d+:\d+$/);
  });

  it('reports every problem at once, each at its line and column', () => {
    const text = `meta: {name: Bad}
gears:
  - name: api
    type: fluxar
    config: {listen: ["tcp://127.0.0.1:0"], colour: red}
  - name: fraud
    type: wasm
    config: {timeout_ms: -1}
  - name: mystery
    type: quantum
wires:
  - from: api.out
    to: ghost.in
  - from: fraud.result
    to: api.in
  - from: api.out
    to: api.out
  - from: fraud.out
    to: api.in
    lane: warp
`;
    assert.deepEqual(problems(text), [
      '1:14: meta.name "Bad" must match [a-z0-9_-]+',
      '5:53: gear api (fluxar): unknown key colour in config (expected listen, tls_cert, tls_key, tls_ca, require_client_cert, auth, bearer_tokens, psk, e2e, max_frame, max_in_flight, max_streams, stream_window, heartbeat_ms, resume_ms, resume_buffer, max_connections, max_connections_per_ip, upgrade_timeout_ms, inflate_bytes_per_s, decode_items_per_s, describe)',
      '8:13: gear fraud (wasm): config needs module (or source)',
      '8:26: gear fraud (wasm): config.timeout_ms must be at least 1 (got -1)',
      '10:11: unknown gear type "quantum" (known: fluxar, wasm, router, log, generator, nats)',
      '13:9: unknown gear ghost in to "ghost.in"',
      '14:11: gear fraud (wasm) has no output port result (it has out, error)',
      '17:9: gear api (fluxar) has no input port out (it has in)',
      '20:11: lane must be hot or guaranteed (got "warp")',
    ]);
  });

  it('refuses a hot lane across racks, accepts a guaranteed one', () => {
    const racks = `meta: {name: t}
racks:
  - name: edge
  - name: core
gears:
  - name: api
    type: fluxar
    deploy: edge
    config: {listen: ["tcp://127.0.0.1:0"]}
  - name: audit
    type: log
    deploy: core
wires:
  - from: api.out
    to: audit.in
`;
    assert.deepEqual(problems(racks), ['14:5: hot lane across racks: api is on edge, audit on core; a hot lane is in memory, use lane: guaranteed']);
    const s = parseScenario(`${racks}    lane: guaranteed\n`, 't.yaml');
    assert.equal(s.wires[0]!.crossRack, true);
    assert.equal(s.wires[0]!.lane, 'guaranteed');
  });

  it('reports YAML syntax errors with their position', () => {
    const [first] = problems('meta: {name: t\ngears: [\n');
    assert.match(first!, /^\d+:\d+: YAML: /);
  });

  it('names a missing gear list, a duplicate gear, and accepts pipes as the wires alias', () => {
    assert.deepEqual(problems('meta: {name: t}\n'), ['1:1: gears is required: a list of {name, type, config}']);
    assert.deepEqual(problems(`${base}  - name: api\n    type: log\n`), ['9:11: gear api is declared twice (first at test.yaml:3:5)']);
    const s = parseScenario(`${base}pipes:\n  - from: api.out\n    to: fraud.in\n`, 'p.yaml');
    assert.equal(s.wires.length, 1);
  });

  it('router ports come from its routes', () => {
    const s = parseScenario(
      `${base}  - name: split
    type: router
    config:
      routes:
        - {port: big, data: {tier: gold}}
wires:
  - from: split.big
    to: fraud.in
  - from: split.default
    to: fraud.in
`,
      'r.yaml',
    );
    assert.equal(s.wires.length, 2);
    assert.deepEqual(
      problems(`${base}  - name: split\n    type: router\n    config: {routes: [{port: big}]}\nwires:\n  - from: split.small\n    to: fraud.in\n`),
      ['13:11: gear split (router) has no output port small (it has default, big)'],
    );
  });

  it('fluxrig scenario validate exits 1 with file:line:column, 0 when valid', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-scn-'));
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `${base}wires:\n  - from: api.nope\n    to: fraud.in\n`);
    await assert.rejects(
      run(process.execPath, [cli, 'scenario', 'validate', bad]),
      (err: { code: number; stderr: string }) =>
        err.code === 1 && err.stderr.includes(`${bad}:10:11: gear api (fluxar) has no output port nope (it has out)`) && /1 problem/.test(err.stderr),
    );
    const { stdout } = await run(process.execPath, [cli, 'scenario', 'validate', join(root, 'scenarios/quickstart.yaml')]);
    assert.match(stdout, /valid \(2 gears, 3 wires\)/);
  });

  it('the committed JSON Schema matches the gear manifests', () => {
    const committed = JSON.parse(readFileSync(join(root, 'scenarios/scenario.schema.json'), 'utf8'));
    assert.deepEqual(committed, scenarioJsonSchema(), 'run: node dist/src/cli/main.js scenario schema scenarios/scenario.schema.json');
  });

  it('fluxrig gears list and doc describe every type', async () => {
    const { stdout } = await run(process.execPath, [cli, 'gears', 'list']);
    for (const t of ['fluxar', 'wasm', 'router', 'log', 'generator', 'nats']) assert.match(stdout, new RegExp(`^${t} `, 'm'));
    const doc = await run(process.execPath, [cli, 'gears', 'doc', 'wasm']);
    assert.match(doc.stdout, /output ports: out, error/);
    assert.match(doc.stdout, /timeout_ms: integer \[default 100\]/);
  });
});

describe('rack logs', () => {
  it('read as lines in a terminal', async () => {
    const { formatLogLine } = await import('../src/rack/log-format.js');
    const line = formatLogLine(
      JSON.stringify({
        level: 40,
        time: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
        pid: 1,
        hostname: 'h',
        name: 'fluxrig',
        msg: 'worker replaced',
        worker: 1,
        reason: 'exited',
      }),
    );
    assert.equal(line, '03:04:05.006 WARN  worker replaced  worker=1 reason=exited\n');
    assert.equal(formatLogLine('not json'), 'not json');
  });
});

describe('rack configuration', () => {
  it('file, then FLUXRIG_<SECTION>_<KEY>, then flags', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-cfg-'));
    const file = join(dir, 'rack.yaml');
    writeFileSync(file, 'rack: {workers: 3, drain_timeout_ms: 2000}\nnats: {url: "nats://file:4222"}\nkv: {"fraud/blocklist": "m-1"}\n');
    const config = loadRackConfig({
      file,
      env: { FLUXRIG_RACK_WORKERS: '5', FLUXRIG_NATS_URL: 'nats://env:4222', UNRELATED: 'x' },
      flags: { 'rack.workers': '1' },
    });
    assert.equal(config.rack.workers, 1, 'flag wins');
    assert.equal(config.nats.url, 'nats://env:4222', 'environment beats the file');
    assert.equal(config.rack.drain_timeout_ms, 2000, 'file beats the default');
    assert.equal(config.kv['fraud/blocklist'], 'm-1');
    assert.throws(() => loadRackConfig({ env: { FLUXRIG_RACK_WORKRES: '2' } }), /environment FLUXRIG_RACK_WORKRES: unknown key rack\.workres/);
    assert.throws(() => loadRackConfig({ flags: { 'rack.workers': 'many' } }), /rack\.workers must be a number/);
  });
});
