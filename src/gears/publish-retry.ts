/** How long a JetStream publish the stream did not confirm is tried again before it counts as failed. */
export const PUBLISH_RETRY_MS = 15_000;

/** How a send ended: an error, or its result. */
export type SendDone<T> = (err: Error | undefined, value?: T) => void;

/** A send's way through its retries, kept by whoever sends (sendRetrying, or a message in flight itself). */
export interface RetryState {
  /** Failed attempts so far. */
  attempt: number;
  /** Date.now() past which a failure is final: PUBLISH_RETRY_MS after the first attempt. */
  retryUntil: number;
}

/**
 * After a failed attempt: how long to wait before the next one, backing off from 50 ms to 1 s, or
 * undefined when the failure is final (not `retryable`, or PUBLISH_RETRY_MS has passed). Counts
 * the attempt.
 */
export function retryDelayMs(state: RetryState, err: Error, retryable: (err: Error) => boolean): number | undefined {
  if (!retryable(err) || Date.now() >= state.retryUntil) return undefined;
  return Math.min(1000, 50 * 2 ** state.attempt++);
}

/**
 * Sends, trying again while the error is `retryable` (a server restart, a stream electing a
 * leader) and PUBLISH_RETRY_MS has not passed (retryDelayMs); then `done`, once.
 * The caller sends with the same message id each time, so the stream drops what arrives twice.
 */
export function sendRetrying<T>(
  send: (done: SendDone<T>) => void,
  retryable: (err: Error) => boolean,
  onRetry: (() => void) | undefined,
  done: SendDone<T>,
): void {
  const state: RetryState = { attempt: 0, retryUntil: Date.now() + PUBLISH_RETRY_MS };
  const sendOnce = (): void =>
    send((err, value) => {
      if (err === undefined) return done(undefined, value);
      const delay = retryDelayMs(state, err, retryable);
      if (delay === undefined) return done(err);
      onRetry?.();
      setTimeout(sendOnce, delay);
    });
  sendOnce();
}

/** sendRetrying for a send that returns a promise; one that throws instead counts as a failed attempt. */
export function publishRetrying<T>(publish: () => Promise<T>, retryable: (err: Error) => boolean, onRetry?: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) =>
    sendRetrying<T>(
      (done) => {
        // A retry runs from a timer: a throw escaping it would end the process.
        let sent: Promise<T>;
        try {
          sent = publish();
        } catch (err) {
          return done(err as Error);
        }
        sent.then((value) => done(undefined, value), done);
      },
      retryable,
      onRetry,
      (err, value) => (err === undefined ? resolve(value as T) : reject(err)),
    ),
  );
}
