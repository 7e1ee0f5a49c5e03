/** How long a JetStream publish the stream did not confirm is tried again before it counts as failed. */
export const PUBLISH_RETRY_MS = 15_000;

/**
 * Publishes, trying again while the error is `retryable` (a server restart, a stream electing a
 * leader) and PUBLISH_RETRY_MS has not passed, backing off from 50 ms to 1 s. The caller
 * publishes with the same message id each time, so the stream drops what arrives twice.
 */
export async function publishRetrying<T>(publish: () => Promise<T>, retryable: (err: Error) => boolean, onRetry?: () => void): Promise<T> {
  const deadline = Date.now() + PUBLISH_RETRY_MS;
  for (let attempt = 0; ; attempt++) {
    try {
      return await publish();
    } catch (err) {
      if (!retryable(err as Error) || Date.now() >= deadline) throw err;
      onRetry?.();
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** attempt)));
    }
  }
}
