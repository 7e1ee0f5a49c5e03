/** How long a JetStream publish the stream did not confirm is tried again before it counts as failed. */
export const PUBLISH_RETRY_MS = 15_000;

/** How a send ended: an error, or its result. */
export type SendDone<T> = (err: Error | undefined, value?: T) => void;

/**
 * Sends, trying again while the error is `retryable` (a server restart, a stream electing a
 * leader) and PUBLISH_RETRY_MS has not passed, backing off from 50 ms to 1 s; then `done`, once.
 * The caller sends with the same message id each time, so the stream drops what arrives twice.
 * Callbacks throughout, for the guaranteed lanes' per-message path (see AsyncPublisher.send).
 */
export function sendRetrying<T>(
  send: (done: SendDone<T>) => void,
  retryable: (err: Error) => boolean,
  onRetry: (() => void) | undefined,
  done: SendDone<T>,
): void {
  const deadline = Date.now() + PUBLISH_RETRY_MS;
  let attempt = 0;
  const sendOnce = (): void =>
    send((err, value) => {
      if (err === undefined) return done(undefined, value);
      if (!retryable(err) || Date.now() >= deadline) return done(err);
      onRetry?.();
      setTimeout(sendOnce, Math.min(1000, 50 * 2 ** attempt++));
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
