import { readFileSync } from 'node:fs';

/** TLS for a connection to the bus: the CA to trust, and this side's certificate (mTLS). */
export interface BusTls {
  ca: string;
  cert: string;
  key: string;
}

/**
 * The TLS options of a bus connection from files, or undefined when none is given. All three or
 * none: a client certificate without its CA (or the reverse) is a mistake worth stopping for.
 */
export function busTls(caFile: string | undefined, certFile: string | undefined, keyFile: string | undefined): BusTls | undefined {
  const given = [caFile, certFile, keyFile].filter((f) => f !== undefined).length;
  if (given === 0) return undefined;
  if (given !== 3) throw new Error('mTLS on the bus needs --tls-ca, --tls-cert and --tls-key together');
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`cannot read the ${what} ${file}: ${(err as Error).message}`, { cause: err });
    }
  };
  return { ca: read(caFile!, 'CA certificate'), cert: read(certFile!, 'certificate'), key: read(keyFile!, 'private key') };
}
