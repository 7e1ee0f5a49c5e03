// A diagnostic handler: sends every record straight back with its tag. Used by the ring
// benchmark and the data-plane tests; a rack's real handler runs the gear chain.
import type { HandlerFactory } from '../src/rack/worker-protocol.js';

export const createHandler: HandlerFactory = ({ out }) => {
  const bytes = out.producer.bytes;
  return (tag, src, start, length) => {
    const at = out.reserve(tag, length);
    bytes.set(src.subarray(start, start + length), at);
    out.commit();
  };
};
