import { parseArgs } from 'node:util';
import { certFiles } from '../bus/certs.js';
import { busTls } from '../bus/tls.js';
import { tappedLogger } from '../telemetry/log-tap.js';
import { TELEMETRY_DEFAULTS, TelemetryUplink } from '../telemetry/uplink.js';
import { ModuleStore } from '../gears/wasm/store.js';
import { loadRackConfig } from '../rack/config.js';
import { RACK_DEFAULTS } from '../rack/defaults.js';
import { Rack, rackNameIn } from '../rack/rack.js';
import { readableLogStream } from '../rack/log-format.js';
import { loadScenario } from '../scenario/parse.js';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { AGENT_DEFAULTS, loadAgentState, MixerAgent, startingScenario } from '../rack/agent.js';
import { packageVersion } from './version.js';

export const RACK_USAGE = `usage: fluxrig rack [options]

Starts a rack on a scenario and runs until SIGINT or SIGTERM (then drains and exits).

options:
  --scenario FILE     scenario to run (default ${RACK_DEFAULTS.scenario})
  --config FILE       rack config (YAML: sections rack, nats, log, wasm, kv)
  --nats URL          connect to NATS (enables nats gears); default: standalone
  --workers N         worker threads (default: cores; 0 = gears on the main thread)
  --name NAME         this rack's name in the scenario
  --log-level LEVEL   debug, info, warn, error (default ${RACK_DEFAULTS.log_level})
  --module-store DIR  the content-addressed module store urn:wasm: modules come from
  --trusted-key FILE  a vendor's public key (PEM, or fluxrig's raw .pub); with any, only modules
                      signed by one of them load (repeatable)
  --cluster-key FILE  the Mixer's module key (fluxrig wasm cluster-key); with any, only modules the
                      Mixer countersigned at import load (repeatable)
  --mixer URL         join the Mixer on this NATS: enroll, take scenarios from it, obey its commands;
                      without --scenario the rack runs the last scenario it applied (or none yet)
  --labels K=V,...    labels the Mixer's rack groups select on (with --mixer)
  --state-dir DIR     where the rack keeps its identity, passport and last scenario (default .fluxrig/rack-NAME)
  --secret TEXT       the Mixer's bootstrap secret (default FLUXRIG_MIXER_SECRET)
  --heartbeat-ms N    heartbeat period (default ${AGENT_DEFAULTS.heartbeat_ms})
  --telemetry-level L log lines sent to the Mixer: this level and above (default ${TELEMETRY_DEFAULTS.level}; silent: none)
  --tls-ca FILE       the CA that signed the bus's certificates: mTLS on --mixer and --nats (docs/snake-protocol.md)
  --tls-cert FILE     this rack's certificate (fluxrig certs issue rack NAME)
  --tls-key FILE      its private key
  --certs DIR         the three from a certificates directory: DIR/ca.pem, DIR/racks/NAME.pem and -key.pem

Every setting can also come from the environment as FLUXRIG_<SECTION>_<KEY>, for example
FLUXRIG_RACK_WORKERS=2 or FLUXRIG_NATS_URL=nats://127.0.0.1:4222. Flags win over the
environment, which wins over the config file.`;

