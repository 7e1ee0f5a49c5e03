// How the benchmarks start fluxrig: as its executable runs, with the Node flags its first line
// names (a rack's heap settings are part of what is measured), plus any a benchmark adds (a
// profiler's). One source for those flags: the CLI's own first line.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('../../../', import.meta.url).pathname;
export const CLI = join(root, 'dist/src/cli/main.js');

/** The arguments for process.execPath that start the CLI: its shebang's flags, `extra`, the script. */
export function cliNodeArgs(...extra: string[]): string[] {
  const first = readFileSync(CLI, 'utf8').split('\n', 1)[0]!;
  const flags = first.startsWith('#!') ? first.split(/\s+/).filter((word) => word.startsWith('--')) : [];
  return [...flags, ...extra, CLI];
}
