import type { Logger } from 'pino';
import type { AuthOptions, Principal } from './auth.js';
import { ERROR_NAMES, ErrorCode } from './codes.js';
import { DEFAULT_MAX_WRITE_BUFFER, DEFAULT_STREAM_WINDOW } from './constants.js';
import {
  type Contract,
  DESCRIBE_TARGET,
  type DescribePolicy,
  describeAllowed,
  describeDocument,
  describeRequestError,
  type InputOf,
  type OutputOf,
  type TopicContract,
} from './describe.js';
import { HandlerRegistry } from './registry.js';
import { type DriverHost, SessionDriver } from './driver.js';
import { FluxarError } from './errors.js';
import type { Framing, ResumeRequest, Session, SessionEvent, SessionInfo } from './session.js';
import { Broker, type BrokerLink, type PublishOutcome } from './broker.js';
import type { Qos, SubscribeOptions } from './pubsub-state.js';
import { FluxarStream, isAsyncIterable, isIterator, StreamChannel, type StreamHost, type StreamOptions } from './stream.js';
import { type FluxarMessage, FluxarSubscription } from './subscription.js';
import type { StreamMode } from './stream-state.js';
import type { Transport } from './transport.js';

export interface CallContext {
  target: string;
  meta: Record<string, unknown> | null;
  /** Aborted when the caller cancels (499), the deadline passes (408) or the connection drops (503). */
  readonly signal: AbortSignal;
  principal: Principal | null;
  peer: Peer;
}

/** Returns the answer payload (or a promise of it); throw a FluxarError to answer with its code. */
export type Handler = (payload: unknown, ctx: CallContext) => unknown;

export interface StreamContext extends CallContext {
  /** The opening request's payload. */
  payload: unknown;
  mode: StreamMode;
  /** Sends a chunk down ("out" and "bidi"), as yielding from the handler does. */
  write(chunk: unknown, meta?: Record<string, unknown>): Promise<void>;
}

/**
 * Serves a stream. `chunks` yields what the opener streams up ("in", "bidi"). Return an async
 * iterable (an async generator) or a generator to stream its values down: a plain generator
 * costs no promise per chunk, the cheaper loop when the values are at hand. Its return value,
 * or the value the handler resolves with, is the final payload of the response. Throw a
 * FluxarError to end the stream with its code. ctx.signal fires when the opener cancels, the
 * deadline passes or the connection drops; nothing the handler sends after that leaves.
 */
export type StreamHandler = (chunks: AsyncIterable<unknown>, ctx: StreamContext) => unknown;

/** A handler whose input and answer are typed by its contract's schemas. */
export type TypedHandler<C extends Contract> = (payload: InputOf<C>, ctx: CallContext) => OutputOf<C> | Promise<OutputOf<C>>;

export interface PeerCallOptions {
  /** Caller-side timeout: sent as the deadline and enforced locally; rejects with 408. */
  timeoutMs?: number;
  meta?: Record<string, unknown>;
  /** Aborting it cancels the call: the peer is told, and the promise rejects with 499. */
  signal?: AbortSignal;
}

export interface PeerOptions {
  auth?: AuthOptions;
  /** Handlers shared by every peer of a server; a peer's own handle() takes precedence. */
  sharedHandlers?: Map<string, Handler>;
  sharedStreamHandlers?: Map<string, StreamHandler>;
  /** Topics a server declared for describe, shared by its peers. */
  sharedTopics?: Map<string, TopicContract>;
  /**
   * Who may call `fluxar.describe` (spec section 17): true (default) for every peer the
   * handshake accepted, false to serve no describe (404), or a function of the principal (403).
   */
  describe?: DescribePolicy;
  /** Up chunks a stream handler keeps granted ahead of its reader (default 64). */
  streamWindow?: number;
  /** The broker that serves this connection's subscribes and publishes (a server shares one); default: the peer's own. */
  broker?: Broker;
  maxWriteBuffer?: number;
  logger?: Logger;
  /** Server: the sessions a resume may continue, by session id (spec section 20). */
  sessions?: SessionDirectory;
  /** Client: reconnect and resume when the connection drops (connect(url, {resume: true})). */
  reconnect?: ReconnectPlan;
}

/** Where a server finds the session a resume names. */
export interface SessionDirectory {
  find(sessionId: Uint8Array): Peer | undefined;
}

