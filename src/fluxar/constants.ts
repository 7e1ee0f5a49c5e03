/** Protocol versions this implementation speaks. */
export const PROTOCOL_VERSION = 1;
export const SUPPORTED_VERSIONS: readonly number[] = [PROTOCOL_VERSION];

/**
 * Frame limits: the default agreed maximum, the ceiling either side may ask for, and the floor
 * (every control envelope and error answer fits in it). Every other size limit on received bytes
 * (the WebSocket message limit, the inflate cap, the rack's ring records) derives from the
 * agreed maximum; frameLimits() below is the one place that says how.
 */
export const DEFAULT_MAX_FRAME = 1024 * 1024;
export const MAX_FRAME_CEILING = 16 * 1024 * 1024;
export const MIN_MAX_FRAME = 1024;
/** Bytes before the envelope on a byte stream: uint32 length, then the flags byte. */
export const STREAM_HEADER_BYTES = 5;

export const FrameFlag = {
  Compressed: 1 << 0,
  Encrypted: 1 << 1,
} as const;
export const KNOWN_FLAGS = FrameFlag.Compressed | FrameFlag.Encrypted;

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;
export const DEFAULT_HEARTBEAT_MS = 15_000;
/** Heartbeat intervals without a single frame from the peer before it is declared gone. */
export const MISSED_HEARTBEATS_LIMIT = 3;
export const DEFAULT_MAX_IN_FLIGHT = 1024;
/** QoS 1 and 2 publishes a peer may have unanswered, unless its hello says otherwise (spec section 14.3). */
export const DEFAULT_MAX_PUBLISHES = 1024;
/** Streams a peer may open at once, unless its hello says otherwise (spec section 13.6). */
export const DEFAULT_MAX_STREAMS = 128;
/**
 * A stream producer holding credit still waits while this many bytes sit unsent on its
 * transport (spec section 13.3): credit bounds the receiver's memory, this the sender's.
 */
export const STREAM_HIGH_WATER_MARK = 1024 * 1024;
/** Down (or up) chunks a stream endpoint keeps granted ahead of its reader, by default. */
export const DEFAULT_STREAM_WINDOW = 64;
/** How long a graceful close (bye) waits for in-flight calls before closing anyway. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** Frames at least this large are compressed when both sides agreed on a compression. */
export const COMPRESS_THRESHOLD = 1024;
/** A frame whose compressed form is over this share of its size did not compress. */
export const COMPRESS_MIN_GAIN = 0.9;
/** After frames that did not compress, at most this many are sent before compression is tried again. */
export const COMPRESS_MAX_BACKOFF = 4096;
/** Bytes queued for a peer that does not read before it is disconnected. */
export const DEFAULT_MAX_WRITE_BUFFER = 8 * 1024 * 1024;
/** Connections a PeerPool opens. */
export const DEFAULT_POOL_SIZE = 4;

/** How long a server keeps a session whose connection dropped, waiting for the client to resume it (spec section 20). */
export const DEFAULT_RESUME_MS = 30_000;
/**
 * Envelopes a side retains for resume until the peer acknowledges them. Each costs a copy of its
 * bytes; the default holds 4096 chunks of a stream, or calls of a pipelined client, in flight.
 */
export const DEFAULT_RESUME_BUFFER = 4096;
/**
 * A receiver reports its position (an `ack` control) after this many envelopes, so the sender's
 * retained buffer is trimmed long before it fills; resume buffers are at least twice this.
 */
export const RESUME_ACK_EVERY = 256;

/** What end-to-end sealing adds to the largest frame: the header of the frame inside, and the 16-byte tag. */
export const SEAL_OVERHEAD = 5 + 16;

/** Capabilities a hello may offer. */
export const Capability = {
  Zstd: 'zstd',
  Gzip: 'gzip',
  Deflate: 'deflate',
  Psk: 'psk',
  Noise: 'noise',
  Resume: 'resume',
} as const;

/**
 * Per-connection budgets, refilled continuously (token buckets on the session's clock). Going
 * over one closes the connection with a 429 bye. They bound what one connection can make the
 * receiver do: a compression bomb of small frames, or floods of tiny CBOR items.
 */
export const DEFAULT_INFLATE_BYTES_PER_S = 32 * 1024 * 1024;
export const DEFAULT_DECODE_ITEMS_PER_S = 4_000_000;

/** Listener limits (src/fluxar/listener.ts): connections held at once, in all and per client IP. */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 1_000;
/** A WebSocket listener's connection must complete its HTTP upgrade within this. */
export const DEFAULT_UPGRADE_TIMEOUT_MS = 5000;

/** The sizes that follow from one agreed (or configured) max_frame. */
export interface FrameLimits {
  /** Largest envelope, before compression and after decompression. */
  maxFrame: number;
  /** Largest WebSocket message: the flags byte and the envelope. */
  maxMessage: number;
  /** Largest frame on a byte stream: length prefix, flags byte and envelope. */
  maxStreamFrame: number;
}

/** The limits of a listener or session configured with `maxFrame` (default 1 MiB). */
export function frameLimits(maxFrame: number | undefined): FrameLimits {
  const frame = Math.max(MIN_MAX_FRAME, Math.min(maxFrame ?? DEFAULT_MAX_FRAME, MAX_FRAME_CEILING));
  // A sealed message holds the largest frame with its header, and the tag (spec section 19.3).
  return { maxFrame: frame, maxMessage: frame + 1 + SEAL_OVERHEAD, maxStreamFrame: frame + STREAM_HEADER_BYTES };
}
