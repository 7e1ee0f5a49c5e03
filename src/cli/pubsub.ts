import { parseArgs } from 'node:util';
import { isQos, type Qos } from '../fluxar/pubsub-state.js';
import { CONNECTION_OPTIONS, CONNECTION_USAGE, connectWith, payloadArgument, printable, reportFailure } from './fluxar-client.js';

export const SUB_USAGE = `usage: fluxrig sub URL PATTERN [options]

Subscribes to PATTERN (dot-separated tokens; * matches one token, > the rest) on the FLUXAR
server at URL and prints each message as one line of JSON: {"topic", "payload", "attempt"}.
Messages of QoS 1 and 2 are acked once printed. Runs until Ctrl-C, or --count messages.

options:
  --qos N            0 (default), 1 or 2
  --count N          exit after N messages
  --durable NAME     a durable subscription: it outlives the connection (spec section 14.6)
${CONNECTION_USAGE}`;

export const PUB_USAGE = `usage: fluxrig pub URL TOPIC [JSON] [options]

Publishes JSON (default null) to TOPIC on the FLUXAR server at URL. With QoS 1 or 2 it prints
the broker's answer, {"duplicate": false, "subscribers": N}; QoS 0 is not answered.

options:
  --qos N            0 (default), 1 or 2
${CONNECTION_USAGE}`;

const OPTIONS = { ...CONNECTION_OPTIONS, qos: { type: 'string', default: '0' } } as const;

function qosOf(values: Record<string, string | boolean | undefined>, command: string): Qos | null {
  const qos = Number(values.qos);
  if (isQos(qos)) return qos;
  console.error(`fluxrig ${command}: --qos must be 0, 1 or 2, got ${String(values.qos)}`);
  return null;
}

export async function runSub(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(SUB_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...OPTIONS, count: { type: 'string' }, durable: { type: 'string' } },
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
    const peer = await connectWith(url, values);
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
      if (ended !== null) return reportFailure('sub', ended);
      return 0;
    } finally {
      process.off('SIGINT', stop);
      await peer.close();
    }
  } catch (err) {
    return reportFailure('sub', err);
  }
}

export async function runPub(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(PUB_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  const [url, topic, json] = positionals;
  if (url === undefined || topic === undefined) {
    console.error(PUB_USAGE);
    return 2;
  }
  const qos = qosOf(values, 'pub');
  if (qos === null) return 2;
  const argument = payloadArgument('pub', json);
  if (argument === undefined) return 2;
  const { payload } = argument;
  try {
    const peer = await connectWith(url, values);
    try {
      const outcome = await peer.publish(topic, payload, { qos });
      if (outcome !== undefined) console.log(JSON.stringify(outcome));
      return 0;
    } finally {
      await peer.close();
    }
  } catch (err) {
    return reportFailure('pub', err);
  }
}
