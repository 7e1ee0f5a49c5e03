// Node 20 ships String.prototype.isWellFormed (ES2024) while the rest of lib.es2024 is not all
// there (Object.groupBy, Promise.withResolvers), so only this method is declared.
interface String {
  isWellFormed(): boolean;
}
