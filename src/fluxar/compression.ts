// The frame compressions a FLUXAR session can agree on (spec section 7.1): zstd, gzip and raw
// deflate. Each compresses one envelope into one self-contained body and decompresses a body
// under a hard cap, so a small frame can never make the receiver allocate more than max_frame.
import { createRequire } from 'node:module';
import * as zlib from 'node:zlib';
import { ErrorCode } from './codes.js';
import { Capability } from './constants.js';
import { FluxarError } from './errors.js';

/** The compression capabilities, in the order a client prefers them. */
export const COMPRESSIONS = [Capability.Zstd, Capability.Gzip, Capability.Deflate] as const;
export type Compression = (typeof COMPRESSIONS)[number];

export interface Codec {
  readonly name: Compression;
  compress(body: Uint8Array): Uint8Array;
  /** The body decompressed; a FluxarError 413 past `maxOutput`, 400 when it is not valid. */
  decompress(body: Uint8Array, maxOutput: number): Uint8Array;
}

export function isCompression(cap: string): cap is Compression {
  return (COMPRESSIONS as readonly string[]).includes(cap);
}

/** The compressions this process can run, in preference order (zstd only where a backend loaded). */
export function availableCompressions(): Compression[] {
  return COMPRESSIONS.filter((name) => CODECS[name] !== undefined);
}

/** The codec for an agreed capability, or undefined when this process cannot run it. */
export function codecFor(name: string): Codec | undefined {
  return isCompression(name) ? CODECS[name] : undefined;
}

function tooLarge(maxOutput: number): FluxarError {
  return new FluxarError(ErrorCode.TooLarge, `frame decompresses past ${maxOutput} bytes`);
}

/** A node:zlib decompression capped at `maxOutput`: the cap stops it, nothing past it is made. */
function zlibCodec(name: Compression, compress: (b: Uint8Array) => Buffer, decompress: (b: Uint8Array, o: zlib.ZlibOptions) => Buffer): Codec {
  return {
    name,
    compress,
    decompress(body, maxOutput) {
      try {
        return decompress(body, { maxOutputLength: maxOutput });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(maxOutput);
        throw new FluxarError(ErrorCode.BadRequest, `compressed frame does not ${name}-decompress`, { cause: err });
      }
    },
  };
}

// ---- zstd ------------------------------------------------------------------------------------

const ZSTD_MAGIC = 0xfd2fb528;

/** What a zstd frame's header says, read before anything is decompressed (RFC 8878 section 3.1.1). */
export interface ZstdFrameInfo {
  /** The decompressed size the header declares, or null when the header leaves it out. */
  contentSize: number | null;
  /** Bytes of the first frame, header to checksum: less than the body when more follows it. */
  frameBytes: number;
}

/**
 * Reads the header and walks the block headers of the zstd frame at the start of `body`. Throws
 * a 400 FluxarError when it is not a zstd frame or its blocks run past the body. node:zlib has
 * no call for this, and the bomb check must work the same whichever backend decompresses.
 */
export function zstdFrameInfo(body: Uint8Array): ZstdFrameInfo {
  const bad = (why: string) => new FluxarError(ErrorCode.BadRequest, `compressed frame is not one zstd frame: ${why}`);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  if (body.length < 6 || view.getUint32(0, true) !== ZSTD_MAGIC) throw bad('no zstd magic number');
  const descriptor = body[4]!;
  if (descriptor & 0x08) throw bad('reserved header bit set');
  const singleSegment = (descriptor & 0x20) !== 0;
  const sizeFlag = descriptor >> 6;
  const dictionaryBytes = [0, 1, 2, 4][descriptor & 0x03]!;
  const sizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][sizeFlag]!;
  let at = 5 + (singleSegment ? 0 : 1);
  if (dictionaryBytes > 0) throw bad('it names a dictionary, and none was agreed');
  if (at + sizeBytes > body.length) throw bad('header cut short');
  let contentSize: number | null = null;
  if (sizeBytes === 1) contentSize = body[at]!;
  else if (sizeBytes === 2) contentSize = view.getUint16(at, true) + 256;
  else if (sizeBytes === 4) contentSize = view.getUint32(at, true);
  else if (sizeBytes === 8) {
    const size = view.getBigUint64(at, true);
    contentSize = size > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(size);
  }
  at += sizeBytes;
  for (;;) {
    if (at + 3 > body.length) throw bad('block header cut short');
    const header = body[at]! | (body[at + 1]! << 8) | (body[at + 2]! << 16);
    const type = (header >> 1) & 0x03;
    if (type === 3) throw bad('reserved block type');
    // An RLE block holds one byte, repeated Block_Size times.
    at += 3 + (type === 1 ? 1 : header >>> 3);
    if (at > body.length) throw bad('block runs past the frame');
    if (header & 1) break;
  }
  if (descriptor & 0x04) at += 4;
  if (at > body.length) throw bad('checksum cut short');
  return { contentSize, frameBytes: at };
}

