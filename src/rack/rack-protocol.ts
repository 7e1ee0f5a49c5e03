/**
 * Records between the rack's main thread and its workers, beyond application bytes. A record
 * whose tag is a connection id (>= 1) carries that connection's bytes: socket -> worker are
 * received bytes, worker -> socket are frames to write. Negative tags are these.
 */
export const RackTag = {
  /** main -> worker: CBOR [connId, gear, framing, peerIp, peerPort]. */
  ConnOpen: -10,
  /** main -> worker: CBOR [connId]: the socket closed. */
  ConnClosed: -11,
  /** main -> worker: say bye on every session (graceful stop). */
  Drain: -12,
  /** main -> worker: CBOR [connId, reason]: bytes that cannot be a frame (a WebSocket text message). */
  ConnInvalid: -14,
  /** worker -> main: CBOR [connId, code, reason]: close the socket after what was written. */
  ConnEnd: -13,
  /** worker -> main: CBOR [gear, port, fluxMsg] for a gear on the main thread (log, nats). */
  ToMain: -4,
  /** main -> worker: CBOR [gear, port, fluxMsg]: a main-thread gear's output into the chain. */
  Inject: -5,
} as const;

/** What a worker handler sends back through; a HotLane in a worker, a direct call inline. */
export interface Lane {
  send(tag: number, payload: Uint8Array): void;
  /** The largest record the lane takes (half its ring); Infinity inline. */
  readonly maxRecordBytes: number;
}

/** Sends stream bytes as records no larger than the lane takes: a byte stream may be cut anywhere. */
export function sendChunked(lane: Pick<Lane, 'send' | 'maxRecordBytes'>, tag: number, bytes: Uint8Array): void {
  const max = lane.maxRecordBytes;
  if (bytes.length <= max) return lane.send(tag, bytes);
  for (let at = 0; at < bytes.length; at += max) lane.send(tag, bytes.subarray(at, Math.min(at + max, bytes.length)));
}
