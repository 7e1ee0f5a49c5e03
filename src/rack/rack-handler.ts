// The rack's work inside a worker (or inline on the main thread, for the baseline): the chain
// of the scenario's gears, each built by its type, and the records from the main thread
// dispatched to them. Connection bytes go to the gear hosting that connection's session.
import type { Logger } from 'pino';
import { pino } from 'pino';
import { GearChain } from './chain.js';
import type { ConnectionHost } from '../gears/gear.js';
import { KvReplica } from '../gears/kv.js';
import { RecordTag, Records } from '../gears/records.js';
import { wasmConfig } from '../gears/wasm.js';
import { guestClock, shortestGuestTimeout } from '../gears/wasm/guest-clock.js';
import type { SyncHttpClient } from '../gears/wasm/host.js';
import { BlockingHttpClient } from '../gears/wasm/http-bridge.js';
import type { Lane } from '../ring/lane.js';
import type { HandlerFactory, RecordHandler } from '../ring/pool-protocol.js';
import type { GearSpec, WireSpec } from '../scenario/types.js';
import { readableLogStream } from './log-format.js';
import { RackTopics } from './topics.js';

export interface RackHandlerOptions {
  gears: GearSpec[];
  wires: WireSpec[];
  /** What each gear type's prepare() returned on the main thread, by gear name. */
  prepared: Record<string, unknown>;
  kvSnapshot: Array<[string, Uint8Array]>;
  logLevel: string;
  readableLogs: boolean;
  /** How long a session waits for its calls after bye before it closes with a 503 bye. */
  drainTimeoutMs: number;
  /** The rack is on the bus: topics cross racks, and QoS 1 and 2 publishes wait for it. */
  onBus: boolean;
}

/** Inline (workers: 0) the main thread must never block, so guests get no HTTP there. */
const NO_HTTP_INLINE: SyncHttpClient = {
  request: () => ({ status: 0, body: new Uint8Array(0), error: 'HTTP from a gear needs worker threads (the rack runs with workers: 0)' }),
};

export function buildRackHandler(options: RackHandlerOptions, lane: Lane, control?: Int32Array, epochMs = Date.now(), log?: Logger): RecordHandler {
  const logger = log ?? pino({ name: 'fluxrig.rack.worker', level: options.logLevel }, options.readableLogs ? readableLogStream() : undefined);
  const replica = new KvReplica(options.kvSnapshot, (key, value) => lane.send(RecordTag.KvPut, Records.kvPut.encode({ key, value })));
  const owners = new Map<number, ConnectionHost>();
  let http: SyncHttpClient | undefined;
  let currentTag = 0;
  const topics = new RackTopics(lane, options.onBus, logger);

  const timeout = shortestGuestTimeout(options.gears.filter((g) => g.type === 'wasm').map(wasmConfig));
  const clock = control === undefined || timeout === undefined ? undefined : guestClock(control, epochMs, timeout, () => currentTag);

  const chain = new GearChain(options.gears, options.wires, options.prepared, {
    logger,
    lane,
    kv: replica,
    http: () => (http ??= control === undefined ? NO_HTTP_INLINE : new BlockingHttpClient()),
    guestClock: clock,
    claimConnection: (id, host) => owners.set(id, host),
    releaseConnection: (id) => owners.delete(id),
    drainTimeoutMs: options.drainTimeoutMs,
    topics,
    toMain: (gear, port, msg) => lane.send(RecordTag.ToMain, Records.toMain.encode({ gear, port, msg })),
  });

  return (tag, bytes, start, length) => {
    currentTag = tag;
    const payload = bytes.subarray(start, start + length);
    if (tag > 0) {
      owners.get(tag)?.receive(tag, payload);
      return;
    }
    switch (tag) {
      case RecordTag.ConnOpen: {
        const r = Records.connOpen.decode(payload);
        chain.connectionHosts.get(r.gear)?.open(r.id, r.framing, r.ip, r.port);
        return;
      }
      case RecordTag.ConnClosed: {
        const { id } = Records.connClosed.decode(payload);
        owners.get(id)?.closed(id);
        return;
      }
      case RecordTag.ConnInvalid: {
        const { id, reason } = Records.connInvalid.decode(payload);
        owners.get(id)?.invalid(id, reason);
        return;
      }
      case RecordTag.ConnWritable: {
        const { id, writable } = Records.connWritable.decode(payload);
        owners.get(id)?.writable(id, writable);
        return;
      }
      case RecordTag.Publication:
        topics.receive(Records.publication.decode(payload));
        return;
      case RecordTag.PublicationAck: {
        const { conn, key, error } = Records.publicationAck.decode(payload);
        owners.get(conn)?.publicationAcked?.(conn, key, error);
        return;
      }
      case RecordTag.Drain:
        for (const host of chain.connectionHosts.values()) host.drain();
        return;
      case RecordTag.Inject: {
        const { gear, port, msg } = Records.inject.decode(payload);
        chain.emit(gear, port, msg);
        return;
      }
      case RecordTag.KvSet: {
        const { key, value } = Records.kvSet.decode(payload);
        replica.apply(key, value ?? undefined);
        return;
      }
    }
  };
}

export const createHandler: HandlerFactory = ({ options, out, control, epochMs }) => buildRackHandler(options as RackHandlerOptions, out, control, epochMs);
