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
export interface GuestClock {
  /** A guest call starts; `guest` names the gear (its index in the pool's guestNames). */
  enter(guest: number): void;
  leave(): void;
}

export function guestClock(control: Int32Array, epochMs: number, timeoutMs: number, currentTag: () => number): GuestClock {
  Atomics.store(control, ControlSlot.GuestTimeoutMs, timeoutMs);
  return {
    enter(guest) {
      Atomics.store(control, ControlSlot.GuestId, guest + 1);
      Atomics.store(control, ControlSlot.GuestTag, currentTag());
      Atomics.store(control, ControlSlot.GuestSince, Date.now() - epochMs + 1);
    },
    leave() {
      Atomics.store(control, ControlSlot.GuestSince, 0);
    },
  };
}
