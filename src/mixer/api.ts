import { timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import swagger from '@fastify/swagger';
import { createTwoFilesPatch } from 'diff';
import Fastify, { type FastifyInstance } from 'fastify';
import { COMMANDS, type CommandName } from '../bus/mixer-protocol.js';
import type { Actor } from './audit.js';
import { mixerMetrics } from './metrics.js';
import { ScenarioError } from '../scenario/types.js';
import { type Mixer, MixerError } from './mixer.js';
import { MODULE_DEFAULTS } from './modules.js';
import { scenarioGraph } from './scenario-graph.js';
import { SERIES_LIMITS } from './series.js';
import type { LogRecord } from './api-shapes.js';
import { type LogQuery, matches, type RackSampleEvent } from './telemetry.js';

/** The dashboard as `make build` bundles it (dashboard/, built into dist/dashboard). */
export const DASHBOARD_DIR = fileURLToPath(new URL('../../dashboard/', import.meta.url));

/**
 * The page itself holds no fleet data, so it and its assets load without the token; everything it
 * shows comes from the API, which wants it. Nothing but its own scripts and styles may run.
 */
const DASHBOARD_CSP =
  "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

export interface MixerApiOptions {
  mixer: Mixer;
  /** Every route but /healthz, /openapi.json and the dashboard's page wants `Authorization: Bearer <token>`. */
  token: string;
  version: string;
}

const rackSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    machine_id: { type: 'string' },
    status: { type: 'string', enum: ['pending', 'active', 'suspended', 'denied'] },
    online: { type: 'boolean' },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
    version: { type: 'string' },
    last_seen: { type: 'number' },
    created_at: { type: 'number' },
    desired: { type: ['object', 'null'], properties: { scenario: { type: 'string' }, version: { type: 'number' } } },
    applied: { type: ['object', 'null'], properties: { scenario: { type: 'string' }, version: { type: 'number' } } },
    apply_error: { type: ['string', 'null'] },
    heartbeat: { type: ['object', 'null'], additionalProperties: true },
  },
} as const;

const scenarioSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    version: { type: 'number' },
    meta_version: { type: 'string' },
    pushed_at: { type: 'number' },
    targets: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string' } } },
    yaml: { type: 'string' },
  },
} as const;

const logSchema = {
  type: 'object',
  properties: {
    id: { type: 'number' },
    rack: { type: 'string' },
    kind: { type: 'string', enum: ['log', 'event'] },
    time: { type: 'number' },
    level: { type: 'string' },
    msg: { type: 'string' },
    fields: { type: 'string', description: 'the other fields of the line (or the event detail), JSON' },
  },
} as const;

const auditSchema = {
  type: 'object',
  properties: {
    time: { type: 'number' },
    actor: { type: 'string', description: 'as the caller named itself (X-Fluxrig-Actor); the token is what authenticates' },
    address: { type: 'string' },
    action: { type: 'string' },
    target: { type: 'string' },
    detail: { type: 'string' },
    ok: { type: 'boolean' },
    error: { type: ['string', 'null'] },
    mixer: { type: 'string' },
  },
} as const;

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

const logQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    rack: { type: 'string', pattern: '^[a-z0-9_-]{1,64}$' },
    level: { type: 'string', enum: [...LEVELS] },
    kind: { type: 'string', enum: ['log', 'event'] },
    after: { type: 'integer', minimum: 0 },
    limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 100 },
  },
} as const;

/** Who is asking: the name the caller gives (X-Fluxrig-Actor) and where from. */
function actorOf(req: { headers: Record<string, string | string[] | undefined>; ip: string }): Actor {
  const named = req.headers['x-fluxrig-actor'];
  const name = typeof named === 'string' && named !== '' ? named.slice(0, 128) : 'unnamed';
  return { name, address: req.ip };
}

const issueSchema = {
  type: 'object',
  properties: { file: { type: 'string' }, line: { type: 'number' }, column: { type: 'number' }, message: { type: 'string' } },
} as const;
const errorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, issues: { type: 'array', items: issueSchema, description: "an invalid scenario's problems, each where it is" } },
} as const;