/** How a client reconnects: a new transport, and a session on it that continues the old one. */
export interface ReconnectPlan {
  open(): Promise<Transport>;
  session(framing: Framing, resumeOf: Session): Session;
  /** First wait between attempts (doubles up to maxDelayMs). Default 50 ms. */
  minDelayMs?: number;
  /** Default 2 s. */
  maxDelayMs?: number;
}

interface PendingCall {
  resolve(value: unknown): void;
  reject(err: FluxarError): void;
  cleanup?: () => void;
}

interface RunningCall {
  controller: AbortController | undefined;
  done: boolean;
}

function toFluxarError(info: { code: number; message: string; data?: unknown }): FluxarError {
  return new FluxarError(info.code, info.message, { data: info.data });
}

/**
 * One end of a FLUXAR connection: a Session bound to a transport, with timers and handlers.
 * Symmetric: once open, either side may handle() and call().
 */
export interface SubscribeCallOptions extends Partial<SubscribeOptions> {
  /** Each message as it arrives, instead of iterating the subscription. One that throws nacks its message. */
  callback?: (message: FluxarMessage) => void;
}

export interface PublishOptions {
  /** 0 (default): at most once, not answered; 1: at least once; 2: exactly once per hop (spec 14.5). */
  qos?: Qos;
  meta?: Record<string, unknown>;
}

export class Peer extends HandlerRegistry implements StreamHost, BrokerLink {
  /** The connection this peer speaks over now; a resumed session moves to a new one. */
  transport: Transport;
  private readonly options: PeerOptions;
  private readonly pending = new Map<string, PendingCall>();
  private readonly running = new Map<string, RunningCall>();
  /** Streams of this connection, either side's: the opener's handle, or the handler's channel. */
  private readonly openStreams = new Map<string, { channel: StreamChannel; opened?: FluxarStream; controller?: AbortController }>();
  /** Serves the peer's subscribes and publishes. */
  readonly broker: Broker;
  private brokerTimer: NodeJS.Timeout | undefined;
  private readonly subscriptions = new Map<string, FluxarSubscription>();
  private readonly publishes = new Map<string, { resolve(outcome: PublishOutcome): void; reject(err: FluxarError): void }>();
  private driver: SessionDriver;
  private readonly host: DriverHost;
  /** Originations (calls, publishes) waiting for room in the resume buffer. */
  private heldForResume: Array<() => void> = [];
  /** A peer whose connection another peer took over for a resume: it does nothing more. */
  private retired = false;
  private reconnecting = false;
  private timer: NodeJS.Timeout | undefined;
  private flushScheduled = false;
  private transportEnded = false;
  private closedReason: { code: number; reason: string } | undefined;
  /** Resolves when the handshake completes; rejects with its FluxarError when it fails. */
  readonly opened: Promise<SessionInfo>;
  readonly closed: Promise<{ code: number; reason: string }>;
  private resolveOpened!: (info: SessionInfo) => void;
  private rejectOpened!: (err: FluxarError) => void;
  private resolveClosed!: (r: { code: number; reason: string }) => void;

  constructor(session: Session, transport: Transport, options: PeerOptions = {}) {
    super();
    this.transport = transport;
    this.options = options;
    this.opened = new Promise((resolve, reject) => {
      this.resolveOpened = resolve;
      this.rejectOpened = reject;
    });
    this.opened.catch(() => {}); // observed through events too; never an unhandled rejection
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.broker = options.broker ?? new Broker({ schedule: (at) => this.scheduleBroker(at) });
    this.host = {
      write: (frames) => {
        if (!this.transportEnded) this.writeOut(frames);
      },
      onEvent: (event) => this.onEvent(event),
      schedule: (at) => this.schedule(at),
      resume: options.sessions === undefined ? undefined : (request) => this.resumeRequested(request),
    };
    this.driver = new SessionDriver(session, this.host, { auth: options.auth, logger: options.logger, label: { peer: transport.remoteAddress } });
    this.bind(transport);
    this.flush();
  }

  /** The session this peer serves; a resume replaces it with the one that continues it. */
  get session(): Session {
    return this.driver.session;
  }

