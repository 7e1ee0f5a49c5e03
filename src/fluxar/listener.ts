import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer } from 'node:tls';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { ErrorCode } from './codes.js';
import { DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_UPGRADE_TIMEOUT_MS, frameLimits } from './constants.js';
import type { Endpoint } from './endpoint.js';
import { FluxarError } from './errors.js';
import { encodeByeFrame } from './session.js';
import { SocketTransport, type Transport, WebSocketTransport } from './transport.js';

export interface TlsOptions {
  key: string | Buffer;
  cert: string | Buffer;
  /** CAs trusted for client certificates. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Ask clients for a certificate and refuse those without a valid one. */
  requireClientCert?: boolean;
}

/** What every FLUXAR listener enforces before a session exists. */
export interface ListenerLimits {
  /** Certificate and key for tls:// and wss:// (TLS 1.3 only). */
  tls?: TlsOptions;
  /** Largest frame accepted; the WebSocket message limit follows from it. Default 1 MiB. */
  maxFrame?: number;
  /** Connections held at once on this listener; more are refused with a 503. Default 10,000. */
  maxConnections?: number;
  /** Connections held at once from one IP address. Default 1,000. */
  maxConnectionsPerIp?: number;
  /** ws/wss: the HTTP request and upgrade must complete within this. Default 5 s. */
  upgradeTimeoutMs?: number;
  logger?: Logger;
}

/**
 * One bound endpoint (tcp, tls, unix, ws or wss) that turns accepted connections into
 * Transports. Shared by listen() and the rack: connection caps, the upgrade timeout and the
 * WebSocket message limit live here once. Refusals happen before any byte is buffered: a 503 bye
 * on a byte stream, an HTTP 503 on a WebSocket upgrade.
 */
export class FluxarListener {
  readonly endpoint: Endpoint;
  private readonly server: NetServer | HttpServer;
  private readonly wss: WebSocketServer | undefined;
  private readonly limits: Required<Omit<ListenerLimits, 'tls' | 'logger'>>;
  private readonly log: Logger | undefined;
  private open = 0;
  private readonly perIp = new Map<string, number>();
  /** Sockets not handed to the owner (refused, or still upgrading): closing the listener ends them. */
  private readonly unowned = new Set<Duplex>();

  constructor(endpoint: Endpoint, options: ListenerLimits, onTransport: (transport: Transport) => void) {
    this.endpoint = endpoint;
    this.log = options.logger;
    this.limits = {
      maxFrame: frameLimits(options.maxFrame).maxFrame,
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      maxConnectionsPerIp: options.maxConnectionsPerIp ?? DEFAULT_MAX_CONNECTIONS_PER_IP,
      upgradeTimeoutMs: options.upgradeTimeoutMs ?? DEFAULT_UPGRADE_TIMEOUT_MS,
    };
    const tls = options.tls;
    const needsTls = endpoint.kind === 'tls' || endpoint.kind === 'wss';
    if (needsTls && tls === undefined) throw new FluxarError(ErrorCode.BadRequest, `${endpoint.url} needs a TLS key and certificate`);
    const tlsOptions = tls && {
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      minVersion: 'TLSv1.3' as const,
      // Node's default lets a TLS handshake hang for 120 s.
      handshakeTimeout: this.limits.upgradeTimeoutMs,
      requestCert: tls.requireClientCert ?? false,
      rejectUnauthorized: tls.requireClientCert ?? false,
    };
    switch (endpoint.kind) {
      case 'tcp':
      case 'unix':
      case 'tls': {
        const kind = endpoint.kind;
        const onSocket = (socket: Socket) => {
          socket.on('error', () => {}); // reported through the transport, or irrelevant after a refusal
          if (!this.admit(socket, (reason) => this.refuse(socket, encodeByeFrame('stream', ErrorCode.Unavailable, reason)))) return;
          this.hand(() => onTransport(new SocketTransport(kind, socket)), socket);
        };
        this.server = kind === 'tls' ? createTlsServer(tlsOptions!, onSocket) : createNetServer(onSocket);
        if (kind === 'tls') this.server.on('tlsClientError', (err) => this.log?.warn({ err: err.message, listener: endpoint.url }, 'TLS handshake failed'));
        return;
      }
      case 'ws':
      case 'wss': {
        const kind = endpoint.kind;
        const server = kind === 'wss' ? createHttpsServer(tlsOptions!) : createHttpServer();
        server.headersTimeout = this.limits.upgradeTimeoutMs;
        server.requestTimeout = this.limits.upgradeTimeoutMs;
        server.on('request', (_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('FLUXAR: upgrade to WebSocket\n'));
        // ws refuses a message over maxPayload before buffering it (close 1009); the session
        // then holds frames to the maximum agreed in the handshake (413).
        this.wss = new WebSocketServer({ noServer: true, path: endpoint.path, maxPayload: frameLimits(this.limits.maxFrame).maxMessage });
        // Counted from the TCP connection, not the upgrade: a client that never upgrades holds a
        // socket too, for upgradeTimeoutMs at most.
        server.on(kind === 'wss' ? 'secureConnection' : 'connection', (socket: Socket) => {
          socket.on('error', () => {});
          if (!this.admit(socket, () => this.refuse(socket, 'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'))) return;
          this.unowned.add(socket);
          const timer = setTimeout(() => socket.destroy(), this.limits.upgradeTimeoutMs);
          timer.unref();
          socket.once('close', () => {
            clearTimeout(timer);
            this.unowned.delete(socket);
          });
          (socket as Socket & { fluxarUpgradeTimer?: NodeJS.Timeout }).fluxarUpgradeTimer = timer;
        });
        server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
          const wss = this.wss!;
          clearTimeout((socket as Socket & { fluxarUpgradeTimer?: NodeJS.Timeout }).fluxarUpgradeTimer);
          this.unowned.delete(socket);
          if (!wss.shouldHandle(req)) return this.refuse(socket, 'HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
          wss.handleUpgrade(req, socket, head, (ws) => {
            this.hand(() => onTransport(new WebSocketTransport(kind, ws, { address: req.socket.remoteAddress, port: req.socket.remotePort })), socket);
          });
        });
        this.server = server;
        return;
      }
    }
  }

