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

/**
 * Told once how a publish ended: with an error, or with the stream's acknowledgement. An object
 * with a method, not a callback: a guaranteed wire has thousands of publishes waiting, and a
 * closure per publish (with its context) is what the collector copies while they wait.
 */
export interface PublishWaiter {
  published(err: Error | undefined, ack?: PublishAck): void;
}

/** How often waiting publishes are checked against their deadline (no timer per message). */
const SWEEP_MS = 250;
/** Slots for waiting publishes at first; doubled when the next id's slot is still taken. */
const FIRST_SLOTS = 1024;
/** Publish ids wrap here: small integers, and no publish waits 2^30 publishes long. */
const MAX_ID = 2 ** 30;

export class AsyncPublisher {
  private readonly prefix: string;
  private readonly subscription: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private next = 1;
  // Waiting publishes by id, in slots id & mask: ids are handed out in turn and acknowledged
  // about in turn, so slots are reused as a ring. No map entry or record per publish.
  private waiters: Array<PublishWaiter | undefined> = new Array(FIRST_SLOTS).fill(undefined);
  private ids = new Int32Array(FIRST_SLOTS);
  private deadlines = new Float64Array(FIRST_SLOTS);
  private mask = FIRST_SLOTS - 1;
  private count = 0;

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
    return this.count;
  }

  /**
   * Publishes; `waiter` is told once, with the acknowledgement or why there is none (at once if
   * the connection refuses the message). Not a promise: a guaranteed wire publishes tens of
   * thousands of messages a second from the main thread, where the promises chained on each
   * publish and their microtasks were a fifth of the thread's samples (docs/performance.md,
   * "Rack A's publish path").
   */
  send(subject: string, data: Uint8Array, msgId: string, timeoutMs: number, waiter: PublishWaiter): void {
    const id = this.next;
    this.next = this.next >= MAX_ID ? 1 : this.next + 1;
    if (this.waiters[id & this.mask] !== undefined) this.grow(id);
    const slot = id & this.mask;
    this.waiters[slot] = waiter;
    this.ids[slot] = id;
    this.deadlines[slot] = Date.now() + timeoutMs;
    this.count++;
    const h = headers();
    h.set('Nats-Msg-Id', msgId);
    try {
      this.nc.publish(subject, data, { reply: `${this.prefix}.${id}`, headers: h });
    } catch (err) {
      this.take(slot);
      waiter.published(err as Error);
    }
  }

  /**
   * Doubles the slots until `id` has a free one: a publish as old as the ring is long still
   * waits. Ids apart by a multiple of the new size were apart by a multiple of the old one, so
   * no two waiting publishes meet in the same slot.
   */
  private grow(id: number): void {
    // Only the publish in id's slot can share a slot with id in a larger ring.
    const blocker = this.ids[id & this.mask]!;
    let size = this.waiters.length * 2;
    while ((blocker & (size - 1)) === (id & (size - 1))) size *= 2;
    const waiters: Array<PublishWaiter | undefined> = new Array(size).fill(undefined);
    const ids = new Int32Array(size);
    const deadlines = new Float64Array(size);
    for (let s = 0; s < this.waiters.length; s++) {
      const w = this.waiters[s];
      if (w === undefined) continue;
      const to = this.ids[s]! & (size - 1);
      waiters[to] = w;
      ids[to] = this.ids[s]!;
      deadlines[to] = this.deadlines[s]!;
    }
    this.waiters = waiters;
    this.ids = ids;
    this.deadlines = deadlines;
    this.mask = size - 1;
  }

  /** Empties a slot; returns who waited there. */
  private take(slot: number): PublishWaiter {
    const w = this.waiters[slot]!;
    this.waiters[slot] = undefined;
    this.count--;
    return w;
  }

  private acked(m: Msg): void {
    const id = Number(m.subject.slice(this.prefix.length + 1));
    const slot = id & this.mask;
    // Not waiting (timed out already: its retry carries the same message id), or not a number.
    if (this.waiters[slot] === undefined || this.ids[slot] !== id) return;
    const w = this.take(slot);
    // A status without a body: 503 is "no responders", no stream takes the subject.
    if (m.data.length === 0 && m.headers?.hasError) {
      w.published(new PublishRefused(`no stream takes the subject (${m.headers.code} ${m.headers.description})`, m.headers.code));
      return;
    }
    let reply: { stream?: string; seq?: number; duplicate?: boolean; error?: { code: number; err_code?: number; description: string } };
    try {
      reply = m.json();
    } catch (err) {
      w.published(new PublishRefused(`an acknowledgement that is not JSON: ${(err as Error).message}`, 500));
      return;
    }
    // Outside the try: an exception thrown by the waiter is its own, not a malformed acknowledgement.
    if (reply.error !== undefined) w.published(new PublishRefused(reply.error.description, reply.error.code));
    else w.published(undefined, { stream: reply.stream ?? '', seq: reply.seq ?? 0, duplicate: reply.duplicate === true });
  }

  private sweep(): void {
    const now = Date.now();
    for (let slot = 0; slot < this.waiters.length; slot++) {
      if (this.waiters[slot] === undefined || this.deadlines[slot]! > now) continue;
      this.take(slot).published(new PublishTimeout('no acknowledgement from JetStream in time'));
    }
  }

  /** Fails what still waits, and stops listening. */
  close(): void {
    clearInterval(this.sweeper);
    this.subscription.unsubscribe();
    const waiting: PublishWaiter[] = [];
    for (let slot = 0; slot < this.waiters.length; slot++) if (this.waiters[slot] !== undefined) waiting.push(this.take(slot));
    for (const w of waiting) w.published(new PublishTimeout('the publisher closed'));
  }
}
