import type { Logger } from 'pino';
import { encodeCbor, isCborMap } from '../../cbor/profile.js';
import { CborProfileError, decodeStrict, describeValue } from '../../cbor/strict.js';
import { CborWriter } from '../../cbor/writer.js';
import { isPlainFluxMsg } from '../../fluxmsg/check.js';
import { encodeFluxMsg, type FluxMsgLayout, fluxMsgFromValue, writeFluxMsg } from '../../fluxmsg/codec.js';
import type { FluxMsg } from '../../fluxmsg/fluxmsg.js';
import { WASM_DEFAULTS, type WasmGearConfig } from './config.js';
import type { GearLineWriter } from '../gear.js';
import { appendEntries, type Span } from './appended.js';
import { GuestTrap } from './errors.js';
import { GuestExit, WASI_MODULE, WasiHost } from './wasi.js';

/** The guest's output cannot be read (out of bounds): a failure of the gear, not a trap. */
class OutputError extends GuestTrap {}
import type { PreparedModule } from './loader.js';

/** Read and write access to the rack's KV store, synchronous for the guest. */
export interface KvAccess {
  get(key: string): Uint8Array | undefined;
  put(key: string, value: Uint8Array): void;
}

export interface HttpRequest {
  method: string;
  url: string;
  body?: Uint8Array;
}
export interface HttpResponse {
  status: number;
  body: Uint8Array;
  error?: string;
}
/** A blocking HTTP client (the guest's call is synchronous). */
export interface SyncHttpClient {
  request(req: HttpRequest, timeoutMs: number): HttpResponse;
}

export interface GearServices {
  logger?: Logger;
  /** The gear's lines without the logger's per-line work (WorkerGearContext.lineWriter). */
  lines?: GearLineWriter;
  kv?: KvAccess;
  http?: SyncHttpClient;
  /** Messages the guest sends with flux_emit. */
  emit?: (msg: FluxMsg) => void;
  /** Told when a guest call starts and ends, so a watchdog can time it. */
  guestClock?: { enter(): void; leave(): void };
}

/**
 * How a gear failed, as opposed to rejecting a message on business grounds: a trap (an abort, an
 * unreachable), memory past its limit, output the host cannot read, or a guest past timeout_ms.
 */
export type FailureKind = 'trap' | 'memory' | 'output' | 'timeout' | 'exit';

/**
 * What a gear decided for one message. `reject` is the gear's own business decision (its reason
 * goes to the caller); `fail` is the gear breaking (the caller gets a generic 5xx naming the gear;
 * `detail`, with pointers and source positions, is for the log only).
 */
export type GearOutcome =
  | { status: 'ok'; msgs: FluxMsg[] }
  | { status: 'reject'; reason: string }
  | { status: 'drop' }
  | { status: 'fail'; kind: FailureKind; detail: string };

/**
 * What a gear decided for one encoded message (processEncoded): its messages as the bytes the
 * guest wrote, checked to be fluxMsg, for a caller that passes them on without reading them.
 */
export type EncodedOutcome = { status: 'ok'; encoded: Uint8Array[] } | Exclude<GearOutcome, { status: 'ok' }>;

/** What a guest call gave, before it is read: its output, its input with entries appended, or an outcome already. */
type CallResult = Buffer | typeof APPENDED | Exclude<GearOutcome, { status: 'ok' }>;
const APPENDED = 'appended';

export const Status = { Ok: 0, Reject: 1, Drop: 2 } as const;

/** A failure's detail reads like memory exhaustion (a grow past the limit, or the runtime's own OOM abort). */
const MEMORY_FAILURE = /out of memory|maximum memory/i;
const WASM_PAGE_BYTES = 65536;
const NEAR_MEMORY_LIMIT = 0.75;

export interface GearStats {
  processed: number;
  ok: number;
  rejected: number;
  /** Messages the gear failed on (traps, memory, unreadable output). */
  failed: number;
  dropped: number;
  traps: number;
  emitted: number;
  logsSuppressed: number;
}

