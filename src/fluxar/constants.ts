/** Protocol versions this implementation speaks. */
export const PROTOCOL_VERSION = 1;
export const SUPPORTED_VERSIONS: readonly number[] = [PROTOCOL_VERSION];

/** Frame limits: the default agreed maximum and the ceiling either side may ask for. */
export const DEFAULT_MAX_FRAME = 1024 * 1024;
export const MAX_FRAME_CEILING = 16 * 1024 * 1024;
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
/** How long a graceful close (bye) waits for in-flight calls before closing anyway. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** Frames at least this large are compressed when both sides agreed on deflate. */
export const COMPRESS_THRESHOLD = 1024;
/** Bytes queued for a peer that does not read before it is disconnected. */
export const DEFAULT_MAX_WRITE_BUFFER = 8 * 1024 * 1024;

/** Capabilities a hello may offer. */
export const Capability = {
  Deflate: 'deflate',
  Psk: 'psk',
} as const;
