// The pub/sub broker of one FLUXAR endpoint (docs/fluxar-spec.md section 14): subscriptions and
// their patterns, fan-out, QoS 1 and 2 attempts, acks, redelivery, the dead-letter topic, the
// QoS 2 dedupe window and durable subscriptions. It owns no socket and no timer: connections
// reach it as BrokerLinks (a Session and a way to flush it), and the host calls tick() when
// nextDeadline() says.
import { CborWriter } from '../cbor/writer.js';
import { ErrorCode } from './codes.js';
import { STREAM_HIGH_WATER_MARK } from './constants.js';
import type { EnvelopeErrorInfo } from './envelope.js';
import type { Qos, SubscribeOptions } from './pubsub-state.js';
import { idKey, type Session } from './session.js';
import { DEAD_LETTER_PREFIX, Pattern } from './topics.js';
import { holdClock, releaseClock, uuidv7 } from '../fluxmsg/uuid.js';

/** One connection as the broker sees it. */
export interface BrokerLink {
  readonly session: Session;
  /** Bytes the transport holds unsent: QoS 0 deliveries are dropped past the high-water mark. */
  transportBacklog(): number;
  /** What the session queued leaves soon. */
  scheduleFlush(): void;
}

export interface BrokerOptions {
  clock?: () => number;
  /** Messages waiting for one subscription, at most; a subscription past it is ended with 429. */
  maxQueued?: number;
  /** Bytes of payload one subscription may hold (queued, in flight, to send again). */
  maxQueuedBytes?: number;
  /** Bytes of payload all subscriptions together may hold. */
  maxBrokerBytes?: number;
  /** Durable subscriptions at once (a client could make them faster than they expire). */
  maxDurables?: number;
  /** How long a QoS 2 publication id is remembered, and a detached durable subscription kept. */
  dedupeWindowMs?: number;
  /** Publication ids remembered at most (the oldest go first past it). */
  maxDedupe?: number;
  /** Subscriptions one connection may hold (429 past it). */
  maxSubscriptionsPerLink?: number;
  /** The broker's next deadline moved to `at`: arm a timer that calls tick(). */
  schedule?: (at: number) => void;
  /** Messages a subscription still held when it was dropped without a connection to tell: for the log. */
  lost?: (event: { subscription: string; durable: string | null; messages: number; reason: string }) => void;
}

export const DEFAULT_MAX_QUEUED = 10_000;
export const DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024;
export const DEFAULT_MAX_BROKER_BYTES = 512 * 1024 * 1024;
export const DEFAULT_MAX_DURABLES = 10_000;
/** What a held message costs beyond its payload: the records that hold it. */
const MESSAGE_OVERHEAD_BYTES = 64;
export const DEFAULT_DEDUPE_WINDOW_MS = 120_000;
export const DEFAULT_MAX_DEDUPE = 100_000;
export const DEFAULT_MAX_SUBSCRIPTIONS = 1024;

/** What a publish did: whether it was a duplicate, and how many subscriptions took it. */
export interface PublishOutcome {
  duplicate: boolean;
  subscribers: number;
}

interface Message {
  id: Uint8Array;
  topic: string;
  payload: unknown;
  /** The payload's CBOR, made at its first delivery and spliced into the others. */
  encoded: Uint8Array | undefined;
  qos: Qos;
  /** Meta a dead letter adds to its deliveries. */
  extra: Record<string, unknown> | null;
}

interface Attempt {
  sub: Subscription;
  msg: Message;
  n: number;
  qos: Qos;
  deadline: number;
}

interface Subscription {
  /** Null while a durable subscription has no connection. */
  link: BrokerLink | null;
  key: string;
  pattern: Pattern;
  options: SubscribeOptions;
  queue: Message[];
  head: number;
  /** Attempts sent and not acked, by delivery key. */
  inFlight: Map<string, Attempt>;
  /** Messages to send again (nacked, timed out, or unacked when the connection ended), first. */
  again: Array<{ msg: Message; n: number }>;
  /** When a detached durable subscription is dropped. */
  expires: number;
  dropped: number;
  ended: boolean;
  /** Bytes of the messages it holds: queued, in flight, to send again. */
  held: number;
}

