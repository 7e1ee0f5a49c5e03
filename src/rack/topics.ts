// The rack's topics in one worker (docs/fluxar-spec.md section 14): one broker shared by the
// fluxar gears' connections in this worker, and the records that carry a publication to the
// other workers. A rack is one broker to its clients: a subscriber on worker 0 gets what a
// client of worker 1 publishes.
import { randomBytes } from 'node:crypto';
import { Broker, type PublishOutcome } from '../fluxar/broker.js';
import type { Qos } from '../fluxar/pubsub-state.js';
import type { WorkerTopics } from '../gears/gear.js';
import { type PublicationRecord, Records } from '../gears/records.js';
import type { Lane } from '../ring/lane.js';
import type { Logger } from 'pino';

export class RackTopics implements WorkerTopics {
  readonly broker: Broker;
  /** This worker in publication records: what it sent comes back from the main thread, and is skipped. */
  private readonly origin = randomBytes(8).toString('hex');
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly lane: Lane,
    readonly bridged: boolean,
    logger?: Logger,
  ) {
    this.broker = new Broker({
      lost: (event) => logger?.warn(event, 'pub/sub messages lost'),
      schedule: (at) => {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.broker.tick(), Math.max(0, at - Date.now()));
        this.timer.unref();
      },
    });
  }

  publish(id: Uint8Array, topic: string, qos: Qos, payload: unknown, confirm?: { conn: number; key: string }): PublishOutcome {
    const outcome = this.broker.publish(null, null, id, topic, qos, payload);
    // A duplicate went to the other workers (and racks) the first time; they dedupe QoS 2 by id.
    if (!outcome.duplicate || confirm !== undefined) {
      const record = { origin: this.origin, topic, id, qos, payload, conn: confirm?.conn ?? 0, key: confirm?.key ?? '' };
      this.lane.send(Records.publication.tag, Records.publication.encode(record));
    }
    return outcome;
  }

  /** A publication from another worker, through the main thread. */
  receive(record: PublicationRecord): void {
    if (record.origin === this.origin) return;
    this.broker.publish(null, null, record.id, record.topic, record.qos, record.payload);
  }
}
