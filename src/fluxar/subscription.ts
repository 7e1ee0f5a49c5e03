// A subscription as an application sees it (docs/fluxar-spec.md section 14): an AsyncIterable of
// messages to ack or nack, and, for QoS 2, the memory of publication ids already handled, so a
// redelivery after a lost ack does not run the application's code twice.
import { ErrorCode } from './codes.js';
import type { EnvelopeErrorInfo } from './envelope.js';
import { FluxarError } from './errors.js';
import type { DeliveryMeta, Qos } from './pubsub-state.js';
import { idKey, type Session } from './session.js';

/** How long a QoS 2 subscriber remembers a publication id it handled (the broker's window too). */
export const HANDLED_WINDOW_MS = 120_000;
/** Publication ids remembered at most per subscription (the oldest go first past it). */
const MAX_HANDLED = 100_000;
/** QoS 0 messages kept for a reader that is behind; older ones are dropped past it (at most once). */
export const MAX_UNREAD_QOS0 = 10_000;

/** Publication ids handled within the window, oldest first. */
export class HandledIds {
  private readonly until = new Map<string, number>();
  constructor(
    private readonly windowMs = HANDLED_WINDOW_MS,
    private readonly clock: () => number = Date.now,
  ) {}

  has(key: string): boolean {
    const until = this.until.get(key);
    return until !== undefined && until > this.clock();
  }

  add(key: string): void {
    const now = this.clock();
    this.until.delete(key);
    this.until.set(key, now + this.windowMs);
    for (const [k, t] of this.until) {
      if (t > now && this.until.size <= MAX_HANDLED) break;
      this.until.delete(k);
    }
  }
}

/**
 * What a durable subscriber has handled, by durable name, for this process: a new connection
 * that resumes the durable subscription shares it, which is what makes a redelivery after a
 * cut connection run nothing twice.
 */
const handledByDurable = new Map<string, HandledIds>();

/** One message of a subscription. */
export interface FluxarMessage {
  topic: string;
  payload: unknown;
  /** The publication id (the same on every attempt). */
  id: Uint8Array;
  /** The attempt, from 1. */
  attempt: number;
  qos: Qos;
  /** Done with it (QoS 1 and 2): the broker forgets it; a QoS 2 redelivery of it is ignored. */
  ack(): void;
  /** Not done: the broker sends it again now (up to max_deliver). */
  nack(): void;
}

/** What a subscription needs from its Peer. */
export interface SubscriptionHost {
  readonly session: Session;
  scheduleFlush(): void;
}

/** One message: its ack and nack are methods, not closures (a fan-out makes many). */
class Delivery implements FluxarMessage {
  readonly attempt: number;
  readonly qos: Qos;
  private settled: boolean;

  constructor(
    private readonly sub: FluxarSubscription,
    private readonly deliveryKey: string,
    readonly topic: string,
    readonly payload: unknown,
    private readonly meta: DeliveryMeta,
  ) {
    this.attempt = meta.n;
    this.qos = meta.qos;
    this.settled = meta.qos === 0;
  }

  /** The publication id, read from the meta when asked (a plain delivery's stays in its frame till then). */
  get id(): Uint8Array {
    return this.meta.msg;
  }

  ack(): void {
    if (this.settled) return;
    this.settled = true;
    this.sub.settle(this.deliveryKey, this.id, this.qos, true);
  }

  nack(): void {
    if (this.settled) return;
    this.settled = true;
    this.sub.settle(this.deliveryKey, this.id, this.qos, false);
  }
}

