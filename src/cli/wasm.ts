import { generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { signModule, verifyModule } from '../gears/wasm/signature.js';
import { ModuleStore } from '../gears/wasm/store.js';
import { ModuleBucket } from '../bus/module-bucket.js';
import { connect as natsConnect } from '@nats-io/transport-node';

export const WASM_USAGE = `usage: fluxrig wasm <command>

commands:
  keygen DIR                         write an Ed25519 key pair: DIR/gear-signing.key, DIR/gear-signing.pub
  sign MODULE --key KEY [--out OUT]  sign a module (in place unless --out)
  verify MODULE --trust PUB...       check a module's signature against trusted public keys
  import MODULE --name N --version V [--store DIR | --nats URL --bucket B]
                                     add a module to the content-addressed store (default ./modules),
                                     or to a NATS Object Store bucket for racks on the bus;
                                     scenarios then name it urn:wasm:N:V`;

export async function runWasm(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help') {
    console.log(WASM_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      key: { type: 'string' },
      out: { type: 'string' },
      trust: { type: 'string', multiple: true },
      name: { type: 'string' },
      version: { type: 'string' },
      store: { type: 'string', default: 'modules' },
      nats: { type: 'string' },
      bucket: { type: 'string', default: 'fluxrig-modules' },
    },
  });
  const [target] = positionals;
  switch (command) {
    case 'keygen': {
      if (target === undefined) break;
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      await mkdir(target, { recursive: true });
      await writeFile(join(target, 'gear-signing.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
      await writeFile(join(target, 'gear-signing.pub'), publicKey.export({ format: 'pem', type: 'spki' }));
      console.log(`wrote ${join(target, 'gear-signing.key')} (keep it secret) and ${join(target, 'gear-signing.pub')}`);
      return 0;
    }
    case 'sign': {
      if (target === undefined || values.key === undefined) break;
      const signed = signModule(await readFile(target), await readFile(values.key));
      const out = values.out ?? target;
      await writeFile(out, signed);
      console.log(`signed ${out}`);
      return 0;
    }
    case 'verify': {
      if (target === undefined || values.trust === undefined) break;
      const keys = await Promise.all(values.trust.map((f) => readFile(f, 'utf8')));
      const check = verifyModule(await readFile(target), keys);
      if (check.ok) {
        console.log(`${target}: signed by trusted key ${check.signer}`);
        return 0;
      }
      console.error(`${target}: ${check.reason}`);
      return 1;
    }
    case 'import': {
      if (target === undefined || values.name === undefined || values.version === undefined) break;
      if (values.nats !== undefined) {
        const nc = await natsConnect({ servers: values.nats });
        try {
          const bucket = await ModuleBucket.open(nc, values.bucket!);
          const digest = await bucket.import(await readFile(target), values.name, values.version);
          console.log(`urn:wasm:${values.name}:${values.version} -> ${digest} in NATS bucket ${values.bucket}`);
        } finally {
          await nc.close();
        }
        return 0;
      }
      const store = new ModuleStore(resolve(values.store!));
      const digest = await store.import(await readFile(target), values.name, values.version);
      console.log(`urn:wasm:${values.name}:${values.version} -> ${digest} in ${store.dir}`);
      return 0;
    }
  }
  console.error(WASM_USAGE);
  return 2;
}
