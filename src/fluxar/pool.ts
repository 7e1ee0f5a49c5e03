// Several connections to one server, used as one: each call goes to the open connection with
// the fewest calls in flight.
//
// Why fewest in flight rather than round-robin: the connection whose answers just came in is
// the one with room, so the calls an application makes on those answers all leave on it, in one
// write, and in one seal when the session is encrypted end to end. Round-robin spreads them
// over every connection, one small write and one AEAD operation each; with node:crypto's fixed
// cost per operation that alone took a fifth of the encrypted call rate (docs/performance.md).
import { ErrorCode } from './codes.js';
import { DEFAULT_POOL_SIZE } from './constants.js';
import { type ConnectOptions, connect } from './client.js';
import { FluxarError } from './errors.js';
import type { Peer, PeerCallOptions } from './peer.js';

export interface PoolOptions extends ConnectOptions {
  /** Connections to open (default 4). */
  size?: number;
}

export class PeerPool {
  private constructor(readonly peers: readonly Peer[]) {}

  /** Opens `size` connections to `url` with the same options; fails if any cannot be opened. */
  static async connect(url: string, options: PoolOptions = {}): Promise<PeerPool> {
    const size = options.size ?? DEFAULT_POOL_SIZE;
    if (!Number.isInteger(size) || size < 1) throw new FluxarError(ErrorCode.BadRequest, `a pool needs at least one connection, not ${size}`);
    const opened = await Promise.allSettled(Array.from({ length: size }, () => connect(url, options)));
    const peers = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    const failed = opened.find((o) => o.status === 'rejected');
    if (failed !== undefined) {
      await Promise.all(peers.map((p) => p.close()));
      throw (failed as PromiseRejectedResult).reason;
    }
    return new PeerPool(peers);
  }

  /** The open connection with the fewest calls in flight (the first of equals); a closed one if none is open. */
  pick(): Peer {
    let best: Peer | undefined;
    for (const peer of this.peers) {
      if (!peer.isOpen) continue;
      if (best === undefined || peer.callsInFlight < best.callsInFlight) best = peer;
    }
    // None open: the call meets a closed session and fails with its reason.
    return best ?? this.peers[0]!;
  }

  /** Peer.call on the connection pick() chooses. */
  call(target: string, payload: unknown = null, options?: PeerCallOptions): Promise<unknown> {
    return this.pick().call(target, payload, options);
  }

  /** Closes every connection gracefully: calls in flight finish first. */
  async close(): Promise<void> {
    await Promise.all(this.peers.map((p) => p.close()));
  }
}
