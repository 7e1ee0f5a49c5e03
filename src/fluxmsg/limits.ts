/** fluxrig's defaults; a rack may change them once at start-up with setFluxMsgLimits. */
export const DEFAULT_MAX_HOPS = 64;
export const DEFAULT_MAX_MESSAGE_BYTES = 2 * 1024 * 1024;

export interface FluxMsgLimits {
  /** Most hops a message may carry in `path` before it is refused (routing-loop guard). */
  maxHops: number;
  /** Most bytes of one encoded fluxMsg. */
  maxBytes: number;
}

const limits: FluxMsgLimits = { maxHops: DEFAULT_MAX_HOPS, maxBytes: DEFAULT_MAX_MESSAGE_BYTES };

export function fluxMsgLimits(): Readonly<FluxMsgLimits> {
  return limits;
}

export function setFluxMsgLimits(next: Partial<FluxMsgLimits>): void {
  for (const [key, value] of Object.entries(next)) {
    if (!Number.isSafeInteger(value) || (value as number) < 1) {
      throw new RangeError(`fluxMsg limit ${key} must be a positive integer, got ${String(value)}`);
    }
  }
  Object.assign(limits, next);
}