type Alloc = (len: number) => number;
type Free = (ptr: number, len: number) => void;
type Entry = (ptr: number, len: number) => bigint;

const LOG_LEVELS = ['debug', 'debug', 'info', 'warn', 'error'] as const;
/** pino's numeric values of LOG_LEVELS. */
const LOG_LEVEL_VALUES = [20, 20, 30, 40, 50] as const;
const utf8 = new TextDecoder();
const SPLIT64 = new BigUint64Array(1);
const SPLIT32 = new Uint32Array(SPLIT64.buffer); // little-endian: [low, high]
/** The message handed to a guest is written here first (one per thread: it is copied into guest memory before the guest runs, so a nested call can reuse it). */
const guestInput = new CborWriter();
const guestInputSpan: Span = { bytes: new Uint8Array(0), view: new DataView(new ArrayBuffer(0)), at: 0 };
/** guestInput's bytes, with a view made when its buffer is new (at first use, and when it grows). */
function inputSpan(): Span {
  const buf = guestInput.buf;
  if (guestInputSpan.bytes !== buf) {
    guestInputSpan.bytes = buf;
    guestInputSpan.view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  }
  return guestInputSpan;
}
/** Messages written into guestInput so far: tells a guest's caller whether a nested call wrote over its input. */
let guestInputs = 0;
/** Where meta and data are in guestInput's message. */
const guestInputLayout: FluxMsgLayout = {
  metaHead: 0,
  metaEntries: 0,
  metaCount: 0,
  metaEnd: 0,
  dataHead: 0,
  dataEntries: 0,
  dataCount: 0,
  dataEnd: 0,
  end: 0,
  exact: false,
};

/**
 * One instance of a wasm gear: fluxrig's ABI on the plain WebAssembly API. The host writes the
 * CBOR fluxMsg into guest memory (alloc), calls the entrypoint, reads the output it points to,
 * and frees both buffers. A guest that traps is re-instantiated and the message rejected; the
 * gear goes on.
 */
export class WasmGear {
  readonly name: string;
  private guestLogger: Logger | undefined;
  readonly stats: GearStats = { processed: 0, ok: 0, rejected: 0, failed: 0, dropped: 0, traps: 0, emitted: 0, logsSuppressed: 0 };
  private readonly prepared: PreparedModule;
  private readonly config: WasmGearConfig;
  private readonly services: GearServices;
  private readonly allowHosts: Set<string>;
  private memory!: WebAssembly.Memory;
  private u8!: Uint8Array;
  private memView!: DataView;
  private alloc!: Alloc;
  private free!: Free;
  private entry!: Entry;
  /** Optional export: lets an arena gear drop the previous message's allocations. */
  private reset: (() => void) | undefined;
  /** The guest's WASI, for a module that imports it (one per instance: open files die with it). */
  private wasi: WasiHost | undefined;
  // Token bucket for log lines.
  private logTokens: number;
  private logRefilledAt = Date.now();

  constructor(name: string, prepared: PreparedModule, config: WasmGearConfig, services: GearServices = {}) {
    this.name = name;
    this.prepared = prepared;
    this.config = config;
    this.services = services;
    this.allowHosts = new Set((config.http_allow_hosts ?? []).map((h) => h.toLowerCase()));
    this.logTokens = config.log_rate_per_s ?? WASM_DEFAULTS.log_rate_per_s;
    this.instantiate();
  }

