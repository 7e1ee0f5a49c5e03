import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connect as natsConnect } from '@nats-io/transport-node';
import { pino } from 'pino';
import { NatsServerProcess } from '../bus/nats-server.js';
import { buildMixerApi } from '../mixer/api.js';
import { Mixer } from '../mixer/mixer.js';
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
  --auto-adopt       adopt every rack that asks (default: an operator approves each)`;

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
    },
  });
  const readable = process.stdout.isTTY === true;
  const logger = readable ? pino({ name: 'fluxrig.mixer' }, readableLogStream()) : pino({ name: 'fluxrig.mixer' });
  const dataDir = resolve(values.data ?? MIXER_DEFAULTS.data_dir);
  mkdirSync(dataDir, { recursive: true });
  const token = values.token ?? process.env.FLUXRIG_MIXER_TOKEN ?? readOrMakeToken(dataDir);
  let embedded: NatsServerProcess | undefined;
  let natsUrl = values.nats;
  if (natsUrl === undefined) {
    embedded = await NatsServerProcess.start({
      dataDir: join(dataDir, 'nats'),
      port: Number(values['nats-port'] ?? MIXER_DEFAULTS.nats_port),
      host: '0.0.0.0',
    });
    natsUrl = `nats://127.0.0.1:${embedded.port}`;
    logger.info({ nats: natsUrl, data: join(dataDir, 'nats') }, 'embedded nats-server started');
  }
  const nc = await natsConnect({ servers: natsUrl, name: 'fluxrig-mixer', maxReconnectAttempts: -1 });
  const mixer = new Mixer({ nats: nc, logger, bootstrapSecret: values.secret ?? process.env.FLUXRIG_MIXER_SECRET, autoAdopt: values['auto-adopt'] ?? false });
  await mixer.start();
  const api = await buildMixerApi({ mixer, token, version: packageVersion() });
  const [host, port] = splitHostPort(values.listen ?? MIXER_DEFAULTS.api);
  const address = await api.listen({ host, port });
  logger.info({ api: address, nats: natsUrl, token_file: values.token === undefined ? join(dataDir, 'api-token') : undefined }, 'mixer API listening');
  if (process.stderr.isTTY === true)
    console.error(
      `\nfluxrig mixer: API ${address} (token in ${join(dataDir, 'api-token')}), racks join with\n  npx fluxrig rack --mixer ${natsUrl} --name NAME\nthen: npx fluxrig racks list\n`,
    );
  await new Promise<void>((done) => {
    const stop = () => done();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await api.close();
  await mixer.close();
  await nc.drain();
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

const CLIENT_OPTIONS = {
  api: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
} as const;

const CLIENT_HELP = `  --api URL     the Mixer's API (default FLUXRIG_MIXER_API, else http://${MIXER_DEFAULTS.api})
  --token TEXT  its bearer token (default FLUXRIG_MIXER_TOKEN, else ${MIXER_DEFAULTS.data_dir}/api-token)
  --json        print JSON instead of a table`;

interface Client {
  call(method: string, path: string, body?: unknown): Promise<unknown>;
  json: boolean;
}

function client(values: { api?: string; token?: string; json?: boolean }): Client {
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
          headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
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
  };
}

function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
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

export const COMMAND_USAGE = `usage: fluxrig command RACK log-level LEVEL | shutdown | reload | suspend | activate

${CLIENT_HELP}`;

export async function runCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: CLIENT_OPTIONS, allowPositionals: true });
  const [rack, command, level] = positionals;
  if (rack === undefined || command === undefined) {
    console.log(COMMAND_USAGE);
    return 2;
  }
  const api = client(values);
  const result = (await api.call('POST', `/racks/${encodeURIComponent(rack)}/commands`, { command, ...(level === undefined ? {} : { level }) })) as {
    ok: boolean;
    error: string | null;
  };
  console.log(api.json ? JSON.stringify(result) : result.ok ? `rack ${rack}: ${command} done` : `rack ${rack}: ${command} failed: ${result.error}`);
  return result.ok ? 0 : 1;
}
