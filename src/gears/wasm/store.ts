import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { WasmModuleError } from './errors.js';

const NAME = /^[a-z0-9][a-z0-9_.-]*$/;

/** Where urn:wasm:NAME:VERSION modules come from: a local store, or a bucket on the bus. */
export interface ModuleSource {
  resolve(name: string, version: string): Promise<Uint8Array>;
}

/**
 * A content-addressed module store in a local directory:
 *   blobs/sha256/<hex>   the module bytes, named by their SHA-256
 *   index.json           {"name:version": "sha256:<hex>"}
 * `urn:wasm:NAME:VERSION` resolves through the index.
 */
export class ModuleStore implements ModuleSource {
  constructor(readonly dir: string) {}

  private indexPath(): string {
    return join(this.dir, 'index.json');
  }

  private async index(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await readFile(this.indexPath(), 'utf8')) as Record<string, string>;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw err;
    }
  }

  /** Stores the bytes and tags them NAME:VERSION; returns the digest ("sha256:<hex>"). */
  async import(bytes: Uint8Array, name: string, version: string): Promise<string> {
    if (!NAME.test(name) || !NAME.test(version)) throw new RangeError(`module name and version must match ${NAME}: ${name}:${version}`);
    const hex = createHash('sha256').update(bytes).digest('hex');
    const blobDir = join(this.dir, 'blobs', 'sha256');
    await mkdir(blobDir, { recursive: true });
    await writeFile(join(blobDir, hex), bytes);
    const index = await this.index();
    index[`${name}:${version}`] = `sha256:${hex}`;
    // Write-then-rename: a reader never sees a half-written index.
    const tmp = `${this.indexPath()}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(index, null, 2)}\n`);
    await rename(tmp, this.indexPath());
    return `sha256:${hex}`;
  }

  /** The bytes tagged NAME:VERSION, checked against their digest. */
  async resolve(name: string, version: string): Promise<Uint8Array> {
    const urn = `urn:wasm:${name}:${version}`;
    const digest = (await this.index())[`${name}:${version}`];
    if (digest === undefined) throw new WasmModuleError(urn, `not in the module store ${this.dir} (import it with 'fluxrig wasm import')`);
    const hex = digest.replace(/^sha256:/, '');
    const bytes = await readFile(join(this.dir, 'blobs', 'sha256', hex));
    if (createHash('sha256').update(bytes).digest('hex') !== hex) throw new WasmModuleError(urn, `blob ${digest} is corrupt (digest mismatch)`);
    return bytes;
  }
}

/** Parses urn:wasm:NAME:VERSION. */
export function parseModuleUrn(source: string): { name: string; version: string } | undefined {
  const m = /^urn:wasm:([^:]+):([^:]+)$/.exec(source);
  return m ? { name: m[1]!, version: m[2]! } : undefined;
}
