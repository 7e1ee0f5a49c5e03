/**
 * Which worker owns a key (a connection id, a routing key). Every frame of one key goes to one
 * worker, so order holds per key and its session state has a single owner.
 */
export function workerForKey(key: number | string, workers: number): number {
  if (typeof key === 'number') return (key >>> 0) % workers;
  // FNV-1a: cheap, and spreads short similar strings (conn-1, conn-2, ...) well.
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % workers;
}
