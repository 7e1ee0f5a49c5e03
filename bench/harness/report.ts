import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';

const resultsDir = new URL('../../../bench/results/', import.meta.url);

/** What every result file records about where it was measured. */
export function machine(): Record<string, unknown> {
  return {
    node: process.version,
    cpus: availableParallelism(),
    cpu_model: cpus()[0]?.model ?? 'unknown',
    date: new Date().toISOString(),
    note: 'figures from one run on a shared machine; compare ratios within the run, not absolutes across runs',
  };
}

/** Writes bench/results/NAME.json and returns its path. */
export function writeResult(name: string, result: Record<string, unknown>): string {
  mkdirSync(resultsDir, { recursive: true });
  const file = new URL(`${name}.json`, resultsDir);
  writeFileSync(file, `${JSON.stringify({ benchmark: name, machine: machine(), ...result }, null, 2)}\n`);
  return file.pathname;
}

/** The item whose `value` is the middle one (the upper one of an even count). */
export const medianBy = <T>(items: readonly T[], value: (item: T) => number): T =>
  [...items].sort((a, b) => value(a) - value(b))[Math.floor(items.length / 2)]!;

/** The middle value (the upper one of an even count). */
export const median = (values: number[]): number => medianBy(values, (v) => v);

/** Prints rows as an aligned text table. */
export function printTable(rows: Array<Record<string, string | number>>): void {
  if (rows.length === 0) return;
  const columns = Object.keys(rows[0]!);
  const cell = (v: string | number | undefined) => (typeof v === 'number' ? formatNumber(v) : (v ?? ''));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => String(cell(r[c])).length)));
  const line = (values: string[]) => values.map((v, i) => v.padStart(widths[i]!)).join('  ');
  console.log(line(columns));
  for (const row of rows) console.log(line(columns.map((c) => String(cell(row[c])))));
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toPrecision(3);
}
