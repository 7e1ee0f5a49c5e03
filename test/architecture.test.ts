// The layering of src/, read from the imports themselves (docs/architecture.md draws it). A lower
// layer never imports a higher one, folders never import each other in a cycle, and nothing in
// src/ reaches outside it.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, it } from 'node:test';

const root = new URL('../../', import.meta.url).pathname;
const src = join(root, 'src');

/** What each folder may import, besides itself and src/errors.ts. Everything else is refused. */
const ALLOWED: Record<string, string[]> = {
  cbor: [],
  fluxmsg: ['cbor'],
  fluxar: ['cbor', 'fluxmsg'],
  ring: [],
  gears: ['cbor', 'fluxmsg', 'fluxar', 'ring'],
  scenario: ['gears'],
  bus: ['cbor', 'fluxmsg', 'gears', 'scenario'],
  telemetry: ['cbor', 'fluxmsg', 'bus'],
  rack: ['cbor', 'fluxmsg', 'fluxar', 'ring', 'gears', 'scenario', 'bus', 'telemetry'],
  mixer: ['cbor', 'fluxmsg', 'fluxar', 'ring', 'gears', 'scenario', 'bus', 'telemetry'],
  cli: ['cbor', 'fluxmsg', 'fluxar', 'ring', 'gears', 'scenario', 'bus', 'telemetry', 'rack', 'mixer'],
};
/** Files at the top of src/: the package's root surface and the base error. */
const ROOT_ALLOWED = ['fluxmsg'];

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
  );
}

/** Relative module references: import/export ... from '...', import('...'), new URL('...', import.meta.url). */
function references(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found = [
    ...text.matchAll(/(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'/g),
    ...text.matchAll(/import\('(\.[^']+)'\)/g),
    ...text.matchAll(/new URL\('(\.[^']+)',\s*import\.meta\.url\)/g),
  ];
  return found.map((m) => m[1]!);
}

function folderOf(path: string): string | null {
  const rel = relative(src, path);
  if (rel.startsWith('..')) return null;
  const parts = rel.split('/');
  return parts.length === 1 ? '' : parts[0]!;
}

interface Edge {
  file: string;
  from: string;
  to: string | null;
  spec: string;
}
const edges: Edge[] = [];
for (const file of files(src)) {
  const from = folderOf(file)!;
  for (const spec of references(file)) edges.push({ file: relative(root, file), from, to: folderOf(normalize(join(dirname(file), spec))), spec });
}

describe('architecture', () => {
  it('reads the imports of every file in src/', () => {
    assert.ok(edges.length > 200, `${edges.length} imports read`);
  });

  it('every folder of src/ has a place in the layering', () => {
    const folders = new Set(edges.map((e) => e.from).filter((f) => f !== ''));
    for (const folder of folders) assert.ok(folder in ALLOWED, `src/${folder} is not in the layering (test/architecture.test.ts, docs/architecture.md)`);
  });

  it('nothing in src/ reaches outside it (no workers/, test/ or bench/ code)', () => {
    // Read from outside, never imported: the package's metadata (the CLI's --version) and the
    // built dashboard the Mixer's API serves as files (dashboard/, bundled into dist/dashboard).
    const read = (e: Edge) => e.spec.endsWith('/package.json') || (e.file === 'src/mixer/api.ts' && e.spec === '../../dashboard/');
    const outside = edges.filter((e) => e.to === null && !read(e)).map((e) => `${e.file} -> ${e.spec}`);
    assert.deepEqual(outside, []);
  });

  it('no layer imports a higher one', () => {
    const wrong = edges
      .filter((e) => e.to !== null && e.to !== e.from && e.to !== '')
      .filter((e) => !(e.from === '' ? ROOT_ALLOWED : (ALLOWED[e.from] ?? [])).includes(e.to!))
      .map((e) => `${e.file} (${e.from}) -> ${e.spec} (${e.to})`);
    assert.deepEqual(wrong, []);
  });

  it('imports of the top of src/ are the base error only', () => {
    const wrong = edges.filter((e) => e.to === '' && e.from !== '' && !e.spec.endsWith('errors.js')).map((e) => `${e.file} -> ${e.spec}`);
    assert.deepEqual(wrong, []);
  });

  it('the layering has no cycle', () => {
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (folder: string, path: string[]): void => {
      assert.ok(!visiting.has(folder), `cycle: ${[...path, folder].join(' -> ')}`);
      if (done.has(folder)) return;
      visiting.add(folder);
      for (const next of ALLOWED[folder] ?? []) visit(next, [...path, folder]);
      visiting.delete(folder);
      done.add(folder);
    };
    for (const folder of Object.keys(ALLOWED)) visit(folder, []);
  });
});
