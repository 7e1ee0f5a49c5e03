// Introspection (spec section 17): handlers that declare the JSON Schemas of what they take and
// answer, validation of what they take, and the `fluxar.describe` document that lists what a
// peer serves. The schemas are TypeBox's, which are plain JSON Schema: the same object validates
// here, travels in the describe answer and becomes TypeScript types in a generated client.
import type { Static, TSchema } from 'typebox';
import { ErrorCode } from './codes.js';
import { FluxarError } from './errors.js';
import type { Handler, StreamHandler } from './peer.js';
import type { Principal } from './auth.js';
import { isAsyncIterable, isIterator } from './stream.js';

/** The built-in target that answers the describe document. */
export const DESCRIBE_TARGET = 'fluxar.describe';
/** The describe format this peer speaks. */
export const DESCRIBE_VERSION = 1;

/** What a handler declares: the schema of its input and of its answer (or its chunks, for a stream). */
export interface Contract<I extends TSchema = TSchema, O extends TSchema = TSchema> {
  input?: I;
  output?: O;
  description?: string;
}

/** What a topic carries, for describe. */
export interface TopicContract {
  payload?: TSchema;
  description?: string;
}

/** One method or stream in the describe document. */
export interface DescribedTarget {
  name: string;
  description?: string;
  input?: unknown;
  output?: unknown;
}

export interface DescribedTopic {
  pattern: string;
  description?: string;
  payload?: unknown;
}

/** The answer to `fluxar.describe` (spec section 17). */
export interface DescribeDocument {
  version: number;
  methods: DescribedTarget[];
  streams: DescribedTarget[];
  topics: DescribedTopic[];
}

/** Who may call `fluxar.describe`: everyone the server accepted, nobody, or those a function allows. */
export type DescribePolicy = boolean | ((principal: Principal | null) => boolean);

/** The input type a contract's handler receives. */
export type InputOf<C extends Contract> = C['input'] extends TSchema ? Static<C['input']> : unknown;
/** The answer type a contract's handler returns. */
export type OutputOf<C extends Contract> = C['output'] extends TSchema ? Static<C['output']> : unknown;

/** Handlers registered with a contract, and their contract: what describe reads. */
const contracts = new WeakMap<Handler | StreamHandler, Contract>();

export function contractOf(handler: Handler | StreamHandler): Contract | undefined {
  return contracts.get(handler);
}

/** A compiled check: null when the value conforms, else the 400 to answer with. */
export type InputCheck = (value: unknown) => FluxarError | null;

let compiler: Promise<typeof import('typebox/compile')> | undefined;

/**
 * A check of `schema`, compiled once: null when the value conforms, else a 400 FluxarError
 * naming the JSON path (RFC 6901) of the first problem, in its message and its data.
 * TypeBox's compiler is loaded on first use: a process that types no handler never loads it,
 * and a long-running server that does not need it keeps a smaller heap.
 */
export async function inputCheck(schema: TSchema, what = 'input'): Promise<InputCheck> {
  const { Compile } = await (compiler ??= import('typebox/compile'));
  const validator = Compile(schema);
  return (value) => {
    if (validator.Check(value)) return null;
    const [first] = validator.Errors(value);
    const path = first?.instancePath ?? '';
    const problem = first?.message ?? 'does not match its schema';
    return new FluxarError(ErrorCode.BadRequest, `${what}${path === '' ? '' : ` at ${path}`} ${problem}`, {
      data: { path, keyword: first?.keyword },
    });
  };
}

/** The contract's input check, compiled in the background; `ready` until then. */
function deferredCheck(contract: Contract): { now(): InputCheck | null | undefined; ready: Promise<unknown> } {
  if (contract.input === undefined) return { now: () => null, ready: Promise.resolve() };
  let check: InputCheck | undefined;
  const ready = inputCheck(contract.input).then((c) => (check = c));
  return { now: () => check, ready };
}

/** The handler with its input checked first (400 with the path of the first problem). */
export function typedHandler<C extends Contract>(contract: C, fn: (payload: InputOf<C>, ctx: Parameters<Handler>[1]) => unknown): Handler {
  const check = deferredCheck(contract);
  const handler: Handler = (payload, ctx) => {
    const now = check.now();
    // Only a call that comes before the schema is compiled waits for it.
    if (now === undefined) return check.ready.then(() => handler(payload, ctx));
    const problem = now?.(payload) ?? null;
    if (problem !== null) throw problem;
    return fn(payload as InputOf<C>, ctx);
  };
  contracts.set(handler, contract);
  return handler;
}

