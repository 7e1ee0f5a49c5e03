import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { AuthOptions, Principal } from './auth.js';
import { ERROR_NAMES, ErrorCode } from './codes.js';
import { DEFAULT_MAX_WRITE_BUFFER } from './constants.js';
import { SessionDriver } from './driver.js';
import { FluxarError } from './errors.js';
import type { Session, SessionEvent, SessionInfo } from './session.js';
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
  maxWriteBuffer?: number;
  logger?: Logger;
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
export class Peer extends EventEmitter {
  readonly session: Session;
  readonly transport: Transport;
  private readonly options: PeerOptions;
  private readonly handlers = new Map<string, Handler>();
  private readonly pending = new Map<string, PendingCall>();
  private readonly running = new Map<string, RunningCall>();
  private readonly driver: SessionDriver;
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
    this.session = session;
    this.transport = transport;
    this.options = options;
    this.opened = new Promise((resolve, reject) => {
      this.resolveOpened = resolve;
      this.rejectOpened = reject;
    });
    this.opened.catch(() => {}); // observed through events too; never an unhandled rejection
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.driver = new SessionDriver(
      session,
      {
        write: (frames) => {
          if (!this.transportEnded) this.writeOut(frames);
        },
        onEvent: (event) => this.onEvent(event),
        schedule: (at) => this.schedule(at),
      },
      { auth: options.auth, logger: options.logger, label: { peer: transport.remoteAddress } },
    );
    transport.onData((bytes) => this.driver.receive(bytes));
    transport.onInvalid((reason) => {
      this.session.abort(ErrorCode.BadRequest, reason);
      this.flush();
    });
    transport.onClose((reason) => {
      this.session.transportClosed(reason);
      this.flush();
    });
    this.flush();
  }

  get principal(): Principal | null {
    return this.session.principal;
  }

  get isOpen(): boolean {
    return this.session.state === 'open';
  }

  /** Registers the handler for calls to `target` on this connection. */
  handle(target: string, handler: Handler): this {
    this.handlers.set(target, handler);
    return this;
  }

  /** Calls `target` on the other side; resolves with its payload or rejects with a FluxarError. */
  call(target: string, payload: unknown = null, options: PeerCallOptions = {}): Promise<unknown> {
    if (options.signal?.aborted) return Promise.reject(new FluxarError(ErrorCode.Cancelled, 'cancelled before it was sent'));
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

  private scheduleFlush(): void {
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

  private writeOut(frames: Uint8Array[]): void {
    const queued = this.transport.write(frames);
    const limit = this.options.maxWriteBuffer ?? DEFAULT_MAX_WRITE_BUFFER;
    if (queued > limit && this.session.state !== 'closed') {
      this.options.logger?.warn({ queued, limit, peer: this.transport.remoteAddress }, 'peer is not reading; disconnecting');
      this.session.transportClosed(`peer is not reading: ${queued} bytes queued, over the ${limit}-byte write buffer`);
      this.transportEnded = true;
      this.transport.destroy();
    }
  }

  private onEvent(event: Exclude<SessionEvent, { type: 'authenticate' } | { type: 'fault' }>): void {
    switch (event.type) {
      case 'open':
        this.resolveOpened(event.info);
        this.emit('open', event.info);
        return;
      case 'call':
        return this.runHandler(event.key, event.target, event.payload, event.meta);
      case 'cancel': {
        const running = this.running.get(event.key);
        if (running === undefined) return;
        this.running.delete(event.key);
        running.done = true;
        running.controller?.abort(new FluxarError(event.code, ERROR_NAMES[event.code as ErrorCode] ?? 'cancelled'));
        return;
      }
      case 'result': {
        const call = this.pending.get(event.key);
        if (call === undefined) return;
        this.pending.delete(event.key);
        call.cleanup?.();
        if (event.error !== null) call.reject(toFluxarError(event.error));
        else call.resolve(event.payload);
        return;
      }
      case 'envelope':
        this.emit('envelope', event.envelope);
        return;
      case 'closed':
        this.closedReason = { code: event.code, reason: event.reason };
        clearTimeout(this.timer);
        // No effect once opened; before that, the handshake's failure is the caller's error.
        this.rejectOpened(new FluxarError(event.code === 0 ? ErrorCode.Unavailable : event.code, event.reason));
        this.transportEnded = true;
        this.transport.end();
        this.resolveClosed(this.closedReason);
        this.emit('close', this.closedReason);
        return;
    }
  }

  private runHandler(key: string, target: string, payload: unknown, meta: Record<string, unknown> | null): void {
    const handler = this.handlers.get(target) ?? this.options.sharedHandlers?.get(target);
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

  private answerError(key: string, running: RunningCall, err: unknown): void {
    if (running.done) return;
    this.running.delete(key);
    running.done = true;
    if (err instanceof FluxarError) this.session.fail(key, err.code, err.message, err.data);
    else this.session.fail(key, ErrorCode.Internal, err instanceof Error ? err.message : String(err));
  }
}
