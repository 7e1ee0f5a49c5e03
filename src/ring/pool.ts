import { EventEmitter, once } from 'node:events';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { pino, type Logger } from 'pino';
import { DEFAULT_LANE_SEND_TIMEOUT_MS } from './lane.js';
import { DEFAULT_CAPACITY, DEFAULT_MAX_RECORDS } from './layout.js';
import { createRing, type RecordVisitor, RingConsumer, RingProducer } from './ring.js';
import { workerForKey } from './affinity.js';
import { CONTROL_BYTES, ControlSlot, type WorkerBootData, type WorkerControl, type WorkerEvent } from './pool-protocol.js';

const DEFAULT_WORKER = new URL('./worker.js', import.meta.url);

export interface WorkerPoolOptions {
  /** Module URL (or path) exporting createHandler; imported by every worker. */
  handler: string | URL;
  /** Structured-cloneable options for createHandler (a WebAssembly.Module clones cheaply). */
  handlerOptions?: unknown;
  /** Called on the main thread for every record a worker sends back. Zero-copy: copy to keep. */
  onOutput: (worker: number, tag: number, bytes: Uint8Array, start: number, length: number) => void;
  /** Workers; default: the number of cores. */
  size?: number;
  /** Bytes per ring (power of two). */
  ringCapacity?: number;
  /** Bytes of each worker's telemetry ring (log lines for the uplink; lossy). */
  telemetryRingBytes?: number;
  /** lane_queue_size: most records in flight per ring. */
  laneQueueSize?: number;
  /** lane_send_timeout for a worker's sends back to the main thread. */
  laneSendTimeoutMs?: number;
  /**
   * A worker that spends longer than this on one batch, or leaves records unread this long, is
   * replaced. Default 5000 ms.
   */
  stallTimeoutMs?: number;
  /**
   * Ring the workers' doorbells once per turn of the event loop instead of once per record: a
   * turn that accepts data from many sockets then wakes each worker once. Adds up to one loop
   * turn of latency; the rack enables it.
   */
  batchDoorbells?: boolean;
  /**
   * The shortest guest time limit any worker will announce (ControlSlot.GuestTimeoutMs); the
   * watchdog runs often enough to enforce it.
   */
  guestTimeoutMs?: number;
  /** Names of the guests the workers run, by the id their guest clock stamps (to name a hung one). */
  guestNames?: string[];
  logger?: Logger;
  /** The worker entry point; the rack's own by default. */
  workerUrl?: URL;
}

/** Anything that can be paused while a ring is full: a net.Socket, a ws stream. */
export interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

export interface WorkerReplaced {
  index: number;
  reason: string;
  /** Records the old worker had accepted and not finished (they are gone). */
  lostRecords: number;
  /** When a guest ran past its time limit: the tag of the record it was handling. */
  timedOutTag?: number;
  /** When a guest ran past its time limit: its name (guestNames), if known. */
  timedOutGuest?: string;
}

interface PendingRecord {
  tag: number;
  payload: Uint8Array;
}

/** One worker position: the worker in it is replaced; the position, its queue and its sources stay. */
interface Slot {
  index: number;
  generation: number;
  worker: Worker;
  inbound: RingProducer;
  outbound: RingConsumer;
  telemetry: RingConsumer;
  control: Int32Array;
  /** Records accepted while the ring was full, in order; written before anything newer. */
  pending: PendingRecord[];
  paused: Set<Pausable>;
  waitingForRoom: boolean;
  /** Written to this turn: its doorbell rings at the end of the turn (batchDoorbells). */
  toRing: boolean;
  lastBeat: number;
  lastBeatAt: number;
  stopping: boolean;
  exited: boolean;
  /** Set once the worker said it is ready; until then ready() alone reports how its start ended. */
  started: boolean;
  /** Replacements in a row that failed to start: they space the next try. */
  failedStarts: number;
  epochMs: number;
}

const OUTPUT_BATCH = 1024;
const DEFAULT_TELEMETRY_RING_BYTES = 256 * 1024;
const utf8 = new TextDecoder();
const WATCHDOG_MIN_MS = 10;
/** After a replacement fails to start, the next try waits this long, doubling to the cap. */
const RESTART_DELAY_MS = 100;
const RESTART_DELAY_MAX_MS = 5000;

/**
 * N worker threads, each joined to the main thread by an inbound and an outbound ring. The main
 * thread only moves bytes: send() copies a record into the owning worker's ring; outputs arrive
 * through onOutput when a ring's doorbell fires. A supervisor replaces crashed or stalled workers.
 */