const NEVER = Number.POSITIVE_INFINITY;

/** What holding a message costs a subscription, in bytes. */
function sizeOf(msg: Message): number {
  return encoded(msg).length + MESSAGE_OVERHEAD_BYTES;
}

/** Payloads are encoded here (the hot-path writer: the bytes cbor-x would write, faster). */
const payloadWriter = new CborWriter(1024);

/** A message's payload encoded once, for every delivery of it. */
function encoded(msg: Message): Uint8Array {
  if (msg.encoded === undefined) {
    payloadWriter.reset().value(msg.payload ?? null);
    msg.encoded = payloadWriter.take();
  }
  return msg.encoded;
}

export class Broker {
  private readonly clock: () => number;
  private readonly maxQueued: number;
  private readonly maxQueuedBytes: number;
  private readonly maxBrokerBytes: number;
  private readonly maxDurables: number;
  /** Bytes all subscriptions hold (a message held by two counts twice: an upper bound). */
  private held = 0;
  private readonly windowMs: number;
  private readonly maxDedupe: number;
  private readonly maxSubscriptionsPerLink: number;
  private readonly schedule: (at: number) => void;
  private readonly lost: NonNullable<BrokerOptions['lost']>;
  private readonly links = new Map<BrokerLink, Map<string, Subscription>>();
  private readonly subscriptions = new Set<Subscription>();
  private readonly durables = new Map<string, Subscription>();
  /** Every attempt in flight, by delivery key: an ack names one of these or is ignored. */
  private readonly attempts = new Map<string, Attempt>();
  /** QoS 2 publication ids taken, with when each is forgotten (insertion order is expiry order). */
  private readonly seen = new Map<string, number>();
  /** Subscriptions that match a topic, cached until the subscriptions change. */
  private readonly matches = new Map<string, Subscription[]>();
  private scheduledAt = NEVER;
  /** QoS 0 deliveries dropped at full transports or queues, in all. */
  droppedQos0 = 0;

  constructor(options: BrokerOptions = {}) {
    this.clock = options.clock ?? Date.now;
    this.maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.maxBrokerBytes = options.maxBrokerBytes ?? DEFAULT_MAX_BROKER_BYTES;
    this.maxDurables = options.maxDurables ?? DEFAULT_MAX_DURABLES;
    this.windowMs = options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS;
    this.maxDedupe = options.maxDedupe ?? DEFAULT_MAX_DEDUPE;
    this.maxSubscriptionsPerLink = options.maxSubscriptionsPerLink ?? DEFAULT_MAX_SUBSCRIPTIONS;
    this.schedule = options.schedule ?? (() => {});
    this.lost = options.lost ?? (() => {});
  }

  get size(): { subscriptions: number; inFlight: number; remembered: number; heldBytes: number } {
    return { subscriptions: this.subscriptions.size, inFlight: this.attempts.size, remembered: this.seen.size, heldBytes: this.held };
  }

  // ---- subscriptions -----------------------------------------------------------------------

  /** A subscribe from `link`: answered here (accepted, or refused with its error). */
  subscribe(link: BrokerLink, key: string, pattern: string, options: SubscribeOptions): void {
    const refuse = (code: number, message: string) => {
      link.session.answerSubscribe(key, { code, message });
      link.scheduleFlush();
    };
    const own = this.linkSubs(link);
    if (own.size >= this.maxSubscriptionsPerLink)
      return refuse(ErrorCode.Overloaded, `more than ${this.maxSubscriptionsPerLink} subscriptions on this connection`);
    let sub: Subscription;
    const durable = options.durable === null ? undefined : this.durables.get(options.durable);
    if (durable !== undefined) {
      if (durable.link !== null) return refuse(ErrorCode.Conflict, `durable subscription ${options.durable} is in use by another connection`);
      if (durable.pattern.text !== pattern)
        return refuse(ErrorCode.Conflict, `durable subscription ${options.durable} is for ${durable.pattern.text}, not ${pattern}`);
      sub = durable;
      sub.link = link;
      sub.key = key;
      sub.options = options;
      sub.expires = NEVER;
    } else {
      if (options.durable !== null && this.durables.size >= this.maxDurables) {
        return refuse(ErrorCode.Overloaded, `the broker holds ${this.maxDurables} durable subscriptions, its limit`);
      }
      sub = {
        link,
        key,
        pattern: new Pattern(pattern),
        options,
        queue: [],
        head: 0,
        inFlight: new Map(),
        again: [],
        expires: NEVER,
        dropped: 0,
        ended: false,
        held: 0,
      };
      this.subscriptions.add(sub);
      if (options.durable !== null) this.durables.set(options.durable, sub);
      this.matches.clear();
    }
    own.set(key, sub);
    link.session.answerSubscribe(key, null);
    this.pump(sub);
    link.scheduleFlush();
  }

