/** FLUXAR message types: the first item of every envelope. */
export const MessageType = {
  Hello: 1,
  Call: 2,
  Stream: 3,
  Subscribe: 4,
  Unsubscribe: 5,
  Publish: 6,
  Message: 7,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** FLUXAR error codes (HTTP-like numbers, so they read at a glance) and their names on the wire. */
export const ErrorCode = {
  BadRequest: 400,
  Unauthenticated: 401,
  Forbidden: 403,
  NotFound: 404,
  DeadlineExceeded: 408,
  Conflict: 409,
  TooLarge: 413,
  Overloaded: 429,
  Cancelled: 499,
  Internal: 500,
  Unsupported: 501,
  Unavailable: 503,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export const ERROR_NAMES: Readonly<Record<ErrorCode, string>> = {
  400: 'bad_request',
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  408: 'deadline_exceeded',
  409: 'conflict',
  413: 'too_large',
  429: 'overloaded',
  499: 'cancelled',
  500: 'internal',
  501: 'unsupported',
  503: 'unavailable',
};

/** Targets that mark a continuation as control rather than application traffic. */
export const ControlTarget = {
  Cancel: 'cancel',
  End: 'end',
  Pause: 'pause',
  Resume: 'resume',
  Ack: 'ack',
  Nack: 'nack',
  Ping: 'ping',
  Pong: 'pong',
  Bye: 'bye',
} as const;
export type ControlTarget = (typeof ControlTarget)[keyof typeof ControlTarget];
