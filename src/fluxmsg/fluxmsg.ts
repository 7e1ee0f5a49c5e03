import { EntityType, entityId, isNilUuid, UUID_BYTES } from './uuid.js';

/** One processing step in a message's audit trail. */
export interface Hop {
  /** Gear entity id (16 bytes). */
  g: Uint8Array;
  /** Port entity id (16 bytes). */
  p: Uint8Array;
  /** When the message passed, Unix nanoseconds. */
  t: bigint;
}

/**
 * fluxrig's message, field for field. Property names are the CBOR map keys, so what you see in
 * a debugger is what is on the wire.
 */
export interface FluxMsg {
  /** UUID v7 of this message (16 bytes). */
  id: Uint8Array;
  /** Correlation or parent message id; null when there is none (the nil UUID on the wire means the same). */
  ref_id: Uint8Array | null;
  /** W3C trace id (32 lowercase hex digits), or "" when untraced. */
  trace: string;
  /** Entity id of the originating gear; null when unknown. */
  src_id: Uint8Array | null;
  /** Context: routing flags, source address, protocol headers. Text to text. */
  meta: Record<string, string>;
  /** The business fields; values are any CBOR value. */
  data: Record<string, unknown>;
  /** System signalling bits (uint32). */
  flags: number;
  /** The original wire bytes, when kept. */
  raw: Uint8Array | null;
  /** Audit trail, oldest first. */
  path: Hop[];
  /** Creation time, Unix nanoseconds. */
  ts: bigint;
}

export const FluxMsgFlag = {
  /** A sync probe: measures a path end to end, carries no business data. */
  SyncProbe: 1 << 0,
} as const;

// Anchor the monotonic high-resolution clock to the wall clock once, so timestamps carry
// nanosecond resolution without a Date per call and never step backwards within a process.
const clockOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

/** Now, in Unix nanoseconds. */
export function nowNs(): bigint {
  return clockOffsetNs + process.hrtime.bigint();
}

export type FluxMsgInit = Partial<FluxMsg>;

/** A new message with a fresh id and timestamp; every other field empty unless given. */
export function createFluxMsg(init: FluxMsgInit = {}): FluxMsg {
  return {
    id: init.id ?? entityId(EntityType.FluxMsg),
    ref_id: init.ref_id ?? null,
    trace: init.trace ?? '',
    src_id: init.src_id ?? null,
    meta: init.meta ?? {},
    data: init.data ?? {},
    flags: init.flags ?? 0,
    raw: init.raw ?? null,
    path: init.path ?? [],
    ts: init.ts ?? nowNs(),
  };
}

/** Appends a hop stamped now. The hop limit is checked when the message is encoded. */
export function addHop(msg: FluxMsg, gear: Uint8Array, port: Uint8Array): void {
  msg.path.push({ g: gear, p: port, t: nowNs() });
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/**
 * Meta values are text. Bytes that are valid UTF-8 are stored as that text; anything else as
 * "hex:" followed by lowercase hex, fluxrig's convention for binary meta.
 */
export function metaValueFromBytes(bytes: Uint8Array): string {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    return `hex:${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')}`;
  }
}

/** The inverse of metaValueFromBytes: "hex:..." values back to their bytes, others as UTF-8. */
export function metaValueToBytes(value: string): Uint8Array {
  if (value.startsWith('hex:') && /^[0-9a-f]*$/i.test(value.slice(4)) && value.length % 2 === 0) {
    return Uint8Array.from(Buffer.from(value.slice(4), 'hex'));
  }
  return new TextEncoder().encode(value);
}

/** A nil UUID on the wire means "none"; normalise it so callers test one thing. */
export function uuidOrNull(id: Uint8Array | null): Uint8Array | null {
  return id === null || (id.length === UUID_BYTES && isNilUuid(id)) ? null : id;
}

/** A message id as hex (32 digits). */
export function idHex(id: Uint8Array): string {
  return Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
}

/**
 * The id of a message as it leaves gear.port (a JetStream Nats-Msg-Id): the fluxMsg id, which
 * gears keep, and the hop. A republish after a crash or a redelivery is recognised as the same
 * message, while the same message sent on by a later hop is not mistaken for it.
 */
export function hopMessageId(idHexText: string, gear: string, port: string): string {
  return `${idHexText}.${gear}.${port}`;
}
