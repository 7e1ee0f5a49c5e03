import { generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { rawPublicKey, signModule, verifyCountersignature, verifyModule } from '../gears/wasm/signature.js';
import { ModuleStore } from '../gears/wasm/store.js';
import { ModuleBucket } from '../bus/module-bucket.js';
import { connect as natsConnect } from '@nats-io/transport-node';
import { CLIENT_OPTIONS, client } from './mixer.js';

export const WASM_USAGE = `usage: fluxrig wasm <command>

commands:
  keygen DIR [--pem]                 write an Ed25519 key pair: DIR/gear-signing.key and .pub, raw as
                                     fluxrig keeps them (64 and 32 bytes), or PEM with --pem
  sign MODULE --key KEY [--out OUT]  sign a module as its vendor, in fluxrig's format (a raw 64-byte
                                     Ed25519 signature in the fluxrig.signature section); in place
                                     unless --out
  verify MODULE [--trust PUB...] [--cluster PUB]
                                     check the vendor signature against trusted keys, and the
                                     Mixer's countersignature against its key
  import MODULE --name N --version V [--mixer [--allow-unsigned] | --store DIR | --nats URL --bucket B]
                                     --mixer: through the Mixer's API, which checks the vendor
                                     signature, countersigns and puts it in the fleet's bucket;
                                     else into the content-addressed store (default ./modules), or
                                     straight into a NATS Object Store bucket; scenarios then name
                                     it urn:wasm:N:V
  cluster-key [--out FILE]           the Mixer's module key, for racks' --cluster-key (raw 32 bytes
                                     to FILE, else printed)

--mixer and cluster-key talk to the Mixer:
  --api URL, --token TEXT            as for fluxrig racks (FLUXRIG_MIXER_API, FLUXRIG_MIXER_TOKEN)`;

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
      cluster: { type: 'string' },
      pem: { type: 'boolean' },
      mixer: { type: 'boolean' },
      'allow-unsigned': { type: 'boolean' },
      api: CLIENT_OPTIONS.api,
      token: CLIENT_OPTIONS.token,
    },
  });
  const [target] = positionals;
  switch (command) {
    case 'keygen': {
      if (target === undefined) break;
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      await mkdir(target, { recursive: true });
      // Raw as fluxrig (Go) keeps them: the private key as seed then public key, the public key's 32 bytes.
      const pub = rawPublicKey(publicKey);
      const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
      await writeFile(
        join(target, 'gear-signing.key'),
        values.pem === true ? privateKey.export({ format: 'pem', type: 'pkcs8' }) : Buffer.concat([seed, pub]),
        { mode: 0o600 },
      );
      await writeFile(join(target, 'gear-signing.pub'), values.pem === true ? publicKey.export({ format: 'pem', type: 'spki' }) : pub);
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
      if (target === undefined || (values.trust === undefined && values.cluster === undefined)) break;
      const bytes = await readFile(target);
      let failed = false;
      if (values.trust !== undefined) {
        const check = verifyModule(bytes, await Promise.all(values.trust.map((f) => readFile(f))));
        if (check.ok) console.log(`${target}: signed by trusted key ${check.signer}${check.deprecated === undefined ? '' : ` (${check.deprecated})`}`);
        else console.error(`${target}: ${check.reason}`);
        failed ||= !check.ok;
      }
      if (values.cluster !== undefined) {
        const check = verifyCountersignature(bytes, [await readFile(values.cluster)]);
        if (check.ok) console.log(`${target}: countersigned by the Mixer's key ${check.signer}`);
        else console.error(`${target}: ${check.reason}`);
        failed ||= !check.ok;
      }
      return failed ? 1 : 0;
    }
    case 'cluster-key': {
      const key = (await client(values).call('GET', '/modules/key')) as { pem: string; raw_hex: string };
      if (values.out === undefined) console.log(`${key.raw_hex}\n${key.pem.trim()}`);
      else {
        await writeFile(values.out, Buffer.from(key.raw_hex, 'hex'));
        console.log(`wrote ${values.out}: racks load only modules this Mixer countersigned with --cluster-key ${values.out}`);
      }
      return 0;
    }
    case 'import': {
      if (target === undefined || values.name === undefined || values.version === undefined) break;
      if (values.mixer === true) {
        const imported = (await client(values).call('POST', '/modules', {
          name: values.name,
          version: values.version,
          module: (await readFile(target)).toString('base64'),
          allow_unsigned: values['allow-unsigned'] === true,
        })) as { digest: string; vendor: string | null; deprecated: string | null };
        console.log(
          `urn:wasm:${values.name}:${values.version} -> ${imported.digest}, ${imported.vendor === null ? 'unsigned (allowed)' : `signed by ${imported.vendor}`}, countersigned by the Mixer`,
        );
        if (imported.deprecated !== null) console.error(`note: ${imported.deprecated}`);
        return 0;
      }
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
