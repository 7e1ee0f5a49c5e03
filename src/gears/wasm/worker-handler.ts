// Runs one wasm gear inside a rack worker: each inbound record is an encoded fluxMsg, each
// outcome goes back on the same tag. KV lives in a worker-local replica kept current through
// the rings; the guest's time is stamped for the pool's watchdog.
import { pino } from 'pino';
import { encodeCbor } from '../../cbor/profile.js';
import type { HandlerFactory } from '../../ring/pool-protocol.js';
import { RecordTag, Records } from '../records.js';
import { gearServices } from '../wasm.js';
import { KvReplica } from '../kv.js';
import type { WasmGearConfig } from './config.js';
import { guestClock, shortestGuestTimeout } from './guest-clock.js';
import { type EncodedOutcome, Status, WasmGear } from './host.js';
import { BlockingHttpClient } from './http-bridge.js';
import type { PreparedModule } from './loader.js';

export interface WasmGearWorkerOptions {
  name: string;
  prepared: PreparedModule;
  config: WasmGearConfig;
  kvSnapshot?: Array<[string, Uint8Array]>;
}

/** The pool's outcome records also carry failures (not a guest status: the host's own). */
export const FAILED = 3;

/**
 * Outcome records: CBOR [status, reason or detail, [encoded fluxMsg, ...], failure kind]. The
 * messages travel as the guest wrote them (checked, not decoded): the pool decodes them once.
 */
export function encodeOutcome(outcome: EncodedOutcome): Uint8Array {
  switch (outcome.status) {
    case 'ok':
      return encodeCbor([Status.Ok, null, outcome.encoded]);
    case 'reject':
      return encodeCbor([Status.Reject, outcome.reason, []]);
    case 'drop':
      return encodeCbor([Status.Drop, null, []]);
    case 'fail':
      return encodeCbor([FAILED, outcome.detail, [], outcome.kind]);
  }
}

export const createHandler: HandlerFactory = ({ options, out, control, epochMs }) => {
  const { name, prepared, config, kvSnapshot } = options as WasmGearWorkerOptions;
  const replica = new KvReplica(kvSnapshot ?? [], (key, value) => out.send(RecordTag.KvPut, Records.kvPut.encode({ key, value })));
  let currentTag = 0;
  let http: BlockingHttpClient | undefined;
  const clock = guestClock(control, epochMs, shortestGuestTimeout([config])!, () => currentTag);
  const services = gearServices(
    name,
    config,
    {
      logger: pino({ name: `fluxrig.gear.${name}` }),
      kv: replica,
      http: () => (http ??= new BlockingHttpClient()),
      // The pool runs this one gear: guest 0.
      guestClockFor: () => ({ enter: () => clock.enter(0), leave: () => clock.leave() }),
    },
    (msg) => out.send(RecordTag.Emit, Records.emit.encode({ gear: name, msg })),
  );
  const gear = new WasmGear(name, prepared, config, services);
  return (tag, bytes, start, length) => {
    if (tag === RecordTag.KvSet) {
      const { key, value } = Records.kvSet.decode(bytes.subarray(start, start + length));
      replica.apply(key, value ?? undefined);
      return;
    }
    currentTag = tag;
    // Zero-copy: the gear copies the input into guest memory at once and keeps no reference.
    const outcome = gear.processEncoded(bytes.subarray(start, start + length));
    out.send(tag, encodeOutcome(outcome));
  };
};
