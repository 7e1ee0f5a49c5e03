// One stream's bookkeeping inside a Session (docs/fluxar-spec.md section 13): its directions,
// the credit each side holds, and its state. The Session owns the table and the envelopes; the
// rules on credit live here, in one place.
import { ErrorCode } from './codes.js';
import { FluxarError } from './errors.js';

export type StreamMode = 'out' | 'in' | 'bidi';
export const STREAM_MODES: readonly StreamMode[] = ['out', 'in', 'bidi'];

/** IDLE is the absence of a record; CLOSED is its removal. */
export type StreamState = 'active' | 'cancelling';

export interface StreamRecord {
  /** The opening request's id. */
  readonly id: Uint8Array;
  readonly role: 'opener' | 'responder';
  readonly mode: StreamMode;
  state: StreamState;
  /** Chunks we may still send (the peer's grants minus what we sent; 0 after its pause). */
  sendCredit: number;
  /** Chunks the peer may still send (our grants minus what it sent). */
  receiveWindow: number;
  /** Our direction can still carry chunks (false when it does not exist or we ended it). */
  sendOpen: boolean;
  /** The peer's direction can still carry chunks. */
  receiveOpen: boolean;
  deadline: number;
  /** Chunks sent and received so far: the seq of the next one. */
  sent: number;
  received: number;
}

export function newStreamRecord(id: Uint8Array, role: 'opener' | 'responder', mode: StreamMode, initialDownCredit: number, deadline: number): StreamRecord {
  const down = mode !== 'in';
  const up = mode !== 'out';
  return {
    id,
    role,
    mode,
    state: 'active',
    sendCredit: role === 'responder' && down ? initialDownCredit : 0,
    receiveWindow: role === 'opener' && down ? initialDownCredit : 0,
    sendOpen: role === 'opener' ? up : down,
    receiveOpen: role === 'opener' ? down : up,
    deadline,
    sent: 0,
    received: 0,
  };
}

/** A credit amount as the spec allows it in a grant: 1 to 2^53 - 1. */
export function isCreditGrant(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 1;
}

/** A credit total as the spec allows it (meta.credit, a window): 0 to 2^53 - 1. */
export function isCreditTotal(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/**
 * `total + grant` when it stays a safe integer, else the violation's text. Sums are checked
 * before they are made: past 2^53 an addition silently loses units, which is how a counter
 * "wraps" in a language without fixed-width integers.
 */
export function addCredit(total: number, grant: number, what: string): number | string {
  if (grant > Number.MAX_SAFE_INTEGER - total) return `${what} would exceed 2^53 - 1 (${total} + ${grant})`;
  return total + grant;
}

/** Why a chunk may not be sent on this stream now; null when it may. */
export function cannotSend(s: StreamRecord): FluxarError | null {
  if (s.state !== 'active') return new FluxarError(ErrorCode.Cancelled, 'the stream was cancelled');
  if (!s.sendOpen) {
    const never = s.role === 'opener' ? s.mode === 'out' : s.mode === 'in';
    return new FluxarError(
      ErrorCode.BadRequest,
      never ? `a "${s.mode}" stream carries no chunks from the ${s.role}` : 'this direction of the stream has ended',
    );
  }
  if (s.sendCredit === 0) return new FluxarError(ErrorCode.Overloaded, 'no credit: wait for the receiver to grant more');
  return null;
}