/**
 * The bomb check of spec section 7.1: one frame, filling the body, that declares its size, and a
 * size within the cap. Only then is memory set aside for it, and exactly that much.
 */
function checkZstdFrame(body: Uint8Array, maxOutput: number): number {
  const info = zstdFrameInfo(body);
  if (info.frameBytes !== body.length) {
    throw new FluxarError(ErrorCode.BadRequest, 'compressed frame holds more than one zstd frame');
  }
  if (info.contentSize === null) throw new FluxarError(ErrorCode.BadRequest, 'zstd frame does not declare its content size');
  if (info.contentSize > maxOutput) throw tooLarge(maxOutput);
  return info.contentSize;
}

interface ZstdNapi {
  compress(data: Uint8Array): Buffer;
  Decompressor: new () => { decompress(data: Uint8Array): Buffer };
}

/** zstd from node:zlib (Node 22.15 and later), else from zstd-napi when it built, else none. */
function zstdCodec(): Codec | undefined {
  type ZstdZlib = {
    zstdCompressSync(b: Uint8Array, o: { pledgedSrcSize: number }): Buffer;
    zstdDecompressSync(b: Uint8Array, o: { maxOutputLength: number }): Buffer;
  };
  const native = zlib as unknown as Partial<ZstdZlib>;
  let compress: (body: Uint8Array) => Uint8Array;
  let decompress: (body: Uint8Array, size: number) => Buffer;
  if (typeof native.zstdCompressSync === 'function' && typeof native.zstdDecompressSync === 'function') {
    const { zstdCompressSync, zstdDecompressSync } = native as ZstdZlib;
    // The pledged size puts the content size in the header, which the receiver requires.
    compress = (body) => {
      const packed = zstdCompressSync(body, { pledgedSrcSize: body.length });
      // A Node that ignores the pledge leaves the size out; the body then goes uncompressed.
      return zstdFrameInfo(packed).contentSize === null ? body : packed;
    };
    decompress = (body, size) => zstdDecompressSync(body, { maxOutputLength: size });
  } else {
    let napi: ZstdNapi;
    try {
      napi = createRequire(import.meta.url)('zstd-napi') as ZstdNapi;
    } catch {
      return undefined;
    }
    const decompressor = new napi.Decompressor();
    compress = (body) => napi.compress(body);
    decompress = (body) => decompressor.decompress(body);
  }
  return {
    name: 'zstd',
    compress,
    decompress(body, maxOutput) {
      const size = checkZstdFrame(body, maxOutput);
      let out: Buffer;
      try {
        out = decompress(body, size);
      } catch (err) {
        throw new FluxarError(ErrorCode.BadRequest, 'compressed frame does not zstd-decompress', { cause: err });
      }
      if (out.length !== size) throw new FluxarError(ErrorCode.BadRequest, `zstd frame declared ${size} bytes and held ${out.length}`);
      return out;
    },
  };
}

const CODECS: Partial<Record<Compression, Codec>> = {
  zstd: zstdCodec(),
  gzip: zlibCodec('gzip', (b) => zlib.gzipSync(b), zlib.gunzipSync),
  deflate: zlibCodec('deflate', (b) => zlib.deflateRawSync(b), zlib.inflateRawSync),
};

/**
 * The first compression in `listed` that `supported` has and this process can run. A server
 * applies it to the client's offer (the client's order, since it knows what it can afford to
 * run); a client to the server's answer, which names one at most.
 */
export function chooseCompression(listed: readonly string[], supported: readonly string[]): Compression | null {
  for (const cap of listed) if (isCompression(cap) && supported.includes(cap) && codecFor(cap)) return cap;
  return null;
}
