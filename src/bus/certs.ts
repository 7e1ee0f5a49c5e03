// The bus's certificates (mTLS): a CA, the nats-server's certificate, the Mixer's and one per
// rack, made with @peculiar/x509 (ECDSA P-256). nats-server maps each client certificate to a
// user by its subject (verify_and_map), and the user's permissions confine it (permissions.ts).
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { FluxrigError } from '../errors.js';
import { RACK_NAME } from './subjects.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export class CertsError extends FluxrigError {}

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 3600_000;
export const CERT_DEFAULTS = { dir: '.fluxrig/certs', ca_days: 3650, days: 825 } as const;

/** The subject of each certificate, which nats-server also uses as the user's name. */
export const certSubject = {
  mixer: 'CN=mixer',
  rack: (name: string) => `CN=rack.${name}`,
  server: 'CN=fluxrig-nats',
  ca: 'CN=fluxrig CA',
} as const;

export const certFiles = (dir: string) => ({
  ca: join(dir, 'ca.pem'),
  caKey: join(dir, 'ca-key.pem'),
  server: join(dir, 'server.pem'),
  serverKey: join(dir, 'server-key.pem'),
  mixer: join(dir, 'mixer.pem'),
  mixerKey: join(dir, 'mixer-key.pem'),
  rack: (name: string) => join(dir, 'racks', `${name}.pem`),
  rackKey: (name: string) => join(dir, 'racks', `${name}-key.pem`),
});

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

function write(file: string, text: string, secret: boolean): void {
  writeFileSync(file, text.endsWith('\n') ? text : `${text}\n`, { mode: secret ? 0o600 : 0o644 });
}

async function loadCa(dir: string): Promise<{ cert: x509.X509Certificate; key: webcrypto.CryptoKey }> {
  const files = certFiles(dir);
  if (!existsSync(files.ca) || !existsSync(files.caKey)) throw new CertsError(`no CA in ${dir}: run fluxrig certs init first`);
  const cert = new x509.X509Certificate(readFileSync(files.ca, 'utf8'));
  const der = x509.PemConverter.decodeFirst(readFileSync(files.caKey, 'utf8'));
  const key = await webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
  return { cert, key };
}

/** Makes the CA, the nats-server's certificate (for `hosts` and localhost) and the Mixer's. */
export async function initCerts(dir: string, options: { hosts?: string[] } = {}): Promise<string[]> {
  const files = certFiles(dir);
  if (existsSync(files.ca))
    throw new CertsError(`${files.ca} exists already: a second CA would orphan every certificate it signed (remove ${dir} to start over)`);
  mkdirSync(join(dir, 'racks'), { recursive: true });
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: certSubject.ca,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + CERT_DEFAULTS.ca_days * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  write(files.ca, ca.toString('pem'), false);
  write(files.caKey, await privateKeyPem(keys.privateKey), true);
  await issueCert(dir, 'server', undefined, options);
  await issueCert(dir, 'mixer');
  return [files.ca, files.caKey, files.server, files.serverKey, files.mixer, files.mixerKey];
}

/** Issues a certificate signed by the CA in `dir`: the nats-server's, the Mixer's or a rack's. */
export async function issueCert(
  dir: string,
  kind: 'server' | 'mixer' | 'rack',
  name?: string,
  options: { hosts?: string[]; days?: number } = {},
): Promise<{ cert: string; key: string }> {
  const files = certFiles(dir);
  let subject: string;
  let certFile: string;
  let keyFile: string;
  if (kind === 'rack') {
    if (name === undefined || !RACK_NAME.test(name))
      throw new CertsError(`a rack certificate needs the rack's name (1-64 of a-z 0-9 _ -), got ${JSON.stringify(name)}`);
    subject = certSubject.rack(name);
    certFile = files.rack(name);
    keyFile = files.rackKey(name);
    mkdirSync(join(dir, 'racks'), { recursive: true });
  } else if (kind === 'mixer') {
    subject = certSubject.mixer;
    certFile = files.mixer;
    keyFile = files.mixerKey;
  } else {
    subject = certSubject.server;
    certFile = files.server;
    keyFile = files.serverKey;
  }
  const ca = await loadCa(dir);
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
    new x509.ExtendedKeyUsageExtension([kind === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
  ];
  if (kind === 'server') {
    const hosts = [...new Set(['localhost', '127.0.0.1', '::1', ...(options.hosts ?? [])])];
    extensions.push(new x509.SubjectAlternativeNameExtension(hosts.map((h) => ({ type: isIP(h) === 0 ? ('dns' as const) : ('ip' as const), value: h }))));
  }
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + (options.days ?? CERT_DEFAULTS.days) * DAY_MS),
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: ALGORITHM,
    extensions,
  });
  const pem = { cert: cert.toString('pem'), key: await privateKeyPem(keys.privateKey) };
  write(certFile, pem.cert, false);
  write(keyFile, pem.key, true);
  return pem;
}

/** The racks a certificate was issued to in `dir` (each becomes a nats-server user). */
export function issuedRacks(dir: string): string[] {
  try {
    return readdirSync(join(dir, 'racks'))
      .filter((f) => f.endsWith('.pem') && !f.endsWith('-key.pem'))
      .map((f) => f.slice(0, -'.pem'.length))
      .filter((n) => RACK_NAME.test(n))
      .sort();
  } catch {
    return [];
  }
}
