import { randomBytes, timingSafeEqual } from 'node:crypto';
import { EntityType, entityId } from '../fluxmsg/uuid.js';
import { UUID_BYTES, uuidv7, writeUuidv7 } from '../fluxmsg/uuid.js';
import { isDeepStrictEqual } from 'node:util';
import { argumentEnd, argumentOf } from '../cbor/head.js';
import { encodeCbor, isCborMap } from '../cbor/profile.js';
import { decodeStrict, describeValue, StrictReader, unmarkFloats } from '../cbor/strict.js';
import { type Credentials, isAuthRefusal, newNonce, parseCredentials, type Principal, proofsEqual, pskProof } from './auth.js';
import { ControlTarget, ErrorCode, MessageType } from './codes.js';
import { availableCompressions, chooseCompression, type Codec, codecFor, isCompression } from './compression.js';
import { clientPattern, type E2eOptions, FrameCiphers, helloPrologue, noisePsk } from './e2e.js';
import { HandshakeState, NOISE_PATTERNS, type NoisePattern, needsResponderStatic } from './noise.js';
import {
  Capability,
  COMPRESS_MAX_BACKOFF,
  COMPRESS_MIN_GAIN,
  COMPRESS_THRESHOLD,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_DECODE_ITEMS_PER_S,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_INFLATE_BYTES_PER_S,
  DEFAULT_MAX_FRAME,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_PUBLISHES,
  DEFAULT_MAX_STREAMS,
  DEFAULT_RESUME_BUFFER,
  DEFAULT_RESUME_MS,
  FrameFlag,
  frameLimits,
  KNOWN_FLAGS,
  MAX_FRAME_CEILING,
  MIN_MAX_FRAME,
  MISSED_HEARTBEATS_LIMIT,
  PROTOCOL_VERSION,
  RESUME_ACK_EVERY,
  SEAL_OVERHEAD,
  STREAM_HEADER_BYTES,
  SUPPORTED_VERSIONS,
} from './constants.js';
import { CborWriter, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_UINT } from '../cbor/writer.js';
import { decodeEnvelope, ENVELOPE_ITEMS, type Envelope, encodeEnvelope, encodeEnvelopeWithRoom, type EnvelopeErrorInfo, writeEnvelope } from './envelope.js';
import { EnvelopeError, FluxarError } from './errors.js';
import { encodeMessageFrame, type Frame, StreamFrameSplitter } from './framing.js';
import { TokenBucket } from './budget.js';
import {
  type DeliveryMeta,
  FrameDeliveryMeta,
  isQos,
  type Qos,
  readDeliveryMeta,
  readSubscribeMeta,
  type SubscribeOptions,
  subscribeMeta,
} from './pubsub-state.js';
import { patternError, topicError } from './topics.js';
import { addCredit, cannotSend, isCreditGrant, isCreditTotal, newStreamRecord, STREAM_MODES, type StreamMode, type StreamRecord } from './stream-state.js';

export type Role = 'client' | 'server';
export type Framing = 'stream' | 'message';
export type SessionState = 'handshake' | 'open' | 'closing' | 'closed';

export interface SessionOptions {
  role: Role;
  /** 'stream' for TCP, TLS and Unix sockets (length-prefixed); 'message' for WebSocket. */
  framing: Framing;
  /** The clock, in milliseconds. The session has no timers: the host calls tick(). */
  clock?: () => number;
  /** Client: credentials to present (sealed, with end-to-end encryption). */
  credentials?: Credentials;
  /**
   * End-to-end encryption (spec section 19). Client: encrypt, and refuse a server that does not.
   * Server: the keys for NK and IK, and whether to require it; false refuses to take part.
   * A server without it still takes NN and NNpsk0.
   */
  e2e?: E2eOptions | false;
  /**
   * Capabilities offered, in order of preference (client), or supported (server). Default: the
   * compressions this process can run, zstd first (src/fluxar/compression.ts).
   */
  caps?: string[];
  /** Pre-shared key: both sides prove they hold it (HMAC over both nonces) without sending it. */
  psk?: Uint8Array | string;
  /** Largest frame this side accepts; the handshake agrees on the smaller of both. */
  maxFrame?: number;
  /** Server: heartbeat interval announced to the client. */
  heartbeatMs?: number;
  handshakeTimeoutMs?: number;
  /** Calls from the peer that may be in flight at once; more are answered 429. */
  maxInFlight?: number;
  /** Streams the peer may open at once (declared in our hello); more are answered 429. Default 128. */
  maxStreams?: number;
  drainTimeoutMs?: number;
  /**
   * Copy byte strings out of received frames (when the input memory is reused, as a ring slot
   * is). Without it, payload bytes and a delivery's publication id (read when first asked for)
   * are views of the frames, which must not be overwritten while they are used.
   */
  copyBuffers?: boolean;
  /** Budget of bytes inflated from compressed frames, per second (429 bye when spent). */
  inflateBytesPerSecond?: number;
  /** Budget of CBOR items decoded from received envelopes, per second (429 bye when spent). */
  decodeItemsPerSecond?: number;
  /** QoS 1 and 2 publishes the peer may have unanswered (declared in our hello); more are nacked 429. Default 1024. */
  maxPublishes?: number;
  /**
   * Client: offer session resume (spec section 20): what this side sends is retained until the
   * peer acknowledges it, so the session can continue on a new connection.
   */
  resume?: boolean;
  /** Client: the detached session this one continues; its hello asks the server to resume it. */
  resumeOf?: Session;
  /** Server: how long a detached session waits for its client to resume it; 0 offers no resume. Default 30 s. */
  resumeMs?: number;
  /** Envelopes retained for resume, unacknowledged by the peer; while full, nothing new is originated. Default 4096. */
  resumeBuffer?: number;
  /** Server: makes the id of a new session (default: an entity id); a rack writes its worker into it. */
  newSessionId?: () => Uint8Array;
}

export interface SessionInfo {
  id: Uint8Array;
  resumeToken: Uint8Array;
  heartbeatMs: number;
  maxFrame: number;
  caps: string[];
  /** Streams this side may open to the peer at once (the peer's max_streams). */
  maxStreams: number;
  /** QoS 1 and 2 publishes this side may have unanswered (the peer's max_publishes). */
  maxPublishes: number;
  /** How long the server keeps the session after its connection drops; 0 when resume was not agreed. */
  resumeMs: number;
}

/** A client's request to resume a session (spec section 20.2). */
export interface ResumeRequest {
  session: Uint8Array;
  token: Uint8Array;
  /** Envelopes the client has received from the server. */
  pos: number;
}

export type SessionEvent =
  /** Server: check these credentials, then call accept() or reject(). */
  | { type: 'authenticate'; credentials: Credentials | null }
  | { type: 'open'; info: SessionInfo; principal: Principal | null }
  /** Server: the client asks to continue a session; find it, then call acceptResume() or refuseResume(). */
  | { type: 'resume'; request: ResumeRequest }
  /** This session continues an earlier one on a new connection: the host serves it in place of the old one. */
  | { type: 'resumed'; info: SessionInfo }
  /** The connection is gone but the session waits to be resumed: end the transport, keep the session. */
  | { type: 'detached'; reason: string }
  /** The resume buffer has room again: writes held back for it may go on. */
  | { type: 'writable' }
  /** A call from the peer: answer with respond() or fail(). */
  | { type: 'call'; key: string; target: string; payload: unknown; meta: Record<string, unknown> | null }
  /** A call from the peer that must stop: cancelled by the caller (499) or past its deadline (408). */
  | { type: 'cancel'; key: string; code: number }
  /** The outcome of one of our calls, or the response that ends a stream we opened. */
  | { type: 'result'; key: string; payload: unknown; error: EnvelopeErrorInfo | null }
  /** The peer opened a stream: answer it (respond() or fail()) when it ends. */
  | { type: 'stream'; key: string; target: string; mode: StreamMode; payload: unknown; meta: Record<string, unknown> | null }
  /** A chunk of a stream, in order; `seq` counts from 0. */
  | { type: 'chunk'; key: string; seq: number; payload: unknown; meta: Record<string, unknown> | null }
  /** The peer granted credit on a stream: chunks may be sent again (streamCredit() says how many). */
  | { type: 'credit'; key: string }
  /** The opener ended its direction of a stream we respond to. */
  | { type: 'end'; key: string }
  /** Pub/sub, broker side: the peer subscribes; answer with answerSubscribe(). */
  | { type: 'subscribe'; key: string; pattern: string; options: SubscribeOptions }
  /** Pub/sub, broker side: the peer unsubscribes; end the subscription with endSubscription(). */
  | { type: 'unsubscribe'; key: string }
  /** Pub/sub, broker side: a publish; QoS 1 and 2 are answered with answerPublish() or failPublish(). */
  | { type: 'publish'; key: string; id: Uint8Array; topic: string; qos: Qos; payload: unknown; meta: Record<string, unknown> | null }
  /** Pub/sub, broker side: an ack (ok) or nack of the delivery `key` (possibly one no longer current). */
  | { type: 'delivery-ack'; key: string; ok: boolean }
  /** Pub/sub, subscriber side: the broker's answer to our subscribe. */
  | { type: 'subscribed'; key: string; error: EnvelopeErrorInfo | null }
  /**
   * Pub/sub, subscriber side: a delivery of our subscription `key`; ack QoS 1 and 2 with
   * ackDelivery(deliveryKey). A QoS 0 delivery is never acked: its deliveryKey is ''.
   */
  | { type: 'delivery'; key: string; deliveryKey: string; topic: string; payload: unknown; meta: DeliveryMeta }
  /** Pub/sub, subscriber side: the subscription is over (its last event). */
  | { type: 'subscription-end'; key: string; error: EnvelopeErrorInfo | null }
  /** Pub/sub, publisher side: the broker's ack (payload) or nack (error) of our QoS 1 or 2 publish. */
  | { type: 'published'; key: string; payload: unknown; error: EnvelopeErrorInfo | null }
  /** The session failed on something it did not expect (a bug, never the peer's input): log it. */
  | { type: 'fault'; error: unknown }
  | { type: 'closed'; code: number; reason: string };

export interface CallOptions {
  meta?: Record<string, unknown> | null;
  /** Budget in ms: sent as meta deadline_ms, and enforced locally (408). */
  deadlineMs?: number;
}

export interface OpenStreamOptions extends CallOptions {
  mode: StreamMode;
  /** Down chunks granted with the opening request (meta.credit). Default 0. */
  credit?: number;
}

interface OutgoingCall {
  deadline: number;
}
interface IncomingCall {
  id: Uint8Array;
  deadline: number;
}

/**
 * The map key of an id: its 16 bytes as a 16-character string (exact, and the same as the bytes
 * read as latin1). Built in JS: wrapping the bytes in a Buffer to call its native latin1 decoder
 * cost several times more, once per call on each side.
 */
export function idKey(id: Uint8Array): string {
  return idKeyAt(id, 0);
}

/** idKey of the 16 bytes at `at` in `bytes`. */
export function idKeyAt(b: Uint8Array, at: number): string {
  return String.fromCharCode(
    b[at]!,
    b[at + 1]!,
    b[at + 2]!,
    b[at + 3]!,
    b[at + 4]!,
    b[at + 5]!,
    b[at + 6]!,
    b[at + 7]!,
    b[at + 8]!,
    b[at + 9]!,
    b[at + 10]!,
    b[at + 11]!,
    b[at + 12]!,
    b[at + 13]!,
    b[at + 14]!,
    b[at + 15]!,
  );
}

/**
 * idKeyAt(b, at), or `last` when the 16 bytes at `at` are the id it is the key of: frames come in
 * runs of one stream or subscription, and comparing bytes costs less than making and hashing a
 * new string.
 */
function idKeyAtOr(b: Uint8Array, at: number, last: string): string {
  if (last === '') return idKeyAt(b, at);
  for (let i = 0; i < UUID_BYTES; i++) if (b[at + i] !== last.charCodeAt(i)) return idKeyAt(b, at);
  return last;
}
function keyBytes(key: string): Uint8Array {
  return Buffer.from(key, 'latin1');
}

const NO_DEADLINE = Infinity;

/**
 * One FLUXAR session as a state machine: bytes and calls in, bytes and events out. It owns no
 * socket and no timer; the host feeds it received bytes (receive), tells it the time passes
 * (tick), writes what takeOutput() returns, and acts on what takeEvents() returns. The same code
 * serves sockets on the main thread, sessions hosted in rack workers from ring bytes, and tests.
 */
