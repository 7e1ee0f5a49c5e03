// A typed TypeScript client written from a describe document (spec section 17): one method per
// call target and per stream, typed by the JSON Schemas their handlers declared.
//
// The schemas come from TypeBox, so they use a small part of JSON Schema: types, properties,
// required, items, enum, const, anyOf/oneOf/allOf, additionalProperties, patternProperties. That part is turned into
// TypeScript here; anything else becomes `unknown`, which is never wrong, only less precise.
// (json-schema-to-typescript does the whole of JSON Schema, at the price of prettier and a $ref
// resolver in the dependencies, for schemas we do not emit.)
import type { DescribeDocument, DescribedTarget } from './describe.js';

type Schema = Record<string, unknown>;

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function propertyKey(name: string): string {
  return IDENTIFIER.test(name) ? name : JSON.stringify(name);
}

function literal(value: unknown): string {
  return value === null || ['string', 'number', 'boolean'].includes(typeof value) ? JSON.stringify(value) : 'unknown';
}

function union(types: string[]): string {
  const unique = [...new Set(types)];
  return unique.length === 0 ? 'never' : unique.length === 1 ? unique[0]! : unique.map((t) => (t.includes('=>') ? `(${t})` : t)).join(' | ');
}

/** The TypeScript type a JSON Schema describes, indented for nesting at `depth`. */
export function schemaType(schema: unknown, depth = 0): string {
  if (schema === true || schema === undefined) return 'unknown';
  if (schema === false) return 'never';
  if (schema === null || typeof schema !== 'object') return 'unknown';
  const s = schema as Schema;
  if ('const' in s) return literal(s.const);
  if (Array.isArray(s.enum)) return union(s.enum.map(literal));
  for (const key of ['anyOf', 'oneOf'] as const) {
    if (Array.isArray(s[key])) return union((s[key] as unknown[]).map((member) => schemaType(member, depth)));
  }
  if (Array.isArray(s.allOf)) return (s.allOf as unknown[]).map((member) => `(${schemaType(member, depth)})`).join(' & ') || 'unknown';
  if (Array.isArray(s.type)) return union((s.type as unknown[]).map((type) => schemaType({ ...s, type }, depth)));
  switch (s.type) {
    case 'string':
      return 'string';
    case 'number':
    case 'integer':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array': {
      if (Array.isArray(s.prefixItems)) return `[${(s.prefixItems as unknown[]).map((item) => schemaType(item, depth)).join(', ')}]`;
      const item = schemaType(s.items, depth);
      return /^[\w.]+$/.test(item) ? `${item}[]` : `Array<${item}>`;
    }
    case 'object':
      return objectType(s, depth);
    default:
      return s.properties !== undefined ? objectType(s, depth) : 'unknown';
  }
}

function objectType(s: Schema, depth: number): string {
  const properties = (s.properties ?? {}) as Record<string, unknown>;
  const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
  const pad = '  '.repeat(depth + 1);
  const lines = Object.entries(properties).map(([name, property]) => {
    const description = (property as Schema | null)?.description;
    const doc = typeof description === 'string' ? `${pad}/** ${description.replace(/\*\//g, '* /')} */\n` : '';
    return `${doc}${pad}${propertyKey(name)}${required.has(name) ? '' : '?'}: ${schemaType(property, depth + 1)};`;
  });
  // Keys matching a pattern (TypeBox's Record) or any other key: an index signature.
  const keyed = Object.values((s.patternProperties ?? {}) as Record<string, unknown>).map((v) => schemaType(v, depth + 1));
  const rest = s.additionalProperties;
  if (rest !== undefined && rest !== false) keyed.push(rest === true ? 'unknown' : schemaType(rest, depth + 1));
  if (keyed.length > 0) lines.push(`${pad}[key: string]: ${union(keyed)};`);
  if (lines.length === 0) return rest === false ? 'Record<string, never>' : 'Record<string, unknown>';
  return `{\n${lines.join('\n')}\n${'  '.repeat(depth)}}`;
}

