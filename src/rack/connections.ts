import type { Logger } from 'pino';
import { ErrorCode } from '../fluxar/codes.js';
import { STREAM_HIGH_WATER_MARK } from '../fluxar/constants.js';
import { encodeByeFrame } from '../fluxar/session.js';
import type { Transport } from '../fluxar/transport.js';
import { Records } from '../gears/records.js';
import { sendStreamBytes } from '../ring/lane.js';
import type { Pausable } from '../ring/pool.js';

/** How the table reaches the workers: the pool's rings, or the inline handler. */
export interface WorkerLink {
  /** Sends a record; pauses `source` while the worker's ring is full. */
  send(worker: number, tag: number, payload: Uint8Array, source: Pausable): void;
  /** Sends a record now if there is room; false when the worker's ring is full. */
  trySend(worker: number, tag: number, payload: Uint8Array): boolean;
  /** Sends a record to every worker. */
  broadcast(tag: number, payload: Uint8Array): void;
  workerFor(key: number): number;
  /** The largest record a ring takes (Infinity inline). */
  readonly maxRecordBytes: number;
}

interface Connection {
  id: number;
  worker: number;
  gear: string;
  transport: Transport;
  /** Over the stream high-water mark: the worker was told, and waits for the drain. */
  blocked: boolean;
  /** Paused because its worker's ring is full (apart from a hold of the whole table). */
  ringFull: boolean;
}

/** The source of the rack's own control records: nothing to pause. */
const NO_SOURCE: Pausable = { pause() {}, resume() {} };
/** Connection ids wrap before they reach the negative record tags' int32 range. */
const MAX_CONNECTION_ID = 0x7ffffff0;

/**
 * The rack's connections, on the main thread. Each accepted transport gets an id and a worker
 * (its session runs there); its bytes go to that worker's ring as they came, cut to the ring's
 * record size on a byte stream, and the frames the worker sends back are written to it. The
 * main thread parses no frame.
 */
export class ConnectionTable {
  private readonly connections = new Map<number, Connection>();
  private nextId = 1;
  /** Every connection is paused: the rack's guaranteed lanes have too many publishes waiting. */
  private held = false;

  constructor(
    private readonly link: WorkerLink,
    private readonly log: Logger,
    private readonly maxWriteBuffer: number,
  ) {}

  get size(): number {
    return this.connections.size;
  }

  accept(gear: string, transport: Transport): void {
    const id = this.nextId;
    this.nextId = this.nextId >= MAX_CONNECTION_ID ? 1 : this.nextId + 1;
    const worker = this.link.workerFor(id);
    const conn: Connection = { id, worker, gear, transport, blocked: false, ringFull: false };
    this.connections.set(id, conn);
    this.control(
      conn,
      Records.connOpen.tag,
      Records.connOpen.encode({ id, gear, framing: transport.framing, ip: transport.remoteAddress ?? '', port: transport.remotePort ?? 0 }),
    );
    const max = this.link.maxRecordBytes;
    // A ring that has room again resumes the socket unless the whole table is held.
    const source: Pausable = {
      pause: () => {
        conn.ringFull = true;
        transport.pause();
      },
      resume: () => {
        conn.ringFull = false;
        if (!this.held) transport.resume();
      },
    };
    if (this.held) transport.pause();
    const toWorker = (piece: Uint8Array) => this.link.send(worker, id, piece, source);
    transport.onData((bytes) => {
      try {
        if (transport.framing === 'stream') return sendStreamBytes(bytes, max, toWorker);
        // The listener's message limit keeps WebSocket frames within a record (the rack checks
        // max_frame against ring_bytes at start); this guards the invariant.
        if (bytes.length > max) return this.invalid(conn, `message of ${bytes.length} bytes is over the limit`);
        toWorker(bytes);
      } catch (err) {
        this.fail(conn, err);
      }
    });
    transport.onInvalid((reason) => {
      try {
        this.invalid(conn, reason);
      } catch (err) {
        this.fail(conn, err);
      }
    });
    transport.onDrain(() => {
      if (!conn.blocked || transport.backlog >= STREAM_HIGH_WATER_MARK || !this.connections.has(id)) return;
      conn.blocked = false;
      this.control(conn, Records.connWritable.tag, Records.connWritable.encode({ id, writable: true }));
    });
    transport.onClose(() => {
      if (this.connections.delete(id)) this.control(conn, Records.connClosed.tag, Records.connClosed.encode({ id }));
    });
  }

