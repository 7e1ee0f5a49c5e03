import type { HotLane } from './lane.js';
import type { RingProducer } from './ring.js';

/**
 * What a rack worker is handed once, at start, in workerData. Everything on the hot path then
 * moves through the two rings; postMessage carries only control (ready, stop).
 */
export interface WorkerBootData {
  index: number;
  generation: number;
  inbound: SharedArrayBuffer;
  outbound: SharedArrayBuffer;
  /**
   * Lossy side ring of log lines for the telemetry uplink: written with tryWrite only (a full
   * ring drops the line and counts it in ControlSlot.TelemetryDropped), read by the main thread
   * at the uplink's pace. Business records never go through it.
   */
  telemetry: SharedArrayBuffer;
  /** Control words shared with the pool (see ControlSlot). */
  control: SharedArrayBuffer;
  /** URL of the module whose createHandler builds this worker's record handler. */
  handler: string;
  handlerOptions: unknown;
  laneSendTimeoutMs: number;
  /** Date.now() when the pool made this worker; GuestSince counts from it. */
  epochMs: number;
}

export const ControlSlot = {
  /** Set by the pool: finish what is in the inbound ring, then exit. */
  Stop: 0,
  /** Records whose handler threw (counted, logged, never fatal). */
  HandlerErrors: 1,
  /** Records handled. */
  Handled: 2,
  /**
   * Milliseconds since the worker's epoch (WorkerBootData.epochMs) at which the current guest
   * call began (+1, so 0 means "no guest running"). The pool's watchdog times guests with it.
   */
  GuestSince: 3,
  /** Tag of the record the running guest is handling. */
  GuestTag: 4,
  /** The worker's guest time limit (smallest timeout_ms of its gears); 0 = none. */
  GuestTimeoutMs: 5,
  /** Which guest is running (its index in the pool's guestNames, +1; 0 = unknown), to name a hung one. */
  GuestId: 6,
  /** Telemetry lines dropped because the worker's telemetry ring was full. */
  TelemetryDropped: 7,
  /** Local log lines dropped because the worker's log buffer was full (its output was too slow). */
  LocalLogDropped: 8,
} as const;
export const CONTROL_BYTES = 64;

export type WorkerEvent = { type: 'ready' } | { type: 'failed'; message: string };

/** From the pool to a worker, read synchronously by the handler (WorkerContext.takeOptions). */
export type WorkerControl = { type: 'options'; options: unknown };

/** Given to a handler module: where its output goes and who it is. */
export interface WorkerContext {
  index: number;
  generation: number;
  options: unknown;
  /** The worker's outbound hot lane, back to the main thread. */
  out: HotLane;
  /** Shared control words (ControlSlot). */
  control: Int32Array;
  /** The lossy telemetry ring (WorkerBootData.telemetry): tryWrite, never wait. */
  telemetry: RingProducer;
  epochMs: number;
  /**
   * The newest handler options the pool sent (WorkerPool.reconfigure), or undefined when none
   * waits. Synchronous: the handler calls it when the reconfigure record reaches it.
   */
  takeOptions(): unknown;
}

/** Handles one inbound record; the payload is bytes[start, start + length), valid only during the call. */
export type RecordHandler = (tag: number, bytes: Uint8Array, start: number, length: number) => void;

/** The export a handler module must provide. */
export type HandlerFactory = (ctx: WorkerContext) => RecordHandler | Promise<RecordHandler>;