  private instantiate(): void {
    const env: Record<string, WebAssembly.ImportValue> = {
      abort: (msg: number, file: number, line: number, col: number) => {
        throw new GuestTrap(`aborted: ${this.readAsString(msg) || 'abort'} at ${this.readAsString(file)}:${line}:${col}`);
      },
      seed: () => Date.now(),
      log: (level: number, ptr: number, len: number) => this.log(level, ptr, len),
      flux_emit: (ptr: number, len: number) => this.emit(ptr, len),
      flux_kv_get: (ptr: number, len: number) => this.kvGet(ptr, len),
      flux_kv_put: (kp: number, kl: number, vp: number, vl: number) => this.kvPut(kp, kl, vp, vl),
      flux_req_http: (ptr: number, len: number) => this.http(ptr, len),
    };
    if (this.prepared.importedMemoryPages !== undefined) {
      env.memory = new WebAssembly.Memory({ initial: this.prepared.importedMemoryPages, maximum: this.prepared.memoryLimitPages });
    }
    const imports: WebAssembly.Imports = { env };
    this.wasi?.close();
    this.wasi = undefined;
    if (this.prepared.wasi !== undefined) {
      this.wasi = new WasiHost({
        ...this.prepared.wasi,
        memory: () => this.memory,
        // stdout lines are info, stderr lines warn: the gear's own log, rate-limited the same.
        line: (fd, text) => {
          if (this.admitLine()) this.writeLine(fd === 1 ? 2 : 3, text);
        },
      });
      imports[WASI_MODULE] = this.wasi.imports() as unknown as Record<string, WebAssembly.ImportValue>;
    }
    const instance = new WebAssembly.Instance(this.prepared.module, imports);
    const exports = instance.exports;
    this.memory = (env.memory as WebAssembly.Memory | undefined) ?? (exports.memory as WebAssembly.Memory);
    this.alloc = exports.alloc as Alloc;
    this.free = exports.free as Free;
    this.entry = exports[this.config.entrypoint ?? WASM_DEFAULTS.entrypoint] as Entry;
    this.reset = typeof exports.reset === 'function' ? (exports.reset as () => void) : undefined;
    this.u8 = new Uint8Array(this.memory.buffer);
    this.memView = new DataView(this.memory.buffer);
    // A WASI reactor (C's wasi-libc) runs its constructors once, before any call.
    if (typeof exports._initialize === 'function') (exports._initialize as () => void)();
  }

  /** The memory view, renewed when the guest grew its memory (the old buffer is detached). */
  private view(): Uint8Array {
    // Growing memory detaches the old buffer, and a view of a detached buffer has length 0:
    // cheaper to test than fetching memory.buffer (a call into the engine) on every access.
    if (this.u8.length === 0) {
      this.u8 = new Uint8Array(this.memory.buffer);
      this.memView = new DataView(this.memory.buffer);
    }
    return this.u8;
  }

  /**
   * Runs the gear on one message. The gear takes `msg` over: when the guest returns it with
   * entries added, the outcome's message is `msg` itself with those entries.
   */
  process(msg: FluxMsg): GearOutcome {
    // Written into this thread's scratch buffer and copied from there into guest memory.
    writeFluxMsg(guestInput.reset(), msg, guestInputLayout);
    const result = this.run(guestInput.view(), msg, ++guestInputs);
    if (result === APPENDED) return this.counted({ status: 'ok', msgs: [msg] });
    return result instanceof Uint8Array ? this.counted(this.interpret(result)) : result;
  }

  /**
   * Runs the gear on an encoded fluxMsg; its messages come back encoded. A message the guest
   * wrote in the common encoding is checked in place of being decoded (about a quarter of the
   * cost); any other output is decoded, and re-encoded when it holds messages.
   */
  processEncoded(input: Uint8Array): EncodedOutcome {
    // No message given, none to append to: the output is read.
    const result = this.run(input, undefined, 0) as Exclude<CallResult, typeof APPENDED>;
    if (!(result instanceof Uint8Array)) return result;
    if (isPlainFluxMsg(result)) return this.counted({ status: 'ok', encoded: [result] });
    const outcome = this.interpret(result);
    return this.counted(outcome.status === 'ok' ? { status: 'ok', encoded: outcome.msgs.map((m) => encodeFluxMsg(m)) } : outcome);
  }

  /** Counts an outcome in the gear's stats. */
  private counted<O extends GearOutcome | EncodedOutcome>(outcome: O): O {
    if (outcome.status === 'ok') this.stats.ok++;
    else if (outcome.status === 'reject') this.stats.rejected++;
    else if (outcome.status === 'fail') this.stats.failed++;
    else this.stats.dropped++;
    return outcome;
  }

