// The rack's work inside a worker (or inline on the main thread, for the baseline): the chain
// of the scenario's gears, each built by its type, and the records from the main thread
// dispatched to them. Connection bytes go to the gear hosting that connection's session.
import type { Logger } from 'pino';
import type { RingProducer } from '../ring/ring.js';
import { type LogTap, lineWriter, tappedLogger } from '../telemetry/log-tap.js';
import { type ChainEnv, type ChainPlan, GearChain } from './chain.js';
import type { ConnectionHost } from '../gears/gear.js';
import { KvReplica } from '../gears/kv.js';
import { LaneOutcome, lanePublication, RecordTag, Records } from '../gears/records.js';
import { decodeFluxMsg } from '../fluxmsg/codec.js';
import type { CallTrace } from '../gears/gear.js';
import { wasmConfig } from '../gears/wasm.js';
import { type GuestClock, guestClock, shortestGuestTimeout } from '../gears/wasm/guest-clock.js';
import type { SyncHttpClient } from '../gears/wasm/host.js';
import { BlockingHttpClient } from '../gears/wasm/http-bridge.js';
import type { Lane } from '../ring/lane.js';
import { ControlSlot, type HandlerFactory, type RecordHandler } from '../ring/pool-protocol.js';
import type { GearSpec } from '../scenario/types.js';
import { workerLocalLog } from './local-log.js';
import { readableLogStream } from './log-format.js';
import { RackTopics } from './topics.js';

export interface RackHandlerOptions extends ChainPlan {
  /** The scenario version this plan runs (the rack counts its reloads). */
  version: number;
  kvSnapshot: Array<[string, Uint8Array]>;
  logLevel: string;
  /** Lines at this level and above also go to the telemetry ring ('silent': none). */
  telemetryLevel: string;
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

/** The smallest timeout_ms of a plan's Wasm gears; 0 (none) without any. */
function guestTimeoutOf(gears: GearSpec[]): number {
  return shortestGuestTimeout(gears.filter((g) => g.type === 'wasm').map(wasmConfig)) ?? 0;
}

/**
 * `takeOptions` gives the options of a reconfigure when its record arrives (WorkerContext's in a
 * worker; the rack's own inline).
 */
export function buildRackHandler(
  initial: RackHandlerOptions,
  lane: Lane,
  takeOptions: () => unknown,
  control?: Int32Array,
  epochMs = Date.now(),
  log?: Logger,
  telemetry?: RingProducer,
  workerIndex = 0,
): RecordHandler {
  let options = initial;
  const tapped = log === undefined ? workerLogger(options, telemetry, control) : undefined;
  const logger = log ?? tapped!.logger;
  const replica = new KvReplica(options.kvSnapshot, (key, value) => lane.send(RecordTag.KvPut, Records.kvPut.encode({ key, value })));
  const owners = new Map<number, ConnectionHost>();
  let http: SyncHttpClient | undefined;
  let currentTag = 0;
  const topics = new RackTopics(lane, options.onBus, logger);

  // A clock whenever the pool watches this worker: a reload may bring the first Wasm gear.
  const clock: GuestClock | undefined = control === undefined ? undefined : guestClock(control, epochMs, guestTimeoutOf(options.gears), () => currentTag);

  const env: ChainEnv = {
    logger,
    lineWriter: (gear) => lineWriter(logger, { gear }),
    lane,
    kv: replica,
    http: () => (http ??= control === undefined ? NO_HTTP_INLINE : new BlockingHttpClient()),
    guestClock: clock,
    claimConnection: (id, host) => owners.set(id, host),
    releaseConnection: (id) => owners.delete(id),
    drainTimeoutMs: options.drainTimeoutMs,
    workerIndex,
    topics,
    toMain: (gear, port, bytes) => lane.send(RecordTag.ToMain, Records.toMain.encode({ gear, port, bytes })),
    toLane: (gear, port, msg, bytes) => lane.send(RecordTag.LanePublish, Records.lanePublish.encode(lanePublication(gear, port, msg, bytes))),
  };
  const chain = new GearChain(options, env);

  /** Takes up the newest options, if this record's version is newer than what runs. */
  const reconfigure = (version: number) => {
    const next = takeOptions() as RackHandlerOptions | undefined;
    let error: string | null = null;
    if (next !== undefined && next.version > options.version) {
      try {
        const retired = chain.reconfigure(next, env);
        options = next;
        if (control !== undefined) Atomics.store(control, ControlSlot.GuestTimeoutMs, guestTimeoutOf(next.gears));
        // Sessions of a gear that changed or left say bye and finish their calls on the new wires.
        for (const host of retired) host.drain();
      } catch (err) {
        error = (err as Error).message;
        logger.error({ err, version: next.version }, 'the new scenario could not be built in this worker; the previous one runs on');
      }
    } else if (version > options.version) error = `no options for version ${version} reached this worker`;
    lane.send(RecordTag.Reconfigured, Records.reconfigured.encode({ version, error }));
  };

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
      case RecordTag.LaneDeliver: {
        const { token, gear, port, bytes } = Records.laneDeliver.decode(payload);
        // Token 0: the answer to a call whose message the bus took; nothing to report.
        if (token === 0) return chain.deliver(gear, port, decodeFluxMsg(bytes));
        let outcome: LaneOutcome = LaneOutcome.Failed;
        let reason = '';
        try {
          ({ outcome, reason } = laneOutcome(chain.deliverTracked(gear, port, bytes), gear, port));
        } catch (err) {
          reason = (err as Error).message;
        }
        lane.send(RecordTag.LaneDone, Records.laneDone.encode({ token, outcome, reason }));
        return;
      }
      case RecordTag.Reconfigure:
        return reconfigure(Records.reconfigure.decode(payload).version);
      case RecordTag.LogLevel: {
        // Inline, the logger is the rack's own, and the rack has set it already.
        const { level, telemetryLevel } = Records.logLevel.decode(payload);
        if (tapped !== undefined) tapped.logger.level = tapped.tap.setLevels({ local: level, telemetry: telemetryLevel });
        return;
      }
      case RecordTag.StatsRequest:
        lane.send(RecordTag.Stats, Records.stats.encode(chain.takeCounts()));
        return;
      case RecordTag.KvSet: {
        const { key, value } = Records.kvSet.decode(payload);
        replica.apply(key, value ?? undefined);
        return;
      }
    }
  };
}

