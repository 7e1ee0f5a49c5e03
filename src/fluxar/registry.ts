// What a FLUXAR side serves: its call handlers, stream handlers and declared topics. A Peer
// serves its own connection; a FluxarServer serves every connection, a peer's own taking
// precedence. fluxar.describe reads both.
import { EventEmitter } from 'node:events';
import { type Contract, type TopicContract, typedHandler, typedStreamHandler } from './describe.js';
import type { Handler, StreamHandler, TypedHandler } from './peer.js';

export class HandlerRegistry extends EventEmitter {
  readonly handlers = new Map<string, Handler>();
  readonly streamHandlers = new Map<string, StreamHandler>();
  readonly topics = new Map<string, TopicContract>();

  /**
   * Registers the handler for calls to `target`. With a contract, the input is checked against
   * its schema first (400 naming the path of the first problem), and `fluxar.describe` lists both
   * schemas.
   */
  handle(target: string, handler: Handler): this;
  handle<C extends Contract>(target: string, contract: C, handler: TypedHandler<C>): this;
  handle(target: string, a: Handler | Contract, b?: TypedHandler<Contract>): this {
    this.handlers.set(target, typeof a === 'function' ? a : typedHandler(a, b!));
    return this;
  }

  /** Registers the handler for streams opened to `target` (spec section 13); a contract as for handle(). */
  handleStream(target: string, handler: StreamHandler): this;
  handleStream(target: string, contract: Contract, handler: StreamHandler): this;
  handleStream(target: string, a: StreamHandler | Contract, b?: StreamHandler): this {
    this.streamHandlers.set(target, typeof a === 'function' ? a : typedStreamHandler(a, b!));
    return this;
  }

  /** Declares a topic this side publishes, for `fluxar.describe`. */
  topic(pattern: string, contract: TopicContract = {}): this {
    this.topics.set(pattern, contract);
    return this;
  }
}
