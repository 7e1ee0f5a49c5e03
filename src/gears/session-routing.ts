// Session resume in a rack (docs/fluxar-spec.md section 20, docs/rack.md "Session resume").
//
// A session lives in the worker that accepted its connection, with its calls, streams,
// subscriptions and the chain's answers on their way to it: it cannot move to another thread.
// So the connection goes to the session: the worker writes its own index into the ids of the
// sessions it opens, and the main thread reads the first frame of each new connection (the
// client hello) before it picks a worker. A hello that resumes a session names the session in
// the clear, also with end-to-end encryption, and goes to the worker in that id. Everything else
// goes where it always went (workerFor(connection id)), and the main thread parses nothing more.
import { EntityType, entityId } from '../fluxmsg/uuid.js';
import { isCborMap } from '../cbor/profile.js';
import { MessageType } from '../fluxar/codes.js';
import { STREAM_HEADER_BYTES } from '../fluxar/constants.js';
import { decodeEnvelope } from '../fluxar/envelope.js';
import type { Framing } from '../fluxar/session.js';

/** The byte of a rack session's id that names the worker owning it (the last random byte of the entity id). */
const WORKER_BYTE = 15;

/**
 * A first frame larger than this is not read for routing: a resume hello carries no
 * credentials and is a few hundred bytes; a larger hello is a new session and goes to its worker.
 */
export const HELLO_PEEK_BYTES = 16 * 1024;

/** A session id for a session of worker `worker`: an entity id whose byte 15 is the worker. */
export function rackSessionId(worker: number): Uint8Array {
  const id = entityId(EntityType.Session);
  id[WORKER_BYTE] = worker;
  return id;
}

/**
 * The worker a connection's first frame asks for: the owner of the session its hello resumes,
 * or null (not a resume hello, not readable, or naming no worker of this pool). Never throws:
 * whatever the bytes, the worker's session reads them again and answers as the spec says.
 */
export function workerOfHello(flags: number, body: Uint8Array, workers: number): number | null {
  if (flags !== 0) return null;
  try {
    const env = decodeEnvelope(body);
    if (env.type !== MessageType.Hello || !isCborMap(env.payload)) return null;
    const resume = env.payload.resume;
    const session = isCborMap(resume) ? resume.session : undefined;
    if (!(session instanceof Uint8Array) || session.length !== 16) return null;
    const worker = session[WORKER_BYTE]!;
    return worker < workers ? worker : null;
  } catch {
    return null;
  }
}

/**
 * Gathers a connection's bytes until its first frame is whole (or is too large to be read for
 * routing): push() returns what was gathered and the frame, once, then null forever after.
 */
export class FirstFrame {
  private readonly pieces: Uint8Array[] = [];
  private bytes = 0;
  private done = false;

  constructor(private readonly framing: Framing) {}

  /** Null while the first frame is incomplete; then the bytes so far and the frame, if it was read. */
  push(piece: Uint8Array): { pieces: Uint8Array[]; frame: { flags: number; body: Uint8Array } | null } | null {
    if (this.done) return null;
    // Bytes from a socket are reused by nobody, but a ring-bound copy is made later anyway: keep views.
    this.pieces.push(piece);
    this.bytes += piece.length;
    if (this.framing === 'message') {
      this.done = true;
      return { pieces: this.pieces, frame: piece.length > 0 && piece.length <= HELLO_PEEK_BYTES ? { flags: piece[0]!, body: piece.subarray(1) } : null };
    }
    if (this.bytes < STREAM_HEADER_BYTES) return null;
    const all = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces);
    const length = ((all[0]! << 24) | (all[1]! << 16) | (all[2]! << 8) | all[3]!) >>> 0;
    if (length === 0 || length > HELLO_PEEK_BYTES) {
      this.done = true;
      return { pieces: [all], frame: null };
    }
    if (this.bytes < 4 + length) return null;
    this.done = true;
    return { pieces: [all], frame: { flags: all[4]!, body: all.subarray(STREAM_HEADER_BYTES, 4 + length) } };
  }
}