  /** Frames a worker sent for connection `id` (zero-copy: valid only during the call). */
  write(id: number, bytes: Uint8Array): void {
    const conn = this.connections.get(id);
    if (conn === undefined) return;
    // The ring slot is reused after this call; the socket may hold the buffer until it flushes.
    const queued = conn.transport.write([Buffer.from(bytes)]);
    if (queued >= STREAM_HIGH_WATER_MARK && !conn.blocked && queued <= this.maxWriteBuffer) {
      // The worker's streams stop sending until the socket drains (spec section 13.3).
      conn.blocked = true;
      this.control(conn, Records.connWritable.tag, Records.connWritable.encode({ id, writable: false }));
    }
    if (queued > this.maxWriteBuffer) {
      this.log.warn({ conn: id, queued }, 'client is not reading; disconnecting');
      this.connections.delete(id);
      conn.transport.destroy();
      this.control(conn, Records.connClosed.tag, Records.connClosed.encode({ id }));
    }
  }

  /** The fluxar gear a connection belongs to. */
  gearOf(id: number): string | undefined {
    return this.connections.get(id)?.gear;
  }

  /** Pauses every connection's reads (true) until released (false): backpressure from the bus. */
  hold(on: boolean): void {
    if (this.held === on) return;
    this.held = on;
    for (const conn of this.connections.values()) {
      if (on) conn.transport.pause();
      else if (!conn.ringFull) conn.transport.resume();
    }
  }

  /** The session ended: close the socket after what was written. */
  end(id: number): void {
    const conn = this.connections.get(id);
    if (conn === undefined) return;
    this.connections.delete(id);
    conn.transport.end();
  }

  /** Sessions lived in the replaced worker: their clients get a 503 bye saying why, not a hang. */
  workerReplaced(worker: number, reason: string): void {
    for (const conn of [...this.connections.values()]) {
      if (conn.worker !== worker) continue;
      this.connections.delete(conn.id);
      conn.transport.write([encodeByeFrame(conn.transport.framing, ErrorCode.Unavailable, reason)]);
      conn.transport.end();
    }
  }

  destroyAll(): void {
    for (const conn of this.connections.values()) conn.transport.destroy();
    this.connections.clear();
  }

  private control(conn: Connection, tag: number, payload: Uint8Array): void {
    this.link.send(conn.worker, tag, payload, NO_SOURCE);
  }

  /** Bytes that cannot be a FLUXAR frame: the connection's session refuses them with a 400 bye. */
  private invalid(conn: Connection, reason: string): void {
    if (!this.connections.has(conn.id)) return;
    this.control(conn, Records.connInvalid.tag, Records.connInvalid.encode({ id: conn.id, reason }));
  }

  /** Handling this connection's bytes failed (a bug): it alone is closed, with a 500 bye. */
  private fail(conn: Connection, err: unknown): void {
    this.log.error({ err, conn: conn.id, gear: conn.gear }, 'connection handling failed; closing the connection');
    if (!this.connections.delete(conn.id)) return;
    conn.transport.write([encodeByeFrame(conn.transport.framing, ErrorCode.Internal, 'internal error')]);
    conn.transport.end();
    try {
      this.control(conn, Records.connClosed.tag, Records.connClosed.encode({ id: conn.id }));
    } catch {
      // The worker's session times out on its own.
    }
  }
}
