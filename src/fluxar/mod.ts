export { ControlTarget, ERROR_NAMES, ErrorCode, MessageType } from './codes.js';
export type { DecodeEnvelopeOptions, Envelope, EnvelopeErrorInfo } from './envelope.js';
export { decodeEnvelope, encodeEnvelope, ENVELOPE_ITEMS, validateEnvelope } from './envelope.js';
export { EnvelopeError, FluxarError } from './errors.js';
export type { AuthOptions, AuthScheme, Credentials, Principal, Verifier } from './auth.js';
export { pskProof, secretsEqual, secretTable } from './auth.js';
export {
  Capability,
  DEFAULT_MAX_FRAME,
  DEFAULT_MAX_STREAMS,
  DEFAULT_RESUME_BUFFER,
  DEFAULT_RESUME_MS,
  DEFAULT_STREAM_WINDOW,
  FrameFlag,
  MAX_FRAME_CEILING,
  PROTOCOL_VERSION,
  STREAM_HIGH_WATER_MARK,
} from './constants.js';
export type { Codec, Compression } from './compression.js';
export type { E2eOptions } from './e2e.js';
export type { KeyPair, NoisePattern } from './noise.js';
export { generateKeyPair, keyPairFrom } from './noise.js';
export { availableCompressions, COMPRESSIONS } from './compression.js';
export type { Frame } from './framing.js';
export { encodeMessageFrame, encodeStreamFrame, StreamFrameSplitter } from './framing.js';
export type { CallOptions, Framing, OpenStreamOptions, ResumeRequest, Role, SessionEvent, SessionInfo, SessionOptions, SessionState } from './session.js';
export type { StreamMode } from './stream-state.js';
export type { StreamOptions } from './stream.js';
export type { BrokerLink, BrokerOptions, PublishOutcome } from './broker.js';
export { Broker } from './broker.js';
export type { Qos, SubscribeOptions } from './pubsub-state.js';
export type { FluxarMessage } from './subscription.js';
export { FluxarSubscription } from './subscription.js';
export { patternError, topicError } from './topics.js';
export { FluxarStream, MAX_QUEUED_WRITES } from './stream.js';
export { idKey, Session } from './session.js';
export type {
  CallContext,
  Handler,
  TypedHandler,
  PeerCallOptions,
  PeerOptions,
  PublishOptions,
  ReconnectPlan,
  SessionDirectory,
  StreamContext,
  StreamHandler,
  SubscribeCallOptions,
} from './peer.js';
export { Peer } from './peer.js';
export type { PoolOptions } from './pool.js';
export { PeerPool } from './pool.js';
export type { Contract, InputCheck, DescribeDocument, DescribedTarget, DescribedTopic, DescribePolicy, InputOf, OutputOf, TopicContract } from './describe.js';
export { DESCRIBE_TARGET, DESCRIBE_VERSION, inputCheck } from './describe.js';
export type { Transport, TransportKind } from './transport.js';
export type { Endpoint } from './endpoint.js';
export { parseEndpoint } from './endpoint.js';
export type { ListenOptions, TlsOptions } from './server.js';
export { FluxarServer, listen } from './server.js';
export type { ConnectOptions } from './client.js';
export { connect } from './client.js';
