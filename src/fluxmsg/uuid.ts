import { randomFillSync } from 'node:crypto';

/**
 * The entity types fluxrig embeds in its entity ids. The numbering is fluxrig's and is part of
 * the wire: never renumber.
 */
export const EntityType = {
  Mixer: 0x02,
  FluxMsg: 0x03,
  Rack: 0x04,
  Gear: 0x05,
  PortInput: 0x06,
  PortOutput: 0x07,
  Wire: 0x08,
  Snake: 0x09,
  Scenario: 0x0a,
  Session: 0x0b,
  SpecVersion: 0x0c,
} as const;
export type EntityType = (typeof EntityType)[keyof typeof EntityType];

const ENTITY_TYPES = new Set<number>(Object.values(EntityType));

export const UUID_BYTES = 16;
export const NIL_UUID: Readonly<Uint8Array> = new Uint8Array(UUID_BYTES);

// Random bytes are drawn in blocks (one randomFillSync per 10,000 ids or so) and read by
// index: a subarray view per id cost more than the rest of the id (320 ns an id before, 130 now).
const RANDOM_BLOCK = 64 * 1024;
const randomPool = new Uint8Array(RANDOM_BLOCK);
let randomOffset = RANDOM_BLOCK;

/** The offset of `n` fresh random bytes in randomPool. */
function randomAt(n: number): number {
  if (randomOffset + n > RANDOM_BLOCK) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  const at = randomOffset;
  randomOffset += n;
  return at;
}

/*
 * Monotonicity (RFC 9562 section 6.2, method 1: a fixed-length counter). The 12 bits of rand_a
 * plus the first 18 bits of rand_b form a 30-bit counter. A new millisecond seeds it randomly
 * with its top bit clear, leaving at least 2^29 increments before it can overflow; ids within
 * one millisecond then count up from there. On overflow, or when the clock steps backwards, the
 * timestamp field itself moves forward by one millisecond, so ids from one process always sort
 * in creation order.
 */
const COUNTER_BITS = 30;
const COUNTER_MAX = 2 ** COUNTER_BITS - 1;
let lastMs = -1;
let counter = 0;

/** The clock reading held by holdClock() for the ids made until releaseClock(); -1 when none is held. */
let heldMs = -1;
let holds = 0;

/**
 * Ids made until the matching releaseClock() share one reading of the clock, taken now. A
 * broker's fan-out makes an id per subscriber in one synchronous loop, and on a virtual machine
 * reading the clock (about 50 ns) costs more than the rest of an id. Their order is still kept
 * by the counter; their time is when the hold began. Holds nest; release each in a finally.
 */
export function holdClock(): void {
  if (holds++ === 0) heldMs = Date.now();
}

export function releaseClock(): void {
  if (--holds === 0) heldMs = -1;
}

/** A new RFC 9562 UUID version 7, strictly increasing within this thread. */
export function uuidv7(): Uint8Array {
  const id = new Uint8Array(UUID_BYTES);
  writeUuidv7(id, 0);
  return id;
}

/** Writes a new UUID v7 (as uuidv7() makes) at `at` in `id`: no allocation, for encoders. */
export function writeUuidv7(id: Uint8Array, at: number): void {
  const r = randomAt(6);
  const rnd = randomPool;
  let ms = heldMs < 0 ? Date.now() : heldMs;
  if (ms > lastMs) {
    lastMs = ms;
    const seed = randomAt(4);
    counter = ((rnd[seed]! << 22) | (rnd[seed + 1]! << 14) | (rnd[seed + 2]! << 6) | (rnd[seed + 3]! >> 2)) & (COUNTER_MAX >>> 1);
  } else {
    counter++;
    if (counter > COUNTER_MAX) {
      lastMs++;
      counter = 0;
    }
    ms = lastMs;
  }
  // 48-bit big-endian millisecond timestamp; split because bitwise ops are 32-bit in JS.
  const high = Math.floor(ms / 0x100000000);
  const low = ms >>> 0;
  id[at] = (high >>> 8) & 0xff;
  id[at + 1] = high & 0xff;
  id[at + 2] = low >>> 24;
  id[at + 3] = (low >>> 16) & 0xff;
  id[at + 4] = (low >>> 8) & 0xff;
  id[at + 5] = low & 0xff;
  id[at + 6] = 0x70 | (counter >>> 26); // version 7, then the top 4 counter bits
  id[at + 7] = (counter >>> 18) & 0xff;
  id[at + 8] = 0x80 | ((counter >>> 12) & 0x3f); // variant 10, then 6 counter bits
  id[at + 9] = (counter >>> 4) & 0xff;
  id[at + 10] = ((counter & 0x0f) << 4) | (rnd[r]! & 0x0f);
  id[at + 11] = rnd[r + 1]!;
  id[at + 12] = rnd[r + 2]!;
  id[at + 13] = rnd[r + 3]!;
  id[at + 14] = rnd[r + 4]!;
  id[at + 15] = rnd[r + 5]!;
}

