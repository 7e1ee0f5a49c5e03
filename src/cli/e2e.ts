import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { generateKeyPair } from '../fluxar/noise.js';

export const E2E_USAGE = `usage: fluxrig e2e keygen --out FILE

Writes a new X25519 private key for FLUXAR's end-to-end encryption to FILE (64 hex digits, mode
0600) and prints its public key. A rack reads it with e2e.static_key: file:FILE in its fluxar
gear; clients pin the public key (fluxrig call --e2e --server-key HEX, or
connect(url, {e2e: {serverKey}})).`;

export function runE2e(argv: string[]): number {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { out: { type: 'string' } } });
  if (positionals[0] !== 'keygen' || values.out === undefined) {
    console.error(E2E_USAGE);
    return 2;
  }
  const key = generateKeyPair();
  writeFileSync(values.out, `${Buffer.from(key.privateKey).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  console.log(Buffer.from(key.publicKey).toString('hex'));
  return 0;
}
