import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connect as natsConnect } from '@nats-io/transport-node';
import { pino } from 'pino';
import { CERT_DEFAULTS, certFiles, issuedRacks } from '../bus/certs.js';
import { drainAndClose } from '../bus/close.js';
import { NatsServerProcess } from '../bus/nats-server.js';
import { natsTlsConfig, writeNatsConfig } from '../bus/permissions.js';
import { busTls } from '../bus/tls.js';
import { buildMixerApi } from '../mixer/api.js';
import { Mixer } from '../mixer/mixer.js';
import { MODULE_DEFAULTS } from '../mixer/modules.js';
import { readableLogStream } from '../rack/log-format.js';
import { loadScenario } from '../scenario/parse.js';
import { packageVersion } from './version.js';

export const MIXER_DEFAULTS = {
  data_dir: '.fluxrig/mixer',
  api: '127.0.0.1:7480',
  nats_port: 4222,
} as const;

export const MIXER_USAGE = `usage: fluxrig mixer [options]

Starts the Mixer: it enrolls racks, pushes scenarios and follows them, over NATS. Runs until
SIGINT or SIGTERM.

options:
  --nats URL         use this NATS server or cluster (JetStream on); default: start an embedded
                     nats-server with its data in DATA/nats, on --nats-port
  --nats-port N      the embedded nats-server's port (default ${MIXER_DEFAULTS.nats_port})
  --data DIR         the Mixer's directory (default ${MIXER_DEFAULTS.data_dir}); its API token is DIR/api-token
  --listen HOST:PORT the HTTP API (default ${MIXER_DEFAULTS.api})
  --token TOKEN      the API's bearer token (default: FLUXRIG_MIXER_TOKEN, else DIR/api-token, made once)
  --secret TEXT      racks must send this bootstrap secret in their hello (default: FLUXRIG_MIXER_SECRET)
  --auto-adopt       adopt every rack that asks (default: an operator approves each)
  --tls              mTLS on the bus: the embedded nats-server requires client certificates from
                     --certs and confines each rack to its own subjects (docs/snake-protocol.md);
                     with --nats, the Mixer presents its certificate to that server
  --certs DIR        the certificates (fluxrig certs init; default ${CERT_DEFAULTS.dir})
  --vendor-keys DIR  trusted gear vendors for module imports: NAME.pub files, raw 32 bytes as
                     fluxrig writes them or PEM (default DATA/${MODULE_DEFAULTS.vendor_keys_dir})`;