  /**
   * Sends the refusal and closes. The socket is destroyed once the refusal is flushed rather than
   * left half-open: a client that never closes its side must not hold it (nor stop close()).
   */
  private refuse(socket: Duplex, refusal: string | Uint8Array): void {
    this.unowned.add(socket);
    socket.once('close', () => this.unowned.delete(socket));
    socket.end(refusal, () => socket.destroy());
  }

  /** Hands a connection to its owner; if that throws (a bug), only this connection is lost. */
  private hand(give: () => void, socket: Duplex): void {
    try {
      give();
    } catch (err) {
      this.log?.error({ err, listener: this.endpoint.url }, 'accepting a connection failed; closing it');
      socket.destroy();
    }
  }

  /** Counts the connection in, or refuses it (false) when a cap is reached. */
  private admit(socket: Socket, refuse: (reason: string) => void): boolean {
    const ip = socket.remoteAddress ?? 'local';
    const fromIp = this.perIp.get(ip) ?? 0;
    let reason: string | undefined;
    if (this.open >= this.limits.maxConnections) reason = `listener at its limit of ${this.limits.maxConnections} connections`;
    else if (fromIp >= this.limits.maxConnectionsPerIp) reason = `limit of ${this.limits.maxConnectionsPerIp} connections from one address reached`;
    if (reason !== undefined) {
      this.log?.warn({ listener: this.endpoint.url, peer: ip }, `connection refused: ${reason}`);
      refuse(reason);
      return false;
    }
    this.open++;
    this.perIp.set(ip, fromIp + 1);
    socket.once('close', () => {
      this.open--;
      const left = (this.perIp.get(ip) ?? 1) - 1;
      if (left === 0) this.perIp.delete(ip);
      else this.perIp.set(ip, left);
    });
    return true;
  }

  /** Connections held now. */
  get connections(): number {
    return this.open;
  }

  /** Binds; rejects with a FluxarError naming the endpoint (port in use, bad address). */
  async start(): Promise<void> {
    const { endpoint, server } = this;
    if (endpoint.kind === 'unix') await rm(endpoint.path, { force: true });
    // once() rejects on 'error' too: a port in use or a bad address ends up in the catch.
    const listening = once(server, 'listening');
    try {
      if (endpoint.kind === 'unix') server.listen(endpoint.path);
      else server.listen(endpoint.port, endpoint.host);
      await listening;
    } catch (err) {
      throw new FluxarError(ErrorCode.Unavailable, `cannot listen on ${endpoint.url}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The URL actually bound (with the port picked for port 0). */
  get address(): string {
    const { endpoint } = this;
    if (endpoint.kind === 'unix') return `unix://${endpoint.path}`;
    const a = this.server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    const path = endpoint.kind === 'ws' || endpoint.kind === 'wss' ? endpoint.path : '';
    return `${endpoint.kind}://${host}:${a.port}${path === '/' ? '' : path}`;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  /**
   * Stops accepting at once. The promise settles when every connection it accepted has closed:
   * the owner closes those meanwhile.
   */
  async close(): Promise<void> {
    this.wss?.close();
    if (!this.server.listening) return;
    const closed = once(this.server, 'close');
    this.server.close();
    for (const socket of this.unowned) socket.destroy();
    await closed;
    if (this.endpoint.kind === 'unix') await rm(this.endpoint.path, { force: true });
  }
}
