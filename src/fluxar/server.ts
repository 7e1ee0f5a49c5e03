import { EventEmitter, once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { rm } from 'node:fs/promises';
import { createServer as createTlsServer } from 'node:tls';
import { pino, type Logger } from 'pino';
import { WebSocketServer } from 'ws';
import type { AuthOptions } from './auth.js';
import { MAX_FRAME_CEILING } from './constants.js';
import { type Endpoint, parseEndpoint } from './endpoint.js';
import { type Handler, Peer } from './peer.js';
import { Session, type SessionOptions } from './session.js';
import { SocketTransport, type Transport, WebSocketTransport } from './transport.js';

export interface TlsOptions {
  key: string | Buffer;
  cert: string | Buffer;
  /** CAs trusted for client certificates. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Ask clients for a certificate and refuse those without a valid one. */
  requireClientCert?: boolean;
}

/** The session settings a server applies to every connection. */
type ServerSessionOptions = Pick<SessionOptions, 'psk' | 'maxFrame' | 'heartbeatMs' | 'handshakeTimeoutMs' | 'maxInFlight' | 'drainTimeoutMs'>;

export interface ListenOptions extends ServerSessionOptions {
  /** Where to listen: tcp://host:port, tls://, ws://host:port/path, wss://, unix:///path. Port 0 picks a free one. */
  endpoints: string[];
  /** Certificate and key for tls:// and wss:// (TLS 1.3 only). */
  tls?: TlsOptions;
  auth?: AuthOptions;
  maxWriteBuffer?: number;
  logger?: Logger;
}

type Listener = { endpoint: Endpoint; server: NetServer | HttpServer; wss?: WebSocketServer };

/** A FLUXAR listener over any mix of transports; application code is the same on all of them. */
export class FluxarServer extends EventEmitter {
  readonly handlers = new Map<string, Handler>();
  readonly peers = new Set<Peer>();
  private readonly bound: Listener[] = [];
  private readonly options: ListenOptions;
  private readonly log: Logger;

  constructor(options: ListenOptions) {
    super();
    this.options = options;
    this.log = options.logger ?? pino({ name: 'fluxrig.fluxar' });
  }

  /** Registers a handler for every connection. */
  handle(target: string, handler: Handler): this {
    this.handlers.set(target, handler);
    return this;
  }

  /** The URLs actually bound (with the ports picked for port 0). */
  get addresses(): string[] {
    return this.bound.map(({ endpoint, server }) => {
      if (endpoint.kind === 'unix') return `unix://${endpoint.path}`;
      const address = server.address() as AddressInfo;
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      const path = endpoint.kind === 'ws' || endpoint.kind === 'wss' ? endpoint.path : '';
      return `${endpoint.kind}://${host}:${address.port}${path === '/' ? '' : path}`;
    });
  }

  async start(): Promise<void> {
    for (const url of this.options.endpoints) {
      const endpoint = parseEndpoint(url);
      const listener = this.createListener(endpoint);
      this.bound.push(listener);
      if (endpoint.kind === 'unix') await rm(endpoint.path, { force: true });
      const listening = once(listener.server, 'listening');
      if (endpoint.kind === 'unix') listener.server.listen(endpoint.path);
      else listener.server.listen(endpoint.port, endpoint.host);
      await listening;
    }
  }

  /** Graceful stop: stop accepting, say bye to every peer, wait for their calls, then close. */
  async close(): Promise<void> {
    for (const { server, wss } of this.bound) {
      wss?.close();
      server.close();
    }
    await Promise.all([...this.peers].map((peer) => peer.close()));
    await Promise.all(this.bound.map(({ server }) => (server.listening ? once(server, 'close') : undefined)));
  }

  private createListener(endpoint: Endpoint): Listener {
    const tlsNeeded = endpoint.kind === 'tls' || endpoint.kind === 'wss';
    const tls = this.options.tls;
    if (tlsNeeded && tls === undefined) throw new Error(`${endpoint.url} needs tls.key and tls.cert`);
    const tlsOptions = tls && {
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      minVersion: 'TLSv1.3' as const,
      requestCert: tls.requireClientCert ?? false,
      rejectUnauthorized: tls.requireClientCert ?? false,
    };
    switch (endpoint.kind) {
      case 'tcp':
      case 'unix': {
        const server = createNetServer((socket) => this.accept(new SocketTransport(endpoint.kind as 'tcp' | 'unix', socket)));
        return { endpoint, server };
      }
      case 'tls': {
        const server = createTlsServer(tlsOptions!, (socket) => this.accept(new SocketTransport('tls', socket)));
        server.on('tlsClientError', (err) => this.log.warn({ err: err.message }, 'TLS handshake failed'));
        return { endpoint, server };
      }
      case 'ws':
      case 'wss': {
        const server = endpoint.kind === 'wss' ? createHttpsServer(tlsOptions!) : createHttpServer();
        server.on('request', (_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('FLUXAR: upgrade to WebSocket\n'));
        // ws refuses messages over maxPayload before buffering them (close code 1009); the
        // session then enforces the limit agreed in the handshake (413).
        const maxPayload = Math.min(this.options.maxFrame ?? MAX_FRAME_CEILING, MAX_FRAME_CEILING) + 1;
        const wss = new WebSocketServer({ server, path: endpoint.path, maxPayload });
        wss.on('connection', (ws, req) => {
          this.accept(new WebSocketTransport(endpoint.kind as 'ws' | 'wss', ws, { address: req.socket.remoteAddress, port: req.socket.remotePort }));
        });
        return { endpoint, server, wss };
      }
    }
  }

  private accept(transport: Transport): void {
    const { psk, maxFrame, heartbeatMs, handshakeTimeoutMs, maxInFlight, drainTimeoutMs } = this.options;
    const sessionOptions: SessionOptions = { role: 'server', framing: transport.framing, psk, maxFrame, heartbeatMs, handshakeTimeoutMs, maxInFlight, drainTimeoutMs };
    const peer = new Peer(new Session(sessionOptions), transport, {
      auth: this.options.auth,
      sharedHandlers: this.handlers,
      maxWriteBuffer: this.options.maxWriteBuffer,
      logger: this.log,
    });
    this.peers.add(peer);
    peer.once('close', (info: { code: number; reason: string }) => {
      this.peers.delete(peer);
      if (info.code !== 0) this.log.debug({ peer: transport.remoteAddress, ...info }, 'connection closed');
    });
    peer.opened.then(
      () => this.emit('peer', peer),
      () => {},
    );
  }
}

/** Starts a FLUXAR server on every endpoint given. */
export async function listen(options: ListenOptions): Promise<FluxarServer> {
  const server = new FluxarServer(options);
  try {
    await server.start();
  } catch (err) {
    await server.close().catch(() => {});
    throw err;
  }
  return server;
}
