import { FluxrigError } from '../errors.js';

/** A fluxMsg that breaks a rule (a limit, a type, an encoding). `field` names where, e.g. "path[3].g". */
export class FluxMsgValidationError extends FluxrigError {
  readonly field: string;
  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super(`fluxMsg ${field}: ${message}`, options);
    this.field = field;
  }
}

/**
 * Bytes that are not a valid fluxMsg. The only error decodeFluxMsg throws, whatever the input:
 * broken CBOR, limits, wrong field types. `field` names the offending field when one is to blame.
 */
export class FluxMsgDecodeError extends FluxrigError {
  readonly field: string | undefined;
  constructor(message: string, options?: { cause?: unknown; field?: string }) {
    super(`cannot decode fluxMsg: ${message}`, options);
    this.field = options?.field;
  }
}