export async function runMixer(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(MIXER_USAGE);
    return 0;
  }
  const { values } = parseArgs({
    args: argv,
    options: {
      nats: { type: 'string' },
      'nats-port': { type: 'string' },
      data: { type: 'string' },
      listen: { type: 'string' },
      token: { type: 'string' },
      secret: { type: 'string' },
      'auto-adopt': { type: 'boolean' },
      tls: { type: 'boolean' },
      certs: { type: 'string' },
      'vendor-keys': { type: 'string' },
    },
  });
  const readable = process.stdout.isTTY === true;
  const logger = readable ? pino({ name: 'fluxrig.mixer' }, readableLogStream()) : pino({ name: 'fluxrig.mixer' });
  const dataDir = resolve(values.data ?? MIXER_DEFAULTS.data_dir);
  mkdirSync(dataDir, { recursive: true });
  const token = values.token ?? process.env.FLUXRIG_MIXER_TOKEN ?? readOrMakeToken(dataDir);
  let embedded: NatsServerProcess | undefined;
  let natsUrl = values.nats;
  const certs = resolve(values.certs ?? CERT_DEFAULTS.dir);
  const tls = values.tls === true ? busTls(certFiles(certs).ca, certFiles(certs).mixer, certFiles(certs).mixerKey) : undefined;
  let stopWatching = () => {};
  // What each rack's guaranteed wires need on an embedded mTLS bus: none until the Mixer has read
  // its stored scenarios, then rewritten with every push.
  let grantLanes: ((grants: Map<string, string[]>) => Promise<void>) | undefined;
  if (natsUrl === undefined) {
    const config = tls === undefined ? undefined : join(dataDir, 'nats.conf');
    let grants = new Map<string, string[]>();
    const writeConfig = () => {
      const racks = issuedRacks(certs);
      writeNatsConfig(config!, natsTlsConfig({ certs, racks, grants }));
      return racks;
    };
    if (config !== undefined) writeConfig();
    embedded = await NatsServerProcess.start({
      dataDir: join(dataDir, 'nats'),
      port: Number(values['nats-port'] ?? MIXER_DEFAULTS.nats_port),
      host: '0.0.0.0',
      config,
    });
    natsUrl = `${tls === undefined ? 'nats' : 'tls'}://127.0.0.1:${embedded.port}`;
    logger.info({ nats: natsUrl, data: join(dataDir, 'nats'), mtls: tls !== undefined }, 'embedded nats-server started');
    if (config !== undefined) {
      const server = embedded;
      const rewrite = async () => {
        const racks = writeConfig();
        await server.reloaded();
        return racks;
      };
      grantLanes = async (next) => {
        grants = next;
        await rewrite();
      };
      // A rack certificate issued while the Mixer runs becomes a nats-server user at once.
      let timer: NodeJS.Timeout | undefined;
      const watcher = watch(join(certs, 'racks'), () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          rewrite().then(
            (racks) => logger.info({ racks }, 'rack certificates changed: nats-server reloaded its users'),
            (err: unknown) => logger.error({ err }, 'rack certificates changed, but nats-server did not take its new users; it runs the old ones'),
          );
        }, 200);
      });
      stopWatching = () => {
        clearTimeout(timer);
        watcher.close();
      };
    }
  }
  const nc = await natsConnect({ servers: natsUrl, name: 'fluxrig-mixer', maxReconnectAttempts: -1, ...(tls === undefined ? {} : { tls }) });
  const vendorKeysDir = resolve(values['vendor-keys'] ?? join(dataDir, MODULE_DEFAULTS.vendor_keys_dir));
  mkdirSync(vendorKeysDir, { recursive: true });
  const mixer = new Mixer({
    nats: nc,
    logger,
    bootstrapSecret: values.secret ?? process.env.FLUXRIG_MIXER_SECRET,
    autoAdopt: values['auto-adopt'] ?? false,
    vendorKeysDir,
    grantLanes,
  });
  await mixer.start();
  if (grantLanes !== undefined) await grantLanes(await mixer.laneGrants());
  const api = await buildMixerApi({ mixer, token, version: packageVersion() });
  const [host, port] = splitHostPort(values.listen ?? MIXER_DEFAULTS.api);
  const address = await api.listen({ host, port });
  logger.info(
    { api: address, dashboard: `${address}/`, nats: natsUrl, token_file: values.token === undefined ? join(dataDir, 'api-token') : undefined },
    'mixer API listening',
  );
  if (process.stderr.isTTY === true)
    console.error(
      `\nfluxrig mixer: API and dashboard at ${address}/ (token in ${join(dataDir, 'api-token')}), racks join with\n  npx fluxrig rack --mixer ${natsUrl} --name NAME${tls === undefined ? '' : ` --certs ${certs}   (after fluxrig certs issue rack NAME)`}\nthen: npx fluxrig racks list\n`,
    );
  await new Promise<void>((done) => {
    const stop = () => done();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  stopWatching();
  await api.close();
  await mixer.close();
  await drainAndClose(nc);
  await embedded?.stop();
  return 0;
}

function readOrMakeToken(dataDir: string): string {
  const file = join(dataDir, 'api-token');
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    const token = randomBytes(24).toString('base64url');
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    return token;
  }
}

function splitHostPort(text: string): [string, number] {
  const m = /^(.*):(\d+)$/.exec(text);
  if (m === null) throw new Error(`--listen wants HOST:PORT, got ${JSON.stringify(text)}`);
  return [m[1]!, Number(m[2])];
}

