// Introspection (docs/fluxar-spec.md section 17): typed handlers check their input, fluxar.describe
// lists what a peer serves with its schemas, and `fluxrig describe --ts` writes a client that
// tsc compiles and that calls through.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import Type from 'typebox';
import { typedHandler, typedStreamHandler } from '../src/fluxar/describe.js';
import { connect, type DescribeDocument, FluxarError, type FluxarServer, listen, secretTable } from '../src/fluxar/mod.js';
import { schemaType } from '../src/fluxar/typescript-client.js';
import { errorOf } from './harness/errors.js';
import { until } from './harness/wait.js';

const run = promisify(execFile);
const quiet = pino({ level: 'silent' });
const root = new URL('../../', import.meta.url).pathname;
const cli = join(root, 'dist/src/cli/main.js');
const tsc = join(root, 'node_modules/.bin/tsc');

const Authorize = {
  description: 'Scores a payment and decides',
  input: Type.Object({
    amount: Type.Number({ minimum: 0, description: 'in cents' }),
    merchant: Type.String(),
    items: Type.Optional(Type.Array(Type.Object({ sku: Type.String(), qty: Type.Integer({ minimum: 1 }) }))),
  }),
  output: Type.Object({ decision: Type.Union([Type.Literal('approved'), Type.Literal('declined')]), score: Type.Number() }),
};

const Export = {
  input: Type.Object({ rows: Type.Integer({ minimum: 0 }) }),
  output: Type.Object({ n: Type.Integer() }),
};