  /** An unsubscribe from `link`: the subscription ends (durable ones for good). */
  unsubscribe(link: BrokerLink, key: string): void {
    const sub = this.links.get(link)?.get(key);
    if (sub !== undefined) this.end(sub, null);
  }

  /** The connection is gone: its subscriptions end, except durable ones, which wait for it. */
  linkClosed(link: BrokerLink): void {
    const own = this.links.get(link);
    if (own === undefined) return;
    this.links.delete(link);
    const now = this.clock();
    for (const sub of own.values()) {
      if (sub.options.durable === null) {
        this.drop(sub);
        continue;
      }
      // Its unacked messages go out again, as new attempts, when it is back.
      for (const [deliveryKey, a] of sub.inFlight) {
        this.attempts.delete(deliveryKey);
        sub.again.push({ msg: a.msg, n: a.n });
      }
      sub.inFlight.clear();
      sub.link = null;
      sub.expires = now + this.windowMs;
      this.arm(sub.expires);
    }
  }

  /** Ends every subscription with 503 (the broker closes). */
  close(): void {
    for (const sub of [...this.subscriptions]) this.end(sub, { code: ErrorCode.Unavailable, message: 'the broker is closing' });
  }

  private linkSubs(link: BrokerLink): Map<string, Subscription> {
    let own = this.links.get(link);
    if (own === undefined) {
      own = new Map();
      this.links.set(link, own);
    }
    return own;
  }

  /** The subscription's last envelope, then it is forgotten. */
  private end(sub: Subscription, error: EnvelopeErrorInfo | null): void {
    const link = sub.link;
    this.drop(sub);
    if (link !== null) {
      link.session.endSubscription(sub.key, error);
      link.scheduleFlush();
    }
  }

  private drop(sub: Subscription): void {
    if (sub.ended) return;
    sub.ended = true;
    this.subscriptions.delete(sub);
    if (sub.options.durable !== null && this.durables.get(sub.options.durable) === sub) this.durables.delete(sub.options.durable);
    if (sub.link !== null) this.links.get(sub.link)?.delete(sub.key);
    for (const key of sub.inFlight.keys()) this.attempts.delete(key);
    sub.inFlight.clear();
    sub.queue = [];
    sub.again = [];
    this.held -= sub.held;
    sub.held = 0;
    this.matches.clear();
  }

  // ---- publish -----------------------------------------------------------------------------

  /**
   * Takes a publication: fans it out to every matching subscription. From a connection, QoS 1
   * and 2 are answered here (ack with the outcome); a local publish (link null) just returns it.
   */
  publish(link: BrokerLink | null, key: string | null, id: Uint8Array, topic: string, qos: Qos, payload: unknown): PublishOutcome {
    const outcome = this.take(id, topic, qos, payload, null);
    if (link !== null && key !== null && qos > 0) {
      link.session.answerPublish(key, outcome);
      link.scheduleFlush();
    }
    return outcome;
  }

  private take(id: Uint8Array, topic: string, qos: Qos, payload: unknown, extra: Record<string, unknown> | null): PublishOutcome {
    const now = this.clock();
    if (qos === 2) {
      const key = idKey(id);
      const until = this.seen.get(key);
      if (until !== undefined && until > now) return { duplicate: true, subscribers: 0 };
      this.remember(key, now);
    }
    const msg: Message = { id, topic, payload, encoded: undefined, qos, extra };
    let subscribers = 0;
    // Each delivery gets an id: the fan-out's ids share one reading of the clock.
    holdClock();
    try {
      for (const sub of this.matching(topic)) {
        if (sub.ended) continue;
        if (this.enqueue(sub, msg)) subscribers++;
      }
    } finally {
      releaseClock();
    }
    return { duplicate: false, subscribers };
  }

