import type { Logger } from 'pino';
import { type AuthOptions, type Principal, verifyCredentials } from './auth.js';
import { ErrorCode } from './codes.js';
import type { ResumeRequest, Session, SessionEvent } from './session.js';

/** What a driver needs from where its session lives: a socket on this thread, or a ring. */
export interface DriverHost {
  /** Frames for the transport, in order. */
  write(frames: Uint8Array[]): void;
  /** Every event but authentication, resume requests and faults, which the driver routes itself. */
  onEvent(event: Exclude<SessionEvent, { type: 'authenticate' } | { type: 'resume' } | { type: 'fault' }>): void;
  /**
   * Server: a client asks to resume a session (spec section 20). The host looks it up and hands
   * it (or undefined) to acceptResume() of this driver's session, which checks and refuses or
   * continues it. A host without this refuses every resume (404).
   */
  resume?(request: ResumeRequest): void;
  /** The session's next deadline changed to `at` (session clock): arm a timer that calls tick(). */
  schedule(at: number): void;
}

export interface DriverOptions {
  auth?: AuthOptions;
  logger?: Logger;
  /** Named in log lines: a peer address, a rack connection id. */
  label?: Record<string, unknown>;
}

/**
 * Pumps one sans-I/O Session: writes its output, acts on its events, runs the authentication
 * step with the configured verifiers, and tells the host when the session next needs the time.
 * Shared by Peer (a socket on this thread) and the rack's workers (bytes from a ring), so the
 * session loop, its auth and its failure isolation exist once.
 */
export class SessionDriver {
  readonly session: Session;
  private host: DriverHost;
  private options: DriverOptions;
  private scheduledAt = Number.POSITIVE_INFINITY;
  private pumping = false;

  constructor(session: Session, host: DriverHost, options: DriverOptions = {}) {
    this.session = session;
    this.host = host;
    this.options = options;
  }

  /**
   * From now on output and events go to `host`: a resumed connection's driver is handed to the
   * host that served the session before, even in the middle of a pump.
   */
  rehost(host: DriverHost, label?: Record<string, unknown>): void {
    this.host = host;
    if (label !== undefined) this.options = { ...this.options, label };
    this.scheduledAt = Number.POSITIVE_INFINITY;
  }

  /** Bytes from the transport. */
  receive(bytes: Uint8Array): void {
    this.session.receive(bytes);
    this.pump();
  }

  /** The timer the host armed has fired (or the host ticks anyway). */
  tick(): void {
    this.scheduledAt = Number.POSITIVE_INFINITY;
    this.session.tick();
    this.pump();
  }

  /** Writes what the session produced and acts on its events, until it has nothing left. */
  pump(): void {
    // A handler that answers synchronously re-enters here; the outer loop picks its work up.
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        // Output before events: the last frames (an error, a bye) leave before the transport ends.
        const out = this.session.takeOutput();
        if (out.length > 0) this.host.write(out);
        const events = this.session.takeEvents();
        if (events.length === 0) break;
        for (const event of events) this.handle(event);
      }
    } finally {
      this.pumping = false;
    }
    const at = this.session.nextDeadline();
    if (at < this.scheduledAt) {
      this.scheduledAt = at;
      this.host.schedule(at);
    }
  }

  /** Each event on its own: one that fails answers for itself, never for the ones after it. */
  private handle(event: SessionEvent): void {
    try {
      switch (event.type) {
        case 'authenticate':
          return this.authenticate(event.credentials);
        case 'resume':
          if (this.host.resume === undefined) return this.session.refuseResume(ErrorCode.NotFound, 'this server does not resume sessions');
          return this.host.resume(event.request);
        case 'fault':
          this.options.logger?.error({ err: event.error, ...this.options.label }, 'FLUXAR session fault');
          return;
        default:
          return this.host.onEvent(event);
      }
    } catch (err) {
      this.options.logger?.error({ err, event: event.type, ...this.options.label }, 'FLUXAR event handling failed');
      if (event.type === 'call') this.session.fail(event.key, ErrorCode.Internal, 'internal error');
      else this.session.abort(ErrorCode.Internal, 'internal error');
    }
  }

  private authenticate(credentials: Parameters<typeof verifyCredentials>[1]): void {
    const settle = (principal: Principal | null) => {
      if (principal === null) this.session.reject(ErrorCode.Unauthenticated, 'unauthenticated');
      else this.session.accept(principal);
    };
    const verdict = verifyCredentials(this.options.auth ?? {}, credentials);
    if (!(verdict instanceof Promise)) return settle(verdict);
    verdict.then(
      (principal) => {
        settle(principal);
        this.pump();
      },
      (err: unknown) => {
        this.options.logger?.error({ err, ...this.options.label }, 'auth verifier failed');
        this.session.reject(ErrorCode.Internal, 'authentication failed');
        this.pump();
      },
    );
  }
}
