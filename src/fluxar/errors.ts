import { FluxrigError } from '../errors.js';
import { ERROR_NAMES, type ErrorCode } from './codes.js';

/** An error that travels as a FLUXAR error map: it always carries its FLUXAR code. */
export class FluxarError extends FluxrigError {
  readonly code: ErrorCode | number;
  readonly data: unknown;
  constructor(code: ErrorCode | number, message: string, options?: { cause?: unknown; data?: unknown }) {
    super(message, options);
    this.code = code;
    this.data = options?.data;
  }

  /** The code's wire name ("not_found"), or "error" for a code outside the table. */
  get codeName(): string {
    return ERROR_NAMES[this.code as ErrorCode] ?? 'error';
  }
}

/**
 * Bytes that are not a valid FLUXAR envelope (code 400). `field` names the envelope item at
 * fault ("type", "id", ...), or "envelope" when the whole is wrong.
 */
export class EnvelopeError extends FluxarError {
  readonly field: string;
  /** What is wrong with the item, without the prefix. */
  readonly reason: string;
  /**
   * The items read before the fault, when `type`, `id` and `ref` were all readable: enough to
   * answer the envelope with an error instead of closing the connection (spec section 2).
   */
  readonly header: { type: number; id: Uint8Array; ref: Uint8Array | null } | undefined;
  constructor(field: string, message: string, options?: { cause?: unknown; header?: { type: number; id: Uint8Array; ref: Uint8Array | null } }) {
    super(400, `invalid FLUXAR envelope: ${field} ${message}`, options);
    this.field = field;
    this.reason = message;
    this.header = options?.header;
  }
}
