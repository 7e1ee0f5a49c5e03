import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { connect } from '../fluxar/client.js';
import { FluxarError } from '../fluxar/errors.js';
import type { Peer } from '../fluxar/peer.js';
import { isQos, type Qos } from '../fluxar/pubsub-state.js';
import { credentialsFrom, printable } from './call.js';

const CONNECTION_OPTIONS = `  --token T          bearer token            --api-key K     API key
  --user U --password P                      credentials
  --psk SECRET       pre-shared key (PSK peer trust)
  --ca FILE          CA certificate for tls:// and wss://
  --insecure         do not verify the server certificate`;

export const SUB_USAGE = `usage: fluxrig sub URL PATTERN [options]

Subscribes to PATTERN (dot-separated tokens; * matches one token, > the rest) on the FLUXAR
server at URL and prints each message as one line of JSON: {"topic", "payload", "attempt"}.
Messages of QoS 1 and 2 are acked once printed. Runs until Ctrl-C, or --count messages.

options:
  --qos N            0 (default), 1 or 2
  --count N          exit after N messages
  --durable NAME     a durable subscription: it outlives the connection (spec section 14.6)
${CONNECTION_OPTIONS}`;

export const PUB_USAGE = `usage: fluxrig pub URL TOPIC [JSON] [options]

Publishes JSON (default null) to TOPIC on the FLUXAR server at URL. With QoS 1 or 2 it prints
the broker's answer, {"duplicate": false, "subscribers": N}; QoS 0 is not answered.

options:
  --qos N            0 (default), 1 or 2
${CONNECTION_OPTIONS}`;

const connectionOptions = {
  token: { type: 'string' },
  'api-key': { type: 'string' },
  user: { type: 'string' },
  password: { type: 'string' },
  psk: { type: 'string' },
  ca: { type: 'string' },
  insecure: { type: 'boolean', default: false },
  qos: { type: 'string', default: '0' },
} as const;

type Values = Record<string, string | boolean | undefined>;

function open(url: string, values: Values): Promise<Peer> {
  return connect(url, {
    credentials: credentialsFrom(values),
    psk: values.psk as string | undefined,
    tls: { ca: typeof values.ca === 'string' ? readFileSync(values.ca) : undefined, rejectUnauthorized: !values.insecure },
  });
}

function qosOf(values: Values, command: string): Qos | null {
  const qos = Number(values.qos);
  if (isQos(qos)) return qos;
  console.error(`fluxrig ${command}: --qos must be 0, 1 or 2, got ${String(values.qos)}`);
  return null;
}

function failed(command: string, err: unknown): number {
  if (!(err instanceof FluxarError)) throw err;
  console.error(`fluxrig ${command}: ${err.code} ${err.codeName}: ${err.message}`);
  return 1;
}

export async function runSub(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(SUB_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...connectionOptions, count: { type: 'string' }, durable: { type: 'string' } },
  });
  const [url, pattern] = positionals;
  if (url === undefined || pattern === undefined) {
    console.error(SUB_USAGE);
    return 2;
  }
  const qos = qosOf(values, 'sub');
  if (qos === null) return 2;
  const count = values.count === undefined ? Number.POSITIVE_INFINITY : Number(values.count);
  try {
    const peer = await open(url, values);
    const sub = peer.subscribe(pattern, { qos, durable: values.durable ?? null });
    const stop = () => sub.unsubscribe();
    process.once('SIGINT', stop);
    try {
      await sub.ready;
      console.error(`subscribed to ${pattern} (QoS ${qos})${Number.isFinite(count) ? `, for ${count} messages` : '; Ctrl-C to stop'}`);
      let seen = 0;
      if (seen < count) {
        for await (const m of sub) {
          console.log(JSON.stringify({ topic: m.topic, payload: m.payload, attempt: m.attempt }, printable));
          m.ack();
          if (++seen >= count) break;
        }
      }
      const ended = await Promise.race([sub.ended, Promise.resolve(null)]);
      if (ended !== null) return failed('sub', ended);
      return 0;
    } finally {
      process.off('SIGINT', stop);
      await peer.close();
    }
  } catch (err) {
    return failed('sub', err);
  }
}

export async function runPub(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(PUB_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: connectionOptions });
  const [url, topic, json] = positionals;
  if (url === undefined || topic === undefined) {
    console.error(PUB_USAGE);
    return 2;
  }
  const qos = qosOf(values, 'pub');
  if (qos === null) return 2;
  let payload: unknown = null;
  if (json !== undefined) {
    try {
      payload = JSON.parse(json);
    } catch (err) {
      console.error(`fluxrig pub: the payload is not JSON: ${(err as Error).message}`);
      return 2;
    }
  }
  try {
    const peer = await open(url, values);
    try {
      const outcome = await peer.publish(topic, payload, { qos });
      if (outcome !== undefined) console.log(JSON.stringify(outcome));
      return 0;
    } finally {
      await peer.close();
    }
  } catch (err) {
    return failed('pub', err);
  }
}
