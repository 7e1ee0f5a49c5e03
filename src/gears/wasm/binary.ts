// Just enough of the WebAssembly binary format to read and rewrite sections: the memory limit
// is written into the module, and signatures live in a custom section.

export const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d];
export const SECTION_CUSTOM = 0;
export const SECTION_IMPORT = 2;
export const SECTION_MEMORY = 5;

export interface Section {
  id: number;
  /** Offset of the section's id byte. */
  header: number;
  /** Offset of the section's content (after id and size). */
  start: number;
  end: number;
  /** For custom sections: the name. */
  name?: string;
}

export class WasmFormatError extends Error {}

export function readU32(bytes: Uint8Array, at: number): [value: number, next: number] {
  let result = 0;
  let shift = 0;
  for (let i = 0; i < 5; i++) {
    const b = bytes[at + i];
    if (b === undefined) throw new WasmFormatError('truncated LEB128');
    result |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) return [result >>> 0, at + i + 1];
    shift += 7;
  }
  throw new WasmFormatError('LEB128 too long');
}

export function writeU32(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value & 0x7f;
    value >>>= 7;
    if (value !== 0) b |= 0x80;
    out.push(b);
  } while (value !== 0);
  return out;
}

export function readSections(bytes: Uint8Array): Section[] {
  if (bytes.length < 8 || WASM_MAGIC.some((b, i) => bytes[i] !== b)) throw new WasmFormatError('not a WebAssembly module (bad magic)');
  const sections: Section[] = [];
  let at = 8;
  while (at < bytes.length) {
    const id = bytes[at]!;
    const [size, start] = readU32(bytes, at + 1);
    const end = start + size;
    if (end > bytes.length) throw new WasmFormatError(`section ${id} runs past the end of the module`);
    const section: Section = { id, header: at, start, end };
    if (id === SECTION_CUSTOM) {
      const [nameLength, nameStart] = readU32(bytes, start);
      section.name = Buffer.from(bytes.subarray(nameStart, nameStart + nameLength)).toString('utf8');
    }
    sections.push(section);
    at = end;
  }
  return sections;
}

/** The module with every custom section named `name` removed. */
export function withoutCustomSection(bytes: Uint8Array, name: string): Uint8Array {
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  for (const s of readSections(bytes)) {
    if (s.id === SECTION_CUSTOM && s.name === name) continue;
    parts.push(bytes.subarray(s.header, s.end));
  }
  return Buffer.concat(parts);
}

/** Appends a custom section. */
export function withCustomSection(bytes: Uint8Array, name: string, content: Uint8Array): Uint8Array {
  const nameBytes = Buffer.from(name, 'utf8');
  const payload = Buffer.concat([Buffer.from(writeU32(nameBytes.length)), nameBytes, content]);
  return Buffer.concat([bytes, Buffer.from([SECTION_CUSTOM, ...writeU32(payload.length)]), payload]);
}

export function customSection(bytes: Uint8Array, name: string): Uint8Array | undefined {
  const s = readSections(bytes).find((x) => x.id === SECTION_CUSTOM && x.name === name);
  if (s === undefined) return undefined;
  const [nameLength, nameStart] = readU32(bytes, s.start);
  return bytes.subarray(nameStart + nameLength, s.end);
}

export interface MemoryLimits {
  initial: number;
  maximum: number | undefined;
}

/**
 * Rewrites the module's own memory so that it may not grow past `maxPages`: memory.grow beyond
 * it then fails inside the guest (and an AssemblyScript runtime traps). Returns the new module
 * and the memory's declared limits, or throws when even the initial size is over the limit.
 * A module without a memory section (one that imports its memory) is returned unchanged.
 */
export function limitMemory(bytes: Uint8Array, maxPages: number): { module: Uint8Array; limits: MemoryLimits | undefined } {
  const sections = readSections(bytes);
  const memory = sections.find((s) => s.id === SECTION_MEMORY);
  if (memory === undefined) return { module: bytes, limits: undefined };
  const [count, at] = readU32(bytes, memory.start);
  if (count !== 1) throw new WasmFormatError(`expected one memory, found ${count}`);
  const flags = bytes[at]!;
  if (flags > 1) throw new WasmFormatError(`unsupported memory kind (flags 0x${flags.toString(16)}): shared or 64-bit memories are not accepted`);
  const [initial, next] = readU32(bytes, at + 1);
  const declaredMax = flags === 1 ? readU32(bytes, next)[0] : undefined;
  if (initial > maxPages) throw new WasmFormatError(`the module starts with ${initial} pages of memory, more than memory_limit_pages ${maxPages}`);
  const maximum = declaredMax === undefined ? maxPages : Math.min(declaredMax, maxPages);
  const content = Buffer.from([...writeU32(1), 0x01, ...writeU32(initial), ...writeU32(maximum)]);
  const module = Buffer.concat([
    bytes.subarray(0, memory.header),
    Buffer.from([SECTION_MEMORY, ...writeU32(content.length)]),
    content,
    bytes.subarray(memory.end),
  ]);
  return { module, limits: { initial, maximum } };
}

function skipName(bytes: Uint8Array, at: number): number {
  const [length, start] = readU32(bytes, at);
  return start + length;
}

function readLimits(bytes: Uint8Array, at: number): [MemoryLimits, number] {
  const flags = bytes[at]!;
  const [initial, next] = readU32(bytes, at + 1);
  if (flags & 1) {
    const [maximum, end] = readU32(bytes, next);
    return [{ initial, maximum }, end];
  }
  return [{ initial, maximum: undefined }, next];
}

/** The limits of an imported memory (env.memory), if the module imports one. */
export function importedMemoryLimits(bytes: Uint8Array): MemoryLimits | undefined {
  const section = readSections(bytes).find((s) => s.id === SECTION_IMPORT);
  if (section === undefined) return undefined;
  let [count, at] = readU32(bytes, section.start);
  while (count-- > 0) {
    at = skipName(bytes, skipName(bytes, at));
    const kind = bytes[at++]!;
    if (kind === 0) at = readU32(bytes, at)[1];
    else if (kind === 1) at = readLimits(bytes, at + 1)[1];
    else if (kind === 2) return readLimits(bytes, at)[0];
    else if (kind === 3) at += 2;
    else throw new WasmFormatError(`unknown import kind ${kind}`);
  }
  return undefined;
}
