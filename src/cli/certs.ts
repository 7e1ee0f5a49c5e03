import { parseArgs } from 'node:util';
import { CERT_DEFAULTS, certFiles, initCerts, issueCert } from '../bus/certs.js';

export const CERTS_USAGE = `usage: fluxrig certs init [--dir DIR] [--host HOST]...
       fluxrig certs issue rack NAME | mixer | server [--dir DIR] [--host HOST]... [--days N]

Makes the certificates of an mTLS bus (docs/snake-protocol.md): init makes a CA, the
nats-server's certificate (for localhost and each --host) and the Mixer's; issue makes a rack's
(the embedded nats-server of fluxrig mixer --tls admits it at once), or renews the others.

options:
  --dir DIR    where the certificates live (default ${CERT_DEFAULTS.dir})
  --host HOST  a name or address racks reach the nats-server by (repeatable)
  --days N     validity of an issued certificate (default ${CERT_DEFAULTS.days})`;

export async function runCerts(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { dir: { type: 'string' }, host: { type: 'string', multiple: true }, days: { type: 'string' } },
    allowPositionals: true,
  });
  const [action, kind, name] = positionals;
  const dir = values.dir ?? CERT_DEFAULTS.dir;
  const hosts = values.host ?? [];
  if (action === 'init') {
    const written = await initCerts(dir, { hosts });
    console.log(`certificates written:\n  ${written.join('\n  ')}\nnext: fluxrig certs issue rack NAME, then fluxrig mixer --tls`);
    return 0;
  }
  if (action === 'issue' && (kind === 'rack' || kind === 'mixer' || kind === 'server')) {
    await issueCert(dir, kind, name, { hosts, days: values.days === undefined ? undefined : Number(values.days) });
    const files = certFiles(dir);
    if (kind === 'rack')
      console.log(
        `rack ${name}: ${files.rack(name!)} and ${files.rackKey(name!)}\nstart it with: fluxrig rack --mixer tls://HOST:4222 --name ${name} --certs ${dir}`,
      );
    else console.log(`${kind}: ${kind === 'mixer' ? files.mixer : files.server} renewed`);
    return 0;
  }
  console.log(CERTS_USAGE);
  return action === undefined || action === 'help' ? 0 : 2;
}