  /**
   * Calls the guest. `given`: the message `input` encodes, written into guestInput as the
   * `written`th input of this thread (process() only). A trap or a drop is counted here; an
   * output is counted by whoever reads it.
   */
  private run(input: Uint8Array, given: FluxMsg | undefined, written: number): CallResult {
    this.stats.processed++;
    let output: Buffer | null = null;
    let appended = false;
    try {
      if (this.call(input)) {
        // Read against the input only while guestInput still holds it: a message the guest
        // emitted may have run through another gear of this thread, which wrote its own input there.
        appended = given !== undefined && written === guestInputs && appendEntries(given, inputSpan(), guestInputLayout, this.outputSpan());
        if (!appended) output = this.copyOutput();
        this.free(this.outPtr, this.outLen);
      }
    } catch (err) {
      this.stats.traps++;
      this.stats.failed++;
      // A guest whose memory.grow fails traps in its own runtime (AssemblyScript hits unreachable);
      // the host never sees the failed grow. Memory within a quarter of the ceiling at the trap
      // is taken as the cause: the grow that failed was asking for more than was left.
      const limitBytes = (this.config.memory_limit_pages ?? WASM_DEFAULTS.memory_limit_pages) * WASM_PAGE_BYTES;
      const used = this.memory.buffer.byteLength;
      const atLimit = used >= NEAR_MEMORY_LIMIT * limitBytes;
      const detail = `gear ${this.name} ${err instanceof GuestTrap ? err.message : `trapped: ${(err as Error).message}`} (memory ${used} of ${limitBytes} bytes)`;
      // The guest's state is suspect after a trap: start a fresh instance for the next message.
      this.instantiate();
      const kind = err instanceof GuestExit ? 'exit' : err instanceof OutputError ? 'output' : atLimit || MEMORY_FAILURE.test(detail) ? 'memory' : 'trap';
      return { status: 'fail', kind, detail };
    }
    if (appended) return APPENDED;
    if (output === null) {
      this.stats.dropped++;
      return { status: 'drop' };
    }
    return output;
  }

  /**
   * The ABI round trip alone: in, call, out. Returns a copy of the output bytes, or null when
   * the guest dropped the message. Throws GuestTrap (or a WebAssembly.RuntimeError) on failure.
   */
  invoke(input: Uint8Array): Buffer | null {
    if (!this.call(input)) return null;
    const output = this.copyOutput();
    this.free(this.outPtr, this.outLen);
    return output;
  }

  /** Where the last call's output is in guest memory (valid until it is freed). */
  private outPtr = 0;
  private outLen = 0;

  /**
   * Copies the input in, calls the entrypoint and locates the output (outPtr, outLen; still to
   * be freed). False when the guest dropped the message. Throws GuestTrap (or a
   * WebAssembly.RuntimeError) on failure.
   */
  private call(input: Uint8Array): boolean {
    this.reset?.();
    const len = input.length;
    const inPtr = this.alloc(len);
    this.view().set(input, inPtr);
    const clock = this.services.guestClock;
    clock?.enter();
    let packed: bigint;
    try {
      packed = this.entry(inPtr, len);
    } finally {
      clock?.leave();
      // A line printed without its newline is logged with the message that printed it.
      this.wasi?.flush();
    }
    this.free(inPtr, len);
    if (packed === 0n) return false;
    // Split the i64 through a typed array: BigInt shifts and masks allocate and cost several
    // times more than the rest of the call.
    SPLIT64[0] = packed;
    const outLen = SPLIT32[0]!;
    const outPtr = SPLIT32[1]!;
    const mem = this.view();
    if (outPtr === 0 || outPtr + outLen > mem.length) {
      throw new OutputError(`returned an out-of-bounds buffer (ptr ${outPtr}, len ${outLen}, memory ${mem.length} bytes)`);
    }
    this.outPtr = outPtr;
    this.outLen = outLen;
    return true;
  }

