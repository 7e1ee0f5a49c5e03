// Closing a NATS connection on the way out, whatever state the bus is in.
import type { NatsConnection } from '@nats-io/transport-node';

/** How long a drain may take before the connection is closed without it. */
export const DRAIN_TIMEOUT_MS = 5000;

/**
 * Drains a connection (what its subscriptions hold is handled, what it publishes is flushed),
 * then closes it, within `timeoutMs`. nats.js's drain() fails on a connection that is
 * reconnecting (its server is away) and leaves it reconnecting for ever: a rack told to stop
 * while its bus was down logged "rack stopped" and never exited. And a drain against a server
 * that stopped answering would wait for ever. The connection is closed either way.
 */
export async function drainAndClose(nc: NatsConnection, timeoutMs = DRAIN_TIMEOUT_MS): Promise<void> {
  if (nc.isClosed()) return;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([nc.drain(), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  } catch {
    // Reconnecting, or closed meanwhile: closed below.
  } finally {
    clearTimeout(timer);
  }
  if (!nc.isClosed()) await nc.close();
}