const sampleSchema = {
  type: 'object',
  properties: {
    time: { type: 'number' },
    calls_per_s: { type: 'number' },
    messages_per_s: { type: 'number' },
    errors: { type: 'number' },
    p99_ms: { type: ['number', 'null'] },
  },
} as const;

const endSchema = { type: 'object', properties: { rack: { type: 'string' }, gear: { type: 'string' }, port: { type: 'string' } } } as const;
const graphSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    version: { type: 'number' },
    racks: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          rack: { type: 'string' },
          groups: { type: 'array', items: { type: 'string' } },
          gears: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, type: { type: 'string' } } } },
        },
      },
    },
    wires: {
      type: 'array',
      items: {
        type: 'object',
        properties: { from: endSchema, to: endSchema, lane: { type: 'string', enum: ['hot', 'guaranteed'] }, cross_rack: { type: 'boolean' } },
      },
    },
  },
} as const;
const nameParam = { type: 'object', required: ['name'], properties: { name: { type: 'string', pattern: '^[a-z0-9_-]{1,64}$' } } } as const;
const errors = { 400: errorSchema, 401: errorSchema, 404: errorSchema, 504: errorSchema } as const;

/**
 * The Mixer's HTTP API (fastify): racks, scenarios, commands, live events, health, and the
 * OpenAPI 3 document generated from these route schemas at /openapi.json.
 */