/** `payments.authorize` → `paymentsAuthorize`; a name that is no identifier is made into one. */
export function methodName(target: string): string {
  const words = target.split(/[^A-Za-z0-9]+/).filter((w) => w !== '');
  const name = words.map((w, i) => (i === 0 ? w[0]!.toLowerCase() + w.slice(1) : w[0]!.toUpperCase() + w.slice(1))).join('');
  return name === '' || /^\d/.test(name) ? `_${name}` : name;
}

function typeName(target: string, suffix: string): string {
  const name = methodName(target);
  return `${name[0]!.toUpperCase()}${name.slice(1)}${suffix}`;
}

function docComment(entry: DescribedTarget, indent: string): string {
  const text = entry.description ?? `\`${entry.name}\``;
  return `${indent}/** ${text.replace(/\*\//g, '* /')} */\n`;
}

export interface ClientCodeOptions {
  /** Where the generated file imports the FLUXAR library from (default 'fluxrig/fluxar'). */
  importFrom?: string;
  /** The URL the document was read from, for the header comment. */
  source?: string;
}

/** The TypeScript source of a typed client for what `doc` describes. */
export function typescriptClient(doc: DescribeDocument, options: ClientCodeOptions = {}): string {
  const from = options.importFrom ?? 'fluxrig/fluxar';
  const out: string[] = [
    `// A typed FLUXAR client, written by \`fluxrig describe${options.source === undefined ? '' : ` ${options.source}`} --ts\`.`,
    "// Generated from the server's fluxar.describe answer: regenerate it rather than edit it.",
    `import type { FluxarStream, Peer, PeerCallOptions, StreamOptions } from '${from}';`,
    '',
  ];
  const used = new Set<string>();
  const unique = (name: string) => {
    let candidate = name;
    for (let i = 2; used.has(candidate); i++) candidate = `${name}${i}`;
    used.add(candidate);
    return candidate;
  };
  const members: string[] = [];
  for (const [kind, entries] of [
    ['method', doc.methods],
    ['stream', doc.streams],
  ] as const) {
    for (const entry of entries) {
      // "*" stands for every target not named: there is no method to write for it.
      if (entry.name === '*') continue;
      const base = unique(methodName(entry.name));
      const input = typeName(base, 'Input');
      const output = typeName(base, kind === 'method' ? 'Output' : 'Chunk');
      out.push(`/** What \`${entry.name}\` takes. */`, `export type ${input} = ${schemaType(entry.input)};`, '');
      out.push(`/** What \`${entry.name}\` ${kind === 'method' ? 'answers' : 'streams'}. */`, `export type ${output} = ${schemaType(entry.output)};`, '');
      const target = JSON.stringify(entry.name);
      members.push(
        kind === 'method'
          ? `${docComment(entry, '  ')}  ${base}(input: ${input}, options?: PeerCallOptions): Promise<${output}> {\n    return this.peer.call(${target}, input, options) as Promise<${output}>;\n  }`
          : `${docComment(entry, '  ')}  ${base}(input: ${input}, options?: StreamOptions): FluxarStream & AsyncIterable<${output}> {\n    return this.peer.stream(${target}, input, options) as FluxarStream & AsyncIterable<${output}>;\n  }`,
      );
    }
  }
  for (const topic of doc.topics) {
    const name = typeName(unique(methodName(topic.pattern)), 'Message');
    out.push(`/** What topic \`${topic.pattern}\` carries. */`, `export type ${name} = ${schemaType(topic.payload)};`, '');
  }
  out.push(`/** The topics the server declared. */`, `export const TOPICS = ${JSON.stringify(doc.topics.map((t) => t.pattern))} as const;`, '');
  out.push(
    '/** Calls and streams of the server, typed; `peer` is a connection from connect(). */',
    'export class Client {',
    '  constructor(readonly peer: Peer) {}',
    '',
    members.join('\n\n'),
    '}',
    '',
  );
  return out.join('\n');
}
