import type { HotLane } from '../ring/lane.js';

/**
 * What a rack worker is handed once, at start, in workerData. Everything on the hot path then
 * moves through the two rings; postMessage carries only control (ready, stop).
 */
export interface WorkerBootData {
  index: number;
  generation: number;
  inbound: SharedArrayBuffer;
  outbound: SharedArrayBuffer;
  /** Control words shared with the pool (see ControlSlot). */
  control: SharedArrayBuffer;
  /** URL of the module whose createHandler builds this worker's record handler. */
  handler: string;
  handlerOptions: unknown;
  laneSendTimeoutMs: number;
}

export const ControlSlot = {
  /** Set by the pool: finish what is in the inbound ring, then exit. */
  Stop: 0,
  /** Records whose handler threw (counted, logged, never fatal). */
  HandlerErrors: 1,
  /** Records handled. */
  Handled: 2,
} as const;
export const CONTROL_BYTES = 64;

export type WorkerEvent = { type: 'ready' } | { type: 'failed'; message: string };

/** Given to a handler module: where its output goes and who it is. */
export interface WorkerContext {
  index: number;
  generation: number;
  options: unknown;
  /** The worker's outbound hot lane, back to the main thread. */
  out: HotLane;
}

/** Handles one inbound record; the payload is bytes[start, start + length), valid only during the call. */
export type RecordHandler = (tag: number, bytes: Uint8Array, start: number, length: number) => void;

/** The export a handler module must provide. */
export type HandlerFactory = (ctx: WorkerContext) => RecordHandler | Promise<RecordHandler>;