export class WorkerPool extends EventEmitter {
  readonly size: number;
  private readonly slots: Slot[] = [];
  private readonly options: WorkerPoolOptions;
  private readonly log: Logger;
  private readonly handlerUrl: string;
  private readonly stallTimeoutMs: number;
  private readonly visitOutput: RecordVisitor[] = [];
  private watchdog: NodeJS.Timeout | undefined;
  private closed = false;
  private replacements = 0;
  /** What new workers boot with: the options given, or the last reconfigure()'s. */
  private handlerOptions: unknown;
  private guestNames: string[] | undefined;
  private ringScheduled = false;
  /**
   * Rings the doorbells of the slots written to this turn. One function for the pool's life and
   * a flag per slot, instead of a closure per turn (5-6% of what the main thread allocated at
   * 50k calls/s).
   */
  private readonly ringDoorbells = () => {
    this.ringScheduled = false;
    for (const slot of this.slots) {
      if (!slot.toRing) continue;
      slot.toRing = false;
      slot.inbound.announce();
    }
  };
  /** Telemetry lines left in the rings of replaced workers. */
  private telemetryCarried: string[] = [];
  /** What replaced workers had counted in their control words (by ControlSlot): totals outlive a worker. */
  private readonly retiredCounts = new Float64Array(CONTROL_BYTES / 4);

  constructor(options: WorkerPoolOptions) {
    super();
    this.options = options;
    this.size = options.size ?? availableParallelism();
    if (!Number.isInteger(this.size) || this.size < 1) throw new RangeError(`pool size must be a positive integer, got ${this.size}`);
    this.log = options.logger ?? pino({ name: 'fluxrig.pool' });
    this.handlerUrl = String(options.handler instanceof URL ? options.handler : new URL(options.handler, `file://${process.cwd()}/`));
    this.stallTimeoutMs = options.stallTimeoutMs ?? 5000;
    this.handlerOptions = options.handlerOptions;
    this.guestNames = options.guestNames;
  }

