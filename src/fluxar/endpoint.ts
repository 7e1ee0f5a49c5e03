import { FluxarError } from './errors.js';
import type { TransportKind } from './transport.js';

export interface Endpoint {
  kind: TransportKind;
  host: string;
  port: number;
  /** Socket path (unix) or HTTP path (ws, wss). */
  path: string;
  url: string;
}

const DEFAULT_PORTS: Record<TransportKind, number> = { tcp: 7420, tls: 7420, ws: 7421, wss: 7421, unix: 0 };

/** Parses tcp://host:port, tls://host:port, ws://host:port/path, wss://..., unix:///path/to.sock. */
export function parseEndpoint(url: string): Endpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (err) {
    throw new FluxarError(400, `not a FLUXAR URL: ${JSON.stringify(url)} (expected tcp://, tls://, ws://, wss:// or unix://)`, { cause: err });
  }
  const kind = parsed.protocol.slice(0, -1) as TransportKind;
  if (!(kind in DEFAULT_PORTS)) {
    throw new FluxarError(400, `unsupported scheme ${parsed.protocol} in ${JSON.stringify(url)} (expected tcp, tls, ws, wss or unix)`);
  }
  if (kind === 'unix') {
    const path = decodeURIComponent(parsed.hostname ? `/${parsed.hostname}${parsed.pathname}` : parsed.pathname);
    if (path === '' || path === '/') throw new FluxarError(400, `unix URL needs a socket path: ${JSON.stringify(url)}`);
    return { kind, host: '', port: 0, path, url };
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  const port = parsed.port === '' ? DEFAULT_PORTS[kind] : Number(parsed.port);
  return { kind, host, port, path: parsed.pathname || '/', url };
}
