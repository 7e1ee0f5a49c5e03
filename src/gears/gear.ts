import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { Broker, PublishOutcome } from '../fluxar/broker.js';
import type { DescribeDocument } from '../fluxar/describe.js';
import type { Qos } from '../fluxar/pubsub-state.js';
import type { Transport } from '../fluxar/transport.js';
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import type { Lane } from '../ring/lane.js';
import type { Pausable } from '../ring/pool.js';
import type { KvReplica } from './kv.js';
import { type GearManifest, withDefaults } from './manifest.js';
import type { SyncHttpClient } from './wasm/host.js';

/** One gear of a scenario, as configured: what a gear type builds a gear from. */
export interface GearSpec {
  name: string;
  type: string;
  /** Rack (or rack group) the gear is deployed on; undefined: every rack of the scenario. */
  deploy: string | undefined;
  config: Record<string, unknown>;
  labels: Record<string, string>;
  /** "file:line:column" of the gear in its scenario, for messages. */
  at: string;
}

/**
 * A gear type: its manifest, and the factories that build it where it runs. Every type lives in
 * one file of this folder (fluxar.ts, wasm.ts, ...) and is listed in registry.ts; validation,
 * `fluxrig gears list|doc`, the JSON Schema and the rack all read the registry.
 *
 * A gear's life in a rack:
 * 1. prepare (main thread, before the workers start): whatever must be read or loaded once (a
 *    Wasm module, secret files), returned as structured-cloneable data for every worker;
 * 2. worker (in each worker): builds its input from the spec and what prepare returned;
 * 3. main (main thread): gears that do I/O (sockets, NATS, logs, timers).
 */
export interface GearType {
  readonly manifest: GearManifest;
  prepare?(spec: GearSpec, ctx: PrepareContext): Promise<unknown>;
  worker?(spec: GearSpec, prepared: unknown, ctx: WorkerGearContext): WorkerGear;
  main?(spec: GearSpec, ctx: MainGearContext): MainGear;
}

export interface PrepareContext {
  /** Where relative paths in the scenario are resolved from. */
  baseDir: string;
  /** Where `env:NAME` secret references are read. */
  env: NodeJS.ProcessEnv;
  /** Loads a Wasm module (the rack's module source, trusted keys and limits). */
  loadModule(spec: GearSpec): Promise<unknown>;
}

/**
 * Writes a gear's log lines at a numeric (pino) level, unless the logger's level is above it
 * (the rack's is telemetry/log-tap.ts lineWriter).
 */
export interface GearLineWriter {
  text(level: number, text: string): void;
  /** The line's text as UTF-8 bytes (a guest's buffer, read only during the call). */
  utf8(level: number, bytes: Uint8Array): void;
}

/** What a gear built in a worker gets from the worker it runs in. */
export interface WorkerGearContext {
  logger: Logger;
  /**
   * A writer of `gear`'s log lines that skips the logger's per-line work, where the worker's
   * logger allows it (telemetry/log-tap.ts, lineWriter); undefined: use the logger.
   */
  lineWriter?: (gear: string) => GearLineWriter | undefined;
  /** Sends a message out of gear.port along every wire (function calls inside this worker). */
  emit(gear: string, port: string, msg: FluxMsg): void;
  /**
   * emit() for a message as bytes that are certainly a valid fluxMsg (checked by isPlainFluxMsg,
   * or written by fluxrig's encoder): they go on as they are to a main-thread gear, a bus wire or
   * a gear that reads bytes, and are decoded only for a gear that needs the object. The bytes
   * must stay unchanged until this returns.
   */
  emitEncoded(gear: string, port: string, bytes: Uint8Array): void;
  hasRoute(gear: string, port: string): boolean;
  /** What fluxar gear `gear` serves in the scenario running now, for fluxar.describe. */
  describe(gear: string): DescribeDocument;
  /** Records back to the main thread. */
  lane: Lane;
  /** This worker's copy of the KV store. */
  kv: KvReplica;
  /** This worker's HTTP client for guests (made on first use). */
  http(): SyncHttpClient;
  /** Times this gear's guest calls for the pool's watchdog (undefined without a time limit). */
  guestClockFor(gear: string): { enter(): void; leave(): void } | undefined;
  /** Connection records (ids >= 1) for this gear's connections go to `host`. */
  claimConnection(id: number, host: ConnectionHost): void;
  releaseConnection(id: number): void;
  /** How long a session waits for its calls after bye. */
  drainTimeoutMs: number;
  /** This worker's index in the pool (0 inline): written into the ids of its sessions, so a resume finds it. */
  workerIndex: number;
  /** The rack's topics in this worker: the fluxar gears' subscribers and publishers meet here. */
  topics: WorkerTopics;
  /** A message stopped here without going on (dropped, rejected or failed with `error` unwired). */
  ended(end: MessageEnd): void;
  /**
   * Emits like emit() and reports how the messages it started ended in this worker. The trace is
   * reused by the next call: read it before emitting again.
   */
  emitTracked(gear: string, port: string, msg: FluxMsg): CallTrace;
  /** The gear and port the message being delivered now came from. */
  lastHop(): { gear: string; port: string };
  /**
   * A call of fluxar gear `gear` was answered in this worker `ms` after its frame arrived (for
   * the rack's p50 and p99, and the gear's latency histogram).
   */
  callTimed(gear: string, ms: number): void;
}

