// A CBOR head read in place, for the one-pass checks that pass bytes on without decoding them
// (fluxmsg/check.ts, FLUXAR's plain deliveries). The strict reader has its own, with its errors.

/**
 * Past the head at `at` whose argument takes at most `maxBytes` bytes (0, 1, 2 or 4, never an
 * indefinite length); -1 otherwise or when truncated.
 */
export function argumentEnd(bytes: Uint8Array, at: number, maxBytes: number): number {
  const info = bytes[at]! & 31;
  const size = info < 24 ? 0 : info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : -1;
  if (size < 0 || size > maxBytes || at + 1 + size > bytes.length) return -1;
  return at + 1 + size;
}

/** The argument of the head at `at` (up to four bytes; argumentEnd has checked it). */
export function argumentOf(bytes: Uint8Array, at: number): number {
  const info = bytes[at]! & 31;
  if (info < 24) return info;
  if (info === 24) return bytes[at + 1]!;
  if (info === 25) return (bytes[at + 1]! << 8) | bytes[at + 2]!;
  return bytes[at + 1]! * 0x100_0000 + ((bytes[at + 2]! << 16) | (bytes[at + 3]! << 8) | bytes[at + 4]!);
}
