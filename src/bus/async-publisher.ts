// JetStream publishes with acknowledgements collected on one subscription (nats.go's
// PublishAsync), for the guaranteed lanes. nats.js's js.publish() is a request per message
// (its own reply handling and timer): on a 2-core machine it peaks near 10k/s, where this
// reaches the server's own limit (bench/lanes.ts measures both).
import { createInbox, headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';

export interface PublishAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

/** The stream refused the message, or no stream takes its subject; `code` is the server's. */
export class PublishRefused extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
    this.name = 'PublishRefused';
  }
}

/** No acknowledgement came in time (the server is away, or the stream has no leader). */
export class PublishTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PublishTimeout';
  }
}

/** How a publish ended: an error, or the stream's acknowledgement. */
export type PublishDone = (err: Error | undefined, ack?: PublishAck) => void;

interface Waiting {
  done: PublishDone;
  deadline: number;
}

/** How often waiting publishes are checked against their deadline (no timer per message). */
const SWEEP_MS = 250;

export class AsyncPublisher {
  private readonly prefix: string;
  private readonly waiting = new Map<number, Waiting>();
  private readonly subscription: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private next = 1;

  constructor(private readonly nc: NatsConnection) {
    // Replies come to the connection's own inbox prefix (a rack's is confined to it on an mTLS bus).
    const inboxPrefix = (nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
    this.prefix = createInbox(inboxPrefix);
    this.subscription = nc.subscribe(`${this.prefix}.*`, { callback: (_err, m) => this.acked(m) });
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /** How many publishes wait for their acknowledgement. */
  get outstanding(): number {
    return this.waiting.size;
  }

  /**
   * Publishes; `done` is called once, with the acknowledgement or why there is none (at once if
   * the connection refuses the message). A callback, not a promise: a guaranteed wire publishes
   * tens of thousands of messages a second from the main thread, where the promises chained on
   * each publish and their microtasks were a fifth of the thread's samples (docs/performance.md,
   * "Rack A's publish path").
   */
  send(subject: string, data: Uint8Array, msgId: string, timeoutMs: number, done: PublishDone): void {
    const id = this.next;
    this.next = this.next >= Number.MAX_SAFE_INTEGER ? 1 : this.next + 1;
    const h = headers();
    h.set('Nats-Msg-Id', msgId);
    this.waiting.set(id, { done, deadline: Date.now() + timeoutMs });
    try {
      this.nc.publish(subject, data, { reply: `${this.prefix}.${id}`, headers: h });
    } catch (err) {
      this.waiting.delete(id);
      done(err as Error);
    }
  }

  private acked(m: Msg): void {
    const id = Number(m.subject.slice(this.prefix.length + 1));
    const w = this.waiting.get(id);
    if (w === undefined) return; // timed out already: its retry carries the same message id
    this.waiting.delete(id);
    // A status without a body: 503 is "no responders", no stream takes the subject.
    if (m.data.length === 0 && m.headers?.hasError) {
      w.done(new PublishRefused(`no stream takes the subject (${m.headers.code} ${m.headers.description})`, m.headers.code));
      return;
    }
    let reply: { stream?: string; seq?: number; duplicate?: boolean; error?: { code: number; err_code?: number; description: string } };
    try {
      reply = m.json();
    } catch (err) {
      w.done(new PublishRefused(`an acknowledgement that is not JSON: ${(err as Error).message}`, 500));
      return;
    }
    // Outside the try: an exception thrown by `done` is its caller's, not a malformed acknowledgement.
    if (reply.error !== undefined) w.done(new PublishRefused(reply.error.description, reply.error.code));
    else w.done(undefined, { stream: reply.stream ?? '', seq: reply.seq ?? 0, duplicate: reply.duplicate === true });
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, w] of this.waiting) {
      if (w.deadline > now) continue;
      this.waiting.delete(id);
      w.done(new PublishTimeout('no acknowledgement from JetStream in time'));
    }
  }

  /** Fails what still waits, and stops listening. */
  close(): void {
    clearInterval(this.sweeper);
    this.subscription.unsubscribe();
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiting) w.done(new PublishTimeout('the publisher closed'));
  }
}
