import { STREAM_HEADER_BYTES } from './constants.js';
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
 * Splits a byte stream into frames. The length is checked as soon as its four bytes arrive, so an
 * oversize frame is refused before any of its body is buffered. Work is linear in the bytes
 * however the stream is cut: whole frames inside a chunk are views into it, and a frame split
 * across chunks is gathered as copied pieces and joined once, when its last byte arrives (memory
 * grows with the bytes received, never with the length a header claims).
 */
export class StreamFrameSplitter {
  maxFrame: number;
  private readonly lengthBytes = Buffer.alloc(4);
  private lengthFill = 0;
  /** The frame being gathered: its length (flags + body), the pieces so far and their total. */
  private partLength = 0;
  private pieces: Buffer[] = [];
  private gathered = 0;
  /** Bytes copied so far: at most twice the bytes of the frames gathered across chunks. */
  bytesCopied = 0;

  constructor(maxFrame: number) {
    this.maxFrame = maxFrame;
  }

  /** Frames completed by `chunk`, in order. Throws FluxarError 413/400 on a bad length. */
  push(chunk: Uint8Array): Frame[] {
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const frames: Frame[] = [];
    let at = 0;
    while (at < buf.length) {
      if (this.partLength > 0) {
        const take = Math.min(this.partLength - this.gathered, buf.length - at);
        this.pieces.push(Buffer.from(buf.subarray(at, at + take))); // own copy: the chunk is not ours to keep
        this.gathered += take;
        this.bytesCopied += take;
        at += take;
        if (this.gathered === this.partLength) {
          const whole = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.partLength);
          if (this.pieces.length > 1) this.bytesCopied += this.partLength;
          frames.push({ flags: whole[0]!, body: whole.subarray(1) });
          this.partLength = 0;
          this.pieces = [];
          this.gathered = 0;
        }
        continue;
      }
      let length: number;
      if (this.lengthFill > 0 || buf.length - at < 4) {
        while (this.lengthFill < 4 && at < buf.length) this.lengthBytes[this.lengthFill++] = buf[at++]!;
        if (this.lengthFill < 4) break;
        this.lengthFill = 0;
        length = this.checkLength(this.lengthBytes.readUInt32BE(0));
      } else {
        length = this.checkLength(buf.readUInt32BE(at));
        at += 4;
        if (buf.length - at >= length) {
          frames.push({ flags: buf[at]!, body: buf.subarray(at + 1, at + length) });
          at += length;
          continue;
        }
      }
      this.partLength = length;
    }
    return frames;
  }

  private checkLength(length: number): number {
    if (length === 0) throw new FluxarError(400, 'frame of length 0 (a frame holds at least its flags byte)');
    if (length - 1 > this.maxFrame) throw new FluxarError(413, `frame of ${length - 1} bytes exceeds the maximum of ${this.maxFrame}`);
    return length;
  }

  /** Whether the bytes so far end inside a frame (its length, or its body). */
  get midFrame(): boolean {
    return this.lengthFill > 0 || this.partLength > 0;
  }

  /** Bytes buffered for an incomplete frame. */
  get buffered(): number {
    return this.lengthFill + this.gathered;
  }
}
