import { MAX_FRAME_CEILING, STREAM_HEADER_BYTES } from './constants.js';
import { FluxarError } from './errors.js';

/** A frame: the flags byte and the envelope bytes after it. */
export interface Frame {
  flags: number;
  body: Uint8Array;
}

/** The stream form: uint32 big-endian length of (flags + body), the flags byte, the body. */
export function encodeStreamFrame(flags: number, body: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(STREAM_HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length + 1, 0);
  frame[4] = flags;
  frame.set(body, STREAM_HEADER_BYTES);
  return frame;
}

/** The message form (WebSocket): the flags byte, then the body. */
export function encodeMessageFrame(flags: number, body: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(1 + body.length);
  frame[0] = flags;
  frame.set(body, 1);
  return frame;
}

/**
 * Splits a byte stream into frames. The length is checked against the limit as soon as its four
 * bytes arrive, so an oversize frame is refused before any of its body is buffered.
 */
export class StreamFrameSplitter {
  private pending: Buffer | null = null;
  maxFrame: number;

  constructor(maxFrame: number) {
    this.maxFrame = maxFrame;
  }

  /** Frames completed by `chunk`, in order. Throws FluxarError 413/400 on a bad length. */
  push(chunk: Uint8Array): Frame[] {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, buf]);
      this.pending = null;
    }
    const frames: Frame[] = [];
    let at = 0;
    while (buf.length - at >= 4) {
      const length = buf.readUInt32BE(at);
      if (length === 0) throw new FluxarError(400, 'frame of length 0 (a frame holds at least its flags byte)');
      if (length - 1 > this.maxFrame) {
        throw new FluxarError(413, `frame of ${length - 1} bytes exceeds the maximum of ${this.maxFrame}`);
      }
      if (buf.length - at < 4 + length) break;
      frames.push({ flags: buf[at + 4]!, body: buf.subarray(at + STREAM_HEADER_BYTES, at + 4 + length) });
      at += 4 + length;
    }
    if (at < buf.length) this.pending = Buffer.from(buf.subarray(at)); // own copy: the chunk is not ours to keep
    return frames;
  }

  /** Bytes buffered for an incomplete frame. */
  get buffered(): number {
    return this.pending?.length ?? 0;
  }
}

export function clampMaxFrame(requested: number | undefined, local: number): number {
  const wanted = requested === undefined || !Number.isInteger(requested) || requested <= 0 ? local : requested;
  return Math.min(wanted, local, MAX_FRAME_CEILING);
}