// ---- the operator's commands: each talks to the Mixer's API --------------------------------------

export const CLIENT_OPTIONS = {
  api: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export const CLIENT_HELP = `  --api URL     the Mixer's API (default FLUXRIG_MIXER_API, else http://${MIXER_DEFAULTS.api})
  --token TEXT  its bearer token (default FLUXRIG_MIXER_TOKEN, else ${MIXER_DEFAULTS.data_dir}/api-token)
  --json        print JSON instead of a table`;

interface Client {
  call(method: string, path: string, body?: unknown): Promise<unknown>;
  /** A server-sent events stream, as text chunks. */
  stream(path: string): Promise<AsyncIterable<string>>;
  json: boolean;
}

export function client(values: { api?: string; token?: string; json?: boolean }): Client {
  const base = (values.api ?? process.env.FLUXRIG_MIXER_API ?? `http://${MIXER_DEFAULTS.api}`).replace(/\/$/, '');
  let token = values.token ?? process.env.FLUXRIG_MIXER_TOKEN;
  if (token === undefined) {
    try {
      token = readFileSync(join(MIXER_DEFAULTS.data_dir, 'api-token'), 'utf8').trim();
    } catch {
      throw new Error(`no API token: pass --token, set FLUXRIG_MIXER_TOKEN, or run where ${MIXER_DEFAULTS.data_dir}/api-token is`);
    }
  }
  return {
    json: values.json ?? false,
    async call(method, path, body) {
      let res: Response;
      try {
        res = await fetch(`${base}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${token}`,
            'x-fluxrig-actor': actor(),
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (err) {
        throw new Error(`cannot reach the Mixer at ${base}: ${((err as Error).cause as Error | undefined)?.message ?? (err as Error).message}`);
      }
      const text = await res.text();
      const parsed = text === '' ? null : (JSON.parse(text) as unknown);
      if (!res.ok) throw new Error((parsed as { error?: string } | null)?.error ?? `HTTP ${res.status}`);
      return parsed;
    },
    async stream(path) {
      let res: Response;
      try {
        res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}`, 'x-fluxrig-actor': actor() } });
      } catch (err) {
        throw new Error(`cannot reach the Mixer at ${base}: ${((err as Error).cause as Error | undefined)?.message ?? (err as Error).message}`);
      }
      if (!res.ok || res.body === null) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
      return res.body.pipeThrough(new TextDecoderStream()) as unknown as AsyncIterable<string>;
    },
  };
}

/** Who runs this command, for the Mixer's audit trail (FLUXRIG_ACTOR, else user@host). */
function actor(): string {
  if (process.env.FLUXRIG_ACTOR !== undefined) return process.env.FLUXRIG_ACTOR;
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return `unknown@${hostname()}`;
  }
}

export function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
  const cells = rows.map((r) => columns.map((c) => (r[c] === null || r[c] === undefined ? '-' : String(r[c]))));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n');
}

interface RackRow {
  name: string;
  status: string;
  online: boolean;
  labels: Record<string, string>;
  applied: { scenario: string; version: number } | null;
  desired: { scenario: string; version: number } | null;
  apply_error: string | null;
  heartbeat: { p99_ms: number | null; connections: number; workers: number } | null;
}

function rackRow(r: RackRow): Record<string, unknown> {
  return {
    name: r.name,
    status: r.status,
    online: r.online ? 'online' : 'offline',
    labels: Object.entries(r.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
    desired: r.desired === null ? null : `${r.desired.scenario} v${r.desired.version}`,
    applied: r.applied === null ? null : `${r.applied.scenario} v${r.applied.version}`,
    workers: r.heartbeat?.workers,
    conns: r.heartbeat?.connections,
    p99_ms: r.heartbeat?.p99_ms,
    error: r.apply_error,
  };
}

const RACK_COLUMNS = ['name', 'status', 'online', 'labels', 'desired', 'applied', 'workers', 'conns', 'p99_ms', 'error'];

export const RACKS_USAGE = `usage: fluxrig racks list | show NAME | approve NAME | suspend NAME | activate NAME | remove NAME

${CLIENT_HELP}`;

export async function runRacks(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: CLIENT_OPTIONS, allowPositionals: true });
  const [action, name] = positionals;
  if (action === undefined || action === 'help') {
    console.log(RACKS_USAGE);
    return action === undefined ? 2 : 0;
  }
  const api = client(values);
  const print = (value: unknown, rows: () => string) => console.log(api.json ? JSON.stringify(value, null, 2) : rows());
  if (action === 'list') {
    const racks = (await api.call('GET', '/racks')) as RackRow[];
    print(racks, () =>
      racks.length === 0 ? 'no racks enrolled yet: start one with fluxrig rack --mixer URL --name NAME' : table(racks.map(rackRow), RACK_COLUMNS),
    );
    return 0;
  }
  if (name === undefined) throw new Error(`racks ${action} needs a rack name\n${RACKS_USAGE}`);
  const path = `/racks/${encodeURIComponent(name)}`;
  switch (action) {
    case 'show': {
      const rack = (await api.call('GET', path)) as RackRow;
      print(rack, () => `${table([rackRow(rack)], RACK_COLUMNS)}\n${JSON.stringify(rack.heartbeat, null, 2)}`);
      return 0;
    }
    case 'approve':
    case 'suspend':
    case 'activate': {
      const rack = (await api.call('POST', `${path}/${action}`)) as RackRow;
      print(rack, () => `rack ${rack.name}: ${rack.status}`);
      return 0;
    }
    case 'remove':
      await api.call('DELETE', path);
      print({ removed: name }, () => `rack ${name} removed`);
      return 0;
    default:
      throw new Error(`unknown racks action ${JSON.stringify(action)}\n${RACKS_USAGE}`);
  }
}

export const SCENARIO_MIXER_USAGE = `  scenario push FILE [--rack NAME]...   validate, store and roll out a scenario through the Mixer
  scenario status NAME                   desired and applied version per rack
  scenario diff FILE                     what a push of FILE would change`;

/** fluxrig scenario push|status|diff (validate and schema stay local: scenario.ts). */
export async function runScenarioMixer(action: string, argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...CLIENT_OPTIONS, rack: { type: 'string', multiple: true } }, allowPositionals: true });
  const [target] = positionals;
  if (target === undefined) throw new Error(`scenario ${action} needs ${action === 'status' ? 'a scenario name' : 'a file'}\n${SCENARIO_MIXER_USAGE}`);
  const api = client(values);
  if (action === 'status') {
    const rows = (await api.call('GET', `/scenarios/${encodeURIComponent(target)}/status`)) as Array<Record<string, unknown>>;
    console.log(api.json ? JSON.stringify(rows, null, 2) : table(rows, ['rack', 'state', 'desired', 'applied', 'online', 'error']));
    return rows.every((r) => r.state === 'applied') ? 0 : 1;
  }
  // Validated here first, so every problem shows at file:line:column before anything is sent.
  const scenario = await loadScenario(target);
  const yaml = await readFile(target, 'utf8');
  if (action === 'diff') {
    const result = (await api.call('POST', `/scenarios/${encodeURIComponent(scenario.meta.name)}/diff`, { yaml })) as { diff: string };
    console.log(api.json ? JSON.stringify(result, null, 2) : result.diff);
    return 0;
  }
  const stored = (await api.call('POST', '/scenarios', { yaml, file: target, racks: values.rack ?? [] })) as {
    name: string;
    version: number;
    targets: Record<string, string[]>;
  };
  console.log(
    api.json
      ? JSON.stringify(stored, null, 2)
      : `scenario ${stored.name} v${stored.version} pushed to ${Object.keys(stored.targets).join(', ')}\nfollow it: fluxrig scenario status ${stored.name}`,
  );
  return 0;
}

export const COMMAND_USAGE = `usage: fluxrig command RACK log-level [LEVEL] [--telemetry LEVEL] | shutdown | reload | suspend | activate

  log-level LEVEL         the rack's local log
  --telemetry LEVEL       what the rack sends the Mixer (fluxrig logs shows it; default warn)

${CLIENT_HELP}`;

export async function runCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...CLIENT_OPTIONS, telemetry: { type: 'string' } }, allowPositionals: true });
  const [rack, command, level] = positionals;
  if (rack === undefined || command === undefined) {
    console.log(COMMAND_USAGE);
    return 2;
  }
  const api = client(values);
  const body = { command, ...(level === undefined ? {} : { level }), ...(values.telemetry === undefined ? {} : { telemetry: values.telemetry }) };
  const result = (await api.call('POST', `/racks/${encodeURIComponent(rack)}/commands`, body)) as {
    ok: boolean;
    error: string | null;
  };
  console.log(api.json ? JSON.stringify(result) : result.ok ? `rack ${rack}: ${command} done` : `rack ${rack}: ${command} failed: ${result.error}`);
  return result.ok ? 0 : 1;
}

export const LOGS_USAGE = `usage: fluxrig logs [--rack NAME] [--level LEVEL] [--kind log|event] [--limit N] [--follow]

The racks' log lines (at their telemetry level, warn by default) and events, through the Mixer.
--follow prints new ones as they arrive, until Ctrl-C.

${CLIENT_HELP}`;

interface LogRow {
  id: number;
  rack: string;
  kind: string;
  time: number;
  level: string;
  msg: string;
  fields: string;
}

function logLine(r: LogRow): string {
  const fields = r.fields === '{}' ? '' : `  ${r.fields}`;
  return `${new Date(r.time).toISOString()} ${r.rack} ${r.kind === 'event' ? 'EVENT' : r.level.toUpperCase().padEnd(5)} ${r.msg}${fields}`;
}

export async function runLogs(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...CLIENT_OPTIONS,
      rack: { type: 'string' },
      level: { type: 'string' },
      kind: { type: 'string' },
      limit: { type: 'string' },
      follow: { type: 'boolean' },
    },
  });
  const api = client(values);
  const query = new URLSearchParams();
  for (const key of ['rack', 'level', 'kind', 'limit'] as const) if (values[key] !== undefined) query.set(key, values[key]!);
  if (values.follow !== true) {
    const rows = (await api.call('GET', `/logs?${query}`)) as LogRow[];
    console.log(api.json ? JSON.stringify(rows, null, 2) : rows.map(logLine).join('\n') || 'no log lines yet');
    return 0;
  }
  const res = await api.stream(`/logs/follow?${query}`);
  let buffer = '';
  for await (const chunk of res) {
    buffer += chunk;
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = /^data: (.*)$/m.exec(event)?.[1];
      if (data !== undefined) console.log(api.json ? data : logLine(JSON.parse(data) as LogRow));
    }
  }
  return 0;
}

export const AUDIT_USAGE = `usage: fluxrig audit [--target NAME] [--actor WHO] [--limit N]

Who approved, pushed or commanded what, and how it went (the Mixer's audit trail).

${CLIENT_HELP}`;

export async function runAudit(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { ...CLIENT_OPTIONS, target: { type: 'string' }, actor: { type: 'string' }, limit: { type: 'string' } },
  });
  const api = client(values);
  const query = new URLSearchParams();
  for (const key of ['target', 'actor', 'limit'] as const) if (values[key] !== undefined) query.set(key, values[key]!);
  const rows = (await api.call('GET', `/audit?${query}`)) as Array<Record<string, unknown>>;
  const shown = rows.map((r) => ({ ...r, time: new Date(Number(r.time)).toISOString(), ok: r.ok === true ? 'ok' : 'failed' }));
  console.log(
    api.json
      ? JSON.stringify(rows, null, 2)
      : rows.length === 0
        ? 'no audit entries yet'
        : table(shown, ['time', 'actor', 'action', 'target', 'detail', 'ok', 'error']),
  );
  return 0;
}
