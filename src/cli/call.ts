import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Credentials } from '../fluxar/auth.js';
import { connect } from '../fluxar/client.js';
import { FluxarError } from '../fluxar/errors.js';

export const CALL_USAGE = `usage: fluxrig call URL TARGET [JSON] [options]
       fluxrig call --stream URL TARGET [JSON] [options]

Calls TARGET on the FLUXAR server at URL with JSON as the payload (default null) and prints the
answer as JSON. URL: tcp://host:port, tls://host:port, ws://host:port/path, wss://..., unix:///path

With --stream, opens a stream instead (the server streams back) and prints each chunk as one
line of JSON as it arrives, then the final payload of the response.

options:
  --stream           open a stream ("out") and print its chunks as they arrive
  --token T          bearer token            --api-key K     API key
  --user U --password P                      credentials
  --psk SECRET       pre-shared key (PSK peer trust)
  --timeout MS       deadline for the call (default 10000); for a stream, the whole stream (default none)
  --ca FILE          CA certificate for tls:// and wss://
  --insecure         do not verify the server certificate`;

const DEFAULT_CALL_TIMEOUT_MS = 10_000;

export function credentialsFrom(values: Record<string, string | boolean | undefined>): Credentials | undefined {
  if (typeof values.token === 'string') return { scheme: 'bearer', token: values.token };
  if (typeof values['api-key'] === 'string') return { scheme: 'api_key', key: values['api-key'] };
  if (typeof values.user === 'string') return { scheme: 'credentials', username: values.user, password: String(values.password ?? '') };
  return undefined;
}

/** Bytes become {"$bytes": "<base64>"} so any answer prints as JSON. */
export function printable(_key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString('base64') };
  if (typeof value === 'bigint') return value.toString();
  return value;
}

export async function runCall(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(CALL_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      token: { type: 'string' },
      'api-key': { type: 'string' },
      user: { type: 'string' },
      password: { type: 'string' },
      psk: { type: 'string' },
      timeout: { type: 'string' },
      ca: { type: 'string' },
      insecure: { type: 'boolean', default: false },
      stream: { type: 'boolean', default: false },
    },
  });
  const [url, target, json] = positionals;
  if (url === undefined || target === undefined) {
    console.error(CALL_USAGE);
    return 2;
  }
  let payload: unknown = null;
  if (json !== undefined) {
    try {
      payload = JSON.parse(json);
    } catch (err) {
      console.error(`fluxrig call: the payload is not JSON: ${(err as Error).message}`);
      return 2;
    }
  }
  const givenTimeout = values.timeout === undefined ? undefined : Number(values.timeout);
  if (givenTimeout !== undefined && !(givenTimeout > 0)) {
    console.error(`fluxrig call: --timeout must be a positive number of milliseconds, got ${values.timeout}`);
    return 2;
  }
  const timeoutMs = givenTimeout ?? DEFAULT_CALL_TIMEOUT_MS;
  try {
    const peer = await connect(url, {
      credentials: credentialsFrom(values),
      psk: values.psk,
      timeoutMs,
      tls: { ca: values.ca ? readFileSync(values.ca) : undefined, rejectUnauthorized: !values.insecure },
    });
    try {
      if (values.stream) {
        // A stream may rightly run long: it has a deadline only when one is asked for.
        const stream = peer.stream(target, payload, { mode: 'out', timeoutMs: givenTimeout });
        for await (const chunk of stream) console.log(JSON.stringify(chunk, printable));
        console.log(JSON.stringify(await stream.result, printable, 2));
        return 0;
      }
      const answer = await peer.call(target, payload, { timeoutMs });
      console.log(JSON.stringify(answer, printable, 2));
      return 0;
    } finally {
      await peer.close();
    }
  } catch (err) {
    if (err instanceof FluxarError) {
      console.error(`fluxrig call: ${err.code} ${err.codeName}: ${err.message}`);
      if (err.data !== undefined) console.error(JSON.stringify(err.data, printable, 2));
      return 1;
    }
    throw err;
  }
}