describe('FLUXAR introspection', () => {
  let server: FluxarServer;
  let url: string;
  before(async () => {
    server = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet });
    url = server.addresses[0]!;
    server.handle('payments.authorize', Authorize, (p) => ({
      decision: p.amount < 10_000 ? ('approved' as const) : ('declined' as const),
      score: p.amount / 100,
    }));
    server.handle('ping', () => 'pong');
    server.handleStream('reports.export', Export, async function* (_chunks, ctx) {
      for (let n = 0; n < (ctx.payload as { rows: number }).rows; n++) yield { n };
    });
    server.topic('prices.>', { description: 'price ticks', payload: Type.Object({ symbol: Type.String(), price: Type.Number() }) });
  });
  after(() => server.close());

  it('a typed handler answers conforming input and refuses the rest with 400 and the JSON path of the first problem', async () => {
    const peer = await connect(url);
    assert.deepEqual(await peer.call('payments.authorize', { amount: 500, merchant: 'm-1' }), { decision: 'approved', score: 5 });
    const negative = await errorOf(peer.call('payments.authorize', { amount: -5, merchant: 'm-1' }));
    assert.equal(negative.code, 400);
    assert.equal(negative.message, 'input at /amount must be >= 0');
    assert.deepEqual(negative.data, { path: '/amount', keyword: 'minimum' });
    const nested = await errorOf(
      peer.call('payments.authorize', {
        amount: 1,
        merchant: 'm',
        items: [
          { sku: 'a', qty: 1 },
          { sku: 'b', qty: 0 },
        ],
      }),
    );
    assert.equal((nested.data as { path: string }).path, '/items/1/qty');
    const missing = await errorOf(peer.call('payments.authorize', { amount: 1 }));
    assert.match(missing.message, /^input must have required properties merchant/);
    assert.equal((missing.data as { path: string }).path, '');
    const wrongType = await errorOf(peer.call('payments.authorize', 'a string'));
    assert.equal(wrongType.code, 400);
    await peer.close();
  });

  it('a call that comes before the schema is compiled waits for it, and is checked all the same', async () => {
    const ctx = {} as Parameters<ReturnType<typeof typedHandler>>[1];
    const early = typedHandler(Authorize, (p) => ({ doubled: p.amount * 2 }));
    assert.deepEqual(await early({ amount: 2, merchant: 'm' }, ctx), { doubled: 4 });
    const refused = typedHandler(Authorize, () => 'never');
    await assert.rejects(Promise.resolve(refused({ amount: -1, merchant: 'm' }, ctx)), (err: unknown) => err instanceof FluxarError && err.code === 400);
    const stream = typedStreamHandler(Export, async function* (_chunks, c) {
      for (let n = 0; n < (c.payload as { rows: number }).rows; n++) yield { n };
      return 'done';
    });
    const it = stream([] as unknown as AsyncIterable<unknown>, { payload: { rows: 2 } } as Parameters<typeof stream>[1]) as AsyncGenerator<unknown>;
    assert.deepEqual(await it.next(), { value: { n: 0 }, done: false });
    assert.deepEqual(await it.next(), { value: { n: 1 }, done: false });
    assert.deepEqual(await it.next(), { value: 'done', done: true });
  });

  it('a typed stream handler checks the opening payload', async () => {
    const peer = await connect(url);
    const chunks: unknown[] = [];
    for await (const chunk of peer.stream('reports.export', { rows: 3 })) chunks.push(chunk);
    assert.deepEqual(chunks, [{ n: 0 }, { n: 1 }, { n: 2 }]);
    const bad = peer.stream('reports.export', { rows: -1 });
    const err = await errorOf(bad.result);
    assert.equal(err.code, 400);
    assert.equal((err.data as { path: string }).path, '/rows');
    await peer.close();
  });

  it('fluxar.describe lists methods, streams and topics with their schemas', async () => {
    const peer = await connect(url);
    const doc = (await peer.call('fluxar.describe', { version: 1 })) as DescribeDocument;
    assert.equal(doc.version, 1);
    assert.deepEqual(
      doc.methods.map((m) => m.name),
      ['payments.authorize', 'ping'],
    );
    const authorize = doc.methods[0]!;
    assert.equal(authorize.description, 'Scores a payment and decides');
    assert.deepEqual(authorize.input, JSON.parse(JSON.stringify(Authorize.input)));
    assert.deepEqual(authorize.output, JSON.parse(JSON.stringify(Authorize.output)));
    assert.deepEqual(doc.methods[1], { name: 'ping' }, 'an untyped handler is listed by name only');
    assert.deepEqual(doc.streams, [
      { name: 'reports.export', input: JSON.parse(JSON.stringify(Export.input)), output: JSON.parse(JSON.stringify(Export.output)) },
    ]);
    assert.equal(doc.topics[0]!.pattern, 'prices.>');
    assert.equal(doc.topics[0]!.description, 'price ticks');
    // null asks for version 1 as well.
    assert.deepEqual(await peer.call('fluxar.describe', null), doc);
    await peer.close();
  });

  it('an unknown describe version is 501, a malformed request 400', async () => {
    const peer = await connect(url);
    const v2 = await errorOf(peer.call('fluxar.describe', { version: 2 }));
    assert.equal(v2.code, 501);
    assert.match(v2.message, /describe version 2 is not supported \(this peer speaks 1\)/);
    assert.equal((await errorOf(peer.call('fluxar.describe', [1]))).code, 400);
    assert.equal((await errorOf(peer.call('fluxar.describe', { version: 'one' }))).code, 400);
    await peer.close();
  });

  it('describe is behind authorization: a policy refuses with 403, false serves none (404)', async () => {
    const tokens = secretTable({ 'ops-token': { id: 'ops', role: 'ops' }, 'app-token': { id: 'app', role: 'app' } });
    const guarded = await listen({
      endpoints: ['tcp://127.0.0.1:0'],
      logger: quiet,
      auth: { bearer: ({ token }) => tokens(token) },
      describe: (principal) => principal?.role === 'ops',
    });
    const closed = await listen({ endpoints: ['tcp://127.0.0.1:0'], logger: quiet, describe: false });
    try {
      guarded.handle('ping', () => 'pong');
      const ops = await connect(guarded.addresses[0]!, { credentials: { scheme: 'bearer', token: 'ops-token' } });
      assert.deepEqual(((await ops.call('fluxar.describe', null)) as DescribeDocument).methods, [{ name: 'ping' }]);
      const app = await connect(guarded.addresses[0]!, { credentials: { scheme: 'bearer', token: 'app-token' } });
      assert.equal((await errorOf(app.call('fluxar.describe', null))).code, 403);
      assert.equal(await app.call('ping', null), 'pong');
      const anyone = await connect(closed.addresses[0]!);
      assert.equal((await errorOf(anyone.call('fluxar.describe', null))).code, 404);
      await Promise.all([ops.close(), app.close(), anyone.close()]);
    } finally {
      await Promise.all([guarded.close(), closed.close()]);
    }
  });

  it('describe is symmetric: the server can describe what a client serves', async () => {
    let seen: DescribeDocument | undefined;
    server.once('peer', (p) => {
      void p.call('fluxar.describe', null).then((d: unknown) => (seen = d as DescribeDocument));
    });
    const peer = await connect(url, { handlers: { 'client.notify': () => null } });
    await until(() => seen !== undefined, "the server's describe of the client");
    assert.deepEqual(seen?.methods, [{ name: 'client.notify' }]);
    await peer.close();
  });

  it('turns the JSON Schema TypeBox writes into TypeScript types', () => {
    assert.equal(schemaType(Type.String()), 'string');
    assert.equal(schemaType(Type.Union([Type.Literal('a'), Type.Literal(1), Type.Null()])), '"a" | 1 | null');
    assert.equal(schemaType(Type.Array(Type.Integer())), 'number[]');
    assert.equal(schemaType(Type.Object({ a: Type.String(), 'b-c': Type.Optional(Type.Boolean()) })), '{\n  a: string;\n  "b-c"?: boolean;\n}');
    assert.equal(schemaType(Type.Record(Type.String(), Type.Number())), '{\n  [key: string]: number;\n}');
    assert.equal(schemaType({ type: 'object', additionalProperties: { type: 'number' } }), '{\n  [key: string]: number;\n}');
    assert.equal(schemaType({ not: {} }), 'unknown');
  });

  it('`fluxrig describe URL --ts` writes a client that tsc compiles, that calls through, and whose types refuse misuse', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fluxrig-describe-'));
    const library = join(root, 'dist/src/fluxar/mod.js');
    await run(process.execPath, [cli, 'describe', url, '--ts', '--out', join(dir, 'client.ts'), '--import-from', library]);
    const generated = readFileSync(join(dir, 'client.ts'), 'utf8');
    assert.match(generated, /paymentsAuthorize\(input: PaymentsAuthorizeInput/);
    assert.match(generated, /reportsExport\(input: ReportsExportInput/);
    writeFileSync(
      join(dir, 'main.ts'),
      `import { connect } from '${library}';
import { Client, TOPICS } from './client.js';
const peer = await connect(process.argv[2]!);
const client = new Client(peer);
const answer = await client.paymentsAuthorize({ amount: 250, merchant: 'm-9', items: [{ sku: 'x', qty: 2 }] });
const decision: 'approved' | 'declined' = answer.decision;
const rows: number[] = [];
for await (const chunk of client.reportsExport({ rows: 2 })) rows.push(chunk.n);
console.log(JSON.stringify({ decision, score: answer.score, rows, topics: TOPICS }));
await peer.close();
`,
    );
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'es2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [join(root, 'node_modules/@types')],
          outDir: 'out',
        },
        files: ['main.ts', 'client.ts'],
      }),
    );
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
    await run(tsc, ['-p', join(dir, 'tsconfig.json')]);
    const { stdout } = await run(process.execPath, [join(dir, 'out/main.js'), url]);
    assert.deepEqual(JSON.parse(stdout), { decision: 'approved', score: 2.5, rows: [0, 1], topics: ['prices.>'] });

    // The types hold: a string amount, a missing merchant and an unknown method do not compile.
    writeFileSync(
      join(dir, 'main.ts'),
      `import type { Client } from './client.js';
declare const client: Client;
await client.paymentsAuthorize({ amount: '250', merchant: 'm' });
await client.paymentsAuthorize({ amount: 250 });
await client.paymentsRefund({});
`,
    );
    const refused = await run(tsc, ['-p', join(dir, 'tsconfig.json')]).then(
      () => '',
      (err: { stdout: string }) => err.stdout,
    );
    assert.match(refused, /main\.ts\(3,/);
    assert.match(refused, /main\.ts\(4,/);
    assert.match(refused, /main\.ts\(5,.*paymentsRefund/);
  });

  it('`fluxrig describe URL` prints the document as JSON; the import defaults to fluxrig/fluxar', async () => {
    const { stdout } = await run(process.execPath, [cli, 'describe', url]);
    assert.deepEqual(
      (JSON.parse(stdout) as DescribeDocument).methods.map((m) => m.name),
      ['payments.authorize', 'ping'],
    );
    const { stdout: ts } = await run(process.execPath, [cli, 'describe', url, '--ts']);
    assert.match(ts, /from 'fluxrig\/fluxar';/);
  });
});