  /** Listens to `transport` for as long as it is this peer's: a replaced one's late events are ignored. */
  private bind(transport: Transport): void {
    const live = () => this.transport === transport && !this.retired;
    transport.onData((bytes) => {
      if (live()) this.driver.receive(bytes);
    });
    transport.onDrain(() => {
      if (live()) for (const s of this.openStreams.values()) s.channel.flushWrites();
    });
    transport.onInvalid((reason) => {
      if (!live()) return;
      this.session.abort(ErrorCode.BadRequest, reason);
      this.flush();
    });
    transport.onClose((reason) => {
      if (!live()) return;
      this.session.transportClosed(reason);
      this.flush();
    });
  }

  /** Whether the connection is gone and the session waits to be resumed. */
  get detached(): boolean {
    return this.session.detached;
  }

  // ---- session resume (spec section 20) --------------------------------------------------

  /**
   * Server: this peer's new connection asks to resume a session. The peer that served it takes
   * this connection over (closing its old one first, which does not end the session), and this
   * peer retires. Refusals are final: 404 unknown or expired, 409 positions that cannot be met.
   */
  private resumeRequested(request: ResumeRequest): void {
    const owner = this.options.sessions?.find(request.session);
    if (this.session.acceptResume(owner === this ? undefined : owner?.session)) owner!.adopt(this);
  }

  /** Server: takes over `fresh`'s connection and session, which has just continued this peer's. */
  private adopt(fresh: Peer): void {
    // A half-open old connection is closed; its late events are ignored (bind).
    const oldTransport = this.transport;
    fresh.retire();
    this.driver = fresh.driver;
    this.driver.rehost(this.host, { peer: fresh.transport.remoteAddress });
    this.transport = fresh.transport;
    this.transportEnded = false;
    oldTransport.destroy();
    this.bind(this.transport);
    // The pump that delivered the request goes on with this peer as its host.
  }

  /** Gives up this peer's connection and session to the peer that adopted them. */
  private retire(): void {
    this.retired = true;
    clearTimeout(this.timer);
    clearTimeout(this.brokerTimer);
    this.emit('retired');
  }

