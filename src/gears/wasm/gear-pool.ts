import { EventEmitter } from 'node:events';
import { pino, type Logger } from 'pino';
import { decodeCbor } from '../../cbor/profile.js';
import { decodeFluxMsg, encodeFluxMsg } from '../../fluxmsg/codec.js';
import type { FluxMsg } from '../../fluxmsg/fluxmsg.js';
import { WorkerPool, type WorkerReplaced } from '../../ring/pool.js';
import { RecordTag, Records } from '../records.js';
import { type KvStore, MemoryKvStore } from '../kv.js';
import { WASM_DEFAULTS, type WasmGearConfig } from './config.js';
import { type FailureKind, type GearOutcome, Status } from './host.js';
import type { PreparedModule } from './loader.js';
import { FAILED, type WasmGearWorkerOptions } from './worker-handler.js';

export interface WasmGearPoolOptions {
  name: string;
  prepared: PreparedModule;
  config: WasmGearConfig;
  /** Workers; default: the number of cores. */
  size?: number;
  kv?: KvStore;
  logger?: Logger;
}

function decodeOutcome(bytes: Uint8Array): GearOutcome {
  const [status, reason, msgs, kind] = decodeCbor(bytes, true) as [number, string | null, Uint8Array[], FailureKind | undefined];
  if (status === Status.Ok) return { status: 'ok', msgs: msgs.map((m) => decodeFluxMsg(m)) };
  if (status === Status.Reject) return { status: 'reject', reason: reason ?? 'rejected' };
  if (status === FAILED) return { status: 'fail', kind: kind ?? 'trap', detail: reason ?? 'failed' };
  return { status: 'drop' };
}

/**
 * One wasm gear on every worker of a pool, with the KV store wired through the rings and the
 * supervisor's guest timeout turned into rejections. process() returns a promise per message:
 * a convenience for tools, tests and benchmarks; the rack's hot path uses the rings directly.
 */
export class WasmGearPool extends EventEmitter {
  readonly pool: WorkerPool;
  readonly kv: KvStore;
  private readonly options: WasmGearPoolOptions;
  private readonly pending = new Map<number, { worker: number; resolve: (o: GearOutcome) => void }>();
  private nextTag = 0;
  private unwatch: (() => void) | undefined;

  constructor(options: WasmGearPoolOptions) {
    super();
    this.options = options;
    this.kv = options.kv ?? new MemoryKvStore();
    const log = options.logger ?? pino({ name: `fluxrig.gear.${options.name}` });
    this.pool = new WorkerPool({
      handler: new URL('./worker-handler.js', import.meta.url),
      handlerOptions: {
        name: options.name,
        prepared: options.prepared,
        config: options.config,
        kvSnapshot: [...this.kv.entries()],
      } satisfies WasmGearWorkerOptions,
      size: options.size,
      guestTimeoutMs: options.config.timeout_ms ?? WASM_DEFAULTS.timeout_ms,
      guestNames: [options.name],
      logger: log,
      onOutput: (worker, tag, bytes, start, length) => this.onOutput(worker, tag, bytes.subarray(start, start + length)),
    });
    this.pool.on('worker-replaced', (event: WorkerReplaced) => this.onReplaced(event));
  }

  async start(): Promise<void> {
    this.unwatch = this.kv.watch((key, value) => this.pool.broadcast(RecordTag.KvSet, Records.kvSet.encode({ key, value: value ?? null })));
    await this.pool.start();
  }

  process(msg: FluxMsg, key?: number | string): Promise<GearOutcome> {
    const tag = this.nextTag;
    this.nextTag = (this.nextTag + 1) & 0x7fffffff;
    const worker = this.pool.workerFor(key ?? tag);
    return new Promise((resolve) => {
      this.pending.set(tag, { worker, resolve });
      if (!this.pool.send(worker, tag, encodeFluxMsg(msg))) {
        this.pending.delete(tag);
        resolve({ status: 'reject', reason: `gear ${this.options.name} is overloaded (its lane is full)` });
      }
    });
  }

  async close(): Promise<void> {
    this.unwatch?.();
    await this.pool.close();
  }

  private onOutput(_worker: number, tag: number, payload: Uint8Array): void {
    if (tag === RecordTag.KvPut) {
      const { key, value } = Records.kvPut.decode(payload);
      if (value === null) this.kv.delete(key);
      else this.kv.put(key, value);
      return;
    }
    if (tag === RecordTag.Emit) {
      const { gear, msg } = Records.emit.decode(payload);
      this.emit('emit', gear, msg);
      return;
    }
    const entry = this.pending.get(tag);
    if (entry === undefined) return;
    this.pending.delete(tag);
    entry.resolve(decodeOutcome(payload));
  }

  /** A replaced worker took its unfinished messages with it: each gets a failure saying why. */
  private onReplaced(event: WorkerReplaced): void {
    for (const [tag, entry] of this.pending) {
      if (entry.worker !== event.index) continue;
      this.pending.delete(tag);
      entry.resolve(
        tag === event.timedOutTag
          ? { status: 'fail', kind: 'timeout', detail: event.reason }
          : { status: 'fail', kind: 'trap', detail: `gear ${this.options.name} unavailable: its worker was restarted (${event.reason})` },
      );
    }
  }
}
