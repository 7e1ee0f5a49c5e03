import { ControlSlot } from '../../ring/pool-protocol.js';
import { WASM_DEFAULTS, type WasmGearConfig } from './config.js';

/** The time limit a worker enforces for its guests: the smallest timeout_ms of its wasm gears. */
export function shortestGuestTimeout(configs: WasmGearConfig[]): number | undefined {
  if (configs.length === 0) return undefined;
  return Math.min(...configs.map((c) => c.timeout_ms ?? WASM_DEFAULTS.timeout_ms));
}

/**
 * Stamps each guest call's start (and the record it handles) in the worker's control block, and
 * announces the time limit there, so the pool's watchdog can stop a guest that runs too long.
 */
export function guestClock(control: Int32Array, epochMs: number, timeoutMs: number, currentTag: () => number): { enter(): void; leave(): void } {
  Atomics.store(control, ControlSlot.GuestTimeoutMs, timeoutMs);
  return {
    enter() {
      Atomics.store(control, ControlSlot.GuestTag, currentTag());
      Atomics.store(control, ControlSlot.GuestSince, Date.now() - epochMs + 1);
    },
    leave() {
      Atomics.store(control, ControlSlot.GuestSince, 0);
    },
  };
}
