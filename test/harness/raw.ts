// A FLUXAR client that sends whatever bytes a test wants (nothing checks them on the way out)
// and records, decoded, every frame the server sends back, and how the connection ended.
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { WebSocket } from 'ws';
import { type Envelope, encodeEnvelope, MessageType } from '../../src/fluxar/mod.js';
import { decodeEnvelope } from '../../src/fluxar/envelope.js';
import { StreamFrameSplitter } from '../../src/fluxar/framing.js';
import { MAX_FRAME_CEILING } from '../../src/fluxar/constants.js';
import { uuidv7 } from '../../src/fluxmsg/uuid.js';
import { until } from './wait.js';

export type RawKind = 'tcp' | 'ws';

export class RawConnection {
  readonly received: Envelope[] = [];
  /** Frames that did not decode (never expected from our server). */
  readonly garbage: Uint8Array[] = [];
  closed = false;
  /** WebSocket close code, when the server closed a WebSocket. */
  closeCode: number | undefined;
  private readonly splitter = new StreamFrameSplitter(MAX_FRAME_CEILING);

  private constructor(
    readonly kind: RawKind,
    private readonly socket: Socket | undefined,
    private readonly ws: WebSocket | undefined,
  ) {}

  static async open(kind: RawKind, url: string): Promise<RawConnection> {
    if (kind === 'tcp') {
      const { hostname, port } = new URL(url);
      const socket = netConnect(Number(port), hostname);
      const conn = new RawConnection(kind, socket, undefined);
      socket.on('data', (chunk) => {
        for (const f of conn.splitter.push(chunk)) conn.record(f.body);
      });
      socket.on('error', () => {});
      socket.on('close', () => (conn.closed = true));
      await once(socket, 'connect');
      return conn;
    }
    const ws = new WebSocket(url, { maxPayload: MAX_FRAME_CEILING + 1 });
    const conn = new RawConnection(kind, undefined, ws);
    ws.on('message', (data: Buffer) => conn.record(data.subarray(1)));
    ws.on('error', () => {});
    ws.on('close', (code) => {
      conn.closeCode = code;
      conn.closed = true;
    });
    await Promise.race([once(ws, 'open'), once(ws, 'close')]);
    return conn;
  }

  private record(body: Uint8Array): void {
    try {
      this.received.push(decodeEnvelope(body, { copyBuffers: true }));
    } catch {
      this.garbage.push(Buffer.from(body));
    }
  }

  /** Sends bytes as they are on a byte stream; on WebSocket as one binary message. */
  sendRaw(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.socket !== undefined) this.socket.write(bytes);
    else this.ws!.send(bytes, { binary: true });
  }

  /** Sends an envelope's bytes (valid or not) as one frame of this transport. */
  sendFrame(body: Uint8Array, flags = 0): void {
    if (this.kind === 'ws') return this.sendRaw(Buffer.concat([Buffer.from([flags]), body]));
    const head = Buffer.alloc(5);
    head.writeUInt32BE(body.length + 1, 0);
    head[4] = flags;
    this.sendRaw(Buffer.concat([head, body]));
  }

  /** The frame bytes of an envelope, for tests that put several in one write. */
  frameOf(env: Envelope): Buffer {
    const body = encodeEnvelope(env);
    if (this.kind === 'ws') return Buffer.concat([Buffer.from([0]), body]);
    const head = Buffer.alloc(5);
    head.writeUInt32BE(body.length + 1, 0);
    return Buffer.concat([head, body]);
  }

  /** Sends a client hello and waits for the server's answer to it. */
  async handshake(payload: Record<string, unknown> = {}): Promise<Envelope> {
    const id = uuidv7();
    this.sendFrame(
      encodeEnvelope({
        type: MessageType.Hello,
        id,
        ref: null,
        target: null,
        meta: null,
        payload: { versions: [1], caps: [], nonce: new Uint8Array(16), max_frame: 1024 * 1024, ...payload },
        error: null,
      }),
    );
    const answer = await this.waitFor((e) => e.type === MessageType.Hello && (e.ref !== null || e.target === 'bye'), 'the server hello');
    return answer;
  }

  /** Sends a call; returns its id. */
  call(target: string, payload: unknown, meta: Record<string, unknown> | null = null): Uint8Array {
    const id = uuidv7();
    this.sendFrame(encodeEnvelope({ type: MessageType.Call, id, ref: null, target, meta, payload, error: null }));
    return id;
  }

  /** The answer to call `id`, once it came. */
  answerTo(id: Uint8Array): Envelope | undefined {
    return this.received.find((e) => e.ref !== null && Buffer.compare(e.ref, id) === 0);
  }

  /** The bye with an error the server sent, if any. */
  get fatalBye(): Envelope | undefined {
    return this.received.find((e) => e.type === MessageType.Hello && e.target === 'bye' && e.error !== null);
  }

  async waitFor(check: (e: Envelope) => boolean, what: string, timeoutMs = 10_000): Promise<Envelope> {
    await until(() => this.received.some(check) || this.closed, what, timeoutMs);
    const found = this.received.find(check);
    if (found === undefined)
      throw new Error(`connection closed before ${what} (received: ${this.received.map((e) => `${e.type}/${e.target}/${e.error?.code ?? ''}`).join(', ')})`);
    return found;
  }

  async waitClosed(what = 'the server to close the connection', timeoutMs = 10_000): Promise<void> {
    await until(() => this.closed, what, timeoutMs);
  }

  close(): void {
    this.socket?.destroy();
    this.ws?.terminate();
  }
}
