import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { importedMemoryLimits, limitMemory, type MemoryLimits, WasmFormatError } from './binary.js';
import { grantedImports, WASM_DEFAULTS, type WasmGearConfig } from './config.js';
import { WasmModuleError } from './errors.js';
import { verifyCountersignature, verifyModule } from './signature.js';
import { type ModuleSource, parseModuleUrn } from './store.js';
import { type Preopen, WASI_FUNCTIONS, WASI_MODULE } from './wasi.js';

export interface LoadOptions {
  /** Relative module paths resolve against this directory (the scenario's). */
  baseDir?: string;
  /** Where urn:wasm:NAME:VERSION modules live: a local ModuleStore or a NATS bucket. */
  store?: ModuleSource;
  /** Vendor keys (PEM, or fluxrig's raw 32 bytes): with any, only modules signed by one of them load. */
  trustedKeys?: Array<string | Uint8Array>;
  /** The fleet's Mixer keys: with any, only modules it countersigned at import load. */
  clusterKeys?: Array<string | Uint8Array>;
}

/** A module checked and compiled once; the WebAssembly.Module is handed to every worker. */
export interface PreparedModule {
  source: string;
  module: WebAssembly.Module;
  /** sha256 of the bytes as loaded (before the memory limit was written in). */
  digest: string;
  /** Limits of the module's own memory, after the ceiling; undefined when it imports memory. */
  memory: MemoryLimits | undefined;
  /** The memory import's minimum pages, when the module imports its memory. */
  importedMemoryPages: number | undefined;
  /** memory_limit_pages, for a memory the host provides. */
  memoryLimitPages: number;
  signer: string | undefined;
  /** Said once when the module loads: a signature in a deprecated format. */
  signatureNote: string | undefined;
  /** What the WASI host grants, when the module imports WASI (docs/wasm-abi.md). */
  wasi: { env: Record<string, string>; preopens: Preopen[] } | undefined;
}

const WASI_GRANTED = new Set<string>(WASI_FUNCTIONS);

/** The scenario's approved descriptors, host directories resolved and checked. */
function wasiGrant(config: WasmGearConfig, source: string, baseDir: string | undefined): NonNullable<PreparedModule['wasi']> {
  const preopens = (config.wasi?.preopens ?? []).map((p) => {
    const host = isAbsolute(p.host) ? p.host : resolve(baseDir ?? process.cwd(), p.host);
    let isDir = false;
    try {
      isDir = statSync(host).isDirectory();
    } catch {}
    if (!isDir) throw new WasmModuleError(source, `wasi.preopens: ${host} (for ${p.guest}) is not a directory`);
    if (!p.guest.startsWith('/')) throw new WasmModuleError(source, `wasi.preopens: the guest path ${JSON.stringify(p.guest)} must be absolute, e.g. /data`);
    return { guest: p.guest, host, rw: p.rw === true };
  });
  return { env: { ...(config.wasi?.env ?? {}) }, preopens };
}

