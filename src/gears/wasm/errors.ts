import { FluxrigError } from '../../errors.js';

/** A module that may not run: bad bytes, missing exports, an import not granted, a bad signature. */
export class WasmModuleError extends FluxrigError {
  readonly source: string;
  constructor(source: string, message: string, options?: { cause?: unknown }) {
    super(`wasm module ${source}: ${message}`, options);
    this.source = source;
  }
}

/** The guest trapped or aborted while handling a message. */
export class GuestTrap extends FluxrigError {}