  /** A copy of the output the last call located. */
  private copyOutput(): Buffer {
    // Buffer.allocUnsafe takes small buffers from Node's pool; a fresh ArrayBuffer per message
    // (what slice() makes) costs more than the whole rest of the call.
    const output = Buffer.allocUnsafe(this.outLen);
    output.set(this.u8.subarray(this.outPtr, this.outPtr + this.outLen));
    return output;
  }

  /** The output the last call located, in place in guest memory. */
  private outputSpan(): Span {
    const span = this.output;
    span.bytes = this.u8.subarray(this.outPtr, this.outPtr + this.outLen);
    span.view = this.memView;
    span.at = this.outPtr;
    return span;
  }
  private readonly output: Span = { bytes: new Uint8Array(0), view: new DataView(new ArrayBuffer(0)), at: 0 };

  private interpret(output: Uint8Array): GearOutcome {
    let value: unknown;
    try {
      value = decodeStrict(output);
    } catch (err) {
      return {
        status: 'fail',
        kind: 'output',
        detail: `gear ${this.name} returned invalid CBOR: ${err instanceof CborProfileError ? err.message : String(err)}`,
      };
    }
    try {
      if (isCborMap(value) && 'status' in value) {
        const status = value.status;
        if (status === Status.Drop) return { status: 'drop' };
        if (status === Status.Reject) {
          const reason = typeof value.reason === 'string' && value.reason !== '' ? value.reason : 'rejected';
          return { status: 'reject', reason };
        }
        if (status !== Status.Ok || !Array.isArray(value.msgs)) {
          return { status: 'fail', kind: 'output', detail: `gear ${this.name} returned an unknown status ${describeValue(status)}` };
        }
        return { status: 'ok', msgs: value.msgs.map((m) => fluxMsgFromValue(m)) };
      }
      return { status: 'ok', msgs: [fluxMsgFromValue(value)] };
    } catch (err) {
      return { status: 'fail', kind: 'output', detail: `gear ${this.name} returned an invalid message: ${(err as Error).message}` };
    }
  }

  // ---- host functions ----------------------------------------------------------------

  private bytesAt(ptr: number, len: number): Uint8Array {
    const mem = this.view();
    if (ptr < 0 || len < 0 || ptr + len > mem.length) throw new GuestTrap(`passed an out-of-bounds buffer (ptr ${ptr}, len ${len})`);
    return mem.subarray(ptr, ptr + len);
  }

  /** AssemblyScript strings: UTF-16LE, byte length in the 4 bytes before the pointer. */
  private readAsString(ptr: number): string {
    if (ptr === 0) return '';
    const mem = this.view();
    if (ptr < 4 || ptr > mem.length) return '';
    const bytes = new DataView(mem.buffer).getUint32(ptr - 4, true);
    if (ptr + bytes > mem.length) return '';
    return Buffer.from(mem.buffer, ptr, bytes).toString('utf16le');
  }

  /** Copies bytes into guest memory (through its alloc) and returns ptr << 32 | len. */
  private giveToGuest(bytes: Uint8Array): bigint {
    const ptr = this.alloc(bytes.length);
    this.view().set(bytes, ptr);
    // Packed through the typed array, like the entrypoint's result: BigInt arithmetic costs more.
    SPLIT32[0] = bytes.length;
    SPLIT32[1] = ptr;
    return SPLIT64[0]!;
  }

  private log(level: number, ptr: number, len: number): void {
    // Bounds first (a bad buffer traps, suppressed or not); the text is decoded only for a line written.
    const bytes = this.bytesAt(ptr, len);
    if (this.admitLine()) this.writeLine(level, bytes);
  }

  /** The gear's token bucket for log lines: false (and counted) past log_rate_per_s. */
  private admitLine(): boolean {
    const now = Date.now();
    const rate = this.config.log_rate_per_s ?? WASM_DEFAULTS.log_rate_per_s;
    this.logTokens = Math.min(rate, this.logTokens + ((now - this.logRefilledAt) * rate) / 1000);
    this.logRefilledAt = now;
    if (this.logTokens < 1) {
      this.stats.logsSuppressed++;
      return false;
    }
    this.logTokens--;
    return true;
  }