  /**
   * Client: the connection dropped and the session waits: reconnect with a backoff and resume
   * it. Calls, streams and subscriptions carry on; what was sent meanwhile is retained and goes
   * out on the new connection. Ends when resumed, when the server refuses (404, 409: the session
   * fails with that code), or when the session expires (resume_ms).
   */
  private async reconnect(): Promise<void> {
    const plan = this.options.reconnect;
    if (plan === undefined || this.reconnecting) return;
    this.reconnecting = true;
    const old = this.session;
    let delay = plan.minDelayMs ?? 50;
    try {
      const over = () => this.session !== old || old.state === 'closed';
      while (!over()) {
        const outcome = await this.resumeOnce(plan, old).catch((err: unknown) => ({ code: ErrorCode.Unavailable, reason: (err as Error).message }));
        if (outcome === null || over()) return;
        if (outcome.code === ErrorCode.NotFound || outcome.code === ErrorCode.Conflict) {
          old.abort(outcome.code, `the session could not be resumed: ${outcome.reason}`);
          this.flush();
          return;
        }
        this.options.logger?.debug({ reason: outcome.reason, delay }, 'FLUXAR resume attempt failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
        delay = Math.min(delay * 2, plan.maxDelayMs ?? 2000);
      }
    } finally {
      this.reconnecting = false;
    }
  }

  /** One resume attempt: null once resumed, else why it failed. */
  private resumeOnce(plan: ReconnectPlan, old: Session): Promise<{ code: number; reason: string } | null> {
    return plan.open().then((transport) => {
      if (old.state === 'closed') {
        transport.destroy();
        return null;
      }
      const fresh = plan.session(transport.framing, old);
      return new Promise((resolve) => {
        let settled = false;
        const attempt: DriverHost = {
          write: (frames) => {
            if (!settled) transport.write(frames);
          },
          onEvent: (event) => {
            if (event.type === 'resumed') {
              // From here the new connection is this peer's; the rest of this pump comes to it.
              settled = true;
              this.driver = driver;
              driver.rehost(this.host, { peer: transport.remoteAddress });
              this.transport = transport;
              this.transportEnded = false;
              // Bound only now: a listener added while a chunk is being handled misses that chunk.
              this.bind(transport);
              clearTimeout(timer);
              this.onEvent(event);
              resolve(null);
            } else if (event.type === 'closed') {
              settled = true;
              clearTimeout(timer);
              transport.destroy();
              resolve({ code: event.code, reason: event.reason });
            }
          },
          schedule: () => {},
        };
        const driver = new SessionDriver(fresh, attempt, { logger: this.options.logger, label: { peer: transport.remoteAddress } });
        const timer = setTimeout(
          () => {
            fresh.tick();
            driver.pump();
          },
          fresh.nextDeadline() - Date.now() + 1,
        );
        timer.unref();
        transport.onData((bytes) => {
          if (!settled) driver.receive(bytes);
        });
        transport.onClose((reason) => {
          if (settled) return;
          fresh.transportClosed(reason);
          driver.pump();
        });
        driver.pump();
      });
    });
  }

  get principal(): Principal | null {
    return this.session.principal;
  }

  get isOpen(): boolean {
    return this.session.state === 'open';
  }

  /** Calls made and not yet answered, failed or cancelled. */
  get callsInFlight(): number {
    return this.pending.size;
  }

  /**
   * Opens a stream to `target` (spec section 13). Iterate the result for the chunks the other
   * side sends; write() and end() stream up; `result` is the final response. Fails at once (in
   * `result` and the iteration) when the stream cannot be opened here: session closing, or the
   * peer's max_streams reached (429).
   */
  stream(target: string, payload: unknown = null, options: StreamOptions = {}): FluxarStream {
    const mode = options.mode ?? 'out';
    const window = options.credit ?? DEFAULT_STREAM_WINDOW;
    const initialCredit = mode === 'in' ? 0 : window;
    let key: string;
    let failure: FluxarError | null = null;
    try {
      if (options.signal?.aborted) throw new FluxarError(ErrorCode.Cancelled, 'cancelled before it was sent');
      key = this.session.openStream(target, payload, {
        mode,
        credit: initialCredit,
        meta: options.meta ?? null,
        deadlineMs: options.timeoutMs,
      });
      this.scheduleFlush();
    } catch (err) {
      key = '';
      failure = err instanceof FluxarError ? err : new FluxarError(ErrorCode.Internal, (err as Error).message);
    }
    const channel = new StreamChannel(this, key, mode, { window: options.manualCredit ? 0 : window }, initialCredit);
    const stream = new FluxarStream(channel, this, failure === null ? options.signal : undefined);
    if (failure !== null) stream.finish(null, failure);
    else this.openStreams.set(key, { channel, opened: stream });
    return stream;
  }

  /**
   * Subscribes to `pattern` at the other side's broker (spec section 14). Iterate the result for
   * messages, or pass `callback` to have each handed over as it arrives (no promise per message);
   * ack() each of QoS 1 and 2 when done with it. `ready` says whether the broker took it.
   */
  subscribe(pattern: string, options: SubscribeCallOptions = {}): FluxarSubscription {
    let key = '';
    let failure: FluxarError | null = null;
    const { callback, ...subscribeOptions } = options;
    try {
      key = this.session.subscribe(pattern, subscribeOptions);
      this.scheduleFlush();
    } catch (err) {
      failure = err instanceof FluxarError ? err : new FluxarError(ErrorCode.Internal, (err as Error).message);
    }
    const sub = new FluxarSubscription(this, key, pattern, options.durable ?? null, callback);
    if (failure !== null) sub.finish(failure);
    else this.subscriptions.set(key, sub);
    return sub;
  }

  /**
   * Publishes to the other side's broker. QoS 1 and 2 resolve with the broker's ack ({duplicate,
   * subscribers}) and reject with its nack; QoS 0 resolves once queued.
   */
  publish(topic: string, payload: unknown = null, options: PublishOptions = {}): Promise<PublishOutcome | undefined> {
    if (this.session.resumeBufferFull) return this.holdForResume(() => this.publish(topic, payload, options));
    let key: string | null;
    try {
      key = this.session.publish(topic, payload, options.qos ?? 0, options.meta ?? null);
    } catch (err) {
      return Promise.reject(err);
    }
    this.scheduleFlush();
    if (key === null) return Promise.resolve(undefined);
    const k = key;
    return new Promise((resolve, reject) => this.publishes.set(k, { resolve, reject }));
  }

  private scheduleBroker(at: number): void {
    clearTimeout(this.brokerTimer);
    this.brokerTimer = setTimeout(() => this.broker.tick(), Math.max(0, at - Date.now()));
    this.brokerTimer.unref();
  }

  transportBacklog(): number {
    // A full resume buffer holds producers back as a full socket does.
    if (this.session.resumeBufferFull) return Number.POSITIVE_INFINITY;
    return this.transportEnded ? 0 : this.transport.backlog;
  }

  flushNow(): void {
    this.flush();
  }

  /** Calls `target` on the other side; resolves with its payload or rejects with a FluxarError. */
  call(target: string, payload: unknown = null, options: PeerCallOptions = {}): Promise<unknown> {
    if (options.signal?.aborted) return Promise.reject(new FluxarError(ErrorCode.Cancelled, 'cancelled before it was sent'));
    if (this.session.resumeBufferFull) return this.holdForResume(() => this.call(target, payload, options));
    let key: string;
    try {
      key = this.session.call(target, payload, { meta: options.meta ?? null, deadlineMs: options.timeoutMs });
    } catch (err) {
      return Promise.reject(err);
    }
    this.scheduleFlush();
    return new Promise((resolve, reject) => {
      const entry: PendingCall = { resolve, reject };
      const signal = options.signal;
      if (signal !== undefined) {
        const onAbort = () => {
          if (!this.pending.delete(key)) return;
          this.session.cancel(key);
          this.scheduleFlush();
          reject(new FluxarError(ErrorCode.Cancelled, 'cancelled by the caller'));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        entry.cleanup = () => signal.removeEventListener('abort', onAbort);
      }
      this.pending.set(key, entry);
    });
  }

  /** Backpressure from a full resume buffer: `start` runs once the peer has acknowledged enough. */
  private holdForResume<T>(start: () => Promise<T>): Promise<T> {
    return new Promise((resolve, reject) => this.heldForResume.push(() => start().then(resolve, reject)));
  }

  /** Room in the resume buffer (or the session ended): held originations go, in order, while it lasts. */
  private releaseHeld(): void {
    while (this.heldForResume.length > 0 && !this.session.resumeBufferFull) this.heldForResume.shift()!();
    for (const s of this.openStreams.values()) s.channel.flushWrites();
  }

  /** Graceful close: bye, in-flight calls finish, then the connection closes. */
  async close(): Promise<void> {
    this.session.close();
    this.flush();
    await this.closed;
  }

  /** Immediate close; pending calls fail with 503. */
  destroy(reason = 'destroyed'): void {
    this.session.abort(ErrorCode.Unavailable, reason);
    this.flush();
    this.transportEnded = true;
    this.transport.destroy();
  }

  /** One timer per peer, armed for the session's next deadline (deadlines, heartbeats, drain). */
  private schedule(at: number): void {
    clearTimeout(this.timer);
    if (at === Number.POSITIVE_INFINITY) return;
    this.timer = setTimeout(() => this.driver.tick(), Math.max(0, at - Date.now()));
    this.timer.unref(); // the socket keeps the process alive, not the timer
  }

  scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Everything queued in this turn of the event loop leaves in one write.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    this.driver.pump();
  }

  private readonly recycle = (frame: Uint8Array) => this.session.recycleOutput(frame);

  private writeOut(frames: Uint8Array[]): void {
    const queued = this.transport.write(frames, this.recycle);
    const limit = this.options.maxWriteBuffer ?? DEFAULT_MAX_WRITE_BUFFER;
    if (queued > limit && this.session.state !== 'closed') {
      this.options.logger?.warn({ queued, limit, peer: this.transport.remoteAddress }, 'peer is not reading; disconnecting');
      this.session.transportClosed(`peer is not reading: ${queued} bytes queued, over the ${limit}-byte write buffer`);
      this.transportEnded = true;
      this.transport.destroy();
    }
  }

  private onEvent(event: Exclude<SessionEvent, { type: 'authenticate' } | { type: 'resume' } | { type: 'fault' }>): void {
    switch (event.type) {
      case 'open':
        this.resolveOpened(event.info);
        this.emit('open', event.info);
        return;
      case 'detached':
        this.transportEnded = true;
        this.transport.destroy();
        this.emit('detached', event.reason);
        void this.reconnect();
        return;
      case 'resumed':
        this.emit('resumed', event.info);
        this.releaseHeld();
        this.scheduleFlush();
        return;
      case 'writable':
        this.releaseHeld();
        return;
      case 'call':
        return this.runHandler(event.key, event.target, event.payload, event.meta);
      case 'stream':
        return this.runStreamHandler(event.key, event.target, event.mode, event.payload, event.meta);
      case 'chunk':
        this.openStreams.get(event.key)?.channel.push(event.payload);
        return;
      case 'credit':
        this.openStreams.get(event.key)?.channel.flushWrites();
        return;
      case 'end':
        this.openStreams.get(event.key)?.channel.endInput();
        return;
      case 'cancel': {
        const stream = this.openStreams.get(event.key);
        if (stream !== undefined) {
          this.openStreams.delete(event.key);
          const err = new FluxarError(event.code, ERROR_NAMES[event.code as ErrorCode] ?? 'cancelled');
          stream.channel.close(err, true);
          stream.controller?.abort(err);
          return;
        }
        const running = this.running.get(event.key);
        if (running === undefined) return;
        this.running.delete(event.key);
        running.done = true;
        running.controller?.abort(new FluxarError(event.code, ERROR_NAMES[event.code as ErrorCode] ?? 'cancelled'));
        return;
      }
      case 'result': {
        const stream = this.openStreams.get(event.key);
        if (stream?.opened !== undefined) {
          this.openStreams.delete(event.key);
          stream.opened.finish(event.payload, event.error === null ? null : toFluxarError(event.error));
          return;
        }
        const call = this.pending.get(event.key);
        if (call === undefined) return;
        this.pending.delete(event.key);
        call.cleanup?.();
        if (event.error !== null) call.reject(toFluxarError(event.error));
        else call.resolve(event.payload);
        return;
      }
      case 'subscribe':
        return this.broker.subscribe(this, event.key, event.pattern, event.options);
      case 'unsubscribe':
        return this.broker.unsubscribe(this, event.key);
      case 'publish':
        this.broker.publish(this, event.key, event.id, event.topic, event.qos, event.payload);
        return;
      case 'delivery-ack':
        return this.broker.ack(this, event.key, event.ok);
      case 'subscribed':
        this.subscriptions.get(event.key)?.answered(event.error);
        if (event.error !== null) this.subscriptions.delete(event.key);
        return;
      case 'delivery':
        this.subscriptions.get(event.key)?.delivered(event.deliveryKey, event.topic, event.payload, event.meta);
        return;
      case 'subscription-end': {
        const sub = this.subscriptions.get(event.key);
        this.subscriptions.delete(event.key);
        sub?.finish(event.error === null ? null : toFluxarError(event.error));
        return;
      }
      case 'published': {
        const pending = this.publishes.get(event.key);
        this.publishes.delete(event.key);
        if (pending === undefined) return;
        if (event.error !== null) pending.reject(toFluxarError(event.error));
        else pending.resolve(event.payload as PublishOutcome);
        return;
      }
      case 'closed':
        this.closedReason = { code: event.code, reason: event.reason };
        clearTimeout(this.timer);
        clearTimeout(this.brokerTimer);
        this.broker.linkClosed(this);
        // No effect once opened; before that, the handshake's failure is the caller's error.
        this.rejectOpened(new FluxarError(event.code === 0 ? ErrorCode.Unavailable : event.code, event.reason));
        this.transportEnded = true;
        this.transport.end();
        // Held originations meet the closed session now and fail with its reason.
        for (const start of this.heldForResume.splice(0)) start();
        this.resolveClosed(this.closedReason);
        this.emit('close', this.closedReason);
        return;
    }
  }

  /** The built-in targets, served when no handler took the name: `fluxar.describe`. */
  private builtIn(target: string): Handler | undefined {
    return target === DESCRIBE_TARGET && this.options.describe !== false ? this.describe : undefined;
  }

  private readonly describe: Handler = (payload, ctx) => {
    if (!describeAllowed(this.options.describe, ctx.principal))
      throw new FluxarError(ErrorCode.Forbidden, `${DESCRIBE_TARGET} is not allowed for this principal`);
    const refused = describeRequestError(payload);
    if (refused !== null) throw refused;
    return describeDocument({
      handlers: this.handlers,
      sharedHandlers: this.options.sharedHandlers,
      streamHandlers: this.streamHandlers,
      sharedStreamHandlers: this.options.sharedStreamHandlers,
      topics: new Map([...(this.options.sharedTopics ?? []), ...this.topics]),
    });
  };

  private runHandler(key: string, target: string, payload: unknown, meta: Record<string, unknown> | null): void {
    const handler = this.handlers.get(target) ?? this.options.sharedHandlers?.get(target) ?? this.builtIn(target);
    if (handler === undefined) {
      this.session.fail(key, ErrorCode.NotFound, `no handler for ${target}`);
      return;
    }
    const running: RunningCall = { controller: undefined, done: false };
    this.running.set(key, running);
    const ctx: CallContext = {
      target,
      meta,
      principal: this.session.principal,
      peer: this,
      // Most handlers never look at the signal; an AbortController is made only for those that do.
      get signal() {
        running.controller ??= new AbortController();
        return running.controller.signal;
      },
    };
    let result: unknown;
    try {
      result = handler(payload, ctx);
    } catch (err) {
      this.answerError(key, running, err);
      return;
    }
    if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
      (result as PromiseLike<unknown>).then(
        (value) => {
          if (running.done) return;
          this.running.delete(key);
          running.done = true;
          this.session.respond(key, value);
          this.scheduleFlush();
        },
        (err: unknown) => {
          this.answerError(key, running, err);
          this.scheduleFlush();
        },
      );
      return;
    }
    this.running.delete(key);
    running.done = true;
    this.session.respond(key, result);
  }

