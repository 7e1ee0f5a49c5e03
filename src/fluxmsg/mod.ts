export type { FluxMsg, FluxMsgInit, Hop } from './fluxmsg.js';
export { addHop, createFluxMsg, FluxMsgFlag, metaValueFromBytes, metaValueToBytes, nowNs } from './fluxmsg.js';
export type { DecodeFluxMsgOptions } from './codec.js';
export { decodeFluxMsg, encodeFluxMsg, fluxMsgFromValue, validateFluxMsg } from './codec.js';
export { FluxMsgDecodeError, FluxMsgValidationError } from './errors.js';
export type { FluxMsgLimits } from './limits.js';
export { DEFAULT_MAX_HOPS, DEFAULT_MAX_MESSAGE_BYTES, fluxMsgLimits, setFluxMsgLimits } from './limits.js';
export {
  entityId,
  EntityType,
  entityTypeOf,
  isNilUuid,
  isUuidV7,
  NIL_UUID,
  parseUuid,
  UUID_BYTES,
  machineHintOf,
  setMachineId,
  uuidToString,
  uuidv7,
  uuidv7Time,
} from './uuid.js';
