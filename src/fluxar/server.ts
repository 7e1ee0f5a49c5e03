import { pino, type Logger } from 'pino';
import type { AuthOptions } from './auth.js';
import { parseEndpoint } from './endpoint.js';
import { FluxarListener, type ListenerLimits } from './listener.js';
import { uuidv7 } from '../fluxmsg/uuid.js';
import { Broker, type BrokerOptions, type PublishOutcome } from './broker.js';
import { FluxarError } from './errors.js';
import type { DescribePolicy } from './describe.js';
import { HandlerRegistry } from './registry.js';
import { Peer, type PublishOptions } from './peer.js';
import { topicError } from './topics.js';
import { idKey, Session, type SessionOptions } from './session.js';
import type { Transport } from './transport.js';

export type { TlsOptions } from './listener.js';
/** The session settings a server applies to every connection: named once, for the type and the copy. */
const SERVER_SESSION_KEYS = [
  'caps',
  'psk',
  'e2e',
  'maxFrame',
  'heartbeatMs',
  'handshakeTimeoutMs',
  'maxInFlight',
  'maxStreams',
  'maxPublishes',
  'drainTimeoutMs',
  'inflateBytesPerSecond',
  'decodeItemsPerSecond',
  'resumeMs',
  'resumeBuffer',
] as const satisfies ReadonlyArray<keyof SessionOptions>;
type ServerSessionOptions = Pick<SessionOptions, (typeof SERVER_SESSION_KEYS)[number]>;

export interface ListenOptions extends ServerSessionOptions, Omit<ListenerLimits, 'maxFrame' | 'logger'> {
  /** Where to listen: tcp://host:port, tls://, ws://host:port/path, wss://, unix:///path. Port 0 picks a free one. */
  endpoints: string[];
  auth?: AuthOptions;
  maxWriteBuffer?: number;
  logger?: Logger;
  /** Who may call `fluxar.describe` (spec section 17); default: every peer the handshake accepted. */
  describe?: DescribePolicy;
  /** The broker's limits (spec section 14): queue per subscription, dedupe window, ... */
  broker?: Omit<BrokerOptions, 'clock' | 'schedule'>;
}

/** A FLUXAR listener over any mix of transports; application code is the same on all of them. */
export class FluxarServer extends HandlerRegistry {
  /** One broker for every connection: a publish on one reaches subscribers on all. */
  readonly broker: Broker;
  private brokerTimer: NodeJS.Timeout | undefined;
  readonly peers = new Set<Peer>();
  /** Open sessions by id, for a resume to find (spec section 20). */
  private readonly sessions = new Map<string, Peer>();
  private readonly directory = { find: (id: Uint8Array) => this.sessions.get(idKey(id)) };
  private readonly bound: FluxarListener[] = [];
  private readonly options: ListenOptions;
  private readonly log: Logger;

  constructor(options: ListenOptions) {
    super();
    this.options = options;
    this.log = options.logger ?? pino({ name: 'fluxrig.fluxar' });
    this.broker = new Broker({
      lost: (event) => this.log.warn(event, 'pub/sub messages lost'),
      ...options.broker,
      schedule: (at) => {
        clearTimeout(this.brokerTimer);
        this.brokerTimer = setTimeout(() => this.broker.tick(), Math.max(0, at - Date.now()));
        this.brokerTimer.unref();
      },
    });
  }

  /** Publishes from the server itself to its subscribers; returns what the broker did. */
  publish(topic: string, payload: unknown = null, options: PublishOptions = {}): PublishOutcome {
    const bad = topicError(topic);
    if (bad !== null) throw new FluxarError(400, bad);
    return this.broker.publish(null, null, uuidv7(), topic, options.qos ?? 0, payload);
  }

  /** The URLs actually bound (with the ports picked for port 0). */
  get addresses(): string[] {
    return this.bound.map((l) => l.address);
  }

  async start(): Promise<void> {
    for (const url of this.options.endpoints) {
      const listener = new FluxarListener(parseEndpoint(url), { ...this.options, logger: this.log }, (transport) => this.accept(transport));
      this.bound.push(listener);
      await listener.start();
    }
  }

  /** Graceful stop: stop accepting, say bye to every peer, wait for their calls, then close. */
  async close(): Promise<void> {
    const closing = this.bound.map((l) => l.close());
    this.broker.close();
    clearTimeout(this.brokerTimer);
    await Promise.all([...this.peers].map((peer) => peer.close()));
    await Promise.all(closing);
  }

  private accept(transport: Transport): void {
    const sessionOptions: SessionOptions = { role: 'server', framing: transport.framing };
    for (const key of SERVER_SESSION_KEYS) Object.assign(sessionOptions, { [key]: this.options[key] });
    const peer = new Peer(new Session(sessionOptions), transport, {
      auth: this.options.auth,
      sharedHandlers: this.handlers,
      sharedStreamHandlers: this.streamHandlers,
      sharedTopics: this.topics,
      describe: this.options.describe,
      broker: this.broker,
      maxWriteBuffer: this.options.maxWriteBuffer,
      logger: this.log,
      sessions: this.directory,
    });
    this.peers.add(peer);
    let sessionKey: string | null = null;
    peer.once('close', (info: { code: number; reason: string }) => {
      this.peers.delete(peer);
      if (sessionKey !== null && this.sessions.get(sessionKey) === peer) this.sessions.delete(sessionKey);
      if (info.code !== 0) this.log.debug({ peer: transport.remoteAddress, ...info }, 'connection closed');
    });
    // A connection that resumed another peer's session: that peer serves it from now on.
    peer.once('retired', () => this.peers.delete(peer));
    peer.opened.then(
      (info) => {
        if (info.resumeMs > 0) {
          sessionKey = idKey(info.id);
          this.sessions.set(sessionKey, peer);
        }
        this.emit('peer', peer);
      },
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