export async function buildMixerApi(options: MixerApiOptions): Promise<FastifyInstance> {
  const { mixer } = options;
  // A request that needs NATS while it is away gives up (408) instead of hanging its client.
  const app = Fastify({ logger: false, bodyLimit: 2 * 1024 * 1024, requestTimeout: 10_000 });
  await app.register(swagger, {
    openapi: {
      info: { title: 'fluxrig Mixer', version: options.version, description: 'Enroll racks, push scenarios, send commands. docs/mixer.md' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  const token = Buffer.from(options.token);
  app.addHook('onRequest', async (req, reply) => {
    if (req.url === '/healthz' || req.url === '/openapi.json' || req.url === '/' || req.url.startsWith('/dashboard/')) return;
    const given = Buffer.from(/^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '');
    if (given.length !== token.length || !timingSafeEqual(given, token)) {
      await reply.code(401).send({ error: 'missing or wrong bearer token (Authorization: Bearer <token>; fluxrig mixer prints where it is)' });
    }
  });
  app.setErrorHandler(async (err, _req, reply) => {
    const status = err instanceof MixerError ? err.status : ((err as { statusCode?: number }).statusCode ?? 500);
    const cause = (err as Error).cause;
    await reply.code(status).send({ error: (err as Error).message, ...(cause instanceof ScenarioError ? { issues: cause.issues } : {}) });
  });

  app.get(
    '/healthz',
    { schema: { security: [], response: { 200: { type: 'object', properties: { ok: { type: 'boolean' }, mixer: { type: 'string' } } } } } },
    async () => ({
      ok: true,
      mixer: mixer.id,
    }),
  );
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  const dashboard = existsSync(`${DASHBOARD_DIR}index.html`);
  if (dashboard) await app.register(fastifyStatic, { root: DASHBOARD_DIR, prefix: '/dashboard/', index: false, maxAge: 0 });
  app.get('/', { schema: { hide: true } }, async (_req, reply) => {
    if (!dashboard) return reply.code(503).type('text/plain').send('the dashboard is not built: run make build (the API works without it)\n');
    return reply.header('content-security-policy', DASHBOARD_CSP).sendFile('index.html');
  });

  app.get('/racks', { schema: { summary: 'Every enrolled rack', response: { 200: { type: 'array', items: rackSchema } } } }, async () => mixer.racks());
  app.get<{ Params: { name: string } }>('/racks/:name', { schema: { params: nameParam, response: { 200: rackSchema, ...errors } } }, async (req) =>
    mixer.rack(req.params.name),
  );
  for (const [action, status] of [
    ['approve', 'active'],
    ['suspend', 'suspended'],
    ['activate', 'active'],
    ['deny', 'denied'],
  ] as const) {
    app.post<{ Params: { name: string } }>(
      `/racks/:name/${action}`,
      { schema: { summary: `${action} a rack`, params: nameParam, response: { 200: rackSchema, ...errors } } },
      async (req) => mixer.setStatus(req.params.name, status, actorOf(req), action),
    );
  }
  app.delete<{ Params: { name: string } }>(
    '/racks/:name',
    { schema: { params: nameParam, response: { 204: { type: 'null' }, ...errors } } },
    async (req, reply) => {
      await mixer.remove(req.params.name, actorOf(req));
      await reply.code(204).send();
    },
  );
  app.post<{ Params: { name: string }; Body: { command: CommandName; level?: string; telemetry?: string } }>(
    '/racks/:name/commands',
    {
      schema: {
        summary: 'Send a command and wait for the rack to answer',
        params: nameParam,
        body: {
          type: 'object',
          required: ['command'],
          additionalProperties: false,
          properties: {
            command: { type: 'string', enum: [...COMMANDS] },
            level: { type: 'string', enum: [...LEVELS, 'silent'], description: "log-level: the rack's local log" },
            telemetry: { type: 'string', enum: [...LEVELS, 'silent'], description: 'log-level: what the rack sends the Mixer' },
          },
        },
        response: { 200: { type: 'object', properties: { ok: { type: 'boolean' }, error: { type: ['string', 'null'] } } }, ...errors },
      },
    },
    async (req) => {
      const { command, level, telemetry } = req.body;
      if (command === 'log-level' && level === undefined && telemetry === undefined) throw new MixerError('log-level needs level, telemetry or both', 400);
      const args = { ...(level === undefined ? {} : { level }), ...(telemetry === undefined ? {} : { telemetry }) };
      return mixer.command(req.params.name, command, args, actorOf(req));
    },
  );

  app.post<{ Body: { name: string; version: string; module: string; allow_unsigned?: boolean } }>(
    '/modules',
    {
      bodyLimit: Math.ceil((MODULE_DEFAULTS.max_module_bytes * 4) / 3) + 4096,
      schema: {
        summary: "Import a gear module: its vendor signature is checked, the Mixer countersigns it and puts it in the fleet's module bucket",
        body: {
          type: 'object',
          required: ['name', 'version', 'module'],
          additionalProperties: false,
          properties: {
            name: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,128}$' },
            version: { type: 'string', pattern: '^[A-Za-z0-9_.+-]{1,64}$' },
            module: { type: 'string', description: 'the module, base64' },
            allow_unsigned: { type: 'boolean', description: 'import a module no trusted vendor signed (it is still countersigned)' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              name: { type: 'string' },
              version: { type: 'string' },
              digest: { type: 'string' },
              vendor: { type: ['string', 'null'] },
              bytes: { type: 'number' },
              deprecated: { type: ['string', 'null'] },
            },
          },
          ...errors,
        },
      },
    },
    async (req) => {
      const bytes = Buffer.from(req.body.module, 'base64');
      if (bytes.length > MODULE_DEFAULTS.max_module_bytes) throw new MixerError(`a module of at most ${MODULE_DEFAULTS.max_module_bytes} bytes`, 400);
      return mixer.importModule(bytes, req.body.name, req.body.version, req.body.allow_unsigned === true, actorOf(req));
    },
  );
  app.get(
    '/modules/key',
    {
      schema: {
        summary: 'The public key racks check module countersignatures with (wasm.cluster_keys)',
        response: { 200: { type: 'object', properties: { pem: { type: 'string' }, raw_hex: { type: 'string' } } } },
      },
    },
    async () => mixer.moduleKey,
  );

  // The gears' KV: keys hold slashes (fraud/blocklist), so the key is the rest of the path.
  const kvKeyParam = { type: 'object', required: ['*'], properties: { '*': { type: 'string', description: 'letters, digits and _ - / = .' } } } as const;
  const kvEntryProperties = { key: { type: 'string' }, revision: { type: 'number' }, updated: { type: 'number' }, bytes: { type: 'number' } } as const;
  app.get(
    '/kv',
    {
      schema: {
        summary: "Every key of the gears' KV (shared by the racks on the bus)",
        response: { 200: { type: 'array', items: { type: 'object', properties: kvEntryProperties } } },
      },
    },
    async () => mixer.kv.list(),
  );
  app.get<{ Params: { '*': string } }>(
    '/kv/*',
    {
      schema: {
        summary: "A key's value: as text when it is UTF-8, and as base64",
        params: kvKeyParam,
        response: {
          200: { type: 'object', properties: { ...kvEntryProperties, value: { type: ['string', 'null'] }, base64: { type: 'string' } } },
          ...errors,
        },
      },
    },
    async (req) => mixer.kvGet(req.params['*']),
  );
  app.put<{ Params: { '*': string }; Body: { value?: string; base64?: string } }>(
    '/kv/*',
    {
      schema: {
        summary: "Set a key for every rack's gears (audited)",
        params: kvKeyParam,
        body: {
          type: 'object',
          additionalProperties: false,
          oneOf: [{ required: ['value'] }, { required: ['base64'] }],
          properties: {
            value: { type: 'string', description: 'the value as text (stored as UTF-8)' },
            base64: { type: 'string', pattern: '^[A-Za-z0-9+/]*={0,2}$', description: 'the value as bytes, base64' },
          },
        },
        response: { 200: { type: 'object', properties: kvEntryProperties }, 413: errorSchema, ...errors },
      },
    },
    async (req) => {
      const { value, base64 } = req.body;
      return mixer.kvPut(req.params['*'], value !== undefined ? Buffer.from(value, 'utf8') : Buffer.from(base64!, 'base64'), actorOf(req));
    },
  );
  app.delete<{ Params: { '*': string } }>(
    '/kv/*',
    { schema: { summary: 'Delete a key (audited)', params: kvKeyParam, response: { 204: { type: 'null' }, ...errors } } },
    async (req, reply) => {
      await mixer.kvDelete(req.params['*'], actorOf(req));
      await reply.code(204).send();
    },
  );

  app.get('/scenarios', { schema: { response: { 200: { type: 'array', items: scenarioSchema } } } }, async () => mixer.scenarios());
  app.get<{ Params: { name: string } }>('/scenarios/:name', { schema: { params: nameParam, response: { 200: scenarioSchema, ...errors } } }, async (req) =>
    mixer.scenario(req.params.name),
  );
  app.post<{ Body: { yaml: string; file?: string; racks?: string[] } }>(
    '/scenarios',
    {
      schema: {
        summary: 'Validate, store and roll out a scenario',
        body: {
          type: 'object',
          required: ['yaml'],
          additionalProperties: false,
          properties: { yaml: { type: 'string' }, file: { type: 'string' }, racks: { type: 'array', items: { type: 'string' } } },
        },
        response: { 200: scenarioSchema, ...errors },
      },
    },
    async (req) => mixer.push(req.body.yaml, req.body.file ?? 'scenario.yaml', req.body.racks ?? [], actorOf(req)),
  );
  app.get<{ Params: { name: string } }>(
    '/scenarios/:name/graph',
    {
      schema: {
        summary: 'The gears each target rack runs and the wires between them, with their lanes',
        params: nameParam,
        response: { 200: graphSchema, ...errors },
      },
    },
    async (req) => scenarioGraph(await mixer.scenario(req.params.name)),
  );
  app.get<{ Params: { name: string } }>(
    '/scenarios/:name/status',
    {
      schema: {
        summary: 'Desired and applied version per rack',
        params: nameParam,
        response: {
          200: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                rack: { type: 'string' },
                desired: { type: ['number', 'null'] },
                applied: { type: ['number', 'null'] },
                online: { type: 'boolean' },
                state: { type: 'string' },
                error: { type: ['string', 'null'] },
              },
            },
          },
          ...errors,
        },
      },
    },
    async (req) => mixer.rollout(req.params.name),
  );
  app.post<{ Params: { name: string }; Body: { yaml: string } }>(
    '/scenarios/:name/diff',
    {
      schema: {
        summary: 'What a push of this YAML would change (unified diff against the stored version)',
        params: nameParam,
        body: { type: 'object', required: ['yaml'], properties: { yaml: { type: 'string' } } },
        response: { 200: { type: 'object', properties: { version: { type: ['number', 'null'] }, diff: { type: 'string' } } }, ...errors },
      },
    },
    async (req) => {
      const stored = await mixer.scenario(req.params.name).catch(() => null);
      const label = stored === null ? `${req.params.name} (none stored)` : `${req.params.name} v${stored.version}`;
      return { version: stored?.version ?? null, diff: createTwoFilesPatch(label, `${req.params.name} (new)`, stored?.yaml ?? '', req.body.yaml) };
    },
  );

  app.get(
    '/series',
    {
      schema: {
        summary: `Each rack's traffic samples over the last ${SERIES_LIMITS.window_ms / 60_000} minutes, oldest first`,
        response: { 200: { type: 'object', additionalProperties: { type: 'array', items: sampleSchema } } },
      },
    },
    async () => mixer.telemetry.series(),
  );

  app.get(
    '/events',
    { schema: { summary: "Server-sent events: rack, rack-removed and scenario changes, from every Mixer, and each rack's traffic sample" } },
    (req, reply) => {
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      reply.raw.write(': fluxrig mixer events\n\n');
      const send = (event: string) => (data: unknown) => reply.raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      const listeners = [
        ['rack', send('rack')],
        ['rack-removed', send('rack-removed')],
        ['scenario', send('scenario')],
      ] as const;
      for (const [e, l] of listeners) mixer.on(e, l);
      const sample = send('sample') as (s: RackSampleEvent) => void;
      mixer.telemetry.on('sample', sample);
      const keepAlive = setInterval(() => reply.raw.write(': keep-alive\n\n'), 15_000);
      req.raw.on('close', () => {
        clearInterval(keepAlive);
        for (const [e, l] of listeners) mixer.off(e, l);
        mixer.telemetry.off('sample', sample);
      });
    },
  );

  const metrics = mixerMetrics(mixer);
  app.get('/metrics', { schema: { summary: 'Prometheus metrics: the fleet, each rack and each gear (text format)' } }, async (_req, reply) => {
    await reply.header('content-type', metrics.contentType).send(await metrics.metrics());
  });

  app.get<{ Querystring: LogQuery }>(
    '/logs',
    {
      schema: {
        summary: "The racks' recent log lines and events, oldest first",
        querystring: logQuerySchema,
        response: { 200: { type: 'array', items: logSchema } },
      },
    },
    async (req) => mixer.telemetry.logs(req.query),
  );
  app.get<{ Querystring: LogQuery }>(
    '/logs/follow',
    { schema: { summary: 'Server-sent events: each log line and event as it arrives (event: log)', querystring: logQuerySchema } },
    (req, reply) => {
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      reply.raw.write(': fluxrig rack logs\n\n');
      const send = (r: LogRecord) => {
        if (matches(r, req.query)) reply.raw.write(`event: log\ndata: ${JSON.stringify(r)}\n\n`);
      };
      for (const r of mixer.telemetry.logs({ ...req.query, limit: req.query.limit ?? 20 })) send(r);
      mixer.telemetry.on('log', send);
      const keepAlive = setInterval(() => reply.raw.write(': keep-alive\n\n'), 15_000);
      req.raw.on('close', () => {
        clearInterval(keepAlive);
        mixer.telemetry.off('log', send);
      });
    },
  );

  app.get<{ Querystring: { limit?: number; target?: string; actor?: string } }>(
    '/audit',
    {
      schema: {
        summary: 'Who approved, pushed or commanded what, oldest first',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 100 }, target: { type: 'string' }, actor: { type: 'string' } },
        },
        response: { 200: { type: 'array', items: auditSchema } },
      },
    },
    async (req) => mixer.audit.list(req.query),
  );
  return app;
}
