import type { Logger } from 'pino';
import { ErrorCode } from '../fluxar/codes.js';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, STREAM_HIGH_WATER_MARK } from '../fluxar/constants.js';
import { encodeByeFrame } from '../fluxar/session.js';
import type { Transport } from '../fluxar/transport.js';
import { Records } from '../gears/records.js';
import { sendStreamBytes } from '../ring/lane.js';
import type { Pausable } from '../ring/pool.js';
import { FirstFrame, workerOfHello } from '../gears/session-routing.js';

/** How the table reaches the workers: the pool's rings, or the inline handler. */
export interface WorkerLink {
  /** Sends a record; pauses `source` while the worker's ring is full. */
  send(worker: number, tag: number, payload: Uint8Array, source: Pausable): void;
  /** Sends a record now if there is room; false when the worker's ring is full. */
  trySend(worker: number, tag: number, payload: Uint8Array): boolean;
  /** Sends a record to every worker. */
  broadcast(tag: number, payload: Uint8Array): void;
  workerFor(key: number): number;
  /** How many workers there are (1 inline). */
  readonly workers: number;
  /** The largest record a ring takes (Infinity inline). */
  readonly maxRecordBytes: number;
}

interface Connection {
  id: number;
  /** The worker its session runs in; -1 until its first frame has been read (src/gears/session-routing.ts). */
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
/** How long an ended socket waits for its peer to close its side before it is destroyed. */
const END_GRACE_MS = 5000;
/** Connection ids wrap before they reach the negative record tags' int32 range. */
const MAX_CONNECTION_ID = 0x7ffffff0;

/**
 * The rack's connections, on the main thread. Each accepted transport gets an id and a worker
 * (its session runs there); its bytes go to that worker's ring as they came, cut to the ring's
 * record size on a byte stream, and the frames the worker sends back are written to it. The
 * main thread parses no frame but a connection's first, the hello: one that resumes a session
 * goes to the worker that owns it (src/gears/session-routing.ts).
 */
export class ConnectionTable {
  private readonly connections = new Map<number, Connection>();
  private nextId = 1;
  /** Sockets ended and not yet closed by their peer. */
  private readonly ending = new Set<Transport>();
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
    const conn: Connection = { id, worker: -1, gear, transport, blocked: false, ringFull: false };
    this.connections.set(id, conn);
    // The worker is picked once the hello is read; a client that sends none meets the
    // handshake timeout here, as it would in a worker.
    const first = new FirstFrame(transport.framing);
    const silent = setTimeout(() => {
      if (conn.worker >= 0 || !this.connections.delete(id)) return;
      transport.write([encodeByeFrame(transport.framing, ErrorCode.DeadlineExceeded, `no handshake within ${DEFAULT_HANDSHAKE_TIMEOUT_MS} ms`)]);
      transport.end();
    }, DEFAULT_HANDSHAKE_TIMEOUT_MS);
    silent.unref();
    const assign = (worker: number) => {
      clearTimeout(silent);
      conn.worker = worker;
      this.control(
        conn,
        Records.connOpen.tag,
        Records.connOpen.encode({ id, gear, framing: transport.framing, ip: transport.remoteAddress ?? '', port: transport.remotePort ?? 0 }),
      );
    };
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
    const toWorker = (piece: Uint8Array) => this.link.send(conn.worker, id, piece, source);
    const forward = (bytes: Uint8Array) => {
      if (transport.framing === 'stream') return sendStreamBytes(bytes, max, toWorker);
      // The listener's message limit keeps WebSocket frames within a record (the rack checks
      // max_frame against ring_bytes at start); this guards the invariant.
      if (bytes.length > max) return this.invalid(conn, `message of ${bytes.length} bytes is over the limit`);
      toWorker(bytes);
    };
    transport.onData((bytes) => {
      try {
        if (conn.worker < 0) {
          const gathered = first.push(bytes);
          if (gathered === null) return;
          const frame = gathered.frame;
          const owner = frame === null ? null : workerOfHello(frame.flags, frame.body, this.link.workers);
          assign(owner ?? this.link.workerFor(id));
          for (const piece of gathered.pieces) forward(piece);
          return;
        }
        forward(bytes);
      } catch (err) {
        this.fail(conn, err);
      }
    });
    transport.onInvalid((reason) => {
      try {
        if (conn.worker < 0) assign(this.link.workerFor(id));
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
      clearTimeout(silent);
      if (this.connections.delete(id) && conn.worker >= 0) this.control(conn, Records.connClosed.tag, Records.connClosed.encode({ id }));
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

  /**
   * The session ended (or moved to a resumed connection): close the socket after what was
   * written. A peer that never closes its side (half-open, behind a dead NAT entry) does not
   * hold the socket, or the rack's stop, for longer than END_GRACE_MS.
   */
  end(id: number): void {
    const conn = this.connections.get(id);
    if (conn === undefined) return;
    this.connections.delete(id);
    const transport = conn.transport;
    this.ending.add(transport);
    const grace = setTimeout(() => transport.destroy(), END_GRACE_MS);
    grace.unref();
    transport.onClose(() => {
      clearTimeout(grace);
      this.ending.delete(transport);
    });
    transport.end();
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
    for (const transport of this.ending) transport.destroy();
    this.connections.clear();
    this.ending.clear();
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