  private remember(key: string, now: number): void {
    this.seen.set(key, now + this.windowMs);
    // Past the cap, the oldest ids go first: the window shrinks under that load (spec 14.5).
    if (this.seen.size > this.maxDedupe) this.seen.delete(this.seen.keys().next().value!);
    this.arm(now + this.windowMs);
  }

  private matching(topic: string): Subscription[] {
    let found = this.matches.get(topic);
    if (found === undefined) {
      const tokens = topic.split('.');
      found = [...this.subscriptions].filter((s) => s.pattern.matches(tokens));
      if (this.matches.size > 10_000) this.matches.clear();
      this.matches.set(topic, found);
    }
    return found;
  }

  /** Adds `msg` to the subscription's queue and sends what it may; false when it did not take it. */
  private enqueue(sub: Subscription, msg: Message): boolean {
    const qos = Math.min(msg.qos, sub.options.qos) as Qos;
    const size = sizeOf(msg);
    const full =
      sub.queue.length - sub.head >= this.maxQueued
        ? `${this.maxQueued} messages wait for it`
        : sub.held + size > this.maxQueuedBytes
          ? `it holds ${sub.held} bytes of messages, past ${this.maxQueuedBytes}`
          : this.held + size > this.maxBrokerBytes
            ? `the broker holds ${this.held} bytes of messages, its limit is ${this.maxBrokerBytes}`
            : null;
    if (full !== null) {
      if (qos === 0) {
        sub.dropped++;
        this.droppedQos0++;
        return false;
      }
      this.end(sub, { code: ErrorCode.Overloaded, message: `the subscriber does not keep up: ${full}` });
      return false;
    }
    this.hold(sub, size);
    const link = sub.link;
    // Nothing waits ahead of it (the usual case of a fan-out): it goes now, without a turn
    // through the queue.
    if (link !== null && sub.head === sub.queue.length && sub.again.length === 0 && this.sendOne(sub, link, msg, this.maxInFlight(sub))) {
      link.scheduleFlush();
      return true;
    }
    sub.queue.push(msg);
    this.pump(sub);
    return true;
  }

  private hold(sub: Subscription, bytes: number): void {
    sub.held += bytes;
    this.held += bytes;
  }

  /** Sends what the subscription may receive now: redeliveries first, then its queue in order. */
  private pump(sub: Subscription): void {
    const link = sub.link;
    if (link === null || sub.ended) return;
    const max = this.maxInFlight(sub);
    while (sub.again.length > 0 && sub.inFlight.size < max) {
      const { msg, n } = sub.again.shift()!;
      this.attempt(sub, msg, n + 1);
    }
    while (sub.head < sub.queue.length) {
      if (!this.sendOne(sub, link, sub.queue[sub.head]!, max)) break;
      sub.queue[sub.head++] = undefined as unknown as Message;
    }
    if (sub.head === sub.queue.length) {
      // Setting an array's length is a call into the runtime: only when there is something to drop.
      if (sub.head > 0) {
        sub.queue.length = 0;
        sub.head = 0;
      }
    } else if (sub.head > 1024 && sub.head * 2 > sub.queue.length) {
      sub.queue = sub.queue.slice(sub.head);
      sub.head = 0;
    }
    link.scheduleFlush();
  }

  /** However many a subscriber asks for, no more than the queue may hold are out at once. */
  private maxInFlight(sub: Subscription): number {
    return Math.min(sub.options.maxInFlight, this.maxQueued);
  }