  private runStreamHandler(key: string, target: string, mode: StreamMode, payload: unknown, meta: Record<string, unknown> | null): void {
    const handler = this.streamHandlers.get(target) ?? this.options.sharedStreamHandlers?.get(target);
    if (handler === undefined) {
      this.session.fail(key, ErrorCode.NotFound, `no stream handler for ${target}`);
      return;
    }
    const window = this.options.streamWindow ?? DEFAULT_STREAM_WINDOW;
    const channel = new StreamChannel(this, key, mode, { window: mode === 'out' ? 0 : window });
    const controller = new AbortController();
    this.openStreams.set(key, { channel, controller });
    if (mode !== 'out') channel.grant(window);
    const ctx: StreamContext = {
      target,
      meta,
      payload,
      mode,
      principal: this.session.principal,
      peer: this,
      signal: controller.signal,
      write: (chunk, chunkMeta) => channel.write(chunk, chunkMeta ?? null),
    };
    void this.serveStream(key, channel, controller.signal, () => handler(channel, ctx));
  }

  /** Runs a stream handler to its end and answers the stream with its outcome. */
  private async serveStream(key: string, channel: StreamChannel, signal: AbortSignal, run: () => unknown): Promise<void> {
    let final: unknown;
    try {
      const result = run();
      const asyncIterable = isAsyncIterable(result);
      if (asyncIterable || isIterator(result)) {
        // A sync generator costs no promise per chunk; an async one two.
        const it = asyncIterable ? result[Symbol.asyncIterator]() : result;
        let burst = 0;
        try {
          for (;;) {
            const step = asyncIterable ? await it.next() : (it.next() as IteratorResult<unknown>);
            if (step.done) {
              final = step.value;
              break;
            }
            if (!channel.trySend(step.value)) {
              burst = 0;
              await channel.write(step.value);
            } else if (++burst === FAIR_SHARE_CHUNKS) {
              // A producer whose chunks all go at once never waits: let other connections in.
              burst = 0;
              await new Promise((resolve) => setImmediate(resolve));
            }
          }
        } finally {
          // Cancelled or failed part way: let the generator run its finally blocks.
          if (signal.aborted) {
            try {
              await it.return?.();
            } catch {}
          }
        }
      } else final = await result;
    } catch (err) {
      if (signal.aborted) return; // the session has answered the cancel already
      this.openStreams.delete(key);
      channel.close(null);
      if (err instanceof FluxarError) this.session.fail(key, err.code, err.message, err.data);
      else this.session.fail(key, ErrorCode.Internal, err instanceof Error ? err.message : String(err));
      this.scheduleFlush();
      return;
    }
    if (signal.aborted) return;
    this.openStreams.delete(key);
    channel.close(null);
    this.session.respond(key, final ?? null);
    this.scheduleFlush();
  }

  private answerError(key: string, running: RunningCall, err: unknown): void {
    if (running.done) return;
    this.running.delete(key);
    running.done = true;
    if (err instanceof FluxarError) this.session.fail(key, err.code, err.message, err.data);
    else this.session.fail(key, ErrorCode.Internal, err instanceof Error ? err.message : String(err));
  }
}

/** Chunks a stream handler sends in a row, with credit to spare, before other work gets a turn. */
const FAIR_SHARE_CHUNKS = 1024;
