export { ControlTarget, ERROR_NAMES, ErrorCode, MessageType } from './codes.js';
export type { DecodeEnvelopeOptions, Envelope, EnvelopeErrorInfo } from './envelope.js';
export { decodeEnvelope, encodeEnvelope, ENVELOPE_ITEMS, validateEnvelope } from './envelope.js';
export { EnvelopeError, FluxarError } from './errors.js';
