// A loopback TCP proxy that cuts connections where a test says: after so many bytes in one
// direction, or on demand; closing both sides, or only the client's (the server's stays
// half-open, never closed). It records what each connection sent upstream, for replays.
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';

export type CutMode = 'both' | 'half-open';

interface Link {
  client: Socket;
  upstream: Socket;
  /** What the client sent, in order. */
  sent: Buffer[];
  stopped: boolean;
  /** Client to server. */
  up: Flow;
  /** Server to client. */
  down: Flow;
}

/** Bytes forwarded one way, and where the count stood when the current cut was armed. */
interface Flow {
  bytes: number;
  mark: number;
}

type Direction = 'up' | 'down';

export class CuttingProxy {
  private readonly server: Server;
  private readonly links: Link[] = [];
  /** Upstream sockets left open by half-open cuts: closed by close(). */
  private readonly stranded: Socket[] = [];
  /** Per direction: cut the connection on which this many more bytes go that way. */
  private readonly armed: Record<Direction, { bytes: number; mode: CutMode } | null> = { up: null, down: null };
  /** New connections are refused (closed at once) while set. */
  refusing = false;
  cuts = 0;
  port = 0;

  constructor(private readonly targetPort: number) {
    this.server = createServer((client) => this.accept(client));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return `tcp://127.0.0.1:${this.port}`;
  }

  get connections(): number {
    return this.links.length;
  }

  /** What connection `i` sent upstream, whole. */
  sentOn(i: number): Buffer {
    return Buffer.concat(this.links[i]!.sent);
  }

  /** Cuts the connection on which `bytes` more go down from now (other connections' acks never add up to it). */
  cutAfterDown(bytes: number, mode: CutMode = 'both'): void {
    this.arm('down', bytes, mode);
  }

  cutAfterUp(bytes: number, mode: CutMode = 'both'): void {
    this.arm('up', bytes, mode);
  }

  private arm(direction: Direction, bytes: number, mode: CutMode): void {
    for (const link of this.links) link[direction].mark = link[direction].bytes;
    this.armed[direction] = { bytes, mode };
  }

  /** Cuts the newest connection now. */
  cut(mode: CutMode = 'both'): void {
    const link = this.links.at(-1);
    if (link !== undefined) {
      link.stopped = true;
      this.sever(link, mode);
    }
  }

  private accept(client: Socket): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = netConnect(this.targetPort, '127.0.0.1');
    upstream.setNoDelay(true);
    const link: Link = { client, upstream, sent: [], stopped: false, up: { bytes: 0, mark: 0 }, down: { bytes: 0, mark: 0 } };
    this.links.push(link);
    const pipe = (from: Socket, to: Socket, direction: Direction) =>
      from.on('data', (chunk: Buffer) => {
        if (link.stopped) return;
        if (direction === 'up') link.sent.push(chunk);
        const flow = link[direction];
        const cut = this.armed[direction];
        const passed = flow.bytes - flow.mark;
        if (cut !== null && passed + chunk.length >= cut.bytes) {
          this.armed[direction] = null;
          // Part of the chunk goes through: the cut falls inside a frame as often as between two.
          to.write(chunk.subarray(0, cut.bytes - passed), () => this.sever(link, cut.mode));
          link.stopped = true;
          return;
        }
        flow.bytes += chunk.length;
        to.write(chunk);
      });
    pipe(client, upstream, 'up');
    pipe(upstream, client, 'down');
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.on('close', () => {
      if (!link.stopped) upstream.destroy();
    });
    upstream.on('close', () => {
      if (!link.stopped) client.destroy();
    });
  }

  private sever(link: Link, mode: CutMode): void {
    this.cuts++;
    link.client.destroy();
    // Half-open: the server's socket stays open and silent, as behind a dead NAT entry.
    if (mode === 'both') link.upstream.destroy();
    else {
      link.upstream.pause();
      this.stranded.push(link.upstream);
    }
  }

  async close(): Promise<void> {
    for (const link of this.links) {
      link.client.destroy();
      link.upstream.destroy();
    }
    for (const s of this.stranded) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