export class Session {
  readonly role: Role;
  private readonly options: SessionOptions;
  private readonly clock: () => number;
  private readonly splitter: StreamFrameSplitter | null;
  /** Frames for a message transport (WebSocket): one buffer each, as each is one message. */
  private output: Uint8Array[] = [];
  /**
   * Frames for a byte stream, written one after the other into one buffer: a flush is one
   * buffer, with no allocation and no copy per frame. Made on first use.
   */
  private outbox: CborWriter | null = null;
  /** Bytes queued for the transport: what a stream producer adds to its backlog before a flush. */
  outputBytes = 0;
  private events: SessionEvent[] = [];
  state: SessionState = 'handshake';
  info: SessionInfo | null = null;
  principal: Principal | null = null;
  private outgoing = new Map<string, OutgoingCall>();
  private incoming = new Map<string, IncomingCall>();
  /** Streams we opened and streams the peer opened, by the opening request's key. */
  private streams = new Map<string, StreamRecord>();
  /** Streams the peer opened that are not closed: the count its max_streams limits. */
  private streamsFromPeer = 0;
  private streamsToPeer = 0;
  /** The peer's max_streams: how many we may open. */
  private peerMaxStreams = DEFAULT_MAX_STREAMS;
  // Pub/sub (spec section 14), by the key of the envelope that started each.
  /** Subscriptions we made, as subscriber. */
  private subscriptionsOut = new Map<string, Uint8Array>();
  /** Subscriptions the peer made, as broker. */
  private subscriptionsIn = new Map<string, Uint8Array>();
  /** Our QoS 1 and 2 publishes awaiting the broker's answer. */
  private publishesOut = new Set<string>();
  /** The peer's QoS 1 and 2 publishes awaiting our answer. */
  private publishesIn = new Map<string, Uint8Array>();
  private peerMaxPublishes = DEFAULT_MAX_PUBLISHES;
  /** The earliest deadline among calls; tick() scans only once it has passed. */
  private earliestDeadline = NO_DEADLINE;
  /** The largest frame we send: the agreed maximum once the handshake has said it. */
  private maxFrameOut: number;
  /** The largest frame we accept: our own maximum, then the agreed one (smaller of both hellos). */
  private maxFrameIn: number;
  private readonly inflateBudget: TokenBucket;
  private readonly decodeBudget: TokenBucket;
  private readonly decodeWork = { items: 0 };
  /** The agreed compression, or null. */
  private codec: Codec | null = null;
  // End-to-end encryption (spec section 19).
  /** The Noise handshake, while it runs and until the ciphers are made. */
  private noise: HandshakeState | null = null;
  /** The transport ciphers once the Noise handshake is done: every frame after that is sealed. */
  private ciphers: FrameCiphers | null = null;
  /** Server: the client's encrypted credentials are due. Client: the server's acceptance of them. */
  private noiseStage: 'none' | 'credentials' | 'acceptance' = 'none';
  /** Reads the frames a sealed frame holds, on any transport. */
  private sealedFrames: StreamFrameSplitter | null = null;
  /** Output queued before the ciphers started (bytes of the outbox, or messages): sent in the clear. */
  private plainOutput = 0;
  /** The id of the client's credentials message, which the server's acceptance refers to. */
  private credentialsId: Uint8Array | null = null;
  /** The peer's static key, when the Noise pattern carried one (IK's client, seen by the server). */
  peerStaticKey: Uint8Array | null = null;
  /** Frames over the threshold still to send uncompressed, and the current wait between tries. */
  private compressSkips = 0;
  private compressBackoff = 0;
  // Handshake.
  private readonly handshakeDeadline: number;
  private clientHelloId: Uint8Array | null = null;
  private serverHelloId: Uint8Array | null = null;
  private clientNonce: Uint8Array | null = null;
  private serverNonce: Uint8Array | null = null;
  private offeredCaps: string[] = [];
  private awaitingPskProof = false;
  private authenticating = false;
  // Session resume (spec section 20). Positions count envelopes of types 2 to 7, per direction,
  // over the session's life (not the connection's).
  /** The resume capability was agreed: what is sent is retained until the peer has it. */
  private resumable = false;
  private sentPos = 0;
  private receivedPos = 0;
  /** The position the peer last said it has received: retained envelopes start after it. */
  private peerReceivedPos = 0;
  /** The receivedPos this side last reported (hello, ack, ping or pong). */
  private reportedPos = 0;
  /** Envelopes sent and not yet acknowledged, from retainedHead on: retained[retainedHead] is position peerReceivedPos + 1. */
  private retained: Uint8Array[] = [];
  private retainedHead = 0;
  private readonly resumeBufferLimit: number;
  /** How long this session is kept once detached (the server's resume_ms). */
  private resumeMs = 0;
  /** When the connection dropped, while the session waits to be resumed; null while attached. */
  private detachedAt: number | null = null;
  /** Server: the resume request waiting for the host's verdict. */
  private resumeRequest: ResumeRequest | null = null;
  /** The state a resumed session continues in (open or closing); null for a new session. */
  private continuedState: 'open' | 'closing' | null = null;
  // Liveness.
  private lastReceivedAt: number;
  private lastHeartbeatAt: number;
  // Close: both sides say bye; each side's bye follows every call it sent before it.
  private drainDeadline = NO_DEADLINE;
  private weSaidBye = false;
  private peerSaidBye = false;