/**
 * What a bus wire's delivery came to: a rejection or failure nobody handled (its gear's error
 * port wired to nothing), or a target gear this worker does not run, fails it (redelivered);
 * an output wired to nothing is where the scenario ends, not a failure.
 */
function laneOutcome(trace: CallTrace, gear: string, port: string): { outcome: LaneOutcome; reason: string } {
  for (const end of trace.ends) {
    if (end.why === 'rejected' || end.why === 'failed') return { outcome: LaneOutcome.Failed, reason: `${end.gear} ${end.why} it: ${end.reason ?? ''}` };
    if (end.why === 'unrouted' && end.gear === gear && end.port === port)
      return { outcome: LaneOutcome.Failed, reason: `gear ${gear} does not run in this rack's scenario` };
  }
  return { outcome: trace.leftWorker ? LaneOutcome.LeftWorker : LaneOutcome.Done, reason: '' };
}

export const createHandler: HandlerFactory = ({ index, options, out, control, epochMs, takeOptions, telemetry }) =>
  buildRackHandler(options as RackHandlerOptions, out, takeOptions, control, epochMs, undefined, telemetry, index);

/**
 * A worker's logger: the local log as before, and lines at the telemetry level into the
 * worker's telemetry ring. A full ring drops the line and counts it: a log flood costs a gear
 * one failed tryWrite per line, never a wait.
 */
function workerLogger(options: RackHandlerOptions, telemetry: RingProducer | undefined, control: Int32Array | undefined): { logger: Logger; tap: LogTap } {
  const tapped = tappedLogger(
    'fluxrig.rack.worker',
    options.logLevel,
    options.telemetryLevel,
    options.readableLogs
      ? readableLogStream()
      : workerLocalLog(control === undefined ? undefined : (lines) => Atomics.add(control, ControlSlot.LocalLogDropped, lines)),
  );
  if (telemetry !== undefined && control !== undefined) {
    /** Where a line of `length` bytes goes in the ring; -1 (the line dropped and counted) when it does not fit. */
    const reserve = (length: number): number => {
      const at = length >= 0 && length <= telemetry.maxRecordBytes ? telemetry.reserve(0, length) : -1;
      if (at < 0) Atomics.add(control, ControlSlot.TelemetryDropped, 1);
      return at;
    };
    tapped.tap.sink = (line) => {
      // A flood keeps the ring full: a line that could not fit even at one byte per character is
      // dropped before its UTF-8 length is counted.
      const length = telemetry.hasRoom(line.length) ? Buffer.byteLength(line) : -1;
      const at = reserve(length);
      if (at < 0) return;
      utf8.encodeInto(line, telemetry.bytes.subarray(at, at + length));
      telemetry.commit();
    };
    tapped.tap.sinkUtf8 = (line) => {
      const at = reserve(line.length);
      if (at < 0) return;
      telemetry.bytes.set(line, at);
      telemetry.commit();
    };
  }
  return tapped;
}

const utf8 = new TextEncoder();
