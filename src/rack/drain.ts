import type { MainGear } from '../gears/gear.js';
import type { ConnectionTable } from './connections.js';
import { DRAIN_GRACE_MS } from './defaults.js';

export interface DrainSteps {
  mainGears: MainGear[];
  connections: ConnectionTable;
  /** Tells every worker's sessions to say bye. */
  sayBye(): void;
  drainTimeoutMs: number;
  /** The workers finish what their rings hold, then exit. */
  stopWorkers(): Promise<void>;
  closeBus(): Promise<void>;
}

/**
 * A rack's graceful stop, in order: no new connections or messages; every session says bye and
 * finishes its calls, closing itself at drain_timeout with the 503 bye the spec asks for; the
 * main thread cuts what is left a grace second later; the workers finish their rings; the
 * main-thread gears flush (JetStream acks); the bus closes.
 */
export async function drain(steps: DrainSteps): Promise<void> {
  await Promise.all(steps.mainGears.map((g) => g.quiesce()));
  steps.sayBye();
  const deadline = Date.now() + steps.drainTimeoutMs + DRAIN_GRACE_MS;
  while (steps.connections.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  steps.connections.destroyAll();
  await steps.stopWorkers();
  await Promise.all(steps.mainGears.map((g) => g.stop()));
  await steps.closeBus();
}
