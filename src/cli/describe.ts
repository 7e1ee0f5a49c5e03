import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DESCRIBE_TARGET, type DescribeDocument } from '../fluxar/describe.js';
import { typescriptClient } from '../fluxar/typescript-client.js';
import { CONNECTION_OPTIONS, CONNECTION_USAGE, connectWith, printable, reportFailure } from './fluxar-client.js';

export const DESCRIBE_USAGE = `usage: fluxrig describe URL [--ts] [--out FILE] [options]

Asks the FLUXAR server at URL what it serves (${DESCRIBE_TARGET}): its methods, streams and
topics, with the JSON Schemas their handlers declared. Prints the document as JSON, or with --ts
a typed TypeScript client for it.

options:
  --ts               write a typed TypeScript client instead of the JSON document
  --out FILE         write to FILE instead of standard output
  --import-from M    the module the client imports the FLUXAR library from (default fluxrig/fluxar)
  --timeout MS       deadline for the connection and the call (default 10000)
${CONNECTION_USAGE}`;

export async function runDescribe(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(DESCRIBE_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...CONNECTION_OPTIONS,
      ts: { type: 'boolean', default: false },
      out: { type: 'string' },
      'import-from': { type: 'string' },
      timeout: { type: 'string', default: '10000' },
    },
  });
  const [url] = positionals;
  const timeoutMs = Number(values.timeout);
  if (url === undefined || positionals.length > 1 || !(timeoutMs > 0)) {
    console.error(DESCRIBE_USAGE);
    return 2;
  }
  let doc: DescribeDocument;
  try {
    const peer = await connectWith(url, values, timeoutMs);
    try {
      doc = (await peer.call(DESCRIBE_TARGET, { version: 1 }, { timeoutMs })) as DescribeDocument;
    } finally {
      await peer.close();
    }
  } catch (err) {
    return reportFailure('describe', err);
  }
  const text = values.ts ? typescriptClient(doc, { importFrom: values['import-from'], source: url }) : `${JSON.stringify(doc, printable, 2)}\n`;
  if (values.out === undefined) process.stdout.write(text);
  else writeFileSync(values.out, text);
  return 0;
}