export async function readModuleBytes(source: string, options: LoadOptions = {}): Promise<Uint8Array> {
  const urn = parseModuleUrn(source);
  if (urn !== undefined) {
    if (options.store === undefined)
      throw new WasmModuleError(source, 'a urn:wasm: module needs a module store (fluxrig rack --module-store DIR, or wasm.module_store in the rack config)');
    return options.store.resolve(urn.name, urn.version);
  }
  if (source.startsWith('urn:')) throw new WasmModuleError(source, 'expected urn:wasm:NAME:VERSION');
  const path = source.startsWith('file://') ? fileURLToPath(source) : isAbsolute(source) ? source : resolve(options.baseDir ?? process.cwd(), source);
  try {
    return await readFile(path);
  } catch (err) {
    throw new WasmModuleError(source, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Checks and compiles module bytes for a gear: signature (when keys are trusted), memory ceiling
 * written into the module, imports against what the config grants, required exports.
 */
export function prepareModule(bytes: Uint8Array, source: string, config: WasmGearConfig, options: LoadOptions = {}): PreparedModule {
  let signer: string | undefined;
  let signatureNote: string | undefined;
  if (options.clusterKeys !== undefined && options.clusterKeys.length > 0) {
    const check = verifyCountersignature(bytes, options.clusterKeys);
    if (!check.ok) throw new WasmModuleError(source, `refused: ${check.reason}`);
  }
  if (options.trustedKeys !== undefined && options.trustedKeys.length > 0) {
    const check = verifyModule(bytes, options.trustedKeys);
    if (!check.ok) throw new WasmModuleError(source, `refused: ${check.reason}`);
    signer = check.signer;
    signatureNote = check.deprecated;
  }
  const limit = config.memory_limit_pages ?? WASM_DEFAULTS.memory_limit_pages;
  let limited: { module: Uint8Array; limits: MemoryLimits | undefined };
  try {
    limited = limitMemory(bytes, limit);
  } catch (err) {
    const message = err instanceof WasmFormatError ? err.message : String(err);
    throw new WasmModuleError(source, message, { cause: err });
  }
  let module: WebAssembly.Module;
  try {
    module = new WebAssembly.Module(limited.module);
  } catch (err) {
    throw new WasmModuleError(source, `not a valid WebAssembly module: ${(err as Error).message}`, { cause: err });
  }
  const granted = grantedImports(config);
  let importedMemoryPages: number | undefined;
  let usesWasi = false;
  for (const imp of WebAssembly.Module.imports(module)) {
    const name = `${imp.module}.${imp.name}`;
    if (imp.module === WASI_MODULE) {
      if (imp.kind !== 'function' || !WASI_GRANTED.has(imp.name))
        throw new WasmModuleError(
          source,
          `imports ${name}, which the WASI host does not grant (clocks, random_get, proc_exit, stdout/stderr, wasi.env and wasi.preopens only; docs/wasm-abi.md)`,
        );
      usesWasi = true;
      continue;
    }
    if (imp.module !== 'env') throw new WasmModuleError(source, `imports ${name}: only "env" and "${WASI_MODULE}" imports exist`);
    if (imp.kind === 'memory' && imp.name === 'memory') {
      importedMemoryPages = importedMemoryLimits(bytes)?.initial ?? 1;
      if (importedMemoryPages > limit)
        throw new WasmModuleError(source, `imports a memory of ${importedMemoryPages} pages, more than memory_limit_pages ${limit}`);
      continue;
    }
    if (imp.kind !== 'function') throw new WasmModuleError(source, `imports ${name} (${imp.kind}): not provided by the host`);
    if (!granted.has(imp.name)) {
      const hint = imp.name.startsWith('flux_kv') ? ' (needs allow_kv: true)' : imp.name === 'flux_req_http' ? ' (needs allow_http: true)' : '';
      throw new WasmModuleError(source, `imports ${name}, which this gear is not granted${hint}`);
    }
  }
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  const entrypoint = config.entrypoint ?? WASM_DEFAULTS.entrypoint;
  for (const [name, kind] of [
    ['alloc', 'function'],
    ['free', 'function'],
    [entrypoint, 'function'],
  ] as const) {
    if (exports.get(name) !== kind) throw new WasmModuleError(source, `must export the ${kind} ${name} (fluxrig's gear ABI, docs/wasm-abi.md)`);
  }
  if (exports.get('memory') !== 'memory' && importedMemoryPages === undefined) {
    throw new WasmModuleError(source, 'must export its memory as "memory" (or import env.memory)');
  }
  if (exports.has('_start'))
    throw new WasmModuleError(source, 'is a WASI command (it exports _start): build it as a reactor (C: clang -mexec-model=reactor; Rust: crate-type cdylib)');
  return {
    source,
    module,
    digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
    memory: limited.limits,
    importedMemoryPages,
    memoryLimitPages: limit,
    signer,
    signatureNote,
    wasi: usesWasi ? wasiGrant(config, source, options.baseDir) : undefined,
  };
}

export async function loadModule(config: WasmGearConfig, options: LoadOptions = {}): Promise<PreparedModule> {
  return prepareModule(await readModuleBytes(config.module, options), config.module, config, options);
}