/**
 * The rack's topics in one worker (spec section 14): one broker for the subscriptions of every
 * fluxar gear's connections in this worker; a publication made here reaches the other workers'
 * brokers through the rings.
 */
export interface WorkerTopics {
  readonly broker: Broker;
  /** The rack is on the bus: publications also go to the other racks. */
  readonly bridged: boolean;
  /**
   * Publishes to every subscription in the rack (this worker's now, the others' through the
   * rings) and, on the bus, to the other racks. With `confirm`, the main thread answers with a
   * PublicationAck for that connection's publish once the bus has it.
   */
  publish(id: Uint8Array, topic: string, qos: Qos, payload: unknown, confirm?: { conn: number; key: string }): PublishOutcome;
}

/** How a message stopped in a worker, short of a gear that answers it. */
export interface MessageEnd {
  gear: string;
  /** The port it was sent to, for a message sent to a port wired to nothing. */
  port?: string;
  why: 'dropped' | 'unrouted' | 'rejected' | 'failed';
  /** What the caller is told, for rejected and failed. */
  reason?: string;
  code?: number;
}

/** What became of the messages one send started, as far as this worker saw. */
export interface CallTrace {
  ends: MessageEnd[];
  /** Some went on to the main thread (log, nats, ...): their fate is decided there. */
  leftWorker: boolean;
}

/** A gear in a worker: where messages to its input ports go. */
export interface WorkerGear {
  input(port: string, msg: FluxMsg): void;
  /**
   * The message as bytes that are certainly a valid fluxMsg (as for emitEncoded), for a gear that
   * works on the encoding (a Wasm gear copies it into its guest): the decode and the encode again
   * are skipped. The bytes are valid only during the call. Without it, the gear gets the object.
   */
  inputEncoded?(port: string, bytes: Uint8Array): void;
  /** Gears that host connections' sessions (fluxar): how the worker reaches them. */
  connections?: ConnectionHost;
}

/** The worker half of a gear that serves connections. */
export interface ConnectionHost {
  open(id: number, framing: 'stream' | 'message', ip: string, port: number): void;
  receive(id: number, bytes: Uint8Array): void;
  closed(id: number): void;
  invalid(id: number, reason: string): void;
  /** The socket's unsent bytes are over (false) or back under (true) the stream high-water mark. */
  writable(id: number, writable: boolean): void;
  /** Graceful stop: every session says bye. */
  drain(): void;
  /** A publish of connection `id` that waited for the bus reached it (error null) or could not. */
  publicationAcked?(id: number, key: string, error: string | null): void;
}

/** Where a main-thread gear's output goes: into the chain, in the worker that owns `key`. */
export type Inject = (gear: string, port: string, msg: FluxMsg, key: number, source?: Pausable) => void;

/** What a gear built on the main thread gets from the rack. */
export interface MainGearContext {
  logger: Logger;
  inject: Inject;
  nats: NatsConnection | undefined;
  baseDir: string;
  /** Hands an accepted connection to the rack: its session runs in the worker that owns it. */
  accept(gear: string, transport: Transport): void;
}

/** A gear on the main thread (it does I/O). */
export interface MainGear {
  start(): Promise<void>;
  /** A message for one of its input ports. */
  receive(port: string, msg: FluxMsg): void;
  /**
   * The same, still encoded (from a worker), for a gear that forwards a message's bytes rather
   * than reading it: the main thread then never decodes it. `bytes` is the gear's to keep.
   */
  receiveEncoded?(port: string, bytes: Uint8Array): void;
  /** First step of a graceful stop: accept and produce no new work. */
  quiesce(): Promise<void>;
  /** Last step, once the workers are done: flush and release everything. */
  stop(): Promise<void>;
  /**
   * Settles once what it received so far is done with (a JetStream publish acknowledged), and
   * rejects if any of it failed: a guaranteed wire acks its message only then.
   */
  settled?(): Promise<void>;
  /** The URLs it serves on, if it listens. */
  addresses?(): string[];
}

/** A gear's config with the manifest's defaults filled in, as its type. */
export function configOf<C>(spec: GearSpec, manifest: GearManifest): C {
  // Scenario validation has checked the config against the manifest's schema: it has this shape.
  return withDefaults(manifest.config, spec.config) as C;
}