export async function runRack(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(RACK_USAGE);
    return 0;
  }
  const { values } = parseArgs({
    args: argv,
    options: {
      scenario: { type: 'string' },
      config: { type: 'string' },
      nats: { type: 'string' },
      workers: { type: 'string' },
      name: { type: 'string' },
      'log-level': { type: 'string' },
      'module-store': { type: 'string' },
      'trusted-key': { type: 'string', multiple: true },
      'cluster-key': { type: 'string', multiple: true },
      mixer: { type: 'string' },
      labels: { type: 'string' },
      'state-dir': { type: 'string' },
      secret: { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'telemetry-level': { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      certs: { type: 'string' },
    },
  });
  const mixerUrl = values.mixer;
  if (mixerUrl !== undefined && values.name === undefined) throw new Error('--mixer needs --name: the Mixer knows racks by name');
  const stateDir = resolve(values['state-dir'] ?? join('.fluxrig', `rack-${values.name ?? 'rack'}`));
  const config = loadRackConfig({
    file: values.config,
    env: process.env,
    flags: {
      'rack.scenario': values.scenario,
      'nats.url': values.nats,
      'rack.workers': values.workers,
      'rack.name': values.name,
      'log.level': values['log-level'],
      'wasm.module_store': values['module-store'],
      'wasm.trusted_keys': values['trusted-key'],
      'wasm.cluster_keys': values['cluster-key'],
      'telemetry.level': values['telemetry-level'],
    },
  });
  // Readable lines in a terminal, pino's JSON lines otherwise (files, collectors, pipes).
  const readable = process.stdout.isTTY === true;
  // The local log, and (with the Mixer) telemetry: one logger, two levels (src/telemetry/log-tap.ts).
  const { logger, tap } = tappedLogger(
    'fluxrig',
    config.log.level,
    mixerUrl === undefined ? 'silent' : config.telemetry.level,
    readable ? readableLogStream() : undefined,
  );
  // With the Mixer and no --scenario, the rack starts on what it last applied, and the Mixer decides.
  const state = mixerUrl === undefined ? undefined : loadAgentState(stateDir);
  const start =
    state !== undefined && values.scenario === undefined
      ? startingScenario(state, process.cwd())
      : { scenario: await loadScenario(config.rack.scenario), groups: [] as string[] };
  const scenario = start.scenario;
  // One certificate for both connections: the Mixer's (--mixer) and the gears' bus (--nats).
  const tls = rackTls(values, rackNameIn(scenario, config.rack.name));
  const rack = new Rack({
    scenario,
    groups: start.groups,
    name: config.rack.name,
    workers: config.rack.workers,
    natsUrl: config.nats.url,
    natsTls: tls,
    kvBucket: config.nats.kv_bucket,
    moduleBucket: config.nats.module_bucket,
    kv: config.kv,
    moduleStore: config.wasm.module_store === undefined ? undefined : new ModuleStore(config.wasm.module_store),
    trustedKeys: config.wasm.trusted_keys.map((f) => readKeyFile(f, 'wasm.trusted_keys')),
    clusterKeys: config.wasm.cluster_keys.map((f) => readKeyFile(f, 'wasm.cluster_keys')),
    laneQueueSize: config.rack.lane_queue_size,
    laneSendTimeoutMs: config.rack.lane_send_timeout_ms,
    ringBytes: config.rack.ring_bytes,
    drainTimeoutMs: config.rack.drain_timeout_ms,
    readableLogs: readable,
    logger,
    logTap: tap,
  });
  const telemetry =
    mixerUrl === undefined
      ? undefined
      : new TelemetryUplink({
          rack: rack.name,
          workers: rack.workerTelemetry,
          ratePerS: config.telemetry.rate_per_s,
          burst: config.telemetry.burst,
          queueEntries: config.telemetry.queue_entries,
          queueBytes: config.telemetry.queue_bytes,
        });
  if (telemetry !== undefined) tap.sink = (line) => telemetry.log(line);
  await rack.start();
  if (!youngGenerationSized()) {
    logger.warn(
      { hint: 'run dist/src/cli/main.js (fluxrig) as an executable, or pass --max-semi-space-size=4 to node' },
      "the rack runs with Node's default young generation: under load its main thread collects in full every 0.7 s or so and its p99 doubles (README, The command line)",
    );
  }
  let stopRequested: (() => void) | undefined;
  const agent =
    mixerUrl === undefined
      ? undefined
      : new MixerAgent({
          rack,
          natsUrl: mixerUrl,
          stateDir,
          baseDir: process.cwd(),
          labels: parseLabels(values.labels),
          secret: values.secret ?? process.env.FLUXRIG_MIXER_SECRET,
          heartbeatMs: Number(values['heartbeat-ms'] ?? AGENT_DEFAULTS.heartbeat_ms),
          version: packageVersion(),
          logger,
          telemetry,
          tls,
          onShutdown: () => stopRequested?.(),
        });
  agent?.start();
  // The last resort. Every socket event is handled inside its own try/catch and fails only its
  // connection; anything that still escapes is a bug, logged loudly, and must not take every
  // other connection of the rack down with it.
  process.on('uncaughtException', (err) => logger.error({ err }, 'uncaught exception (a bug): logged, the rack carries on'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection (a bug): logged, the rack carries on'));
  const tcp = rack.addresses().find((a) => a.startsWith('tcp://'));
  if (tcp !== undefined && process.stderr.isTTY === true) {
    const port = new URL(tcp).port;
    console.error(
      `\nfluxrig rack "${rack.name}" is running scenario ${scenario.meta.name} with ${rack.workers} workers.\nTry it from another terminal:\n  npx fluxrig call tcp://127.0.0.1:${port} payments.authorize '{"amount": 100, "merchant": "m-1"}'\n  npx fluxrig call tcp://127.0.0.1:${port} payments.authorize '{"amount": 2500, "merchant": "m-666", "country": "FR", "card_country": "US"}'\nStop it with Ctrl-C (it drains first).\n`,
    );
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'stopping: draining connections');
      Promise.all([agent?.stop(), rack.stop()]).then(
        () => resolve(),
        (err: unknown) => {
          logger.error({ err }, 'stop failed');
          resolve();
        },
      );
    };
    stopRequested = () => stop('shutdown command from the Mixer');
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}

/** --tls-ca, --tls-cert and --tls-key, or the same three from --certs DIR. */
function rackTls(values: { 'tls-ca'?: string; 'tls-cert'?: string; 'tls-key'?: string; certs?: string }, name: string) {
  const files = values.certs === undefined ? undefined : certFiles(values.certs);
  return busTls(values['tls-ca'] ?? files?.ca, values['tls-cert'] ?? files?.rack(name), values['tls-key'] ?? files?.rackKey(name));
}

function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of (text ?? '').split(',').filter((p) => p !== '')) {
    const [k, v] = pair.split('=');
    if (k === undefined || v === undefined || k === '') throw new Error(`--labels wants K=V,K=V; got ${JSON.stringify(pair)}`);
    labels[k] = v;
  }
  return labels;
}

/** A public key file: PEM, or the raw 32 bytes of fluxrig's .pub files. */
export function readKeyFile(file: string, setting: string): Uint8Array {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`cannot read the key ${file} (${setting}): ${(err as Error).message}`, { cause: err });
  }
}

/** Whether Node was told the young generation's size (the executable's first line does it). */
function youngGenerationSized(): boolean {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((flag) => flag.startsWith('--max-semi-space-size'));
}
