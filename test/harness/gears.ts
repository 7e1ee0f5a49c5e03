import { readFileSync } from 'node:fs';
import wabtInit from 'wabt';

const root = new URL('../../../', import.meta.url);

/** A gear compiled by `make gears` (wasm-gears/build) or `make test` (dist/test-gears). */
export function gearBytes(name: string): Uint8Array {
  const path = ['passthrough', 'enrich', 'filter', 'fraud-scorer', 'splitter'].includes(name)
    ? new URL(`wasm-gears/build/${name}.wasm`, root)
    : new URL(`dist/test-gears/${name}.wasm`, root);
  return readFileSync(path);
}

export function gearPath(name: string): string {
  return new URL(`wasm-gears/build/${name}.wasm`, root).pathname;
}

/** Assembles WebAssembly text with the wabt package. */
export async function wat(text: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const module = wabt.parseWat('gear.wat', text);
  try {
    return Uint8Array.from(module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

/**
 * A gear written by hand in WAT: a bump allocator, a no-op free, and a `process` body given by
 * the caller (it has $ptr and $len and returns i64). Proves the ABI needs no SDK or language.
 */
export function watGear(processBody: string, extra = ''): Promise<Uint8Array> {
  return wat(`(module
    ${extra}
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 1024))
    (data (i32.const 16) "\\ff\\ff")
    (func (export "alloc") (param $len i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.add (global.get $bump) (local.get $len)))
      (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
        (then (drop (memory.grow (i32.add (i32.div_u (local.get $len) (i32.const 65536)) (i32.const 1))))))
      (local.get $p))
    (func (export "free") (param i32 i32)
      (global.set $bump (i32.const 1024)))
    (func (export "process") (param $ptr i32) (param $len i32) (result i64)
      ${processBody}))`);
}

/** The plain-ABI passthrough: returns its input buffer as the output. */
export const WAT_PASSTHROUGH = '(i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))';