  /** Starts every worker; resolves when all are ready to take records. */
  async start(): Promise<void> {
    const starting: Promise<void>[] = [];
    for (let i = 0; i < this.size; i++) {
      this.visitOutput.push((tag, bytes, start, length) => this.options.onOutput(i, tag, bytes, start, length));
      const slot = this.spawn(i, 0);
      this.slots.push(slot);
      this.scheduleOutput(slot);
      starting.push(this.ready(slot));
    }
    // A ref'd timer: keeps the process alive while the pool is open (a pending Atomics.waitAsync
    // does not, nodejs/node#61941) and drives the supervisor's stall checks.
    const guestBound = this.options.guestTimeoutMs === undefined ? Infinity : this.options.guestTimeoutMs / 2;
    const period = Math.max(WATCHDOG_MIN_MS, Math.min(250, Math.floor(this.stallTimeoutMs / 4), Math.floor(guestBound)));
    this.watchdog = setInterval(() => this.checkStalls(), period);
    try {
      await Promise.all(starting);
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** The worker that owns `key`. */
  workerFor(key: number | string): number {
    return workerForKey(key, this.size);
  }

  /**
   * Copies one record into worker `index`'s inbound ring. Returns false when the ring is full;
   * nothing is written then. Use sendOrPause to have the pool hold the record and pause its source.
   */
  send(index: number, tag: number, payload: Uint8Array): boolean {
    const slot = this.slot(index);
    if (slot.pending.length > 0) return false; // order: older held records go first
    if (!slot.inbound.tryWrite(tag, payload)) return false;
    this.wrote(slot);
    return true;
  }

  /** With batched doorbells, remembers to ring this worker at the end of the turn. */
  private wrote(slot: Slot): void {
    if (!this.options.batchDoorbells) return;
    slot.toRing = true;
    if (this.ringScheduled) return;
    this.ringScheduled = true;
    setImmediate(this.ringDoorbells);
  }

  /**
   * Sends, or when the ring is full: keeps the record (it is already accepted and must not be
   * lost), pauses `source`, and resumes it once everything held is in the ring. Memory stays
   * bounded by what a paused source had already delivered.
   */
  sendOrPause(index: number, tag: number, payload: Uint8Array, source: Pausable): void {
    const slot = this.slot(index);
    if (slot.pending.length === 0 && slot.inbound.tryWrite(tag, payload)) return this.wrote(slot);
    slot.pending.push({ tag, payload });
    if (!slot.paused.has(source)) {
      slot.paused.add(source);
      source.pause();
    }
    this.awaitRoom(slot);
  }

  /** The largest record a ring of this pool takes. */
  get maxRecordBytes(): number {
    return this.slots[0]?.inbound.maxRecordBytes ?? Infinity;
  }

  /** Records waiting in the pool (not yet in a ring) for worker `index`. */
  heldRecords(index: number): number {
    return this.slot(index).pending.length;
  }

  stats(): { workers: number; replacements: number; handled: number[]; handlerErrors: number[]; held: number[] } {
    return {
      workers: this.size,
      replacements: this.replacements,
      handled: this.slots.map((s) => Atomics.load(s.control, ControlSlot.Handled)),
      handlerErrors: this.slots.map((s) => Atomics.load(s.control, ControlSlot.HandlerErrors)),
      held: this.slots.map((s) => s.pending.length),
    };
  }

  /** Telemetry lines waiting in the workers' telemetry rings. */
  telemetryPending(): number {
    let n = this.telemetryCarried.length;
    for (const slot of this.slots) n += slot.telemetry.pendingRecords();
    return n;
  }

  /** Takes up to `max` telemetry lines, worker by worker. */
  takeTelemetry(max: number): string[] {
    const lines = this.telemetryCarried.splice(0, max);
    for (const slot of this.slots) {
      if (lines.length >= max) break;
      slot.telemetry.drain((_tag, bytes, start, length) => lines.push(utf8.decode(bytes.subarray(start, start + length))), max - lines.length);
    }
    return lines;
  }

  /** Telemetry lines the workers could not write (their ring was full) since the pool started. */
  telemetryDropped(): number {
    return this.countedSinceStart(ControlSlot.TelemetryDropped);
  }

  /** Local log lines the workers dropped (their log output could not keep up) since the pool started. */
  localLogDropped(): number {
    return this.countedSinceStart(ControlSlot.LocalLogDropped);
  }

  /** A control-word counter summed over the workers, the replaced ones included. */
  private countedSinceStart(word: number): number {
    let n = this.retiredCounts[word]!;
    for (const slot of this.slots) n += Atomics.load(slot.control, word);
    return n;
  }

  /** Sends one record to every worker (KV changes, configuration). Full rings hold it for later. */
  broadcast(tag: number, payload: Uint8Array): void {
    for (const slot of this.slots) {
      if (slot.pending.length === 0 && slot.inbound.tryWrite(tag, payload)) {
        this.wrote(slot);
        continue;
      }
      slot.pending.push({ tag, payload });
      this.awaitRoom(slot);
    }
  }

  /**
   * Hands every worker new handler options, to take up between two records: each gets them by
   * message (large values such as compiled modules clone cheaply that way), then the record
   * (tag, payload) in its ring, which its handler answers by taking the options
   * (WorkerContext.takeOptions). Every record before it in that ring is handled with the old
   * options, every record after it with the new. A worker that replaces one later boots with them.
   */
  reconfigure(handlerOptions: unknown, tag: number, payload: Uint8Array, guestNames?: string[]): void {
    this.handlerOptions = handlerOptions;
    if (guestNames !== undefined) this.guestNames = guestNames;
    for (const slot of this.slots) slot.worker.postMessage({ type: 'options', options: handlerOptions } satisfies WorkerControl);
    this.broadcast(tag, payload);
  }

  /** The current worker thread in position `index` (it changes when replaced). */
  threadId(index: number): number {
    return this.slot(index).worker.threadId;
  }

  /**
   * Graceful stop: held records are written, every worker finishes what its ring holds, outputs
   * are delivered, then the threads exit. Nothing accepted is dropped.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.watchdog);
    await Promise.all(
      this.slots.map(async (slot) => {
        while (slot.pending.length > 0 && !slot.exited) {
          this.flushPending(slot);
          const first = slot.pending[0];
          if (first !== undefined && slot.inbound.armRoomDoorbell(first.payload.length)) await slot.inbound.waitForRoomAsync();
        }
        slot.stopping = true;
        // A worker that already exited (it failed to start) has no 'exit' event left to wait for.
        if (!slot.exited) {
          const exited = once(slot.worker, 'exit');
          Atomics.store(slot.control, ControlSlot.Stop, 1);
          slot.inbound.wakeConsumer();
          await exited;
        }
        this.drainOutput(slot);
      }),
    );
  }

  private slot(index: number): Slot {
    const slot = this.slots[index];
    if (slot === undefined) throw new RangeError(`no worker ${index} (pool of ${this.size})`);
    return slot;
  }

  private spawn(index: number, generation: number, carry?: Slot): Slot {
    const inbound = createRing({ capacity: this.options.ringCapacity ?? DEFAULT_CAPACITY, maxRecords: this.options.laneQueueSize ?? DEFAULT_MAX_RECORDS });
    const outbound = createRing({ capacity: this.options.ringCapacity ?? DEFAULT_CAPACITY, maxRecords: this.options.laneQueueSize ?? DEFAULT_MAX_RECORDS });
    const telemetry = createRing({ capacity: this.options.telemetryRingBytes ?? DEFAULT_TELEMETRY_RING_BYTES });
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    const epochMs = Date.now();
    const boot: WorkerBootData = {
      epochMs,
      index,
      generation,
      inbound,
      outbound,
      telemetry,
      control,
      handler: this.handlerUrl,
      handlerOptions: this.handlerOptions,
      laneSendTimeoutMs: this.options.laneSendTimeoutMs ?? DEFAULT_LANE_SEND_TIMEOUT_MS,
    };
    const worker = new Worker(this.options.workerUrl ?? DEFAULT_WORKER, { workerData: boot, name: `fluxrig-worker-${index}` });
    const slot: Slot = {
      index,
      generation,
      worker,
      inbound: this.producer(inbound),
      outbound: new RingConsumer(outbound),
      telemetry: new RingConsumer(telemetry),
      control: new Int32Array(control),
      pending: carry?.pending ?? [],
      paused: carry?.paused ?? new Set(),
      waitingForRoom: false,
      toRing: false,
      lastBeat: 0,
      lastBeatAt: Date.now(),
      stopping: false,
      exited: false,
      started: false,
      failedStarts: 0,
      epochMs,
    };
    worker.on('error', (err) => {
      this.log.error({ worker: index, generation, err }, 'worker failed');
    });
    worker.on('exit', (code) => {
      slot.exited = true;
      // A worker that failed to start may exit before its 'failed' message has been handled (the
      // exit drains it in the same turn): that is ready()'s to report, not a crash to replace.
      if (this.slots[index] === slot && slot.started && !slot.stopping && !this.closed) this.replace(slot, `exited with code ${code}`);
    });
    return slot;
  }

  private producer(ring: SharedArrayBuffer): RingProducer {
    const producer = new RingProducer(ring);
    producer.deferWake = this.options.batchDoorbells ?? false;
    return producer;
  }

  private ready(slot: Slot): Promise<void> {
    return new Promise((resolve, reject) => {
      const onMessage = (event: WorkerEvent) => {
        if (event.type === 'ready') {
          cleanup();
          slot.started = true;
          resolve();
        } else if (event.type === 'failed') {
          cleanup();
          reject(new Error(`worker ${slot.index} failed to start: ${event.message}`));
        }
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`worker ${slot.index} exited with code ${code} before it was ready`));
      };
      const cleanup = () => {
        slot.worker.off('message', onMessage);
        slot.worker.off('exit', onExit);
      };
      slot.worker.on('message', onMessage);
      slot.worker.on('exit', onExit);
    });
  }

  /**
   * Drains a worker's outbound ring, then sleeps on its doorbell. One promise per wake-up, none
   * per record; a long backlog yields to the event loop between batches.
   */
  private scheduleOutput(slot: Slot): void {
    const run = () => {
      if (this.slots[slot.index] !== slot) return; // replaced: replace() drained it one last time
      const n = this.drainOutput(slot);
      if (slot.stopping && slot.worker.threadId < 0) return;
      if (n >= OUTPUT_BATCH || !slot.outbound.armDoorbell()) {
        setImmediate(run);
        return;
      }
      slot.outbound.sleepAsync().then(run, run);
    };
    run();
  }

  private drainOutput(slot: Slot): number {
    const visit = this.visitOutput[slot.index]!;
    try {
      return slot.outbound.drain(visit, OUTPUT_BATCH);
    } catch (err) {
      this.log.error({ worker: slot.index, err }, 'output handler failed');
      return 1;
    }
  }

  private awaitRoom(slot: Slot): void {
    if (slot.waitingForRoom) return;
    const first = slot.pending[0];
    if (first === undefined) return;
    if (!slot.inbound.armRoomDoorbell(first.payload.length)) {
      queueMicrotask(() => this.flushPending(slot));
      return;
    }
    slot.waitingForRoom = true;
    slot.inbound.waitForRoomAsync().then(() => {
      slot.waitingForRoom = false;
      if (this.slots[slot.index] === slot) this.flushPending(slot);
    });
  }

  private flushPending(slot: Slot): void {
    let written = 0;
    for (const record of slot.pending) {
      if (!slot.inbound.tryWrite(record.tag, record.payload)) break;
      written++;
    }
    if (written > 0) {
      slot.pending.splice(0, written);
      this.wrote(slot);
    }
    if (slot.pending.length > 0) {
      this.awaitRoom(slot);
      return;
    }
    for (const source of slot.paused) source.resume();
    slot.paused.clear();
  }

  private checkStalls(): void {
    const now = Date.now();
    for (const slot of this.slots) {
      if (slot.stopping) continue;
      const guestSince = Atomics.load(slot.control, ControlSlot.GuestSince);
      const guestLimit = Atomics.load(slot.control, ControlSlot.GuestTimeoutMs);
      if (guestSince !== 0 && guestLimit > 0) {
        const running = now - (slot.epochMs + guestSince - 1);
        if (running > guestLimit) {
          const tag = Atomics.load(slot.control, ControlSlot.GuestTag);
          const guest = this.guestNames?.[Atomics.load(slot.control, ControlSlot.GuestId) - 1];
          const who = guest === undefined ? 'a guest' : `gear ${guest}`;
          this.replace(slot, `${who} ran ${running} ms, past its timeout_ms of ${guestLimit}`, tag, guest);
          continue;
        }
      }
      const busy = slot.inbound.consumerBusyMs(now);
      if (busy > this.stallTimeoutMs) {
        this.replace(slot, `stuck for ${busy} ms in one batch (stall timeout ${this.stallTimeoutMs} ms)`);
        continue;
      }
      // A worker inside a batch is judged by the rule above; this one catches a worker that is
      // not draining at all (its event loop blocked elsewhere).
      const beat = slot.inbound.consumerBeat();
      if (busy > 0 || beat !== slot.lastBeat || slot.inbound.pendingRecords() === 0) {
        slot.lastBeat = beat;
        slot.lastBeatAt = now;
      } else if (now - slot.lastBeatAt > this.stallTimeoutMs) {
        this.replace(slot, `left ${slot.inbound.pendingRecords()} records unread for ${now - slot.lastBeatAt} ms`);
      }
    }
  }

  /**
   * Swaps in a fresh worker with fresh rings. Output the old one finished is still delivered;
   * records it held and had not finished are counted and logged as lost; records the pool held
   * for it go to the new worker.
   */
  private replace(old: Slot, reason: string, timedOutTag?: number, timedOutGuest?: string): void {
    if (this.closed || this.slots[old.index] !== old) return;
    old.stopping = true;
    const lostRecords = old.inbound.pendingRecords();
    void old.worker.terminate();
    this.drainOutput(old);
    old.telemetry.drain((_tag, bytes, start, length) => this.telemetryCarried.push(utf8.decode(bytes.subarray(start, start + length))));
    for (const word of [ControlSlot.TelemetryDropped, ControlSlot.LocalLogDropped]) this.retiredCounts[word]! += Atomics.load(old.control, word);
    const fresh = this.spawn(old.index, old.generation + 1, old);
    this.slots[old.index] = fresh;
    this.scheduleOutput(fresh);
    this.replacements++;
    const event: WorkerReplaced = { index: old.index, reason, lostRecords };
    if (timedOutTag !== undefined) event.timedOutTag = timedOutTag;
    if (timedOutGuest !== undefined) event.timedOutGuest = timedOutGuest;
    this.log.warn({ worker: old.index, generation: fresh.generation, reason, lostRecords, gear: timedOutGuest }, 'worker replaced');
    // Announced at once, so owners can fail what the old worker held without waiting for the new one.
    this.emit('worker-replaced', event);
    fresh.failedStarts = old.started ? 0 : old.failedStarts + 1;
    this.ready(fresh).then(
      () => {
        this.flushPending(fresh);
        this.emit('worker-ready', { index: fresh.index, generation: fresh.generation });
      },
      (err: unknown) => {
        // Records held for this position wait in the pool; the supervisor keeps trying, slower
        // each time, instead of leaving the position dead or throwing from an event.
        const delayMs = Math.min(RESTART_DELAY_MAX_MS, RESTART_DELAY_MS * 2 ** fresh.failedStarts);
        this.log.error({ worker: fresh.index, generation: fresh.generation, err, retryInMs: delayMs }, 'replacement worker failed to start');
        setTimeout(() => this.replace(fresh, `its replacement failed to start: ${err instanceof Error ? err.message : String(err)}`), delayMs).unref();
      },
    );
  }
}