  /**
   * Sends the next message of `sub`'s queue (its first attempt): QoS 0 goes, or is dropped and
   * counted at a full transport; QoS 1 and 2 go while fewer than `max` are in flight. False when
   * it has to wait.
   */
  private sendOne(sub: Subscription, link: BrokerLink, msg: Message, max: number): boolean {
    const qos = Math.min(msg.qos, sub.options.qos) as Qos;
    if (qos === 0) {
      if (link.transportBacklog() < STREAM_HIGH_WATER_MARK)
        link.session.deliver(sub.key, msg.topic, msg.payload, { msg: msg.id, n: 1, qos: 0 }, msg.extra, encoded(msg));
      else {
        sub.dropped++;
        this.droppedQos0++;
      }
      this.hold(sub, -sizeOf(msg));
      return true;
    }
    if (sub.inFlight.size >= max) return false;
    this.attempt(sub, msg, 1);
    return true;
  }

  private attempt(sub: Subscription, msg: Message, n: number): void {
    const qos = Math.min(msg.qos, sub.options.qos) as Qos;
    const deliveryKey = sub.link!.session.deliver(sub.key, msg.topic, msg.payload, { msg: msg.id, n, qos }, msg.extra, encoded(msg));
    if (deliveryKey === null) return;
    const deadline = this.clock() + sub.options.ackWaitMs;
    const a: Attempt = { sub, msg, n, qos, deadline };
    sub.inFlight.set(deliveryKey, a);
    this.attempts.set(deliveryKey, a);
    this.arm(deadline);
  }

  // ---- acks and time -----------------------------------------------------------------------

  /**
   * An ack (ok) or nack of the delivery attempt `deliveryKey` from `link`. Only the current
   * attempt counts: anything else (an earlier attempt, an acked message) is not in the table.
   */
  ack(link: BrokerLink, deliveryKey: string, ok: boolean): void {
    const a = this.attempts.get(deliveryKey);
    if (a === undefined || a.sub.link !== link) return;
    this.attempts.delete(deliveryKey);
    a.sub.inFlight.delete(deliveryKey);
    if (ok) this.hold(a.sub, -sizeOf(a.msg));
    else this.retry(a);
    this.pump(a.sub);
  }

  /** A nacked or timed-out attempt: sent again, or to the dead-letter topic after max_deliver. */
  private retry(a: Attempt): void {
    if (a.n >= a.sub.options.maxDeliver) {
      this.hold(a.sub, -sizeOf(a.msg));
      const extra = { dead_msg: a.msg.id, dead_reason: 'max_deliver', dead_deliveries: a.n, dead_subscription: a.sub.pattern.text };
      this.take(uuidv7(), `${DEAD_LETTER_PREFIX}${a.msg.topic}`, 1, a.msg.payload, extra);
      return;
    }
    a.sub.again.push({ msg: a.msg, n: a.n });
  }

  /** When tick() next has something to do; Infinity when nothing is due. */
  nextDeadline(): number {
    return this.scheduledAt;
  }

  /** Lets time pass: attempts past their ack wait, expired dedupe ids and detached durables. */
  tick(): void {
    const now = this.clock();
    this.scheduledAt = NEVER;
    let next = NEVER;
    const touched = new Set<Subscription>();
    for (const [key, a] of this.attempts) {
      if (a.deadline > now) {
        if (a.deadline < next) next = a.deadline;
        continue;
      }
      this.attempts.delete(key);
      a.sub.inFlight.delete(key);
      this.retry(a);
      touched.add(a.sub);
    }
    for (const sub of touched) this.pump(sub);
    for (const [key, until] of this.seen) {
      if (until > now) {
        if (until < next) next = until;
        break;
      }
      this.seen.delete(key);
    }
    for (const sub of this.subscriptions) {
      if (sub.link !== null) continue;
      if (sub.expires <= now) {
        // Nobody came back for it: what it held is gone, and it is said, not silent.
        const messages = sub.queue.length - sub.head + sub.again.length;
        if (messages > 0)
          this.lost({ subscription: sub.pattern.text, durable: sub.options.durable, messages, reason: 'durable subscription expired with no connection' });
        this.drop(sub);
      } else if (sub.expires < next) next = sub.expires;
    }
    if (next < NEVER) this.arm(next);
  }

  private arm(at: number): void {
    if (at >= this.scheduledAt) return;
    this.scheduledAt = at;
    this.schedule(at);
  }
}