  /** A guest's line: its text, or its UTF-8 bytes as the guest handed them (decoded only if the logger needs a string). */
  private writeLine(level: number, line: string | Uint8Array): void {
    if (this.services.logger === undefined) return;
    const lines = this.services.lines;
    if (this.stats.logsSuppressed === 0 && lines !== undefined) {
      const value = LOG_LEVEL_VALUES[level] ?? 30;
      return typeof line === 'string' ? lines.text(value, line) : lines.utf8(value, line);
    }
    const text = typeof line === 'string' ? line : utf8.decode(line);
    // A child logger carries the gear's name already serialized: a line costs its text only.
    this.guestLogger ??= this.services.logger.child({ gear: this.name });
    // A child keeps the level it was made with: follow the rack's (set by log-level commands).
    if (this.guestLogger.levelVal !== this.services.logger.levelVal) this.guestLogger.level = this.services.logger.level;
    const method = LOG_LEVELS[level] ?? 'info';
    if (this.stats.logsSuppressed === 0) this.guestLogger[method](text);
    else this.guestLogger[method]({ suppressed: this.stats.logsSuppressed }, text);
  }

  private emit(ptr: number, len: number): number {
    try {
      const msg = fluxMsgFromValue(decodeStrict(this.bytesAt(ptr, len), { copyBuffers: true }));
      this.stats.emitted++;
      this.services.emit?.(msg);
      return 0;
    } catch (err) {
      if (err instanceof GuestTrap) throw err;
      this.services.logger?.warn({ gear: this.name, err: (err as Error).message }, 'flux_emit: invalid message');
      return -1;
    }
  }

  /**
   * A KV key from guest memory. A gear asks for the same few keys message after message: the
   * last one is kept, and bytes equal to it give it back without decoding them again.
   */
  private kvKey(ptr: number, len: number): string {
    const bytes = this.bytesAt(ptr, len);
    const last = this.lastKvKeyBytes;
    if (last.length === len) {
      let i = 0;
      while (i < len && bytes[i] === last[i]) i++;
      if (i === len) return this.lastKvKey;
    }
    this.lastKvKey = utf8.decode(bytes);
    this.lastKvKeyBytes = bytes.slice();
    return this.lastKvKey;
  }
  private lastKvKey = '';
  private lastKvKeyBytes = new Uint8Array(0);

  private kvGet(ptr: number, len: number): bigint {
    const key = this.kvKey(ptr, len);
    const value = this.services.kv?.get(key);
    return value === undefined ? 0n : this.giveToGuest(value);
  }

  private kvPut(kp: number, kl: number, vp: number, vl: number): number {
    const key = this.kvKey(kp, kl);
    if (this.services.kv === undefined) return -1;
    this.services.kv.put(key, this.bytesAt(vp, vl).slice());
    return 0;
  }

  private http(ptr: number, len: number): bigint {
    let response: HttpResponse;
    try {
      const req = decodeStrict(this.bytesAt(ptr, len), { copyBuffers: true }) as Record<string, unknown>;
      const url = new URL(String(req.url));
      const method = typeof req.method === 'string' ? req.method.toUpperCase() : 'GET';
      if (!this.allowHosts.has(url.host.toLowerCase()) && !this.allowHosts.has(url.hostname.toLowerCase())) {
        response = { status: 0, body: new Uint8Array(0), error: `host ${url.host} is not in http_allow_hosts` };
      } else if (this.services.http === undefined) {
        response = { status: 0, body: new Uint8Array(0), error: 'no HTTP client in this host' };
      } else {
        const body = req.body instanceof Uint8Array ? req.body : undefined;
        response = this.services.http.request({ method, url: url.href, body }, WASM_DEFAULTS.http_timeout_ms);
      }
    } catch (err) {
      if (err instanceof GuestTrap) throw err;
      response = { status: 0, body: new Uint8Array(0), error: `bad request: ${(err as Error).message}` };
    }
    const map: Record<string, unknown> = { status: response.status, body: response.body };
    if (response.error !== undefined) map.error = response.error;
    return this.giveToGuest(encodeCbor(map));
  }
}
