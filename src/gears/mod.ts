/** The public surface of `fluxrig/gears`: Wasm gears, their host and their module store. */
export type { KvStore } from './kv.js';
export { KvReplica, MemoryKvStore } from './kv.js';
export type { ConfigSchema, GearManifest } from './manifest.js';
export { GEAR_MANIFESTS, GEAR_TYPES } from './registry.js';
export type { GearType } from './gear.js';
export type { WasmGearConfig } from './wasm/config.js';
export { WASM_DEFAULTS } from './wasm/config.js';
export { GuestTrap, WasmModuleError } from './wasm/errors.js';
export type { EncodedOutcome, GearOutcome, GearServices, GearStats, HttpRequest, HttpResponse, KvAccess, SyncHttpClient } from './wasm/host.js';
export { WasmGear } from './wasm/host.js';
export type { LoadOptions, PreparedModule } from './wasm/loader.js';
export { loadModule, prepareModule, readModuleBytes } from './wasm/loader.js';
export { WasmGearPool } from './wasm/gear-pool.js';
export { SIGNATURE_SECTION, signModule, verifyModule } from './wasm/signature.js';
export { ModuleStore, parseModuleUrn } from './wasm/store.js';