/** The stream handler with its opening payload checked first. */
export function typedStreamHandler(contract: Contract, fn: StreamHandler): StreamHandler {
  const check = deferredCheck(contract);
  const run: StreamHandler = (chunks, ctx) => {
    const problem = check.now()?.(ctx.payload) ?? null;
    if (problem !== null) throw problem;
    return fn(chunks, ctx);
  };
  const handler: StreamHandler = (chunks, ctx) => {
    if (check.now() !== undefined) return run(chunks, ctx);
    // Before the schema is compiled: a generator that waits for it, then runs the handler's own.
    return (async function* () {
      await check.ready;
      const result = run(chunks, ctx);
      if (isAsyncIterable(result) || isIterator(result)) return yield* result as AsyncIterable<unknown>;
      return await result;
    })();
  };
  contracts.set(handler, contract);
  return handler;
}

function described(name: string, handler: Handler | StreamHandler): DescribedTarget {
  const contract = contracts.get(handler);
  const entry: DescribedTarget = { name };
  if (contract?.description !== undefined) entry.description = contract.description;
  if (contract?.input !== undefined) entry.input = plainSchema(contract.input);
  if (contract?.output !== undefined) entry.output = plainSchema(contract.output);
  return entry;
}

/** The schema as plain data: TypeBox marks its schemas with symbol keys, which do not encode. */
function plainSchema(schema: TSchema): unknown {
  return JSON.parse(JSON.stringify(schema));
}

/** Every target of `own` and of `shared` (own first, as own handlers take precedence), by name. */
function merged<T>(own: ReadonlyMap<string, T>, shared: ReadonlyMap<string, T> | undefined): Array<[string, T]> {
  const all = new Map(shared ?? []);
  for (const [name, value] of own) all.set(name, value);
  return [...all].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** What a peer serves: its handlers and stream handlers, and the topics declared on it. */
export interface Served {
  handlers: ReadonlyMap<string, Handler>;
  sharedHandlers?: ReadonlyMap<string, Handler>;
  streamHandlers: ReadonlyMap<string, StreamHandler>;
  sharedStreamHandlers?: ReadonlyMap<string, StreamHandler>;
  topics?: ReadonlyMap<string, TopicContract>;
}

export function describeDocument(served: Served): DescribeDocument {
  return {
    version: DESCRIBE_VERSION,
    methods: merged(served.handlers, served.sharedHandlers)
      .filter(([name]) => name !== DESCRIBE_TARGET)
      .map(([name, handler]) => described(name, handler)),
    streams: merged(served.streamHandlers, served.sharedStreamHandlers).map(([name, handler]) => described(name, handler)),
    topics: [...(served.topics ?? [])].map(([pattern, topic]) => {
      const entry: DescribedTopic = { pattern };
      if (topic.description !== undefined) entry.description = topic.description;
      if (topic.payload !== undefined) entry.payload = plainSchema(topic.payload);
      return entry;
    }),
  };
}

/**
 * The describe call's payload: null or `{version}`. Returns the FluxarError to answer with when
 * this peer cannot answer it: 501 for a version it does not speak, 400 for a malformed request.
 */
export function describeRequestError(payload: unknown): FluxarError | null {
  if (payload === null || payload === undefined) return null;
  if (typeof payload !== 'object' || Array.isArray(payload)) return new FluxarError(ErrorCode.BadRequest, 'describe takes null or a map {version}');
  const version = (payload as { version?: unknown }).version;
  if (version === undefined || version === DESCRIBE_VERSION) return null;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    return new FluxarError(ErrorCode.BadRequest, 'describe version must be a positive integer');
  }
  return new FluxarError(ErrorCode.Unsupported, `describe version ${version} is not supported (this peer speaks ${DESCRIBE_VERSION})`);
}

/** Whether the policy lets this principal describe: a refusal is a 403. */
export function describeAllowed(policy: DescribePolicy | undefined, principal: Principal | null): boolean {
  if (policy === undefined || policy === true) return true;
  if (policy === false) return false;
  return policy(principal);
}
