// Node 20 ships String.prototype.isWellFormed (ES2024) while the rest of lib.es2024 is not all
// there (Object.groupBy, Promise.withResolvers), so only this method is declared.
interface String {
  isWellFormed(): boolean;
}

// Atomics.waitAsync is in Node 20 (V8 8.7+) but typed only in lib.es2024.
interface Atomics {
  waitAsync(
    typedArray: Int32Array,
    index: number,
    value: number,
    timeout?: number,
  ): { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
}
