export { workerForKey } from './affinity.js';
export type { Pausable, WorkerPoolOptions, WorkerReplaced } from './pool.js';
export { WorkerPool } from './pool.js';
export type { HandlerFactory, RecordHandler, WorkerContext } from './worker-protocol.js';
