// Runs one wasm gear inside a rack worker: each inbound record is an encoded fluxMsg, each
// outcome goes back on the same tag. KV lives in a worker-local replica kept current through
// the rings; the guest's time is stamped for the pool's watchdog.
import { decodeCbor, encodeCbor } from '../../cbor/profile.js';
import { ControlTag, type HandlerFactory } from '../../ring/pool-protocol.js';
import { KvReplica } from '../kv.js';
import type { WasmGearConfig } from './config.js';
import { guestClock, shortestGuestTimeout } from './guest-clock.js';
import { type GearOutcome, Status, WasmGear } from './host.js';
import { BlockingHttpClient } from './http-bridge.js';
import type { PreparedModule } from './loader.js';

export interface WasmGearWorkerOptions {
  name: string;
  prepared: PreparedModule;
  config: WasmGearConfig;
  kvSnapshot?: Array<[string, Uint8Array]>;
}

/** Outcome records: CBOR [status, reason, [fluxMsg, ...]] (status as in Status). */
export function encodeOutcome(outcome: GearOutcome): Uint8Array {
  switch (outcome.status) {
    case 'ok':
      return encodeCbor([Status.Ok, null, outcome.msgs]);
    case 'reject':
      return encodeCbor([Status.Reject, outcome.reason, []]);
    case 'drop':
      return encodeCbor([Status.Drop, null, []]);
  }
}

export const createHandler: HandlerFactory = ({ options, out, control, epochMs }) => {
  const { name, prepared, config, kvSnapshot } = options as WasmGearWorkerOptions;
  const replica = new KvReplica(kvSnapshot ?? [], (key, value) => out.send(ControlTag.KvPut, encodeCbor([key, value])));
  let currentTag = 0;
  const gear = new WasmGear(name, prepared, config, {
    kv: config.allow_kv ? replica : undefined,
    http: config.allow_http ? new BlockingHttpClient() : undefined,
    emit: (msg) => out.send(ControlTag.Emit, encodeCbor([name, msg])),
    guestClock: guestClock(control, epochMs, shortestGuestTimeout([config])!, () => currentTag),
  });
  return (tag, bytes, start, length) => {
    if (tag === ControlTag.KvSet) {
      const [key, value] = decodeCbor(bytes.subarray(start, start + length), true) as [string, Uint8Array | null];
      replica.apply(key, value ?? undefined);
      return;
    }
    currentTag = tag;
    // Zero-copy: the gear copies the input into guest memory at once and keeps no reference.
    const outcome = gear.processEncoded(bytes.subarray(start, start + length));
    out.send(tag, encodeOutcome(outcome));
  };
};
