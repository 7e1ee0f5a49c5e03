import { RACK_KV_BUCKET } from '../bus/subjects.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_MAX_WRITE_BUFFER } from '../fluxar/constants.js';
import { DEFAULT_LANE_SEND_TIMEOUT_MS } from '../ring/lane.js';
import { DEFAULT_MAX_RECORDS } from '../ring/layout.js';

/**
 * A rack's defaults, named once: the rack config (config.ts), `fluxrig rack --help` and the
 * Rack class read them; test/defaults.test.ts holds docs/rack.md to them.
 */
export const RACK_DEFAULTS = {
  scenario: 'scenarios/quickstart.yaml',
  /** How long a stop waits for calls in flight before each session closes with a 503 bye. */
  drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
  /** Records in flight per ring. */
  lane_queue_size: DEFAULT_MAX_RECORDS,
  /** How long a send into a full lane waits before it fails. */
  lane_send_timeout_ms: DEFAULT_LANE_SEND_TIMEOUT_MS,
  /** Bytes per ring: room for a full 1 MiB FLUXAR frame per record, and 1024 small records. */
  ring_bytes: 4 * 1024 * 1024,
  /** Bytes queued for a client that does not read before it is disconnected. */
  max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
  kv_bucket: RACK_KV_BUCKET,
  log_level: 'info',
} as const;

/** How long the main thread waits past the sessions' drain timeout before it cuts connections. */
export const DRAIN_GRACE_MS = 1000;

/** How a rack uses its bus wires (docs/rack.md, Lanes). */
export const LANE_DEFAULTS = {
  /** Publishes awaiting their JetStream ack before the rack pauses its connections. */
  publish_window: 4096,
  /** How long one publish waits for its ack before it is tried again. */
  publish_timeout_ms: 5000,
  /** Messages one pull asks for (at most the wire's max_ack_pending). */
  pull_batch: 1024,
  /** How long one pull waits; its idle heartbeat is half of it, so a lost server is noticed in seconds. */
  pull_expires_ms: 5000,
  /** The first redelivery delay after a rejection; it doubles per attempt, up to ack_wait_ms. */
  redeliver_first_ms: 100,
  /** The longest wait before a delivery whose onward send failed (an outage) runs again. */
  onward_retry_max_ms: 5000,
} as const;
