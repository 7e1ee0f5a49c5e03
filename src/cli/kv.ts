import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { CLIENT_HELP, CLIENT_OPTIONS, client, table } from './mixer.js';

export const KV_USAGE = `usage: fluxrig kv <command>

The gears' KV (kvGet/kvPut in a gear), shared by the racks on the bus, through the Mixer. A key
set here reaches every rack's gears at once, with no restart; each change is in the audit trail.

commands:
  ls                       every key, its size, revision and when it was set
  get KEY [--base64 | --out FILE]
                           print the value (text; a value that is not UTF-8 needs --base64 or --out)
  put KEY VALUE            set KEY to VALUE (text, stored as UTF-8)
  put KEY --file FILE      set KEY to the bytes of FILE
  del KEY                  delete KEY (a key that does not exist is an error)

${CLIENT_HELP}

A rack alone (no bus) keeps its KV in memory, seeded from its config's kv section.`;

interface KvValue {
  key: string;
  revision: number;
  bytes: number;
  value: string | null;
  base64: string;
}

export async function runKv(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help') {
    console.log(KV_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { ...CLIENT_OPTIONS, base64: { type: 'boolean' }, out: { type: 'string' }, file: { type: 'string' } },
  });
  const [key, text] = positionals;
  const path = (k: string) => `/kv/${k.split('/').map(encodeURIComponent).join('/')}`;
  switch (command) {
    case 'ls': {
      const api = client(values);
      const rows = (await api.call('GET', '/kv')) as Array<Record<string, unknown>>;
      const shown = rows.map((r) => ({ ...r, updated: new Date(Number(r.updated)).toISOString() }));
      console.log(api.json ? JSON.stringify(rows, null, 2) : rows.length === 0 ? 'no keys' : table(shown, ['key', 'bytes', 'revision', 'updated']));
      return 0;
    }
    case 'get': {
      if (key === undefined || positionals.length > 1) break;
      const api = client(values);
      const entry = (await api.call('GET', path(key))) as KvValue;
      if (values.out !== undefined) {
        await writeFile(values.out, Buffer.from(entry.base64, 'base64'));
        console.error(`wrote ${entry.bytes} bytes of ${key} (revision ${entry.revision}) to ${values.out}`);
      } else if (api.json) console.log(JSON.stringify(entry, null, 2));
      else if (values.base64 === true) console.log(entry.base64);
      else if (entry.value === null) {
        console.error(`${key}: ${entry.bytes} bytes that are not UTF-8 text; use --base64 or --out FILE`);
        return 1;
      } else console.log(entry.value);
      return 0;
    }
    case 'put': {
      if (key === undefined || (text === undefined) === (values.file === undefined) || positionals.length > 2) break;
      const body = values.file === undefined ? { value: text } : { base64: (await readFile(values.file)).toString('base64') };
      const api = client(values);
      const stored = (await api.call('PUT', path(key), body)) as { revision: number; bytes: number };
      console.log(api.json ? JSON.stringify(stored) : `${key} = ${stored.bytes} bytes, revision ${stored.revision}`);
      return 0;
    }
    case 'del':
    case 'delete': {
      if (key === undefined || positionals.length > 1) break;
      await client(values).call('DELETE', path(key));
      console.log(`deleted ${key}`);
      return 0;
    }
  }
  console.error(KV_USAGE);
  return 2;
}
