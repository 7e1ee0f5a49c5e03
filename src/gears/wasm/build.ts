import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WasmModuleError } from './errors.js';

/** The marker a gear writes in its source to declare it keeps nothing on the heap between messages. */
export const ARENA_MARKER = 'fluxrig: arena';

/** Compiler flags every gear is built with (the runtimes were chosen by bench/wasm.ts). */
export const ASC_FLAGS = ['-O3', '--noAssert'] as const;

/**
 * The runtime a gear is built with. An arena gear (the marker) gets the stub runtime, which the
 * host resets before each message: half the SDK's cost, but the gear must export `reset` (the
 * SDK's) or its heap grows until it traps. Any other gear gets the minimal runtime.
 */
export function gearRuntime(source: string): 'stub' | 'minimal' {
  return source.includes(ARENA_MARKER) ? 'stub' : 'minimal';
}

/** Where `@fluxrig/gear-sdk` resolves from, for gears outside this package's tree. */
function sdkResolutionPath(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '../../../../node_modules');
}

export interface BuiltGear {
  out: string;
  runtime: 'stub' | 'minimal';
  exports: string[];
  imports: string[];
}

/**
 * Compiles an AssemblyScript gear to Wasm with the runtime its marker asks for, checks the
 * exports the ABI needs (and `reset` for an arena gear), and says what the module exports and
 * imports. Throws WasmModuleError with the compiler's own messages.
 */
export async function buildGear(file: string, out: string): Promise<BuiltGear> {
  const source = readFileSync(file, 'utf8');
  const runtime = gearRuntime(source);
  const { default: asc } = await import('assemblyscript/asc');
  let output = '';
  const sink = { write: (text: string | Uint8Array) => void (output += String(text)) };
  const { error } = await asc.main([file, '--outFile', out, ...ASC_FLAGS, '--runtime', runtime, '--path', sdkResolutionPath()], { stdout: sink, stderr: sink });
  if (error) throw new WasmModuleError(file, `does not compile:\n${output.trim() || error.message}`);
  const module = new WebAssembly.Module(readFileSync(out));
  const exports = WebAssembly.Module.exports(module).map((e) => e.name);
  const imports = WebAssembly.Module.imports(module).map((i) => `${i.module}.${i.name}`);
  for (const name of ['alloc', 'free', 'process']) {
    if (!exports.includes(name))
      throw new WasmModuleError(file, `does not export ${name} (the gear ABI needs alloc, free and process: export { alloc, free } from '@fluxrig/gear-sdk')`);
  }
  if (runtime === 'stub' && !exports.includes('reset')) {
    throw new WasmModuleError(
      file,
      `is an arena gear (// ${ARENA_MARKER}) but does not export reset: add reset to the SDK exports (export { alloc, free, reset } from '@fluxrig/gear-sdk'), or remove the marker`,
    );
  }
  return { out, runtime, exports, imports };
}
