import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Logger } from 'pino';
import { WebSocket } from 'ws';
import type { Credentials } from './auth.js';
import { ErrorCode } from './codes.js';
import { MAX_FRAME_CEILING } from './constants.js';
import { parseEndpoint } from './endpoint.js';
import type { E2eOptions } from './e2e.js';
import { FluxarError } from './errors.js';
import { type Handler, Peer, type StreamHandler } from './peer.js';
import { type Framing, Session } from './session.js';
import { SocketReads, SocketTransport, type Transport, WebSocketTransport } from './transport.js';

export interface ConnectOptions {
  credentials?: Credentials;
  psk?: Uint8Array | string;
  /**
   * Capabilities to offer, in order of preference. Default: every compression this process can
   * run, zstd first; the server agrees on one (spec section 7.1). `[]` asks for none.
   */
  caps?: string[];
  /**
   * End-to-end encryption (spec section 19): the session is sealed with keys only the two ends
   * hold, whatever sits between them. Pin the server's static key (`serverKey`) to authenticate
   * it; without a pin or a PSK it protects against passive observers only.
   */
  e2e?: E2eOptions;
  tls?: { ca?: string | Buffer | Array<string | Buffer>; cert?: string | Buffer; key?: string | Buffer; servername?: string; rejectUnauthorized?: boolean };
  maxFrame?: number;
  /** Connect plus handshake must finish within this; default 10 s. */
  timeoutMs?: number;
  /** Handlers for calls the server makes to this client. */
  handlers?: Record<string, Handler>;
  /** Handlers for streams the server opens to this client. */
  streamHandlers?: Record<string, StreamHandler>;
  /** Streams the server may open to this client at once (max_streams in the hello; default 128). */
  maxStreams?: number;
  /** QoS 1 and 2 publishes the server may have unanswered at this client's broker (default 1024). */
  maxPublishes?: number;
  maxWriteBuffer?: number;
  logger?: Logger;
  /**
   * Session resume (spec section 20): when the connection drops, reconnect with a backoff and
   * continue the session; calls, streams and subscriptions carry on, the application sees a
   * delay. The server keeps the session for its resume_ms (30 s by default).
   */
  resume?: boolean | { minDelayMs?: number; maxDelayMs?: number };
  /** Envelopes retained for resume until the server acknowledges them (default 4096). */
  resumeBuffer?: number;
  /**
   * Hand on received byte strings as copies. By default a payload's bytes are a view of the
   * 64 KiB slab its read went into, and a payload kept holds its slab: an application that keeps
   * many small payloads for long copies them, or sets this.
   */
  copyBuffers?: boolean;
}

function openTransport(url: string, options: ConnectOptions): Promise<Transport> {
  const endpoint = parseEndpoint(url);
  return new Promise((resolve, reject) => {
    const fail = (err: Error) => reject(new FluxarError(ErrorCode.Unavailable, `cannot connect to ${url}: ${err.message}`, { cause: err }));
    switch (endpoint.kind) {
      case 'tcp':
      case 'unix': {
        const reads = new SocketReads();
        const socket =
          endpoint.kind === 'unix'
            ? netConnect({ path: endpoint.path, onread: reads.onread })
            : netConnect({ port: endpoint.port, host: endpoint.host, onread: reads.onread });
        socket.once('error', fail);
        socket.once('connect', () => {
          socket.off('error', fail);
          resolve(new SocketTransport(endpoint.kind as 'tcp' | 'unix', socket, reads));
        });
        return;
      }
      case 'tls': {
        const socket = tlsConnect({
          host: endpoint.host,
          port: endpoint.port,
          minVersion: 'TLSv1.3',
          servername: options.tls?.servername ?? (/^[\d.:]+$/.test(endpoint.host) ? undefined : endpoint.host),
          ca: options.tls?.ca,
          cert: options.tls?.cert,
          key: options.tls?.key,
          rejectUnauthorized: options.tls?.rejectUnauthorized ?? true,
        });
        socket.once('error', fail);
        socket.once('secureConnect', () => {
          socket.off('error', fail);
          resolve(new SocketTransport('tls', socket));
        });
        return;
      }
      case 'ws':
      case 'wss': {
        const ws = new WebSocket(url, {
          maxPayload: MAX_FRAME_CEILING + 1,
          ca: options.tls?.ca,
          cert: options.tls?.cert,
          key: options.tls?.key,
          rejectUnauthorized: options.tls?.rejectUnauthorized ?? true,
          minVersion: 'TLSv1.3',
        });
        ws.once('error', fail);
        ws.once('open', () => {
          ws.off('error', fail);
          const socket = (ws as unknown as { _socket: { remoteAddress?: string; remotePort?: number } })._socket;
          resolve(new WebSocketTransport(endpoint.kind as 'ws' | 'wss', ws, { address: socket?.remoteAddress, port: socket?.remotePort }));
        });
        return;
      }
    }
  });
}

function newClientSession(framing: Framing, options: ConnectOptions, timeoutMs: number, resumeOf?: Session): Session {
  return new Session({
    resume: options.resume !== undefined && options.resume !== false,
    resumeOf,
    resumeBuffer: options.resumeBuffer,
    role: 'client',
    framing,
    credentials: options.credentials,
    psk: options.psk,
    caps: options.caps,
    e2e: options.e2e,
    maxFrame: options.maxFrame,
    maxStreams: options.maxStreams,
    maxPublishes: options.maxPublishes,
    copyBuffers: options.copyBuffers,
    handshakeTimeoutMs: timeoutMs,
  });
}

/** Connects and completes the handshake; resolves with an open Peer. */
export async function connect(url: string, options: ConnectOptions = {}): Promise<Peer> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FluxarError(ErrorCode.DeadlineExceeded, `no FLUXAR session with ${url} within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const transport = await Promise.race([openTransport(url, options), timeout]);
    let session: Session;
    try {
      session = newClientSession(transport.framing, options, timeoutMs);
    } catch (err) {
      // Refused before a byte was sent (a pinned key that is no key): nothing stays open.
      transport.destroy();
      throw err;
    }
    const resume = options.resume === true ? {} : options.resume || undefined;
    const peer = new Peer(session, transport, {
      maxWriteBuffer: options.maxWriteBuffer,
      logger: options.logger,
      reconnect:
        resume === undefined
          ? undefined
          : {
              ...resume,
              open: () => openTransport(url, options),
              session: (framing, resumeOf) => newClientSession(framing, options, timeoutMs, resumeOf),
            },
    });
    for (const [target, handler] of Object.entries(options.handlers ?? {})) peer.handle(target, handler);
    for (const [target, handler] of Object.entries(options.streamHandlers ?? {})) peer.handleStream(target, handler);
    try {
      await Promise.race([peer.opened, timeout]);
    } catch (err) {
      peer.destroy('handshake failed');
      throw err;
    }
    return peer;
  } finally {
    clearTimeout(timer);
  }
}
