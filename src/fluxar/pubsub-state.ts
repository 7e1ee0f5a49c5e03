// The rules of pub/sub envelopes (docs/fluxar-spec.md section 14) that do not need a session:
// QoS, the subscribe options and their defaults, a delivery's meta. The Session holds the
// tables and sends the envelopes; the Broker decides what goes where.
import { isCborMap } from '../cbor/profile.js';
import { describeValue } from '../cbor/strict.js';
import { UUID_BYTES } from '../fluxmsg/uuid.js';

export type Qos = 0 | 1 | 2;

/** What a subscription asks of the broker (section 14.2), with the defaults filled in. */
export interface SubscribeOptions {
  qos: Qos;
  /** Deliveries of QoS 1 and 2 sent and not acked, at most. */
  maxInFlight: number;
  ackWaitMs: number;
  maxDeliver: number;
  /** A name that lets the subscription outlive its connection. */
  durable: string | null;
}

export const SUBSCRIBE_DEFAULTS: Readonly<SubscribeOptions> = { qos: 0, maxInFlight: 64, ackWaitMs: 30_000, maxDeliver: 5, durable: null };
export const MIN_ACK_WAIT_MS = 100;

const DURABLE = /^[A-Za-z0-9_\-:@]{1,64}$/;

export function isQos(value: unknown): value is Qos {
  return value === 0 || value === 1 || value === 2;
}

function isUintAtLeast(value: unknown, min: number): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min;
}

/** The options a subscribe's meta asks for, or the text of what is wrong with them. */
export function readSubscribeMeta(meta: Record<string, unknown> | null): SubscribeOptions | string {
  const m = meta ?? {};
  const qos = m.qos ?? SUBSCRIBE_DEFAULTS.qos;
  if (!isQos(qos)) return `meta.qos must be 0, 1 or 2, got ${describeValue(m.qos)}`;
  const maxInFlight = m.max_in_flight ?? SUBSCRIBE_DEFAULTS.maxInFlight;
  if (!isUintAtLeast(maxInFlight, 1)) return `meta.max_in_flight must be an integer of at least 1, got ${describeValue(m.max_in_flight)}`;
  const ackWaitMs = m.ack_wait_ms ?? SUBSCRIBE_DEFAULTS.ackWaitMs;
  if (!isUintAtLeast(ackWaitMs, MIN_ACK_WAIT_MS))
    return `meta.ack_wait_ms must be an integer of at least ${MIN_ACK_WAIT_MS}, got ${describeValue(m.ack_wait_ms)}`;
  const maxDeliver = m.max_deliver ?? SUBSCRIBE_DEFAULTS.maxDeliver;
  if (!isUintAtLeast(maxDeliver, 1)) return `meta.max_deliver must be an integer of at least 1, got ${describeValue(m.max_deliver)}`;
  const durable = m.durable ?? null;
  if (durable !== null && (typeof durable !== 'string' || !DURABLE.test(durable))) {
    return `meta.durable must be a name of 1 to 64 characters A-Z a-z 0-9 _ - : @, got ${describeValue(m.durable)}`;
  }
  return { qos, maxInFlight, ackWaitMs, maxDeliver, durable };
}

/** The subscribe meta that asks for `options` (only what differs from the defaults). */
export function subscribeMeta(options: Partial<SubscribeOptions>): Record<string, unknown> {
  const meta: Record<string, unknown> = {};
  if (options.qos !== undefined) meta.qos = options.qos;
  if (options.maxInFlight !== undefined) meta.max_in_flight = options.maxInFlight;
  if (options.ackWaitMs !== undefined) meta.ack_wait_ms = options.ackWaitMs;
  if (options.maxDeliver !== undefined) meta.max_deliver = options.maxDeliver;
  if (options.durable !== undefined && options.durable !== null) meta.durable = options.durable;
  return meta;
}

/** A delivery's meta (section 14.4). */
export interface DeliveryMeta {
  /** The publication id. */
  msg: Uint8Array;
  /** The attempt: 1, 2, ... */
  n: number;
  qos: Qos;
}

/**
 * A plain delivery's meta, read in place (Session.receivePlainDelivery): the publication id is
 * copied out of the frame the first time it is read. Most QoS 0 subscribers never read it.
 */
export class FrameDeliveryMeta implements DeliveryMeta {
  private id: Uint8Array | undefined;

  constructor(
    private frame: Uint8Array,
    private readonly at: number,
    readonly n: number,
    readonly qos: Qos,
  ) {}

  get msg(): Uint8Array {
    return this.id ?? this.detach();
  }

  /** Copies the id out of the frame, which it no longer holds (a Buffer's slice would be a view). */
  detach(): Uint8Array {
    const id = new Uint8Array(UUID_BYTES);
    for (let i = 0; i < UUID_BYTES; i++) id[i] = this.frame[this.at + i]!;
    this.frame = EMPTY_FRAME;
    this.id = id;
    return id;
  }
}
const EMPTY_FRAME = new Uint8Array(0);

/** A delivery's meta as received, or the text of what is wrong with it. */
export function readDeliveryMeta(meta: Record<string, unknown> | null): DeliveryMeta | string {
  if (!isCborMap(meta)) return 'a delivery needs meta {msg, n, qos}';
  const { msg, n, qos } = meta;
  if (!(msg instanceof Uint8Array) || msg.length !== UUID_BYTES) return 'a delivery meta.msg is the 16-byte publication id';
  if (!isUintAtLeast(n, 1)) return `a delivery meta.n is the attempt, from 1, got ${describeValue(n)}`;
  if (!isQos(qos)) return `a delivery meta.qos must be 0, 1 or 2, got ${describeValue(qos)}`;
  return { msg, n, qos };
}