/** Bytes of the machine id carried in every entity id (fluxrig's machine_id hint); none until set. */
let machineHint: Uint8Array | null = null;

/**
 * Sets the machine this process runs as (a rack's machine_id, once enrolled): entity ids made
 * from then on carry its last 4 bytes. A nil id (not enrolled yet) sets none, as fluxrig does.
 */
export function setMachineId(machineId: Uint8Array): void {
  if (machineId.length !== UUID_BYTES) throw new RangeError(`a machine id is ${UUID_BYTES} bytes, got ${machineId.length}`);
  machineHint = machineId.every((b) => b === 0) ? null : machineId.slice(12, 16);
}

/** Where an entity id keeps the machine hint (4 bytes) and the entity type (1 byte). */
const HINT_AT = 9;
const TYPE_AT = 13;
/** Counter bits that bytes 9 and 10 would carry in a plain UUID v7; entity ids overwrite them. */
const LOW_COUNTER_BITS = 0xfff;

/**
 * An entity id, laid out as fluxrig's (pkg/idgen): a UUID v7 whose byte 13 is the entity type
 * and whose bytes 9 to 12 are the last 4 bytes of the machine id (left random before one is
 * set), so an id seen in a log or on the wire says what it names and where it was made.
 * The counter is stepped past the bits the hint overwrites, so entity ids still sort in
 * creation order.
 */
export function entityId(type: EntityType): Uint8Array {
  if (!ENTITY_TYPES.has(type)) throw new RangeError(`unknown entity type 0x${Number(type).toString(16)}`);
  counter |= LOW_COUNTER_BITS;
  const id = uuidv7();
  if (machineHint !== null) id.set(machineHint, HINT_AT);
  id[TYPE_AT] = type;
  return id;
}

/** The entity type carried by an entity id, or undefined when byte 13 names none. */
export function entityTypeOf(id: Uint8Array): EntityType | undefined {
  const t = id[TYPE_AT];
  return t !== undefined && ENTITY_TYPES.has(t) && isUuidV7(id) ? (t as EntityType) : undefined;
}

/** The machine hint of an entity id: the last 4 bytes of the machine id that made it. */
export function machineHintOf(id: Uint8Array): Uint8Array {
  return id.slice(HINT_AT, HINT_AT + 4);
}

export function isUuidV7(id: Uint8Array): boolean {
  return id.length === UUID_BYTES && id[6]! >> 4 === 7 && id[8]! >> 6 === 2;
}

/** Milliseconds since the Unix epoch encoded in a UUID v7. */
export function uuidv7Time(id: Uint8Array): number {
  let ms = 0;
  for (let i = 0; i < 6; i++) ms = ms * 256 + id[i]!;
  return ms;
}

export function isNilUuid(id: Uint8Array): boolean {
  for (let i = 0; i < id.length; i++) if (id[i] !== 0) return false;
  return true;
}

/** Two lowercase hex digits for each byte value. */
export const BYTE_HEX: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** The canonical 8-4-4-4-12 lowercase text form. */
export function uuidToString(id: Uint8Array): string {
  if (id.length !== UUID_BYTES) throw new RangeError(`a UUID is ${UUID_BYTES} bytes, got ${id.length}`);
  let s = '';
  for (let i = 0; i < UUID_BYTES; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += BYTE_HEX[id[i]!];
  }
  return s;
}

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function parseUuid(text: string): Uint8Array {
  if (!UUID_TEXT.test(text)) throw new RangeError(`not a UUID: ${JSON.stringify(text)}`);
  return Uint8Array.from(Buffer.from(text.replaceAll('-', ''), 'hex'));
}
