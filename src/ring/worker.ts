// The worker side of the data plane: drain the inbound ring, hand each record to the handler,
// sleep on the ring's doorbell when there is nothing to do.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { HotLane } from './lane.js';
import { RingConsumer, RingProducer } from './ring.js';
import {
  CONTROL_BYTES,
  ControlSlot,
  type HandlerFactory,
  type RecordHandler,
  type WorkerBootData,
  type WorkerControl,
  type WorkerEvent,
} from './pool-protocol.js';

const boot = workerData as WorkerBootData;
const inbound = new RingConsumer(boot.inbound);
const control = new Int32Array(boot.control, 0, CONTROL_BYTES / 4);
const out = new HotLane(`worker-${boot.index}.out`, boot.outbound, boot.laneSendTimeoutMs);

/** Records per drain call: the release (one atomic store) is amortised over a batch. */
const BATCH = 256;
/**
 * While busy, return to the event loop at least this often so timers, promises and control
 * messages run: a worker that only ever drained would starve them.
 */
const SLICE_MS = 4;
/**
 * When the ring empties, block this long on the doorbell (a futex wait: no CPU) before handing
 * the wait to Atomics.waitAsync. A burst that resumes within it is picked up without a trip
 * through the event loop; timers are delayed by at most this much.
 */
const BLOCKING_WAIT_MS = 1;

/**
 * Before sleeping, look at the ring this many more times (a few microseconds). In a pipeline the
 * next record is usually that close behind, and catching it saves two futex calls (sleep and
 * wake). It is bounded, so an idle worker still sleeps at once.
 */
const SPIN_CHECKS = 1024;

function post(event: WorkerEvent): void {
  parentPort!.postMessage(event);
}

/** The newest options the pool sent; nothing listens on parentPort, so messages wait for this. */
function takeOptions(): unknown {
  let latest: unknown;
  for (let m = receiveMessageOnPort(parentPort!); m !== undefined; m = receiveMessageOnPort(parentPort!)) {
    const control = m.message as WorkerControl;
    if (control.type === 'options') latest = control.options;
  }
  return latest;
}

let handle: RecordHandler;
let handled = 0;

function visit(tag: number, bytes: Uint8Array, start: number, length: number): void {
  handled++;
  try {
    handle(tag, bytes, start, length);
  } catch (err) {
    Atomics.add(control, ControlSlot.HandlerErrors, 1);
    // The record is consumed either way; the error is reported, never fatal to the worker.
    console.error(`fluxrig worker ${boot.index}: handler failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }
}

function stopRequested(): boolean {
  return Atomics.load(control, ControlSlot.Stop) !== 0;
}

function finish(): void {
  inbound.wake();
  // Drain whatever was accepted before the stop, then leave.
  while (drainBatch() > 0);
  Atomics.store(control, ControlSlot.Handled, handled);
  process.exit(0);
}

/** Drains one batch with the outbound doorbell deferred, then rings it once. */
function drainBatch(): number {
  out.producer.deferWake = true;
  try {
    return inbound.drain(visit, BATCH);
  } finally {
    out.producer.deferWake = false;
    out.producer.announce();
  }
}

function pump(): void {
  const sliceEnd = Date.now() + SLICE_MS;
  for (;;) {
    if (drainBatch() > 0) {
      Atomics.store(control, ControlSlot.Handled, handled);
      if (Date.now() >= sliceEnd) {
        setImmediate(pump);
        return;
      }
      continue;
    }
    if (!inbound.waitBriefly(SPIN_CHECKS)) continue;
    // The doorbell is armed before the last look at the stop flag: the pool sets the flag
    // before it rings, so either it sees us asleep and rings, or we see the flag.
    if (!inbound.armDoorbell()) continue;
    if (stopRequested()) return finish();
    if (inbound.sleep(BLOCKING_WAIT_MS) !== 'timed-out') continue;
    // Still idle: wait on the doorbell without blocking, so the event loop runs meanwhile.
    if (!inbound.armDoorbell()) continue;
    if (stopRequested()) return finish();
    inbound.sleepAsync().then(pump, pump);
    return;
  }
}

async function main(): Promise<void> {
  const mod = (await import(boot.handler)) as { createHandler?: HandlerFactory };
  if (typeof mod.createHandler !== 'function') {
    throw new Error(`handler module ${boot.handler} does not export createHandler`);
  }
  handle = await mod.createHandler({
    index: boot.index,
    generation: boot.generation,
    options: boot.handlerOptions,
    out,
    control,
    telemetry: new RingProducer(boot.telemetry),
    epochMs: boot.epochMs,
    takeOptions,
  });
  // A pending Atomics.waitAsync does not keep a thread's event loop alive (nodejs/node#61941):
  // without a ref'd handle an idle worker would simply exit. finish() ends the thread explicitly.
  setInterval(() => {}, 0x7fffffff);
  post({ type: 'ready' });
  pump();
}

main().catch((err: unknown) => {
  post({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