export class FluxarSubscription implements AsyncIterable<FluxarMessage> {
  /** Resolves when the broker accepted the subscription; rejects with its refusal. */
  readonly ready: Promise<void>;
  /** Resolves when the subscription is over, with the broker's error if it ended it. */
  readonly ended: Promise<FluxarError | null>;
  /** QoS 0 messages dropped here because the reader was behind. */
  dropped = 0;
  /** QoS 2 redeliveries of messages already handled (acked) here: acked again, not handed over. */
  duplicates = 0;
  /** Messages whose callback threw (each was nacked), and the last error. */
  callbackErrors = 0;
  lastCallbackError: unknown;
  private settleReady!: { resolve(): void; reject(err: FluxarError): void };
  private settleEnded!: (err: FluxarError | null) => void;
  private readonly unread: FluxarMessage[] = [];
  private reader: { resolve(r: IteratorResult<FluxarMessage>): void; reject(err: unknown): void } | null = null;
  private done = false;
  private failure: FluxarError | null = null;
  private readonly handled: HandledIds;

  constructor(
    private readonly host: SubscriptionHost,
    readonly key: string,
    readonly pattern: string,
    durable: string | null,
    /** Messages go here as they arrive, instead of to an iterator. */
    private readonly callback?: (message: FluxarMessage) => void,
  ) {
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {});
    this.ended = new Promise((resolve) => (this.settleEnded = resolve));
    if (durable === null) this.handled = new HandledIds();
    else {
      let shared = handledByDurable.get(durable);
      if (shared === undefined) {
        shared = new HandledIds();
        handledByDurable.set(durable, shared);
      }
      this.handled = shared;
    }
  }

  /** Stops it: the broker's end follows; deliveries that cross it are dropped. */
  unsubscribe(): void {
    if (this.done) return;
    this.host.session.unsubscribe(this.key);
    this.host.scheduleFlush();
  }

  /** The broker's answer to the subscribe. */
  answered(error: EnvelopeErrorInfo | null): void {
    if (error === null) return this.settleReady.resolve();
    const err = new FluxarError(error.code, error.message, { data: error.data });
    this.settleReady.reject(err);
    this.finish(err);
  }

  /** A delivery from the broker. */
  delivered(deliveryKey: string, topic: string, payload: unknown, meta: DeliveryMeta): void {
    if (this.done) return;
    if (meta.qos === 2 && this.handled.has(idKey(meta.msg))) {
      // Handled already: its ack was lost (a cut connection). Ack again; run nothing twice.
      this.duplicates++;
      this.host.session.ackDelivery(deliveryKey, true);
      this.host.scheduleFlush();
      return;
    }
    const message = new Delivery(this, deliveryKey, topic, payload, meta);
    if (this.callback !== undefined) {
      try {
        this.callback(message);
      } catch (err) {
        // The application failed on it: the broker sends it again (QoS 1 and 2), up to max_deliver.
        this.callbackErrors++;
        this.lastCallbackError = err;
        message.nack();
      }
      return;
    }
    if (this.reader !== null) {
      const reader = this.reader;
      this.reader = null;
      reader.resolve({ value: message, done: false });
      return;
    }
    if (meta.qos === 0 && this.unread.length >= MAX_UNREAD_QOS0) {
      this.dropped++;
      return;
    }
    this.unread.push(message);
  }

  /** A message's ack (ok) or nack, once: QoS 2 remembers what was handled. */
  settle(deliveryKey: string, msg: Uint8Array, qos: Qos, ok: boolean): void {
    if (ok && qos === 2) this.handled.add(idKey(msg));
    this.host.session.ackDelivery(deliveryKey, ok);
    this.host.scheduleFlush();
  }

  /** The subscription is over (the broker's end, or the connection closed). */
  finish(error: FluxarError | null): void {
    if (this.done) return;
    this.done = true;
    this.failure = error;
    this.settleReady.reject(error ?? new FluxarError(ErrorCode.Unavailable, 'the subscription ended'));
    this.settleEnded(error);
    if (this.reader !== null && this.unread.length === 0) {
      const reader = this.reader;
      this.reader = null;
      if (error !== null) reader.reject(error);
      else reader.resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<FluxarMessage> {
    return {
      next: () => {
        const message = this.unread.shift();
        if (message !== undefined) return Promise.resolve({ value: message, done: false });
        if (this.done) return this.failure !== null ? Promise.reject(this.failure) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => (this.reader = { resolve, reject }));
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
