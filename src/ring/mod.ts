export type { RecordVisitor, RingOptions } from './ring.js';
export { createRing, RingConsumer, RingProducer } from './ring.js';
export { LaneTimeoutError, RecordTooLargeError, RingLayoutError } from './errors.js';
export { DEFAULT_CAPACITY, DEFAULT_MAX_RECORDS } from './layout.js';
export { DEFAULT_LANE_SEND_TIMEOUT_MS, HotLane } from './lane.js';
