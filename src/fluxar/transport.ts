import type { OnReadOpts, Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Framing } from './session.js';

export type TransportKind = 'tcp' | 'tls' | 'unix' | 'ws' | 'wss';

/** Bytes in and out of one connection. FLUXAR code above it is the same for every kind. */
export interface Transport {
  readonly kind: TransportKind;
  readonly framing: Framing;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  /**
   * Writes frames; returns the bytes queued and not yet sent. `sent`, when given, is called with
   * a frame buffer once the transport no longer needs it (it may be reused).
   */
  write(frames: Uint8Array[], sent?: (frame: Uint8Array) => void): number;
  /** Bytes queued and not yet sent. */
  readonly backlog: number;
  /** Called when queued bytes were sent (the backlog shrank): stream producers go on. */
  onDrain(listener: () => void): void;
  /** Flushes, then closes. */
  end(): void;
  destroy(): void;
  onData(listener: (bytes: Uint8Array) => void): void;
  /** A message that cannot be a FLUXAR frame (a WebSocket text message). */
  onInvalid(listener: (reason: string) => void): void;
  onClose(listener: (reason: string) => void): void;
  /** Stops reading (backpressure) until resume(). */
  pause(): void;
  resume(): void;
}

/** A client socket reads into slabs of this size, Node's own read size. */
const READ_SLAB_BYTES = 64 * 1024;
/** A read gets at least this much room: a slab with less left is replaced by a new one. */
const MIN_READ_BYTES = 16 * 1024;

/**
 * Reads of a client socket straight into slabs (net's `onread` option with a buffer function),
 * each read handed on as a view of the slab: no copy, and one allocation per 64 KiB read rather
 * than one per read. By default Node gives every read a new, zero-filled 64 KiB buffer and then
 * shrinks it: with many busy sockets (a hundred subscribers in one process) those buffers were
 * most of what the garbage collector chased, and its pauses were the latency's tail; a reused
 * buffer copied out per read cost a stream of 4 KiB chunks a memcpy of every byte (8% of the
 * reader's CPU). A slab's bytes are never written twice, so payloads read from it may be kept;
 * one kept payload holds its slab (at most 64 KiB), as a view of a read did before.
 */
export class SocketReads {
  private listener: ((bytes: Uint8Array) => void) | undefined;
  /** Reads that came before a listener (between connect and the peer's binding). */
  private early: Uint8Array[] = [];
  private slab = Buffer.allocUnsafe(READ_SLAB_BYTES);
  /** Bytes of the slab already handed on. */
  private used = 0;
  readonly onread: OnReadOpts = {
    // Called before each read: the room left in the slab, or a new slab.
    buffer: (): Uint8Array => {
      if (READ_SLAB_BYTES - this.used < MIN_READ_BYTES) {
        this.slab = Buffer.allocUnsafe(READ_SLAB_BYTES);
        this.used = 0;
      }
      return this.slab.subarray(this.used);
    },
    // true: go on reading (backpressure pauses the socket itself, as with 'data' events).
    callback: (length: number, buffer: Uint8Array): boolean => {
      const bytes = buffer.subarray(0, length);
      this.used += length;
      if (this.listener !== undefined) this.listener(bytes);
      else this.early.push(bytes);
      return true;
    },
  };

  listen(listener: (bytes: Uint8Array) => void): void {
    this.listener = listener;
    for (const bytes of this.early.splice(0)) listener(bytes);
  }
}

/** TCP, TLS and Unix sockets: length-prefixed frames on a byte stream. */
export class SocketTransport implements Transport {
  readonly framing = 'stream' as const;
  /** Frames the socket still holds (queued behind a full kernel buffer), to give back once it has sent them. */
  private unsent: Uint8Array[] = [];
  private unsentTo: Array<(frame: Uint8Array) => void> = [];