  constructor(options: SessionOptions) {
    this.options = options;
    this.role = options.role;
    this.clock = options.clock ?? Date.now;
    this.maxFrameIn = frameLimits(options.maxFrame).maxFrame;
    this.maxFrameOut = DEFAULT_MAX_FRAME;
    this.splitter = options.framing === 'stream' ? new StreamFrameSplitter(this.maxFrameIn) : null;
    const now = this.clock();
    // A bucket holds at least two of the largest frames, so one legal frame never trips it.
    const inflateRate = options.inflateBytesPerSecond ?? DEFAULT_INFLATE_BYTES_PER_S;
    this.inflateBudget = new TokenBucket(inflateRate, Math.max(inflateRate, 2 * this.maxFrameIn), now);
    const decodeRate = options.decodeItemsPerSecond ?? DEFAULT_DECODE_ITEMS_PER_S;
    this.decodeBudget = new TokenBucket(decodeRate, Math.max(decodeRate, 2 * this.maxFrameIn), now);
    this.handshakeDeadline = now + (options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
    this.lastReceivedAt = now;
    this.lastHeartbeatAt = now;
    this.resumeBufferLimit = Math.max(options.resumeBuffer ?? DEFAULT_RESUME_BUFFER, 2 * RESUME_ACK_EVERY);
    if (this.role === 'client') this.sendClientHello();
  }

  // ---- host interface ------------------------------------------------------------------

  /** Frames to write to the transport, in order. */
  takeOutput(): Uint8Array[] {
    this.outputBytes = 0;
    if (this.detachedAt !== null) {
      // No connection to write to: what was sent is retained, and goes again on resume.
      this.output = [];
      this.outbox?.reset();
      this.plainOutput = 0;
      return [];
    }
    if (this.ciphers !== null) return this.takeSealedOutput();
    const box = this.outbox;
    if (box !== null) {
      if (box.pos === 0) return [];
      // Small flushes are copied out (into Node's pool) and the buffer kept; large ones handed
      // over. A small flush means no burst is under way: the spare buffers of one are let go.
      let frames: Buffer;
      if (box.pos < OUTBOX_HANDOFF_BYTES) {
        frames = box.take();
        box.dropSpares();
      } else frames = box.handOff(OUTBOX_BYTES);
      box.reset();
      return [frames];
    }
    const out = this.output;
    this.output = [];
    return out;
  }

  /** takeOutput() once the session is sealed: what preceded the ciphers as it is, the rest sealed in runs. */
  private takeSealedOutput(): Uint8Array[] {
    const plain = this.plainOutput;
    this.plainOutput = 0;
    const limit = this.maxFrameOut + STREAM_HEADER_BYTES;
    const box = this.outbox;
    if (box !== null) {
      if (box.pos === 0) return [];
      const out: Uint8Array[] = plain > 0 ? [Buffer.from(box.buf.subarray(0, plain))] : [];
      out.push(...this.sealed(box.buf.subarray(plain, box.pos), limit));
      box.reset();
      return out;
    }
    const messages = this.output;
    this.output = [];
    if (messages.length === plain) return messages;
    // Messages become frames of the byte-stream layout inside the seal: length, flags, envelope.
    const inner = messages.slice(plain);
    const run = Buffer.allocUnsafe(inner.reduce((n, m) => n + m.length + 4, 0));
    let at = 0;
    for (const m of inner) {
      run.writeUInt32BE(m.length, at);
      run.set(m, at + 4);
      at += m.length + 4;
    }
    return [...messages.slice(0, plain), ...this.sealed(run, limit)];
  }

  /**
   * A buffer takeOutput() returned that the transport has finished sending: a later large flush
   * continues in it instead of allocating (each allocation is external memory the GC must chase).
   */
  recycleOutput(bytes: Uint8Array): void {
    this.outbox?.recycle(bytes);
  }

  takeEvents(): SessionEvent[] {
    const events = this.events;
    this.events = [];
    return events;
  }

  hasWork(): boolean {
    return this.output.length > 0 || (this.outbox !== null && this.outbox.pos > 0) || this.events.length > 0;
  }

  /** Bytes from the transport: any slice of the stream, or one whole WebSocket message. */
  receive(bytes: Uint8Array): void {
    if (this.state === 'closed') return;
    const now = this.clock();
    this.lastReceivedAt = now;
    let frames: Frame[];
    try {
      if (this.splitter !== null) frames = this.splitter.push(bytes);
      else {
        if (bytes.length === 0) throw new FluxarError(400, 'empty message (a frame holds at least its flags byte)');
        const seal = this.ciphers === null ? 0 : SEAL_OVERHEAD;
        if (bytes.length - 1 - seal > this.maxFrameIn)
          throw new FluxarError(413, `frame of ${bytes.length - 1 - seal} bytes exceeds the maximum of ${this.maxFrameIn}`);
        frames = [{ flags: bytes[0]!, body: bytes.subarray(1) }];
      }
    } catch (err) {
      const e = err as FluxarError;
      this.abort(e.code, e.message);
      return;
    }
    for (const frame of frames) {
      if ((this.state as SessionState) === 'closed') return;
      try {
        this.receiveFrame(frame, now);
      } catch (err) {
        // Nothing a peer sends may escape as an exception: the connection fails, the host logs.
        this.events.push({ type: 'fault', error: err });
        this.abort(ErrorCode.Internal, 'internal error while handling a frame');
        return;
      }
    }
  }

  /** The largest frame this side accepts now (the agreed maximum once the handshake set it). */
  get maxFrame(): number {
    return this.maxFrameIn;
  }

  private agreeMaxFrame(agreed: number): void {
    this.maxFrameOut = agreed;
    this.maxFrameIn = agreed;
    if (this.splitter !== null) this.splitter.maxFrame = agreed;
  }

  /**
   * When tick() next has something to do (a handshake timeout, a call's deadline, a heartbeat,
   * the drain timeout), on the session's clock; Infinity when nothing is due. A host arms one
   * timer for it, as quinn-proto's poll_timeout asks, instead of ticking on a fixed period. It
   * may be early (a call that has finished still counts until the next tick), never late.
   */
  nextDeadline(): number {
    switch (this.state) {
      case 'closed':
        return NO_DEADLINE;
      case 'handshake':
        return this.handshakeDeadline;
      default: {
        if (this.detachedAt !== null) return Math.min(this.earliestDeadline, this.detachedAt + this.keepDetachedMs());
        const heartbeatMs = this.info!.heartbeatMs;
        const heartbeat = heartbeatMs > 0 ? this.lastHeartbeatAt + heartbeatMs : NO_DEADLINE;
        const drain = this.state === 'closing' ? this.drainDeadline : NO_DEADLINE;
        return Math.min(this.earliestDeadline, heartbeat, drain);
      }
    }
  }

  /** Lets time pass: handshake timeout, deadlines, heartbeats, drain timeout. */
  tick(): void {
    if (this.state === 'closed') return;
    const now = this.clock();
    if (this.state === 'handshake') {
      if (now >= this.handshakeDeadline) {
        this.abort(ErrorCode.DeadlineExceeded, `no handshake within ${this.options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS} ms`);
      }
      return;
    }
    if (now >= this.earliestDeadline) this.expireDeadlines(now);
    if (this.detachedAt !== null) {
      if (now >= this.detachedAt + this.keepDetachedMs()) {
        this.terminate(ErrorCode.Unavailable, `connection lost and the session not resumed within ${this.keepDetachedMs()} ms`, false);
      }
      return;
    }
    const heartbeatMs = this.info!.heartbeatMs;
    if (heartbeatMs > 0 && now - this.lastHeartbeatAt >= heartbeatMs) {
      this.lastHeartbeatAt = now;
      // Any frame counts as a sign of life; pings guarantee there is one per interval.
      if (now - this.lastReceivedAt >= MISSED_HEARTBEATS_LIMIT * heartbeatMs) {
        const reason = `peer silent for ${MISSED_HEARTBEATS_LIMIT} heartbeats (${now - this.lastReceivedAt} ms)`;
        if (this.canDetach()) return this.detach(reason);
        this.terminate(ErrorCode.Unavailable, reason, true);
        return;
      }
      this.sendControl(MessageType.Hello, null, ControlTarget.Ping, this.positionReport());
    }
    if (this.state === 'closing' && now >= this.drainDeadline) {
      this.terminate(ErrorCode.Unavailable, 'drain timeout: closed with calls still in flight', true);
    }
  }

  /** The transport closed under us: a resumable session waits for its resume, any other ends. */
  transportClosed(reason = 'connection closed'): void {
    if (this.state === 'closed' || this.detachedAt !== null) return;
    if (this.canDetach()) return this.detach(reason);
    this.terminate(ErrorCode.Unavailable, reason, false);
  }

  // ---- session resume (spec section 20) ------------------------------------------------

  /** Whether the connection is gone and the session waits to be resumed. */
  get detached(): boolean {
    return this.detachedAt !== null;
  }

  /** Whether the resume buffer is full: nothing new may be originated until the peer acknowledges. */
  get resumeBufferFull(): boolean {
    return this.resumable && this.sentPos - this.peerReceivedPos >= this.resumeBufferLimit;
  }

  /** Positions and retained envelopes, for tests and metrics. */
  get positions(): { sent: number; received: number; peerReceived: number; retained: number } {
    return { sent: this.sentPos, received: this.receivedPos, peerReceived: this.peerReceivedPos, retained: this.retained.length - this.retainedHead };
  }

  /**
   * How long a detached session is kept: the server's resume_ms. A client waits twice that, so a
   * server it reaches late still gives the verdict (404) rather than the client guessing.
   */
  private keepDetachedMs(): number {
    return this.role === 'server' ? this.resumeMs : 2 * this.resumeMs;
  }

  private canDetach(): boolean {
    return this.resumable && this.resumeMs > 0 && (this.state === 'open' || this.state === 'closing') && this.detachedAt === null;
  }

  private detach(reason: string): void {
    this.detachedAt = this.clock();
    this.takeOutput();
    this.events.push({ type: 'detached', reason });
  }

  /**
   * Server: why the session cannot be resumed with this token by a client that has received
   * `pos` envelopes, or null when it can. Refusals are final (spec section 20.2).
   */
  private resumeRefusal(request: ResumeRequest): { code: number; message: string } | null {
    const token = this.info?.resumeToken;
    if (
      this.state === 'closed' ||
      this.role !== 'server' ||
      !this.resumable ||
      token === undefined ||
      token.length !== request.token.length ||
      !timingSafeEqual(token, request.token)
    ) {
      return UNKNOWN_SESSION;
    }
    return this.positionRefusal(request.pos);
  }

  /** Why the peer's position cannot be met from what is retained, or null. */
  private positionRefusal(pos: number): { code: number; message: string } | null {
    if (pos < this.peerReceivedPos || pos > this.sentPos) {
      return {
        code: ErrorCode.Conflict,
        message: `cannot resume from position ${pos}: this side sent ${this.sentPos} and retains from ${this.peerReceivedPos + 1}`,
      };
    }
    return null;
  }

  /**
   * Server: continues `old`, the session the request names (undefined when the host knows none),
   * on this connection: the hellos finish, then both sides resend what the other lacks, and
   * `old` is left empty and closed. Returns false when it refused instead (404 unknown or
   * expired, 409 positions that cannot be met) and closes: the host has nothing to move.
   */
  acceptResume(old: Session | undefined): boolean {
    const request = this.resumeRequest;
    if (request === null || !this.authenticating || this.state !== 'handshake') return false;
    const refused = old === undefined ? UNKNOWN_SESSION : old.resumeRefusal(request);
    if (refused !== null || old === undefined) {
      // old is undefined only when the refusal is UNKNOWN_SESSION.
      this.refuseResume(refused!.code, refused!.message);
      return false;
    }
    this.authenticating = false;
    this.resumeRequest = null;
    this.takeOver(old, request.pos);
    if (this.ciphers !== null) {
      // End to end: the hello's session was provisional; the sealed acceptance names the resumed one.
      this.info = { ...this.info!, id: old.info!.id, resumeToken: randomBytes(16) };
      this.sendEnvelope({
        type: MessageType.Hello,
        id: uuidv7(),
        ref: this.credentialsId,
        target: Capability.Noise,
        meta: null,
        payload: { resumed: { pos: this.receivedPos, session: this.info.id, resume_token: this.info.resumeToken } },
        error: null,
      });
      this.resendRetained();
      this.open();
      return true;
    }
    this.sendServerHello(old.info!.id);
    this.resendRetained();
    if (this.options.psk !== undefined) this.awaitingPskProof = true;
    else this.open();
    return true;
  }

  /** Server: refuses the resume request (404 unknown or expired, 409 positions that cannot be met) and closes. */
  refuseResume(code: number, message: string): void {
    if (this.resumeRequest === null) return;
    this.resumeRequest = null;
    this.authenticating = true;
    this.reject(code, message);
  }

  /**
   * Takes the session-level state of `old` (calls, streams, subscriptions, publishes, positions,
   * what is retained): this session continues it. `old` is left empty and closed without an
   * event, so nothing done to it by mistake reaches a peer. The peer has received `peerPos`.
   */
  private takeOver(old: Session, peerPos: number): void {
    this.outgoing = old.outgoing;
    this.incoming = old.incoming;
    this.streams = old.streams;
    this.streamsFromPeer = old.streamsFromPeer;
    this.streamsToPeer = old.streamsToPeer;
    this.subscriptionsOut = old.subscriptionsOut;
    this.subscriptionsIn = old.subscriptionsIn;
    this.publishesOut = old.publishesOut;
    this.publishesIn = old.publishesIn;
    this.earliestDeadline = old.earliestDeadline;
    this.principal = old.principal;
    this.sentPos = old.sentPos;
    this.receivedPos = old.receivedPos;
    this.reportedPos = old.receivedPos;
    this.peerReceivedPos = old.peerReceivedPos;
    this.retained = old.retained;
    this.retainedHead = old.retainedHead;
    this.drainDeadline = old.drainDeadline;
    this.weSaidBye = old.weSaidBye;
    this.peerSaidBye = old.peerSaidBye;
    this.continuedState = old.state === 'closing' ? 'closing' : 'open';
    this.resumable = true;
    this.trimRetained(peerPos);
    old.retire();
  }

  /** Empties and closes a session another one has taken over, without an event. */
  private retire(): void {
    this.outgoing = new Map();
    this.incoming = new Map();
    this.streams = new Map();
    this.subscriptionsOut = new Map();
    this.subscriptionsIn = new Map();
    this.publishesOut = new Set();
    this.publishesIn = new Map();
    this.retained = [];
    this.retainedHead = 0;
    this.state = 'closed';
    this.events = [];
    this.output = [];
    this.outbox?.reset();
  }

  /** Sends again every retained envelope (those the peer has not received), with their original ids. */
  private resendRetained(): void {
    for (let i = this.retainedHead; i < this.retained.length; i++) {
      const body = this.retained[i]!;
      if (this.options.framing === 'stream') {
        const box = (this.outbox ??= new CborWriter(OUTBOX_INITIAL_BYTES));
        const start = box.skip(STREAM_HEADER_BYTES);
        box.raw(body);
        this.endStreamFrame(box, start, false);
      } else this.queueMessageFrame(encodeMessageFrame(0, body), false);
    }
  }

  /**
   * One envelope of types 2 to 7 sent, its bytes `from` to `to` in `bytes`: counted, and
   * retained when resume was agreed (only then is a view of them made: one per frame otherwise).
   */
  private countSent(bytes: Uint8Array, from: number, to: number): void {
    this.sentPos++;
    if (this.resumable) this.retained.push(Buffer.from(bytes.subarray(from, to)));
  }

  /** One envelope of types 2 to 7 received: counted, and acknowledged every RESUME_ACK_EVERY. */
  private countReceived(): void {
    if (++this.receivedPos - this.reportedPos >= RESUME_ACK_EVERY && this.resumable) {
      this.sendControl(MessageType.Hello, null, ControlTarget.Ack, this.positionReport());
    }
  }

  /** {pos} for an ack, ping or pong when resume was agreed (and recorded as reported); else null. */
  private positionReport(): { pos: number } | null {
    if (!this.resumable) return null;
    this.reportedPos = this.receivedPos;
    return { pos: this.receivedPos };
  }

  /** The peer reports the position it has received (ack, ping, pong): what it has is let go. */
  private receivePosition(payload: unknown, required: boolean): void {
    const pos = isCborMap(payload) ? payload.pos : undefined;
    if (pos === undefined && !required) return;
    if (!this.resumable) return this.abort(ErrorCode.BadRequest, 'a position report, but resume was not agreed');
    if (!isUint(pos)) return this.abort(ErrorCode.BadRequest, `a position report needs {pos: n} with n an unsigned integer, got ${describeValue(pos)}`);
    if (pos > this.sentPos) return this.abort(ErrorCode.BadRequest, `the peer reports position ${pos}, but only ${this.sentPos} envelopes were sent`);
    const wasFull = this.resumeBufferFull;
    this.trimRetained(pos);
    if (wasFull && !this.resumeBufferFull) this.events.push({ type: 'writable' });
  }

  private trimRetained(pos: number): void {
    if (pos <= this.peerReceivedPos) return;
    for (let n = pos - this.peerReceivedPos; n > 0; n--) this.retained[this.retainedHead++] = EMPTY;
    this.peerReceivedPos = pos;
    if (this.retainedHead === this.retained.length) {
      this.retained = [];
      this.retainedHead = 0;
    } else if (this.retainedHead > 1024 && this.retainedHead * 2 > this.retained.length) {
      this.retained = this.retained.slice(this.retainedHead);
      this.retainedHead = 0;
    }
  }

  // ---- server handshake ----------------------------------------------------------------

  /** Server: the credentials are good; open the session. */
  accept(principal: Principal): void {
    if (!this.authenticating || this.state !== 'handshake') return;
    this.authenticating = false;
    this.principal = principal;
    if (this.ciphers !== null) {
      // The hellos went before the credentials: the acceptance is the last handshake message.
      this.sendEnvelope({ type: MessageType.Hello, id: uuidv7(), ref: this.credentialsId, target: Capability.Noise, meta: null, payload: null, error: null });
      return this.open();
    }
    this.sendServerHello();
    if (this.options.psk !== undefined) {
      this.awaitingPskProof = true;
      return;
    }
    this.open();
  }

  /**
   * The server hello: the choices made, the session's settings, and the Noise reply when one is
   * due. `resumedId`: the session this connection resumes (its position goes in `resumed`).
   */
  private sendServerHello(resumedId?: Uint8Array): void {
    const supported = this.options.caps ?? availableCompressions();
    // One compression at most: the client's first choice among those this side supports.
    const compression = chooseCompression(this.offeredCaps, supported);
    const caps = this.offeredCaps.filter(
      (c) => supported.includes(c) && c !== Capability.Psk && c !== Capability.Resume && (!isCompression(c) || c === compression),
    );
    if (this.options.psk !== undefined && this.noise === null) caps.push(Capability.Psk);
    if (this.noise !== null) caps.push(Capability.Noise);
    const resumeMs = this.options.resumeMs ?? DEFAULT_RESUME_MS;
    if (this.offeredCaps.includes(Capability.Resume) && resumeMs > 0) {
      caps.push(Capability.Resume);
      this.resumable = true;
      this.resumeMs = resumeMs;
    }
    const info: SessionInfo = {
      id: resumedId ?? this.options.newSessionId?.() ?? entityId(EntityType.Session),
      resumeToken: randomBytes(16),
      heartbeatMs: this.options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      maxFrame: this.maxFrameOut,
      caps,
      maxStreams: this.peerMaxStreams,
      maxPublishes: this.peerMaxPublishes,
      resumeMs: this.resumable ? resumeMs : 0,
    };
    this.serverNonce = newNonce();
    const payload: Record<string, unknown> = {
      version: PROTOCOL_VERSION,
      caps,
      session: {
        id: info.id,
        resume_token: info.resumeToken,
        heartbeat_ms: info.heartbeatMs,
        max_frame: info.maxFrame,
        max_streams: this.options.maxStreams ?? DEFAULT_MAX_STREAMS,
        max_publishes: this.options.maxPublishes ?? DEFAULT_MAX_PUBLISHES,
        resume_ms: info.resumeMs,
      },
      nonce: this.serverNonce,
    };
    if (resumedId !== undefined) payload.resumed = { pos: this.receivedPos };
    if (this.options.psk !== undefined && this.noise === null) {
      payload.proof = pskProof(this.options.psk, 'server', this.clientNonce!, this.serverNonce);
    }
    if (this.noise !== null) {
      // The choices again, inside the Noise reply: an edit of the plaintext copy is detected.
      payload.noise = this.noise.writeMessage(encodeCbor({ version: payload.version, caps: payload.caps, session: payload.session }));
    }
    this.serverHelloId = uuidv7();
    this.sendEnvelope({ type: MessageType.Hello, id: this.serverHelloId, ref: this.clientHelloId, target: null, meta: null, payload, error: null });
    this.info = info;
    this.codec = compression === null ? null : codecFor(compression)!;
    if (this.noise !== null) {
      this.startCiphers();
      this.noiseStage = 'credentials';
    }
  }

  /** From the completed handshake on, every frame either way is sealed. */
  private startCiphers(): void {
    const { send, receive } = this.noise!.split();
    this.noise = null;
    this.ciphers = new FrameCiphers(send, receive);
    this.sealedFrames = new StreamFrameSplitter(this.maxFrameIn);
    // What is queued already (the server hello) goes in the clear; everything after is sealed.
    this.plainOutput = this.outbox?.pos ?? this.output.length;
    if (this.splitter !== null) this.splitter.maxFrame = this.maxFrameIn + SEAL_OVERHEAD;
  }

  /**
   * The queued frames, sealed: runs of whole frames, each run one sealed frame of at most
   * max_frame + 5 bytes of plaintext. One seal per run, not per frame: a burst of small frames
   * costs one AEAD operation, which is what keeps encryption cheap (spec section 19.3).
   */
  private sealed(frames: Uint8Array, limit: number): Buffer[] {
    const out: Buffer[] = [];
    const view = Buffer.from(frames.buffer, frames.byteOffset, frames.byteLength);
    for (let from = 0; from < view.length; ) {
      let to = from;
      while (to < view.length) {
        const next = to + 4 + view.readUInt32BE(to);
        if (next - from > limit && to > from) break;
        to = next;
      }
      out.push(this.ciphers!.seal(view.subarray(from, to), 0, this.options.framing));
      from = to;
    }
    return out;
  }

  /** Server: refuse the credentials (401 by default) and close. */
  reject(code: number = ErrorCode.Unauthenticated, message = 'unauthenticated'): void {
    if (!this.authenticating || this.state !== 'handshake') return;
    this.authenticating = false;
    this.sendEnvelope({ type: MessageType.Hello, id: uuidv7(), ref: this.clientHelloId, target: null, meta: null, payload: null, error: { code, message } });
    this.finish(code, message);
  }

  // ---- calls ---------------------------------------------------------------------------

  /** Starts a call; returns its key. The outcome arrives as a 'result' event. */
  call(target: string, payload: unknown, options: CallOptions = {}): string {
    if (this.state === 'handshake') throw new FluxarError(ErrorCode.BadRequest, 'session not open yet');
    if (this.state !== 'open' || this.weSaidBye) throw new FluxarError(ErrorCode.Unavailable, 'session is closing');
    const id = uuidv7();
    let meta = options.meta ?? null;
    let deadline = NO_DEADLINE;
    if (options.deadlineMs !== undefined) {
      meta = { ...meta, deadline_ms: options.deadlineMs };
      deadline = this.clock() + options.deadlineMs;
    }
    this.sendEnvelope({ type: MessageType.Call, id, ref: null, target, meta, payload, error: null });
    const key = idKey(id);
    this.outgoing.set(key, { deadline });
    if (deadline < this.earliestDeadline) this.earliestDeadline = deadline;
    return key;
  }

  /** Gives up on one of our calls: the peer is told to cancel; no result event follows. */
  cancel(key: string): void {
    if (!this.outgoing.delete(key)) return;
    if (this.state !== 'closed') this.sendControl(MessageType.Call, keyBytes(key), ControlTarget.Cancel);
    this.checkDrained();
  }

  /** Whether a call or stream from the peer still waits for its answer (not answered, cancelled or expired). */
  isPending(key: string): boolean {
    return this.incoming.has(key) || this.streams.get(key)?.role === 'responder';
  }

  /**
   * Answers a call from the peer, or ends a stream it opened with the final payload. Ignored if
   * the call or stream was cancelled or timed out meanwhile.
   */
  respond(key: string, payload: unknown): void {
    const call = this.incoming.get(key) ?? this.takeRespondedStream(key);
    if (call === undefined) return;
    this.incoming.delete(key);
    try {
      this.sendEnvelope({ type: MessageType.Call, id: uuidv7(), ref: call.id, target: null, meta: null, payload, error: null });
    } catch (err) {
      const e = err instanceof FluxarError ? err : new FluxarError(ErrorCode.Internal, `response could not be encoded: ${(err as Error).message}`);
      this.sendError(MessageType.Call, call.id, e.code, e.message);
    }
    this.checkDrained();
  }

  /** Answers a call from the peer with an error, or ends a stream it opened with one. */
  fail(key: string, code: number, message: string, data?: unknown): void {
    const call = this.incoming.get(key) ?? this.takeRespondedStream(key);
    if (call === undefined) return;
    this.incoming.delete(key);
    this.sendError(MessageType.Call, call.id, code, message, data);
    this.checkDrained();
  }

  /** Sends an envelope of an extension type (stream, publish, ...) as is. */
  sendRaw(envelope: Envelope): void {
    this.sendEnvelope(envelope);
  }

  get inFlight(): { outgoing: number; incoming: number; streams: number } {
    return { outgoing: this.outgoing.size, incoming: this.incoming.size, streams: this.streams.size };
  }

  // ---- pub/sub (spec section 14) -------------------------------------------------------

  /** Subscribes to `pattern` at the peer's broker; returns the subscription's key. */
  subscribe(pattern: string, options: Partial<SubscribeOptions> = {}): string {
    this.checkCanStart();
    const bad = patternError(pattern);
    if (bad !== null) throw new FluxarError(ErrorCode.BadRequest, bad);
    const meta = subscribeMeta(options);
    const checked = readSubscribeMeta(meta);
    if (typeof checked === 'string') throw new FluxarError(ErrorCode.BadRequest, checked);
    const id = uuidv7();
    this.sendEnvelope({ type: MessageType.Subscribe, id, ref: null, target: pattern, meta, payload: null, error: null });
    const key = idKey(id);
    this.subscriptionsOut.set(key, id);
    return key;
  }

  /** Ends our subscription; its 'subscription-end' event follows when the broker confirms. */
  unsubscribe(key: string): void {
    const id = this.subscriptionsOut.get(key);
    if (id === undefined || this.state === 'closed') return;
    this.sendEnvelope({ type: MessageType.Unsubscribe, id: uuidv7(), ref: id, target: null, meta: null, payload: null, error: null });
  }

  /**
   * Publishes to the peer's broker. QoS 1 and 2 return the key whose 'published' event brings
   * the broker's answer; QoS 0 returns null. Throws 400 for a bad topic, 429 at the peer's
   * max_publishes.
   */
  publish(topic: string, payload: unknown, qos: Qos = 0, meta: Record<string, unknown> | null = null): string | null {
    this.checkCanStart();
    const bad = topicError(topic);
    if (bad !== null) throw new FluxarError(ErrorCode.BadRequest, bad);
    if (!isQos(qos)) throw new FluxarError(ErrorCode.BadRequest, `qos must be 0, 1 or 2, got ${describeValue(qos)}`);
    if (qos > 0 && this.publishesOut.size >= this.peerMaxPublishes) {
      throw new FluxarError(ErrorCode.Overloaded, `the peer takes ${this.peerMaxPublishes} unanswered publishes at once (max_publishes), all in flight`);
    }
    const id = uuidv7();
    this.sendEnvelope({ type: MessageType.Publish, id, ref: null, target: topic, meta: { ...meta, qos }, payload, error: null });
    if (qos === 0) return null;
    const key = idKey(id);
    this.publishesOut.add(key);
    return key;
  }

  /** Broker: accepts (error null) or refuses the peer's subscription `key`. */
  answerSubscribe(key: string, error: EnvelopeErrorInfo | null): void {
    const id = this.subscriptionsIn.get(key);
    if (id === undefined) return;
    if (error !== null) this.subscriptionsIn.delete(key);
    this.sendEnvelope({ type: MessageType.Subscribe, id: uuidv7(), ref: id, target: null, meta: null, payload: null, error });
  }

  /** Broker: ends the peer's subscription `key` (its last envelope); with an error when forced. */
  endSubscription(key: string, error: EnvelopeErrorInfo | null = null): void {
    const id = this.subscriptionsIn.get(key);
    if (id === undefined) return;
    this.subscriptionsIn.delete(key);
    if (this.state !== 'closed')
      this.sendEnvelope({ type: MessageType.Unsubscribe, id: uuidv7(), ref: id, target: ControlTarget.End, meta: null, payload: null, error });
  }

  /** Broker: one delivery attempt to the peer's subscription `key`; returns the attempt's key (what its ack names). */
  deliver(
    key: string,
    topic: string,
    payload: unknown,
    meta: DeliveryMeta,
    extra: Record<string, unknown> | null = null,
    /** The payload already encoded (a fan-out encodes it once for all its deliveries). */
    encodedPayload?: Uint8Array,
  ): string | null {
    const ref = this.subscriptionsIn.get(key);
    if (ref === undefined || this.state === 'closed') return null;
    if (this.options.framing === 'stream' && extra === null) return this.appendDeliveryFrame(ref, topic, payload, meta, encodedPayload);
    const id = uuidv7();
    this.sendEnvelope({ type: MessageType.Message, id, ref, target: topic, meta: { ...extra, msg: meta.msg, n: meta.n, qos: meta.qos }, payload, error: null });
    return idKey(id);
  }

  /** Subscriber: acks (ok) or nacks the delivery attempt `deliveryKey`. */
  ackDelivery(deliveryKey: string, ok = true): void {
    if (this.state === 'closed') return;
    const target = ok ? ControlTarget.Ack : ControlTarget.Nack;
    if (this.options.framing === 'stream') return this.appendAnswerFrame(MessageType.Message, deliveryKey, target, null);
    this.sendEnvelope({ type: MessageType.Message, id: uuidv7(), ref: keyBytes(deliveryKey), target, meta: null, payload: null, error: null });
  }

  /** Broker: acks the peer's QoS 1 or 2 publish `key`. */
  answerPublish(key: string, payload: { duplicate: boolean; subscribers: number }): void {
    if (!this.publishesIn.delete(key)) return;
    this.appendAnswerOrSend(MessageType.Publish, key, ControlTarget.Ack, payload);
    this.checkDrained();
  }

  /** Broker: nacks the peer's publish `key` (any QoS: a publish that cannot be taken is never silent). */
  failPublish(key: string, code: number, message: string, id = this.publishesIn.get(key)): void {
    if (id === undefined) return;
    this.publishesIn.delete(key);
    this.sendEnvelope({ type: MessageType.Publish, id: uuidv7(), ref: id, target: ControlTarget.Nack, meta: null, payload: null, error: { code, message } });
    this.checkDrained();
  }

  private checkCanStart(): void {
    if (this.state === 'handshake') throw new FluxarError(ErrorCode.BadRequest, 'session not open yet');
    if (this.state !== 'open' || this.weSaidBye) throw new FluxarError(ErrorCode.Unavailable, 'session is closing');
  }

  private receiveSubscribe(env: Envelope): void {
    const bad = patternError(env.target);
    if (bad !== null) return this.sendError(MessageType.Subscribe, env.id, ErrorCode.BadRequest, bad);
    const options = readSubscribeMeta(env.meta);
    if (typeof options === 'string') return this.sendError(MessageType.Subscribe, env.id, ErrorCode.BadRequest, options);
    if (this.state !== 'open') return this.sendError(MessageType.Subscribe, env.id, ErrorCode.Unavailable, 'session is closing');
    const key = idKey(env.id);
    if (this.subscriptionsIn.has(key)) return this.sendError(MessageType.Subscribe, env.id, ErrorCode.Conflict, 'a subscription with this id exists');
    this.subscriptionsIn.set(key, env.id);
    this.events.push({ type: 'subscribe', key, pattern: env.target!, options });
  }

  private receiveSubscribeAnswer(env: Envelope): void {
    const key = idKey(env.ref!);
    if (!this.subscriptionsOut.has(key)) return;
    if (env.error !== null) this.subscriptionsOut.delete(key);
    this.events.push({ type: 'subscribed', key, error: env.error });
  }

  private receiveUnsubscribe(env: Envelope): void {
    if (env.ref === null) return this.sendError(MessageType.Unsubscribe, env.id, ErrorCode.BadRequest, 'an unsubscribe needs ref: the subscription id');
    const key = idKey(env.ref);
    if (env.target === null) {
      if (this.subscriptionsIn.has(key)) this.events.push({ type: 'unsubscribe', key });
      return;
    }
    if (env.target !== ControlTarget.End) return this.abort(ErrorCode.BadRequest, `unknown unsubscribe control ${describeValue(env.target)}`);
    if (!this.subscriptionsOut.delete(key)) return;
    this.events.push({ type: 'subscription-end', key, error: env.error });
  }

  private receivePublish(env: Envelope): void {
    const asked = env.meta?.qos ?? 0;
    const bad = topicError(env.target) ?? (isQos(asked) ? null : `meta.qos must be 0, 1 or 2, got ${describeValue(asked)}`);
    if (bad !== null) return this.failPublish(idKey(env.id), ErrorCode.BadRequest, bad, env.id);
    const qos = asked as Qos;
    if (this.state !== 'open' && (this.state !== 'closing' || this.peerSaidBye)) {
      return this.failPublish(idKey(env.id), ErrorCode.Unavailable, 'session is closing', env.id);
    }
    const key = idKey(env.id);
    if (qos > 0) {
      const limit = this.options.maxPublishes ?? DEFAULT_MAX_PUBLISHES;
      if (this.publishesIn.has(key)) return this.failPublish(key, ErrorCode.Conflict, 'a publish with this id is in flight', env.id);
      if (this.publishesIn.size >= limit)
        return this.failPublish(key, ErrorCode.Overloaded, `more than ${limit} publishes in flight on this connection (max_publishes)`, env.id);
      this.publishesIn.set(key, env.id);
    }
    this.events.push({ type: 'publish', key, id: env.id, topic: env.target!, qos, payload: env.payload, meta: env.meta });
  }

  private receivePublishAnswer(env: Envelope): void {
    if (env.target !== ControlTarget.Ack && env.target !== ControlTarget.Nack) {
      return this.abort(ErrorCode.BadRequest, `a publish answer is ack or nack, got ${describeValue(env.target)}`);
    }
    const key = idKey(env.ref!);
    if (!this.publishesOut.delete(key)) return;
    const error = env.target === ControlTarget.Nack ? (env.error ?? { code: ErrorCode.Internal, message: 'nacked' }) : null;
    this.events.push({ type: 'published', key, payload: error === null ? env.payload : null, error });
    this.checkDrained();
  }

  /**
   * Type 7: a delivery to one of our subscriptions (its ref is a subscription we made), or an
   * ack or nack of a delivery we sent (its ref is that delivery). The ref tells them apart: a
   * topic may be called "ack".
   */
  private receiveMessage(env: Envelope): void {
    if (env.ref === null) return this.sendError(MessageType.Message, env.id, ErrorCode.BadRequest, 'a message needs ref');
    const key = idKey(env.ref);
    if (this.subscriptionsOut.has(key)) {
      const meta = readDeliveryMeta(env.meta);
      if (typeof meta === 'string') return this.abort(ErrorCode.BadRequest, meta);
      if (topicError(env.target) !== null)
        return this.abort(ErrorCode.BadRequest, `a delivery names the topic it was published to, got ${describeValue(env.target)}`);
      this.events.push({ type: 'delivery', key, deliveryKey: meta.qos === 0 ? '' : idKey(env.id), topic: env.target!, payload: env.payload, meta });
      return;
    }
    if (env.target === ControlTarget.Ack || env.target === ControlTarget.Nack) {
      this.events.push({ type: 'delivery-ack', key, ok: env.target === ControlTarget.Ack });
    }
    // Anything else names a subscription that has ended: a late delivery, ignored.
  }

  // ---- streams (spec section 13) -------------------------------------------------------

  /**
   * Opens a stream; returns its key. Chunks arrive as 'chunk' events, credit as 'credit' events,
   * and the response that ends it as a 'result' event.
   */
  openStream(target: string, payload: unknown, options: OpenStreamOptions): string {
    if (this.state === 'handshake') throw new FluxarError(ErrorCode.BadRequest, 'session not open yet');
    if (this.state !== 'open' || this.weSaidBye) throw new FluxarError(ErrorCode.Unavailable, 'session is closing');
    if (!STREAM_MODES.includes(options.mode))
      throw new FluxarError(ErrorCode.BadRequest, `stream mode must be "out", "in" or "bidi", got ${describeValue(options.mode)}`);
    const credit = options.credit ?? 0;
    if (!isCreditTotal(credit)) throw new FluxarError(ErrorCode.BadRequest, `credit must be an integer from 0 to 2^53 - 1, got ${describeValue(credit)}`);
    if (this.streamsToPeer >= this.peerMaxStreams) {
      throw new FluxarError(ErrorCode.Overloaded, `the peer accepts ${this.peerMaxStreams} streams at once (max_streams), all open`);
    }
    const id = uuidv7();
    const meta: Record<string, unknown> = { ...options.meta, stream: options.mode };
    if (options.mode !== 'in') meta.credit = credit;
    let deadline = NO_DEADLINE;
    if (options.deadlineMs !== undefined) {
      meta.deadline_ms = options.deadlineMs;
      deadline = this.clock() + options.deadlineMs;
    }
    this.sendEnvelope({ type: MessageType.Call, id, ref: null, target, meta, payload, error: null });
    const key = idKey(id);
    this.streams.set(key, newStreamRecord(id, 'opener', options.mode, credit, deadline));
    this.streamsToPeer++;
    if (deadline < this.earliestDeadline) this.earliestDeadline = deadline;
    return key;
  }

  /** Chunks we may send on the stream now (0 when it is not ours to send on, or closed). */
  streamCredit(key: string): number {
    const s = this.streams.get(key);
    return s === undefined || s.state !== 'active' || !s.sendOpen ? 0 : s.sendCredit;
  }

  /** Whether the stream is open on this side (ACTIVE or CANCELLING). */
  hasStream(key: string): boolean {
    return this.streams.has(key);
  }

  /**
   * Sends one chunk. Throws FluxarError: 413 when it does not fit the peer's max_frame (nothing
   * is spent; the stream carries on), 429 without credit, 400 when this side has no direction
   * to send on, 499 once cancelled, 404 for a closed stream.
   */
  sendChunk(key: string, payload: unknown, meta: Record<string, unknown> | null = null): void {
    const s = this.streams.get(key);
    if (s === undefined) throw new FluxarError(ErrorCode.NotFound, 'the stream is closed');
    const refused = cannotSend(s);
    if (refused !== null) throw refused;
    if (this.options.framing === 'stream' && meta === null) this.appendChunkFrame(s.id, payload);
    else this.sendEnvelope({ type: MessageType.Stream, id: uuidv7(), ref: s.id, target: null, meta, payload, error: null });
    s.sendCredit--;
    s.sent++;
  }

  /** Grants the peer `credit` more chunks on the stream (resume). */
  grantCredit(key: string, credit: number): void {
    const s = this.streams.get(key);
    if (s === undefined || s.state !== 'active' || !s.receiveOpen) return;
    if (!isCreditGrant(credit)) throw new FluxarError(ErrorCode.BadRequest, `a grant must be an integer from 1 to 2^53 - 1, got ${describeValue(credit)}`);
    const window = addCredit(s.receiveWindow, credit, 'the window');
    if (typeof window === 'string') throw new FluxarError(ErrorCode.BadRequest, window);
    s.receiveWindow = window;
    this.sendStreamControl(s, ControlTarget.Resume, { credit });
  }

  /** The peer's direction: credit granted and not yet used. */
  streamWindow(key: string): number {
    return this.streams.get(key)?.receiveWindow ?? 0;
  }

  /** Asks the producer to stop: its unspent credit drops to 0 (chunks in flight still arrive). */
  pauseStream(key: string): void {
    const s = this.streams.get(key);
    if (s === undefined || s.state !== 'active' || !s.receiveOpen) return;
    this.sendStreamControl(s, ControlTarget.Pause, null);
  }

  /** Opener: no more up chunks. */
  endStream(key: string): void {
    const s = this.streams.get(key);
    if (s === undefined || s.role !== 'opener' || s.state !== 'active' || !s.sendOpen) return;
    s.sendOpen = false;
    this.sendStreamControl(s, ControlTarget.End, null);
  }

  /**
   * Gives up on a stream. The opener sends cancel and waits (CANCELLING) for the response that
   * confirms it; no event of the stream follows. The responder answers with 499.
   */
  cancelStream(key: string, code: number = ErrorCode.Cancelled, message = 'cancelled'): void {
    const s = this.streams.get(key);
    if (s === undefined) return;
    if (s.role === 'responder') return this.fail(key, code, message);
    if (s.state !== 'active') return;
    s.state = 'cancelling';
    s.deadline = NO_DEADLINE;
    if (this.state !== 'closed') this.sendStreamControl(s, ControlTarget.Cancel, null);
  }

  private sendStreamControl(s: StreamRecord, target: string, payload: unknown): void {
    this.sendEnvelope({ type: MessageType.Stream, id: uuidv7(), ref: s.id, target, meta: null, payload, error: null });
  }

  /** The responder's stream `key`, closed because it is being answered; in the shape of a call. */
  private takeRespondedStream(key: string): IncomingCall | undefined {
    const s = this.streams.get(key);
    if (s === undefined || s.role !== 'responder') return undefined;
    this.closeStream(key, s);
    return { id: s.id, deadline: NO_DEADLINE };
  }

  private closeStream(key: string, s: StreamRecord): void {
    this.streams.delete(key);
    if (s.role === 'responder') this.streamsFromPeer--;
    else this.streamsToPeer--;
  }

  /** A request with meta.stream: the peer opens a stream (spec section 13.1). */
  private receiveStreamOpen(env: Envelope, target: string, meta: Record<string, unknown>): void {
    const mode = meta.stream as StreamMode;
    if (!STREAM_MODES.includes(mode)) {
      return this.sendError(MessageType.Call, env.id, ErrorCode.BadRequest, `meta.stream must be "out", "in" or "bidi", got ${describeValue(meta.stream)}`);
    }
    const credit = mode === 'in' ? 0 : (meta.credit ?? 0);
    if (!isCreditTotal(credit)) {
      return this.sendError(
        MessageType.Call,
        env.id,
        ErrorCode.BadRequest,
        `meta.credit must be an integer from 0 to 2^53 - 1, got ${describeValue(meta.credit)}`,
      );
    }
    const key = idKey(env.id);
    if (this.streams.has(key) || this.incoming.has(key)) {
      return this.sendError(MessageType.Call, env.id, ErrorCode.Conflict, 'a call with this id is already in flight');
    }
    const limit = this.options.maxStreams ?? DEFAULT_MAX_STREAMS;
    if (this.streamsFromPeer >= limit) {
      return this.sendError(MessageType.Call, env.id, ErrorCode.Overloaded, `more than ${limit} streams open on this connection (max_streams)`);
    }
    let deadline = NO_DEADLINE;
    const budget = meta.deadline_ms;
    if (typeof budget === 'number' && Number.isFinite(budget) && budget >= 0) {
      deadline = this.clock() + budget;
      if (deadline < this.earliestDeadline) this.earliestDeadline = deadline;
    }
    this.streams.set(key, newStreamRecord(env.id, 'responder', mode, credit, deadline));
    this.streamsFromPeer++;
    this.events.push({ type: 'stream', key, target, mode, payload: env.payload, meta });
  }

  /**
   * The stream's hot path on receipt: a chunk in the form every encoder writes it (definite
   * array, 16-byte id and ref as one-byte heads, null target and meta, then the payload, then a
   * null error) is read without decoding the envelope around its payload. Anything else, or a
   * payload that fails the profile, returns false: the full decoder reads it and says what is
   * wrong, as for any envelope.
   */
  private receivePlainChunk(b: Uint8Array, now: number): boolean {
    const last = b.length - 1;
    if (
      last < PLAIN_CHUNK_PAYLOAD ||
      b[0] !== 0x87 ||
      b[1] !== MessageType.Stream ||
      b[2] !== 0x50 ||
      b[19] !== 0x50 ||
      b[36] !== CBOR_NULL ||
      b[37] !== CBOR_NULL ||
      b[last] !== CBOR_NULL
    ) {
      return false;
    }
    const payload = this.plainPayload(b, PLAIN_CHUNK_PAYLOAD, now);
    if (payload === NOT_PLAIN) return false;
    const key = (this.lastChunkKey = idKeyAtOr(b, 20, this.lastChunkKey));
    const s = this.streams.get(key);
    if (s !== undefined) this.receiveChunk(key, s, payload, null);
    return true;
  }

  /**
   * The subscriber's hot path: a delivery in the form the broker writes it, [7, id, ref, topic,
   * {"msg": bytes(16), "n": uint, "qos": 0..2}, payload, null], read by comparing bytes around
   * the topic and the payload. Anything else takes the full decoder (false).
   */
  private receivePlainDelivery(b: Uint8Array, now: number): boolean {
    const last = b.length - 1;
    if (last < 60 || b[0] !== 0x87 || b[1] !== MessageType.Message || b[2] !== 0x50 || b[19] !== 0x50 || b[last] !== CBOR_NULL) return false;
    const key = (this.lastDeliveryKey = idKeyAtOr(b, 20, this.lastDeliveryKey));
    if (!this.subscriptionsOut.has(key)) return false;
    // The topic: ASCII text of one-byte or two-byte head (topics are ASCII, at most 256 bytes).
    let at = 36;
    let length = b[at]! - 0x60;
    if (length === 24) length = b[++at]!;
    else if (length < 0 || length > 23) return false;
    const topicAt = at + 1;
    at = topicAt + length;
    if (at + 40 > last) return false;
    // Deliveries come in runs of one topic: its bytes are compared before a string is made.
    const prev = this.lastDeliveryTopic;
    let topic = prev;
    let same = prev.length === length;
    for (let i = 0; same && i < length; i++) same = b[topicAt + i] === prev.charCodeAt(i);
    if (!same) {
      topic = '';
      for (let i = topicAt; i < at; i++) {
        const c = b[i]!;
        if (c >= 0x80) return false;
        topic += String.fromCharCode(c);
      }
    }
    // The meta map, as appendDeliveryFrame writes it: {"msg": <16 bytes>, "n": <uint>, "qos": <0..2>}.
    if (!bytesAt(b, at, DELIVERY_META_MSG)) return false;
    const msgAt = at + DELIVERY_META_MSG.length;
    at = msgAt + 16;
    if (!bytesAt(b, at, DELIVERY_META_N)) return false;
    at += DELIVERY_META_N.length;
    let n = b[at++]!;
    if (n === 0x18) n = b[at++]!;
    else if (n === 0x19) {
      n = (b[at]! << 8) | b[at + 1]!;
      at += 2;
    } else if (n > 0x17) return false;
    if (n < 1 || !bytesAt(b, at, DELIVERY_META_QOS)) return false;
    at += DELIVERY_META_QOS.length;
    const qos = b[at++]!;
    if (!isQos(qos)) return false;
    if (topic !== this.lastDeliveryTopic) {
      if (topicError(topic) !== null) return false;
      this.lastDeliveryTopic = topic;
    }
    const payload = this.plainPayload(b, at, now);
    if (payload === NOT_PLAIN) return false;
    // The publication id stays in the frame until someone reads it (FrameDeliveryMeta): a copy
    // per delivery, and its collection, were about a quarter of a subscriber's CPU per delivery in a
    // fan-out. A session that copies buffers may not rely on the frame later: its copy is made now.
    const meta = new FrameDeliveryMeta(b, msgAt, n, qos);
    if (this.options.copyBuffers === true) meta.detach();
    // Only a delivery that is acked needs its own key: a QoS 0 one is settled as it arrives.
    this.events.push({ type: 'delivery', key, deliveryKey: qos === 0 ? '' : idKeyAt(b, 3), topic, payload, meta });
    return true;
  }

  /**
   * The payload of an envelope in a plain form, at `at`: it must be valid under the profile and
   * end right before the envelope's last item (a null error). NOT_PLAIN otherwise, for the full
   * decoder to read and name what is wrong.
   */
  private plainPayload(b: Uint8Array, at: number, now: number): unknown {
    const bytes = plainBytesPayload(b, at);
    if (bytes !== undefined) {
      this.decodeBudget.spend(2, now);
      return this.options.copyBuffers === true ? Buffer.from(bytes) : bytes;
    }
    const r = new StrictReader(b, { copyBuffers: this.options.copyBuffers ?? false });
    r.pos = at;
    let payload: unknown;
    try {
      payload = r.value(1);
    } catch {
      return NOT_PLAIN;
    }
    if (r.pos !== b.length - 1) return NOT_PLAIN;
    // The envelope around the payload was read by comparing bytes: it counts as one item.
    this.decodeBudget.spend(r.items + 1, now);
    return payload;
  }

  /** The topic of the last plain delivery, checked once for a run of deliveries of one topic. */
  private lastDeliveryTopic = '';
  /** The subscription of the last plain delivery, by its key. */
  private lastDeliveryKey = '';
  /** The stream of the last plain chunk, by its key. */
  private lastChunkKey = '';

  /** A type 3 envelope: a chunk or a stream's control (spec sections 13.2 to 13.4). */
  private receiveStreamEnvelope(env: Envelope): void {
    if (env.ref === null)
      return this.sendError(MessageType.Stream, env.id, ErrorCode.BadRequest, 'a stream envelope needs ref: the id of the request that opened the stream');
    const key = idKey(env.ref);
    const s = this.streams.get(key);
    switch (env.target) {
      case null:
      case ControlTarget.Resume:
      case ControlTarget.Pause:
      case ControlTarget.End:
      case ControlTarget.Cancel:
        break;
      default:
        return this.abort(ErrorCode.BadRequest, `unknown stream control ${describeValue(env.target)}`);
    }
    // Late frames crossed a response or a cancel on the wire: not wrong, ignored.
    if (s === undefined) return;
    switch (env.target) {
      case null:
        return this.receiveChunk(key, s, env.payload, env.meta);
      case ControlTarget.Resume: {
        const p = env.payload as Record<string, unknown> | null;
        const credit = isCborMap(p) ? p.credit : undefined;
        if (!isCreditGrant(credit)) return this.abort(ErrorCode.BadRequest, `resume needs {credit: n} with n from 1 to 2^53 - 1, got ${describeValue(credit)}`);
        const total = addCredit(s.sendCredit, credit, 'stream credit');
        if (typeof total === 'string') return this.abort(ErrorCode.BadRequest, total);
        if (s.state !== 'active' || !s.sendOpen) return;
        s.sendCredit = total;
        this.events.push({ type: 'credit', key });
        return;
      }
      case ControlTarget.Pause:
        s.sendCredit = 0;
        return;
      case ControlTarget.End:
        if (s.role !== 'responder') return this.abort(ErrorCode.BadRequest, 'end comes from the opener: a responder ends a stream with its response');
        if (!s.receiveOpen) return;
        s.receiveOpen = false;
        this.events.push({ type: 'end', key });
        return;
      case ControlTarget.Cancel:
        return this.receiveStreamCancel(key, s);
    }
  }

  private receiveChunk(key: string, s: StreamRecord, payload: unknown, meta: Record<string, unknown> | null): void {
    if (s.state === 'cancelling') return;
    if (!s.receiveOpen) return this.abort(ErrorCode.BadRequest, 'a stream chunk after its direction ended (or on a direction the stream does not have)');
    if (s.receiveWindow === 0) return this.abort(ErrorCode.BadRequest, 'a stream chunk without credit');
    s.receiveWindow--;
    this.events.push({ type: 'chunk', key, seq: s.received++, payload, meta });
  }

  /** A cancel of stream `key`: from the opener, or read as the responder's 499 response. */
  private receiveStreamCancel(key: string, s: StreamRecord): void {
    if (s.role === 'responder') {
      this.fail(key, ErrorCode.Cancelled, 'cancelled by the opener');
      this.events.push({ type: 'cancel', key, code: ErrorCode.Cancelled });
      return;
    }
    this.closeStream(key, s);
    if (s.state === 'active')
      this.events.push({ type: 'result', key, payload: null, error: { code: ErrorCode.Cancelled, message: 'cancelled by the responder' } });
    this.checkDrained();
  }

  // ---- close ---------------------------------------------------------------------------

  /** Graceful close: says bye, starts no new calls, lets in-flight ones finish, then closes. */
  close(): void {
    if (this.state === 'handshake') {
      this.abort(ErrorCode.Unavailable, 'closed before the handshake completed');
      return;
    }
    // Nobody to drain with: what waited for the resume ends now.
    if (this.detachedAt !== null) return this.abort(ErrorCode.Unavailable, 'closed while waiting to be resumed');
    if (this.state !== 'open') return;
    this.sayBye();
    this.beginClosing();
  }

  private sayBye(): void {
    if (this.weSaidBye) return;
    this.weSaidBye = true;
    this.sendControl(MessageType.Hello, null, ControlTarget.Bye);
  }

  /** Immediate close with an error the peer is told about (a bye carrying the error). */
  abort(code: number, message: string): void {
    if (this.state === 'closed') return;
    this.sendEnvelope(fatalBye(code, message));
    this.terminate(code, message, false);
  }

  // ---- internals -----------------------------------------------------------------------

  private sendClientHello(): void {
    this.clientNonce = newNonce();
    this.clientHelloId = uuidv7();
    const caps = [...(this.options.caps ?? availableCompressions())];
    if (this.options.psk !== undefined && !caps.includes(Capability.Psk)) caps.push(Capability.Psk);
    if ((this.options.resume === true || this.options.resumeOf !== undefined) && !caps.includes(Capability.Resume)) caps.push(Capability.Resume);
    const resume = this.resumeOffer();
    const payload: Record<string, unknown> = {
      versions: [...SUPPORTED_VERSIONS],
      caps,
      nonce: this.clientNonce,
      max_frame: this.maxFrameIn,
      max_streams: this.options.maxStreams ?? DEFAULT_MAX_STREAMS,
      max_publishes: this.options.maxPublishes ?? DEFAULT_MAX_PUBLISHES,
    };
    const e2e = this.options.e2e;
    if (e2e === undefined || e2e === false) {
      if (resume !== undefined) payload.resume = resume;
      else if (this.options.credentials !== undefined) payload.auth = this.options.credentials;
      this.sendEnvelope({ type: MessageType.Hello, id: this.clientHelloId, ref: null, target: null, meta: null, payload, error: null });
      return;
    }
    // End to end: credentials wait for the encrypted channel; the Noise message goes last, and
    // the prologue is the hello with an empty message in its place (spec section 19.2).
    caps.push(Capability.Noise);
    // The session's id in the clear (its token and position travel sealed): a server that routes
    // connections by session, as a rack routes them to the worker that owns it, needs it before
    // any key is agreed (spec section 20.2).
    if (resume !== undefined) payload.resume = { session: resume.session };
    const pattern = clientPattern(e2e, this.options.psk);
    const noise: { pattern: NoisePattern; msg: Uint8Array } = { pattern, msg: new Uint8Array(0) };
    payload.noise = noise;
    const hello: Envelope = { type: MessageType.Hello, id: this.clientHelloId, ref: null, target: null, meta: null, payload, error: null };
    try {
      this.noise = new HandshakeState({
        pattern,
        initiator: true,
        prologue: encodeEnvelope(hello),
        staticKey: pattern === 'IK' ? e2e.staticKey : undefined,
        remoteStaticKey: e2e.serverKey,
        psk: this.options.psk === undefined ? undefined : noisePsk(this.options.psk),
      });
      noise.msg = this.noise.writeMessage(new Uint8Array(0));
    } catch (err) {
      // Only this side's keys are involved yet: a pinned key that is no usable X25519 key.
      throw new FluxarError(ErrorCode.BadRequest, `end-to-end handshake failed: ${(err as Error).message} (is the pinned server key right?)`, { cause: err });
    }
    this.sendEnvelope(hello);
  }

  /** One frame; `now` is when its bytes arrived (the budgets are charged at that time). */
  private receiveFrame(frame: Frame, now: number): void {
    if ((frame.flags & ~KNOWN_FLAGS) !== 0) return this.abort(ErrorCode.BadRequest, `unknown frame flags 0x${frame.flags.toString(16)}`);
    if (this.ciphers === null) {
      if (frame.flags & FrameFlag.Encrypted) return this.abort(ErrorCode.Unsupported, 'encrypted frame, but no end-to-end encryption was agreed');
      return this.receivePlainFrame(frame, now);
    }
    if (frame.flags !== FrameFlag.Encrypted) return this.abort(ErrorCode.BadRequest, 'plaintext frame in an end-to-end encrypted session');
    let run: Buffer;
    try {
      run = this.ciphers.open(frame.body, frame.flags);
    } catch {
      // Fatal, and the counter stays: nothing after a forged or replayed frame is read.
      return this.abort(ErrorCode.BadRequest, 'encrypted frame failed its authentication tag');
    }
    // The seal holds whole frames in the byte-stream layout, the last one ending with it.
    let inner: Frame[];
    try {
      inner = this.sealedFrames!.push(run);
    } catch (err) {
      const e = err as FluxarError;
      return this.abort(e.code, e.message);
    }
    if (this.sealedFrames!.midFrame) return this.abort(ErrorCode.BadRequest, 'a sealed frame ends inside a frame');
    for (const f of inner) {
      if (f.flags & ~FrameFlag.Compressed) return this.abort(ErrorCode.BadRequest, `frame flags 0x${f.flags.toString(16)} inside a sealed frame`);
      this.receivePlainFrame(f, now);
      if (this.state === 'closed') return;
    }
  }

  /** A frame in the clear, or one of those a sealed frame held. */
  private receivePlainFrame(frame: Frame, now: number): void {
    let body = frame.body;
    if (frame.flags & FrameFlag.Compressed) {
      if (this.codec === null) return this.abort(ErrorCode.BadRequest, 'compressed frame, but no compression was agreed');
      if (!this.inflateBudget.available(now)) return this.abort(ErrorCode.Overloaded, `over the inflate budget of ${this.inflateBudget.rate} bytes per second`);
      try {
        body = this.codec.decompress(body, this.maxFrameIn);
      } catch (err) {
        const code = err instanceof FluxarError ? err.code : ErrorCode.BadRequest;
        return this.abort(code, (err as Error).message);
      }
      this.inflateBudget.spend(body.length, now);
    }
    let env: Envelope;
    if (!this.decodeBudget.available(now)) return this.abort(ErrorCode.Overloaded, `over the decode budget of ${this.decodeBudget.rate} CBOR items per second`);
    if (this.state !== 'handshake' && (this.receivePlainChunk(body, now) || this.receivePlainDelivery(body, now))) return this.countReceived();
    this.decodeWork.items = 0;
    try {
      env = decodeEnvelope(body, { copyBuffers: this.options.copyBuffers ?? false, work: this.decodeWork });
    } catch (err) {
      // A request whose header was readable fails alone (spec section 2); anything else, and
      // anything before the session is open, is a protocol violation that ends the connection.
      const header = err instanceof EnvelopeError ? err.header : undefined;
      if (header !== undefined && this.state !== 'handshake' && header.type !== MessageType.Hello && header.ref === null) {
        this.countReceived();
        return this.sendError(header.type as MessageType, header.id, ErrorCode.BadRequest, (err as Error).message);
      }
      return this.abort(ErrorCode.BadRequest, (err as Error).message);
    } finally {
      this.decodeBudget.spend(this.decodeWork.items, now);
    }
    if (this.state === 'handshake') return this.receiveHandshake(env, body);
    this.dispatch(env);
  }

  private receiveHandshake(env: Envelope, body: Uint8Array): void {
    if (this.noiseStage !== 'none') return this.receiveNoiseStage(env);
    if (this.role === 'server') {
      if (this.awaitingPskProof) return this.receivePskProof(env);
      if (this.authenticating || this.clientHelloId !== null)
        return this.abort(ErrorCode.BadRequest, 'nothing but the handshake is accepted before it completes');
      if (env.type !== MessageType.Hello || env.ref !== null || env.target !== null) {
        return this.abort(ErrorCode.BadRequest, 'the first message must be a hello');
      }
      const p = env.payload as Record<string, unknown> | null;
      if (!isCborMap(p)) return this.abort(ErrorCode.BadRequest, 'hello payload must be a map');
      this.clientHelloId = env.id;
      const versions = Array.isArray(p.versions) ? p.versions : [];
      if (!versions.includes(PROTOCOL_VERSION)) {
        return this.refuseHello(ErrorCode.BadRequest, `unsupported version: offered ${describeValue(p.versions)}, this peer speaks ${PROTOCOL_VERSION}`);
      }
      if (!(p.nonce instanceof Uint8Array) || p.nonce.length < 16) return this.refuseHello(ErrorCode.BadRequest, 'hello needs a nonce of at least 16 bytes');
      this.clientNonce = p.nonce;
      this.offeredCaps = Array.isArray(p.caps) ? p.caps.filter((c): c is string => typeof c === 'string') : [];
      const clientMax = readMaxFrame(p.max_frame);
      if (typeof clientMax === 'string') return this.refuseHello(ErrorCode.BadRequest, clientMax);
      this.agreeMaxFrame(Math.min(clientMax, this.maxFrameIn));
      const clientStreams = readMaxStreams(p.max_streams);
      if (typeof clientStreams === 'string') return this.refuseHello(ErrorCode.BadRequest, clientStreams);
      this.peerMaxStreams = clientStreams;
      const clientPublishes = readHelloLimit(p.max_publishes, DEFAULT_MAX_PUBLISHES, 'max_publishes');
      if (typeof clientPublishes === 'string') return this.refuseHello(ErrorCode.BadRequest, clientPublishes);
      this.peerMaxPublishes = clientPublishes;
      const e2e = this.options.e2e;
      if (this.offeredCaps.includes(Capability.Noise) && e2e !== false) return this.startNoise(p, body);
      if (e2e !== undefined && e2e !== false && e2e.require) {
        return this.refuseHello(ErrorCode.BadRequest, 'this server requires end-to-end encryption (the noise capability)');
      }
      if (this.options.psk !== undefined && !this.offeredCaps.includes(Capability.Psk)) {
        return this.refuseHello(ErrorCode.Unauthenticated, 'this server requires PSK peer trust');
      }
      if (p.resume !== undefined) return this.askResume(p.resume, (code, message) => this.refuseHello(code, message));
      const credentials = parseCredentials(unmarkFloats(p.auth));
      if (isAuthRefusal(credentials)) return this.refuseHello(credentials.refused, credentials.message);
      this.authenticating = true;
      this.events.push({ type: 'authenticate', credentials });
      return;
    }
    // Client: the only thing expected is the server's hello answering ours.
    if (env.type !== MessageType.Hello || env.ref === null || idKey(env.ref) !== idKey(this.clientHelloId!)) {
      if (env.type === MessageType.Hello && env.target === ControlTarget.Bye && env.error !== null) {
        return this.terminate(env.error.code, env.error.message, false);
      }
      return this.abort(ErrorCode.BadRequest, 'expected the server hello');
    }
    if (env.error !== null) return this.terminate(env.error.code, env.error.message, false);
    const p = env.payload as Record<string, unknown> | null;
    const s = isCborMap(p) && isCborMap(p.session) ? p.session : null;
    const serverMax = s === null ? '' : readMaxFrame(s.max_frame);
    const heartbeat = s?.heartbeat_ms ?? DEFAULT_HEARTBEAT_MS;
    const serverStreams = s === null ? '' : readMaxStreams(s.max_streams);
    const serverPublishes = s === null ? '' : readHelloLimit(s.max_publishes, DEFAULT_MAX_PUBLISHES, 'max_publishes');
    if (
      !isCborMap(p) ||
      s === null ||
      p.version !== PROTOCOL_VERSION ||
      !(s.id instanceof Uint8Array) ||
      typeof serverMax === 'string' ||
      typeof serverStreams === 'string' ||
      typeof serverPublishes === 'string' ||
      !isUint(heartbeat)
    ) {
      return this.abort(ErrorCode.BadRequest, 'malformed server hello');
    }
    const caps = Array.isArray(p.caps) ? p.caps.filter((c): c is string => typeof c === 'string') : [];
    if (this.noise !== null) {
      const refused = this.readNoiseReply(p, caps);
      if (refused !== null) return this.abort(ErrorCode.BadRequest, refused);
    } else if (this.options.psk !== undefined) {
      if (!(p.nonce instanceof Uint8Array)) return this.abort(ErrorCode.Unauthenticated, 'server hello lacks a nonce for PSK');
      const expected = pskProof(this.options.psk, 'server', this.clientNonce!, p.nonce);
      if (!proofsEqual(p.proof, expected)) return this.abort(ErrorCode.Unauthenticated, 'server failed the PSK proof');
      this.sendEnvelope({
        type: MessageType.Hello,
        id: uuidv7(),
        ref: env.id,
        target: Capability.Psk,
        meta: null,
        payload: { proof: pskProof(this.options.psk, 'client', this.clientNonce!, p.nonce) },
        error: null,
      });
    }
    this.agreeMaxFrame(Math.min(serverMax, this.maxFrameIn));
    const resumeMs = s.resume_ms ?? 0;
    if (!isUint(resumeMs)) return this.abort(ErrorCode.BadRequest, 'malformed server hello: resume_ms must be an unsigned integer');
    this.resumable = caps.includes(Capability.Resume) && resumeMs > 0 && (this.options.resume === true || this.options.resumeOf !== undefined);
    this.resumeMs = this.resumable ? resumeMs : 0;
    this.info = {
      id: s.id,
      resumeToken: s.resume_token instanceof Uint8Array ? s.resume_token : new Uint8Array(0),
      heartbeatMs: heartbeat,
      maxFrame: this.maxFrameOut,
      caps,
      maxStreams: serverStreams,
      maxPublishes: serverPublishes,
      resumeMs: this.resumeMs,
    };
    this.peerMaxStreams = serverStreams;
    this.peerMaxPublishes = serverPublishes;
    // The server agrees on one compression; one this side did not offer is never used.
    const offered = this.options.caps ?? availableCompressions();
    const compression = chooseCompression(caps, offered);
    this.codec = compression === null ? null : codecFor(compression)!;
    if (this.noise !== null) {
      this.startCiphers();
      // The credentials, sealed; the session opens when the server has accepted them.
      this.credentialsId = uuidv7();
      const resume = this.resumeOffer();
      const payload = resume !== undefined ? { resume } : this.options.credentials === undefined ? {} : { auth: this.options.credentials };
      this.sendEnvelope({ type: MessageType.Hello, id: this.credentialsId, ref: env.id, target: Capability.Noise, meta: null, payload, error: null });
      this.noiseStage = 'acceptance';
      return;
    }
    const old = this.options.resumeOf;
    if (old !== undefined) {
      if (!isCborMap(p.resumed)) return this.abort(ErrorCode.Conflict, 'the server did not resume the session');
      if (!this.continueFrom(old, s.id, p.resumed.pos)) return;
    }
    this.open();
  }

  /** Client: the resume this hello asks for (spec section 20.2): the session's token stands for credentials, and it keeps its principal. */
  private resumeOffer(): ResumeRequest | undefined {
    const old = this.options.resumeOf;
    return old === undefined ? undefined : { session: old.info!.id, token: old.info!.resumeToken, pos: old.receivedPos };
  }

  /**
   * Client: the server resumed session `id`, which must be `old`, and has received `pos` of its
   * envelopes; false when that cannot be met (409, or 503 when `old` ended meanwhile).
   */
  private continueFrom(old: Session, id: Uint8Array, pos: unknown): boolean {
    if (idKey(id) !== idKey(old.info!.id)) {
      this.abort(ErrorCode.Conflict, 'the server resumed another session');
      return false;
    }
    if (!isUint(pos)) {
      this.abort(ErrorCode.BadRequest, `resumed needs {pos: n} with n an unsigned integer, got ${describeValue(pos)}`);
      return false;
    }
    // Closed by the application (or expired) while this connection was being made: nothing to continue.
    const refused =
      old.state === 'closed' ? { code: ErrorCode.Unavailable, message: 'the session ended while it was being resumed' } : old.positionRefusal(pos);
    if (refused !== null) {
      this.abort(refused.code, refused.message);
      return false;
    }
    this.takeOver(old, pos);
    this.resendRetained();
    return true;
  }

  /** Server: a hello (or sealed credentials) asks to resume a session: the host looks it up. */
  private askResume(value: unknown, refuse: (code: number, message: string) => void): void {
    const r = isCborMap(value) ? value : null;
    if (r === null || !(r.session instanceof Uint8Array) || !(r.token instanceof Uint8Array) || !isUint(r.pos)) {
      return refuse(ErrorCode.BadRequest, 'resume must be a map {session: bytes, token: bytes, pos: uint}');
    }
    if (!this.offeredCaps.includes(Capability.Resume)) return refuse(ErrorCode.BadRequest, 'a resume needs the resume capability in the hello');
    this.resumeRequest = { session: r.session, token: r.token, pos: r.pos };
    this.authenticating = true;
    this.events.push({ type: 'resume', request: this.resumeRequest });
  }

  /** Client: checks the server's Noise reply; returns why the session cannot go on, or null. */
  private readNoiseReply(p: Record<string, unknown>, caps: string[]): string | null {
    if (!caps.includes(Capability.Noise) || !(p.noise instanceof Uint8Array)) {
      return 'the server did not agree to end-to-end encryption (it does not offer it, or the capability was stripped in transit)';
    }
    let choices: unknown;
    try {
      choices = decodeStrict(this.noise!.readMessage(p.noise));
    } catch {
      return 'end-to-end handshake failed: a hello was changed in transit, or the server key is not the pinned one';
    }
    if (!isDeepStrictEqual(plainValue(choices), plainValue({ version: p.version, caps: p.caps, session: p.session }))) {
      return 'the server hello was edited in transit: its encrypted copy differs';
    }
    return null;
  }

  /** Server: the client hello asks for end-to-end encryption; read its Noise message and answer it. */
  private startNoise(p: Record<string, unknown>, body: Uint8Array): void {
    const offer = p.noise;
    if (!isCborMap(offer) || typeof offer.pattern !== 'string' || !(offer.msg instanceof Uint8Array)) {
      return this.refuseHello(ErrorCode.BadRequest, 'the noise offer must be a map {pattern, msg}');
    }
    const pattern = offer.pattern as NoisePattern;
    if (!NOISE_PATTERNS.includes(pattern)) return this.refuseHello(ErrorCode.BadRequest, `unknown noise pattern ${describeValue(offer.pattern)}`);
    if (p.auth !== undefined) return this.refuseHello(ErrorCode.BadRequest, 'with end-to-end encryption, credentials travel encrypted, never in the hello');
    const psk = this.options.psk;
    if (psk !== undefined && pattern !== 'NNpsk0')
      return this.refuseHello(ErrorCode.Unauthenticated, 'this server requires PSK peer trust: the noise pattern must be NNpsk0');
    if (psk === undefined && pattern === 'NNpsk0') return this.refuseHello(ErrorCode.BadRequest, 'NNpsk0 offered, but this server has no PSK');
    const e2e = this.options.e2e || {};
    if (needsResponderStatic(pattern) && e2e.staticKey === undefined) {
      return this.refuseHello(ErrorCode.BadRequest, `noise pattern ${pattern} needs the server's static key, and this server has none`);
    }
    const prologue = helloPrologue(body, offer.msg);
    if (prologue === null) return this.refuseHello(ErrorCode.BadRequest, 'the noise message must be the last item of the hello');
    try {
      this.noise = new HandshakeState({ pattern, initiator: false, prologue, staticKey: e2e.staticKey, psk: psk === undefined ? undefined : noisePsk(psk) });
      this.noise.readMessage(offer.msg);
    } catch (err) {
      this.noise = null;
      const code = pattern === 'NNpsk0' ? ErrorCode.Unauthenticated : ErrorCode.BadRequest;
      return this.refuseHello(code, `end-to-end handshake failed: ${(err as Error).message}${pattern === 'NNpsk0' ? ' (not the same PSK?)' : ''}`);
    }
    this.peerStaticKey = this.noise.remoteStaticKey ?? null;
    this.sendServerHello();
  }

  /** The handshake messages that follow the hellos in an end-to-end session (spec section 19.2). */
  private receiveNoiseStage(env: Envelope): void {
    if (env.type === MessageType.Hello && env.target === ControlTarget.Bye && env.error !== null) {
      return this.terminate(env.error.code, env.error.message, false);
    }
    if (this.role === 'server') {
      if (env.type !== MessageType.Hello || env.target !== Capability.Noise || env.ref === null || idKey(env.ref) !== idKey(this.serverHelloId!)) {
        return this.abort(ErrorCode.BadRequest, 'expected the encrypted credentials');
      }
      const p = env.payload;
      if (isCborMap(p) && p.resume !== undefined) {
        this.noiseStage = 'none';
        this.credentialsId = env.id;
        return this.askResume(p.resume, (code, message) => this.abort(code, message));
      }
      const credentials = parseCredentials(unmarkFloats(isCborMap(p) ? p.auth : undefined));
      if (isAuthRefusal(credentials)) return this.abort(credentials.refused, credentials.message);
      this.noiseStage = 'none';
      this.credentialsId = env.id;
      this.authenticating = true;
      this.events.push({ type: 'authenticate', credentials });
      return;
    }
    if (env.type === MessageType.Hello && env.ref !== null && idKey(env.ref) === idKey(this.clientHelloId!) && env.error !== null) {
      return this.terminate(env.error.code, env.error.message, false);
    }
    if (env.type !== MessageType.Hello || env.target !== Capability.Noise || env.ref === null || idKey(env.ref) !== idKey(this.credentialsId!)) {
      return this.abort(ErrorCode.BadRequest, 'expected the server to accept the credentials');
    }
    this.noiseStage = 'none';
    const old = this.options.resumeOf;
    if (old !== undefined) {
      const p = env.payload;
      const resumed = isCborMap(p) && isCborMap(p.resumed) ? p.resumed : null;
      if (resumed === null || !(resumed.session instanceof Uint8Array) || !(resumed.resume_token instanceof Uint8Array)) {
        return this.abort(ErrorCode.Conflict, 'the server did not resume the session');
      }
      this.info = { ...this.info!, id: resumed.session, resumeToken: resumed.resume_token };
      if (!this.continueFrom(old, resumed.session, resumed.pos)) return;
    }
    this.open();
  }

  private receivePskProof(env: Envelope): void {
    if (env.type !== MessageType.Hello || env.target !== Capability.Psk || env.ref === null || idKey(env.ref) !== idKey(this.serverHelloId!)) {
      return this.abort(ErrorCode.Unauthenticated, 'expected the PSK proof');
    }
    const expected = pskProof(this.options.psk!, 'client', this.clientNonce!, this.serverNonce!);
    if (!proofsEqual((env.payload as Record<string, unknown> | null)?.proof, expected)) {
      return this.abort(ErrorCode.Unauthenticated, 'client failed the PSK proof');
    }
    this.awaitingPskProof = false;
    this.open();
  }

  private refuseHello(code: number, message: string): void {
    this.sendEnvelope({ type: MessageType.Hello, id: uuidv7(), ref: this.clientHelloId, target: null, meta: null, payload: null, error: { code, message } });
    this.finish(code, message);
  }

  private open(): void {
    const now = this.clock();
    this.lastHeartbeatAt = now;
    if (this.continuedState !== null) {
      this.state = this.continuedState;
      this.events.push({ type: 'resumed', info: this.info! });
      this.checkDrained();
      return;
    }
    this.state = 'open';
    this.events.push({ type: 'open', info: this.info!, principal: this.principal });
  }

  private dispatch(env: Envelope): void {
    if (env.type !== MessageType.Hello) this.countReceived();
    switch (env.type) {
      case MessageType.Hello:
        return this.receiveControl(env);
      case MessageType.Call:
        if (env.ref === null) return this.receiveCall(env);
        if (env.target === ControlTarget.Cancel) return this.receiveCancel(env.ref);
        return this.receiveResult(env);
      case MessageType.Stream:
        return this.receiveStreamEnvelope(env);
      case MessageType.Subscribe:
        return env.ref === null ? this.receiveSubscribe(env) : this.receiveSubscribeAnswer(env);
      case MessageType.Unsubscribe:
        return this.receiveUnsubscribe(env);
      case MessageType.Publish:
        return env.ref === null ? this.receivePublish(env) : this.receivePublishAnswer(env);
      case MessageType.Message:
        return this.receiveMessage(env);
      default:
        return this.sendError(env.type, env.id, ErrorCode.Unsupported, `message type ${env.type} is not supported by this peer`);
    }
  }

  private receiveControl(env: Envelope): void {
    switch (env.target) {
      case ControlTarget.Ping:
        this.receivePosition(env.payload, false);
        if (this.state !== 'closed') this.sendControl(MessageType.Hello, env.id, ControlTarget.Pong, this.positionReport());
        return;
      case ControlTarget.Pong:
        return this.receivePosition(env.payload, false);
      case ControlTarget.Ack:
        return this.receivePosition(env.payload, true);
      case ControlTarget.Bye:
        if (env.error !== null) return this.terminate(env.error.code, `peer closed: ${env.error.message}`, false);
        this.peerSaidBye = true;
        // Our bye answers theirs: it tells the peer we start no new calls either.
        this.sayBye();
        if (this.state === 'open') this.beginClosing();
        else this.checkDrained();
        return;
      default:
        return this.abort(ErrorCode.BadRequest, `unexpected hello after the handshake (target ${describeValue(env.target)})`);
    }
  }

  private receiveCall(env: Envelope): void {
    if (env.target === null || env.target === '') return this.sendError(MessageType.Call, env.id, ErrorCode.BadRequest, 'a call needs a target');
    // After our bye the peer may still send calls it sent before it saw ours: they are accepted.
    // After its own bye it may not.
    if (this.state !== 'open' && (this.state !== 'closing' || this.peerSaidBye)) {
      return this.sendError(MessageType.Call, env.id, ErrorCode.Unavailable, 'session is closing');
    }
    if (env.meta !== null && env.meta.stream !== undefined) return this.receiveStreamOpen(env, env.target, env.meta);
    const key = idKey(env.id);
    if (this.incoming.has(key) || this.streams.has(key))
      return this.sendError(MessageType.Call, env.id, ErrorCode.Conflict, 'a call with this id is already in flight');
    const limit = this.options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (this.incoming.size >= limit) {
      return this.sendError(MessageType.Call, env.id, ErrorCode.Overloaded, `more than ${limit} calls in flight on this connection`);
    }
    let deadline = NO_DEADLINE;
    const budget = env.meta?.deadline_ms;
    if (typeof budget === 'number' && Number.isFinite(budget) && budget >= 0) {
      deadline = this.clock() + budget;
      if (deadline < this.earliestDeadline) this.earliestDeadline = deadline;
    }
    this.incoming.set(key, { id: env.id, deadline });
    this.events.push({ type: 'call', key, target: env.target, payload: env.payload, meta: env.meta });
  }

  private receiveCancel(ref: Uint8Array): void {
    const key = idKey(ref);
    const s = this.streams.get(key);
    if (s !== undefined) return this.receiveStreamCancel(key, s);
    if (!this.incoming.delete(key)) return;
    this.events.push({ type: 'cancel', key, code: ErrorCode.Cancelled });
    this.checkDrained();
  }

  private receiveResult(env: Envelope): void {
    const key = idKey(env.ref!);
    const s = this.streams.get(key);
    if (s !== undefined && s.role === 'opener') {
      this.closeStream(key, s);
      // A cancelled stream's response only confirms the cancel: the application has its outcome.
      if (s.state === 'active') this.events.push({ type: 'result', key, payload: env.payload, error: env.error });
      return this.checkDrained();
    }
    if (!this.outgoing.delete(key)) return; // late answer to a call we cancelled or timed out
    this.events.push({ type: 'result', key, payload: env.payload, error: env.error });
    this.checkDrained();
  }

  private expireDeadlines(now: number): void {
    let earliest = NO_DEADLINE;
    for (const [key, call] of this.incoming) {
      if (call.deadline <= now) {
        this.incoming.delete(key);
        this.events.push({ type: 'cancel', key, code: ErrorCode.DeadlineExceeded });
        this.sendError(MessageType.Call, call.id, ErrorCode.DeadlineExceeded, 'deadline exceeded');
      } else if (call.deadline < earliest) earliest = call.deadline;
    }
    for (const [key, call] of this.outgoing) {
      if (call.deadline <= now) {
        this.outgoing.delete(key);
        this.sendControl(MessageType.Call, keyBytes(key), ControlTarget.Cancel);
        this.events.push({ type: 'result', key, payload: null, error: { code: ErrorCode.DeadlineExceeded, message: 'deadline exceeded' } });
      } else if (call.deadline < earliest) earliest = call.deadline;
    }
    for (const [key, s] of this.streams) {
      if (s.deadline > now) {
        if (s.deadline < earliest) earliest = s.deadline;
        continue;
      }
      if (s.role === 'responder') {
        this.fail(key, ErrorCode.DeadlineExceeded, 'deadline exceeded');
        this.events.push({ type: 'cancel', key, code: ErrorCode.DeadlineExceeded });
      } else {
        this.cancelStream(key);
        this.events.push({ type: 'result', key, payload: null, error: { code: ErrorCode.DeadlineExceeded, message: 'deadline exceeded' } });
      }
    }
    this.earliestDeadline = earliest;
    this.checkDrained();
  }

  private beginClosing(): void {
    this.state = 'closing';
    this.drainDeadline = this.clock() + (this.options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS);
    this.checkDrained();
  }

  private checkDrained(): void {
    if (
      this.state === 'closing' &&
      this.weSaidBye &&
      this.peerSaidBye &&
      this.outgoing.size === 0 &&
      this.incoming.size === 0 &&
      this.streams.size === 0 &&
      this.publishesOut.size === 0 &&
      this.publishesIn.size === 0
    ) {
      this.finish(0, 'closed');
    }
  }

  /** Ends the session: our calls fail with `code`, calls from the peer are cancelled. */
  private terminate(code: number, reason: string, sendBye: boolean): void {
    if (sendBye) this.sendEnvelope(fatalBye(code, reason));
    const failCode = code === 0 ? ErrorCode.Unavailable : code;
    for (const key of this.outgoing.keys()) {
      this.events.push({ type: 'result', key, payload: null, error: { code: failCode, message: reason } });
    }
    for (const key of this.incoming.keys()) this.events.push({ type: 'cancel', key, code: ErrorCode.Unavailable });
    for (const [key, s] of this.streams) {
      if (s.role === 'responder') this.events.push({ type: 'cancel', key, code: ErrorCode.Unavailable });
      else if (s.state === 'active') this.events.push({ type: 'result', key, payload: null, error: { code: failCode, message: reason } });
    }
    for (const key of this.subscriptionsOut.keys()) this.events.push({ type: 'subscription-end', key, error: { code: failCode, message: reason } });
    for (const key of this.publishesOut) this.events.push({ type: 'published', key, payload: null, error: { code: failCode, message: reason } });
    this.outgoing.clear();
    this.incoming.clear();
    this.streams.clear();
    this.subscriptionsOut.clear();
    this.subscriptionsIn.clear();
    this.publishesOut.clear();
    this.publishesIn.clear();
    this.streamsFromPeer = 0;
    this.streamsToPeer = 0;
    this.finish(code, reason);
  }

  private finish(code: number, reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.events.push({ type: 'closed', code, reason });
  }

  private sendControl(type: MessageType, ref: Uint8Array | null, target: string, payload: unknown = null): void {
    this.sendEnvelope({ type, id: uuidv7(), ref, target, meta: null, payload, error: null });
  }

  private sendError(type: MessageType, ref: Uint8Array, code: number, message: string, data?: unknown): void {
    const error: EnvelopeErrorInfo = data === undefined ? { code, message } : { code, message, data };
    this.sendEnvelope({ type, id: uuidv7(), ref, target: null, meta: null, payload: null, error });
  }

  /** Encodes, compresses when agreed and worth it, frames, and queues for the transport. */
  private sendEnvelope(env: Envelope): void {
    if (this.options.framing === 'stream') return this.appendStreamFrame(env);
    this.queueMessageFrame(encodeEnvelopeFrame('message', env), env.type !== MessageType.Hello);
  }

  /**
   * A message transport's frame (flags byte, then the envelope): its size checked, counted (and
   * for resume retained) when it is a new envelope of types 2 to 7, compressed when worth it,
   * and queued. The message-transport twin of endStreamFrame.
   */
  private queueMessageFrame(frame: Uint8Array, counted: boolean): void {
    const body = frame.subarray(1);
    this.checkFrameSize(body.length);
    if (counted) this.countSent(body, 0, body.length);
    const packed = this.tryCompress(body.length) ? this.compressed(body) : null;
    const queued = packed === null ? frame : encodeMessageFrame(FrameFlag.Compressed, packed);
    this.output.push(queued);
    this.outputBytes += queued.length;
  }

  /** A byte stream's frame, written at the end of the outbox: header, then the envelope. */
  private appendStreamFrame(env: Envelope): void {
    const box = (this.outbox ??= new CborWriter(OUTBOX_INITIAL_BYTES));
    const start = box.skip(STREAM_HEADER_BYTES);
    try {
      writeEnvelope(box, env);
    } catch (err) {
      box.pos = start; // nothing of a refused envelope stays queued
      throw err;
    }
    this.endStreamFrame(box, start, env.type !== MessageType.Hello);
  }

  /**
   * A chunk without meta, the stream's hot path: the envelope [3, id, ref, null, null, payload,
   * null] written straight into the outbox, its id made in place (no Envelope object, no id
   * allocated, nothing to validate: every item but the payload is ours).
   */
  private appendChunkFrame(ref: Uint8Array, payload: unknown): void {
    const start = this.beginFrame(MessageType.Stream);
    const box = this.outbox!;
    try {
      box.bytes(ref);
      box.null();
      box.null();
      box.value(payload ?? null);
      box.null();
    } catch (err) {
      box.pos = start;
      throw err;
    }
    this.endStreamFrame(box, start, true);
  }

  /**
   * A delivery, the broker's hot path: [7, id, ref, topic, {"msg", "n", "qos"}, payload, null]
   * written straight into the outbox, the payload spliced in when it is already encoded. The
   * subscriber's receivePlainDelivery reads exactly this form.
   */
  private appendDeliveryFrame(ref: Uint8Array, topic: string, payload: unknown, meta: DeliveryMeta, encodedPayload: Uint8Array | undefined): string {
    const start = this.beginFrame(MessageType.Message);
    const box = this.outbox!;
    try {
      box.bytes(ref);
      box.raw(topicCbor(topic));
      box.raw(DELIVERY_META_MSG);
      box.raw(meta.msg);
      box.raw(DELIVERY_META_N);
      box.head(MAJOR_UINT, meta.n);
      box.raw(DELIVERY_META_QOS);
      box.head(MAJOR_UINT, meta.qos);
      if (encodedPayload !== undefined) box.raw(encodedPayload);
      else box.value(payload ?? null);
      box.null();
    } catch (err) {
      box.pos = start;
      throw err;
    }
    // Only an attempt that waits for an ack needs its key.
    const key = meta.qos === 0 ? '' : idKeyAt(box.buf, start + FRAME_ID_OFFSET);
    this.endStreamFrame(box, start, true);
    return key;
  }

  /** An answer [type, id, ref, target, null, payload, null]: in place on a byte stream, else as any envelope. */
  private appendAnswerOrSend(type: MessageType, refKey: string, target: string, payload: unknown): void {
    if (this.options.framing === 'stream') return this.appendAnswerFrame(type, refKey, target, payload);
    this.sendEnvelope({ type, id: uuidv7(), ref: keyBytes(refKey), target, meta: null, payload, error: null });
  }

  /**
   * A small answer or control envelope (an ack, a publish's ack) written straight into the
   * outbox: acks go as often as messages, and an Envelope object, a validation and an id
   * allocated for each would cost more than the bytes.
   */
  private appendAnswerFrame(type: MessageType, refKey: string, target: string, payload: unknown): void {
    const start = this.beginFrame(type);
    const box = this.outbox!;
    try {
      box.head(MAJOR_BYTES, UUID_BYTES);
      const at = box.skip(UUID_BYTES);
      for (let i = 0; i < UUID_BYTES; i++) box.buf[at + i] = refKey.charCodeAt(i);
      box.text(target);
      box.null();
      box.value(payload ?? null);
      box.null();
    } catch (err) {
      box.pos = start;
      throw err;
    }
    this.endStreamFrame(box, start, true);
  }

  /**
   * Starts one of the hand-written frames in the outbox: room for the frame header, then the
   * envelope's array head, its type and a fresh id (at start + FRAME_ID_OFFSET). Returns the start.
   */
  private beginFrame(type: MessageType): number {
    const box = (this.outbox ??= new CborWriter(OUTBOX_INITIAL_BYTES));
    const start = box.skip(STREAM_HEADER_BYTES);
    box.head(MAJOR_ARRAY, ENVELOPE_ITEMS);
    box.head(MAJOR_UINT, type);
    box.head(MAJOR_BYTES, UUID_BYTES);
    writeUuidv7(box.buf, box.skip(UUID_BYTES));
    return start;
  }

  /**
   * Checks the size of the frame begun at `start`, counts (and for resume retains) it when it is
   * a new envelope of types 2 to 7, compresses it when worth it, writes its header.
   */
  private endStreamFrame(box: CborWriter, start: number, counted: boolean): void {
    try {
      this.checkFrameSize(box.pos - start - STREAM_HEADER_BYTES);
    } catch (err) {
      box.pos = start;
      throw err;
    }
    const bodyLength = box.pos - start - STREAM_HEADER_BYTES;
    if (counted) this.countSent(box.buf, start + STREAM_HEADER_BYTES, box.pos);
    const packed = this.tryCompress(bodyLength) ? this.compressed(box.buf.subarray(start + STREAM_HEADER_BYTES, box.pos)) : null;
    if (packed !== null) {
      box.pos = start + STREAM_HEADER_BYTES;
      box.raw(packed);
    }
    const wireLength = box.pos - start - STREAM_HEADER_BYTES + 1;
    const b = box.buf;
    b[start] = wireLength >>> 24;
    b[start + 1] = (wireLength >>> 16) & 0xff;
    b[start + 2] = (wireLength >>> 8) & 0xff;
    b[start + 3] = wireLength & 0xff;
    box.buf[start + STREAM_HEADER_BYTES - 1] = packed === null ? 0 : FrameFlag.Compressed;
    this.outputBytes += box.pos - start;
  }

  /** The limit is on the envelope itself: the peer must be able to hold it once inflated. */
  private checkFrameSize(bodyLength: number): void {
    if (bodyLength > this.maxFrameOut) {
      throw new FluxarError(ErrorCode.TooLarge, `message of ${bodyLength} bytes exceeds the peer's maximum frame of ${this.maxFrameOut}`);
    }
  }

  /** Whether a body of this length is to be compressed: agreed, large enough, and not backing off. */
  private tryCompress(bodyLength: number): boolean {
    return this.codec !== null && bodyLength >= COMPRESS_THRESHOLD && this.compressSkips-- <= 0;
  }

  /** The body compressed when that shrank it; else null. */
  private compressed(body: Uint8Array): Uint8Array | null {
    // Each codec reads its input synchronously, before the outbox can move under it.
    const packed = this.codec!.compress(body);
    // Data that does not shrink (media, ciphertext, a stream of random bytes) costs a compression
    // per frame for nothing: after such a frame the next ones are sent as they are, and the
    // wait before the next try doubles while it keeps failing.
    if (packed.length > body.length * COMPRESS_MIN_GAIN) {
      this.compressBackoff = Math.min(this.compressBackoff * 2 || 1, COMPRESS_MAX_BACKOFF);
      this.compressSkips = this.compressBackoff;
    } else this.compressBackoff = 0;
    return packed.length < body.length ? packed : null;
  }
}

/**
 * The last topic a delivery was written with, and its CBOR. A fan-out writes one topic into
 * every subscriber's session in a row: it is encoded once for all of them (per thread, as the
 * broker is), not once per delivery.
 */
let writtenTopic = '';
let writtenTopicCbor: Uint8Array = Uint8Array.of(0x60); // the empty text
const topicWriter = new CborWriter(64);

function topicCbor(topic: string): Uint8Array {
  if (topic !== writtenTopic) {
    topicWriter.reset().text(topic);
    writtenTopicCbor = topicWriter.take();
    writtenTopic = topic;
  }
  return writtenTopicCbor;
}

/** A delivery's meta as the broker writes it: map(3), "msg" and its byte-string head, then the id. */
const DELIVERY_META_MSG = Uint8Array.from([0xa3, 0x63, 0x6d, 0x73, 0x67, 0x50]);
/** "n", then the attempt. */
const DELIVERY_META_N = Uint8Array.from([0x61, 0x6e]);
/** "qos", then the QoS. */
const DELIVERY_META_QOS = Uint8Array.from([0x63, 0x71, 0x6f, 0x73]);

/** Where a frame's id starts from the frame's start: the header, then one byte each for the array head, the type (< 24) and the id's head. */
const FRAME_ID_OFFSET = STREAM_HEADER_BYTES + 3;

/** The refusal of a resume that names no session this server keeps (spec section 20.2). */
const UNKNOWN_SESSION = { code: ErrorCode.NotFound, message: 'no such session to resume (unknown, expired, or the token is not the current one)' };

/** What a trimmed slot of the resume buffer holds until the array is compacted. */
const EMPTY = new Uint8Array(0);

/** What plainPayload returns for bytes that are not in the plain form. */
const NOT_PLAIN = Symbol('not plain');

/**
 * A payload that is one definite-length byte string ending right before the envelope's last byte
 * (what a publisher of bytes sends): a view of it, without a reader. Any other payload:
 * undefined, for the strict reader.
 */
function plainBytesPayload(b: Uint8Array, at: number): Buffer | undefined {
  if (b[at]! >> 5 !== MAJOR_BYTES) return undefined;
  const from = argumentEnd(b, at, 4);
  if (from < 0) return undefined;
  const length = argumentOf(b, at);
  if (from + length !== b.length - 1) return undefined;
  // A Buffer, as the strict reader makes byte strings.
  return Buffer.from(b.buffer, b.byteOffset + from, length);
}

/** Whether `expected` stands in `b` at `at`. */
function bytesAt(b: Uint8Array, at: number, expected: Uint8Array): boolean {
  for (let i = 0; i < expected.length; i++) if (b[at + i] !== expected[i]) return false;
  return true;
}

/** Where a plain chunk's payload begins: array head, type, id (17 bytes), ref (17), two nulls. */
const PLAIN_CHUNK_PAYLOAD = 38;
const CBOR_NULL = 0xf6;

/** A session's outbox starts this small (most sessions send little) and doubles as needed. */
const OUTBOX_INITIAL_BYTES = 1024;
/** A flush of at least this many bytes hands the outbox's buffer over instead of copying it. */
const OUTBOX_HANDOFF_BYTES = 4096;
/** After a handoff, the outbox's next buffer is at most this large. */
const OUTBOX_BYTES = 1024 * 1024;

/** An uncompressed frame holding `env`: encoded after room for the header, one allocation, no copy. */
function encodeEnvelopeFrame(framing: Framing, env: Envelope): Buffer {
  const room = framing === 'stream' ? STREAM_HEADER_BYTES : 1;
  const frame = encodeEnvelopeWithRoom(env, room);
  if (framing === 'stream') frame.writeUInt32BE(frame.length - STREAM_HEADER_BYTES + 1, 0);
  frame[room - 1] = 0;
  return frame;
}

function isUint(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * A hello's max_frame (spec section 7): missing means the default; otherwise an unsigned integer
 * of at least MIN_MAX_FRAME, and anything above the ceiling counts as the ceiling. Returns the
 * error text when it breaks those rules.
 */
function readMaxFrame(value: unknown): number | string {
  if (value === undefined) return DEFAULT_MAX_FRAME;
  if (typeof value === 'bigint' && value > 0n) return MAX_FRAME_CEILING;
  if (!isUint(value)) return 'max_frame must be an unsigned integer';
  if (value < MIN_MAX_FRAME) return `max_frame must be at least ${MIN_MAX_FRAME} (got ${value})`;
  return Math.min(value, MAX_FRAME_CEILING);
}

/** A hello's max_streams (spec section 13.6): missing means the default; else an unsigned integer. */
function readMaxStreams(value: unknown): number | string {
  return readHelloLimit(value, DEFAULT_MAX_STREAMS, 'max_streams');
}

/** A count a hello declares (max_streams, max_publishes): missing means `fallback`. */
function readHelloLimit(value: unknown, fallback: number, name: string): number | string {
  if (value === undefined) return fallback;
  if (typeof value === 'bigint' && value > 0n) return Number.MAX_SAFE_INTEGER;
  if (!isUint(value)) return `${name} must be an unsigned integer`;
  return value;
}

/** A bye carrying an error (spec section 11): the sender closes right after it. Its ref is null. */
function fatalBye(code: number, message: string): Envelope {
  return { type: MessageType.Hello, id: uuidv7(), ref: null, target: ControlTarget.Bye, meta: null, payload: null, error: { code, message } };
}

/**
 * A fatal bye as a whole frame, for a connection that has no session: refused by a listener at
 * its connection cap, or whose session lived in a rack worker that is gone.
 */
export function encodeByeFrame(framing: Framing, code: number, message: string): Uint8Array {
  return encodeEnvelopeFrame(framing, fatalBye(code, message));
}

/** A decoded value with its byte strings as text, so two decodings of the same CBOR compare equal. */
function plainValue(value: unknown): unknown {
  if (value instanceof Uint8Array) return `bytes:${Buffer.from(value).toString('hex')}`;
  if (Array.isArray(value)) return value.map(plainValue);
  if (isCborMap(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plainValue(v)]));
  return value;
}
