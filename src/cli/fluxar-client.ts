// What the commands that talk to a FLUXAR server (call, sub, pub) share: the connection options,
// connecting with them, the JSON payload argument, and how a FluxarError is reported.
import { readFileSync } from 'node:fs';
import type { Credentials } from '../fluxar/auth.js';
import { connect } from '../fluxar/client.js';
import { FluxarError } from '../fluxar/errors.js';
import type { Peer } from '../fluxar/peer.js';
import type { E2eOptions } from '../fluxar/e2e.js';
import { keyFromHex } from '../fluxar/noise.js';

export const CONNECTION_USAGE = `  --token T          bearer token            --api-key K     API key
  --user U --password P                      credentials
  --psk SECRET       pre-shared key (PSK peer trust)
  --e2e              encrypt end to end (Noise); refuse a server that does not
  --server-key HEX   the server's end-to-end public key, pinned (implies --e2e)
  --ca FILE          CA certificate for tls:// and wss://
  --insecure         do not verify the server certificate`;

/** The connection options, for parseArgs. */
export const CONNECTION_OPTIONS = {
  token: { type: 'string' },
  'api-key': { type: 'string' },
  user: { type: 'string' },
  password: { type: 'string' },
  psk: { type: 'string' },
  e2e: { type: 'boolean', default: false },
  'server-key': { type: 'string' },
  ca: { type: 'string' },
  insecure: { type: 'boolean', default: false },
} as const;

type Values = Record<string, string | boolean | undefined>;

export function credentialsFrom(values: Values): Credentials | undefined {
  if (typeof values.token === 'string') return { scheme: 'bearer', token: values.token };
  if (typeof values['api-key'] === 'string') return { scheme: 'api_key', key: values['api-key'] };
  if (typeof values.user === 'string') return { scheme: 'credentials', username: values.user, password: String(values.password ?? '') };
  return undefined;
}

function e2eFrom(values: Values): E2eOptions | undefined {
  const pinned = values['server-key'];
  if (typeof pinned === 'string') {
    const serverKey = keyFromHex(pinned);
    if (serverKey === null) throw new FluxarError(400, '--server-key must be 64 hex digits (the key fluxrig e2e keygen printed)');
    return { serverKey };
  }
  return values.e2e ? {} : undefined;
}

/** Connects to `url` with the connection options given. */
export function connectWith(url: string, values: Values, timeoutMs?: number): Promise<Peer> {
  return connect(url, {
    credentials: credentialsFrom(values),
    psk: values.psk as string | undefined,
    e2e: e2eFrom(values),
    timeoutMs,
    tls: { ca: typeof values.ca === 'string' ? readFileSync(values.ca) : undefined, rejectUnauthorized: !values.insecure },
  });
}

/** The JSON argument as a payload (null when absent); undefined, said on stderr, when it is not JSON. */
export function payloadArgument(command: string, json: string | undefined): { payload: unknown } | undefined {
  if (json === undefined) return { payload: null };
  try {
    return { payload: JSON.parse(json) };
  } catch (err) {
    console.error(`fluxrig ${command}: the payload is not JSON: ${(err as Error).message}`);
    return undefined;
  }
}

/** Bytes become {"$bytes": "<base64>"} so any answer prints as JSON. */
export function printable(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString('base64') };
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** A FluxarError on stderr (its code, name, message and data): exit code 1. Anything else is thrown on. */
export function reportFailure(command: string, err: unknown): number {
  if (!(err instanceof FluxarError)) throw err;
  console.error(`fluxrig ${command}: ${err.code} ${err.codeName}: ${err.message}`);
  if (err.data !== undefined) console.error(JSON.stringify(err.data, printable, 2));
  return 1;
}
