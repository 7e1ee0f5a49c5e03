// The byte-level examples of docs/fluxar-spec.md section 16 are what this implementation writes:
// each is encoded here and compared with the hex in the document, so the two cannot drift.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { type Envelope, encodeEnvelope, encodeStreamFrame, MessageType } from '../src/fluxar/mod.js';

const id = (hex: string) => Buffer.from(hex.replace(/\s/g, ''), 'hex');
const bytes = (from: number) => Buffer.from(Array.from({ length: 16 }, (_, i) => from + i));
const CALL = id('019a4f2c8e1d70008000000000000003');
const STREAM = id('019a4f2c8e1e70008000000000000010');

/** The envelopes of section 16, by the name of their heading. */
export const SPEC_EXAMPLES: Record<string, Envelope> = {
  'client hello': {
    type: MessageType.Hello,
    id: id('019a4f2c8e1b7c3d9e2f0a1b2c3d4e01'),
    ref: null,
    target: null,
    meta: null,
    payload: { versions: [1], caps: ['deflate'], nonce: bytes(0), max_frame: 1048576, max_streams: 128, auth: { scheme: 'bearer', token: 's3cret' } },
    error: null,
  },
  'server hello': {
    type: MessageType.Hello,
    id: id('019a4f2c8e1c70008000000000000002'),
    ref: id('019a4f2c8e1b7c3d9e2f0a1b2c3d4e01'),
    target: null,
    meta: null,
    payload: {
      version: 1,
      caps: ['deflate'],
      session: { id: id('019a4f2c8e1c7000800000000000000b'), resume_token: bytes(0xf0), heartbeat_ms: 15000, max_frame: 1048576, max_streams: 128 },
      nonce: bytes(0x10),
    },
    error: null,
  },
  call: {
    type: MessageType.Call,
    id: CALL,
    ref: null,
    target: 'user.getProfile',
    meta: { trace_id: 'abc123', deadline_ms: 250 },
    payload: { id: 42 },
    error: null,
  },
  response: { type: MessageType.Call, id: id('019a4f2c8e1d70008000000000000004'), ref: CALL, target: null, meta: null, payload: { name: 'Ada' }, error: null },
  'error response': {
    type: MessageType.Call,
    id: id('019a4f2c8e1d70008000000000000005'),
    ref: CALL,
    target: null,
    meta: null,
    payload: null,
    error: { code: 404, message: 'no handler for user.getProfile' },
  },
  'stream opening': {
    type: MessageType.Call,
    id: STREAM,
    ref: null,
    target: 'llm.generate',
    meta: { stream: 'out', credit: 16 },
    payload: { prompt: 'hi' },
    error: null,
  },
  chunk: { type: MessageType.Stream, id: id('019a4f2c8e1e70008000000000000011'), ref: STREAM, target: null, meta: null, payload: 'Hel', error: null },
  resume: {
    type: MessageType.Stream,
    id: id('019a4f2c8e1e70008000000000000012'),
    ref: STREAM,
    target: 'resume',
    meta: null,
    payload: { credit: 16 },
    error: null,
  },
  'stream response': {
    type: MessageType.Call,
    id: id('019a4f2c8e1e70008000000000000013'),
    ref: STREAM,
    target: null,
    meta: null,
    payload: { tokens: 2 },
    error: null,
  },
};

/** A frame as section 16 prints it: hex bytes, 16 to a line. */
export function hexLines(frame: Uint8Array): string {
  const hex = Buffer.from(frame).toString('hex').match(/../g)!;
  const lines: string[] = [];
  for (let i = 0; i < hex.length; i += 16) lines.push(hex.slice(i, i + 16).join(' '));
  return lines.join('\n');
}

describe('docs/fluxar-spec.md section 16', () => {
  const spec = readFileSync(new URL('../../docs/fluxar-spec.md', import.meta.url), 'utf8');
  const section = spec.slice(spec.indexOf('## 16. Byte-level examples'));
  for (const [name, env] of Object.entries(SPEC_EXAMPLES)) {
    it(`the ${name} is what the encoder writes`, () => {
      const frame = encodeStreamFrame(0, encodeEnvelope(env));
      const heading = `#### ${name} (${frame.length} bytes)`;
      const at = section.indexOf(heading);
      assert.ok(at >= 0, `the section has "${heading}", followed by:\n\n${hexLines(frame)}\n`);
      const block = section
        .slice(at + heading.length)
        .trimStart()
        .split('\n\n')[0]!
        .trim();
      assert.equal(block, hexLines(frame), `${name}: the document's bytes differ from the encoder's`);
    });
  }
});