  constructor(
    readonly kind: 'tcp' | 'tls' | 'unix',
    private readonly socket: Socket,
    /** Where the socket's reads arrive when it was opened with SocketReads' onread; else its 'data' events. */
    private readonly reads?: SocketReads,
  ) {
    if (kind !== 'unix') socket.setNoDelay(true);
    socket.on('drain', () => this.giveBack());
  }
  get remoteAddress() {
    return this.socket.remoteAddress;
  }
  get remotePort() {
    return this.socket.remotePort;
  }
  write(frames: Uint8Array[], sent?: (frame: Uint8Array) => void): number {
    // One write per flush: frames gathered in one turn leave in one syscall.
    const frame = frames.length === 1 ? frames[0]! : Buffer.concat(frames);
    this.socket.write(frame);
    const queued = this.socket.writableLength;
    if (sent !== undefined && frames.length === 1) {
      // Nothing queued: the kernel took every byte, so the buffer is free now. This is known
      // without a write callback, whose nextTick a producer running on promises would hold
      // back, keeping every buffer of a burst lent out.
      if (queued === 0) {
        this.giveBack();
        sent(frame);
      } else {
        this.unsent.push(frame);
        this.unsentTo.push(sent);
      }
    }
    return queued;
  }

  /** The socket has sent everything it held: the frames it held are free. */
  private giveBack(): void {
    if (this.unsent.length === 0 || this.socket.writableLength > 0) return;
    const frames = this.unsent;
    const to = this.unsentTo;
    this.unsent = [];
    this.unsentTo = [];
    for (let i = 0; i < frames.length; i++) to[i]!(frames[i]!);
  }
  get backlog(): number {
    return this.socket.writableLength;
  }
  onDrain(listener: () => void): void {
    this.socket.on('drain', listener);
  }
  end(): void {
    this.socket.end();
  }
  destroy(): void {
    this.socket.destroy();
  }
  onData(listener: (bytes: Uint8Array) => void): void {
    if (this.reads !== undefined) this.reads.listen(listener);
    else this.socket.on('data', listener);
  }
  onInvalid(): void {}
  pause(): void {
    this.socket.pause();
  }
  resume(): void {
    this.socket.resume();
  }
  onClose(listener: (reason: string) => void): void {
    let error: Error | undefined;
    this.socket.on('error', (err) => (error = err));
    this.socket.on('close', () => listener(error ? `connection error: ${error.message}` : 'connection closed'));
  }
}

/** WebSocket: one binary message per frame. */
export class WebSocketTransport implements Transport {
  readonly framing = 'message' as const;
  constructor(
    readonly kind: 'ws' | 'wss',
    private readonly ws: WebSocket,
    private readonly remote: { address: string | undefined; port: number | undefined },
  ) {}
  get remoteAddress() {
    return this.remote.address;
  }
  get remotePort() {
    return this.remote.port;
  }
  write(frames: Uint8Array[]): number {
    const last = frames.length - 1;
    if (last < 0) return this.ws.bufferedAmount;
    // ws has no drain event: the callback of a write's last message says its bytes went out.
    for (let i = 0; i < last; i++) this.ws.send(frames[i]!, { binary: true });
    this.ws.send(frames[last]!, { binary: true }, this.drained);
    return this.ws.bufferedAmount;
  }
  get backlog(): number {
    return this.ws.bufferedAmount;
  }
  private drainListeners: Array<() => void> = [];
  private readonly drained = (err?: Error) => {
    if (err === undefined) for (const listener of this.drainListeners) listener();
  };
  onDrain(listener: () => void): void {
    this.drainListeners.push(listener);
  }
  end(): void {
    this.ws.close(1000);
  }
  destroy(): void {
    this.ws.terminate();
  }
  private invalid: (reason: string) => void = () => {};
  onData(listener: (bytes: Uint8Array) => void): void {
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) return this.invalid('text WebSocket messages are not FLUXAR frames (send binary)');
      listener(data as Buffer);
    });
  }
  onInvalid(listener: (reason: string) => void): void {
    this.invalid = listener;
  }
  pause(): void {
    this.ws.pause();
  }
  resume(): void {
    this.ws.resume();
  }
  onClose(listener: (reason: string) => void): void {
    let error: Error | undefined;
    this.ws.on('error', (err) => (error = err));
    this.ws.on('close', (code, reason) =>
      listener(error ? `connection error: ${error.message}` : `connection closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`),
    );
  }
}
