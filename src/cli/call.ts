import { parseArgs } from 'node:util';
import { CONNECTION_OPTIONS, CONNECTION_USAGE, connectWith, payloadArgument, printable, reportFailure } from './fluxar-client.js';

export const CALL_USAGE = `usage: fluxrig call URL TARGET [JSON] [options]
       fluxrig call --stream URL TARGET [JSON] [options]

Calls TARGET on the FLUXAR server at URL with JSON as the payload (default null) and prints the
answer as JSON. URL: tcp://host:port, tls://host:port, ws://host:port/path, wss://..., unix:///path

With --stream, opens a stream instead (the server streams back) and prints each chunk as one
line of JSON as it arrives, then the final payload of the response.

options:
  --stream           open a stream ("out") and print its chunks as they arrive
  --timeout MS       deadline for the call (default 10000); for a stream, the whole stream (default none)
${CONNECTION_USAGE}`;

const DEFAULT_CALL_TIMEOUT_MS = 10_000;

export async function runCall(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(CALL_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...CONNECTION_OPTIONS,
      timeout: { type: 'string' },
      stream: { type: 'boolean', default: false },
    },
  });
  const [url, target, json] = positionals;
  if (url === undefined || target === undefined) {
    console.error(CALL_USAGE);
    return 2;
  }
  const argument = payloadArgument('call', json);
  if (argument === undefined) return 2;
  const { payload } = argument;
  const givenTimeout = values.timeout === undefined ? undefined : Number(values.timeout);
  if (givenTimeout !== undefined && !(givenTimeout > 0)) {
    console.error(`fluxrig call: --timeout must be a positive number of milliseconds, got ${values.timeout}`);
    return 2;
  }
  const timeoutMs = givenTimeout ?? DEFAULT_CALL_TIMEOUT_MS;
  try {
    const peer = await connectWith(url, values, timeoutMs);
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
    return reportFailure('call', err);
  }
}
