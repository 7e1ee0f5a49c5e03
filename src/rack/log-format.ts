import { Writable } from 'node:stream';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'name']);

/** One pino JSON line as a line for people: time, level, message, then the other fields. */
export function formatLogLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = new Date(Number(entry.time)).toISOString().slice(11, 23);
  const fields = Object.entries(entry)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${time} ${LEVELS[Number(entry.level)] ?? String(entry.level)} ${String(entry.msg ?? '')}${fields ? `  ${fields}` : ''}\n`;
}

/**
 * A pino destination that writes readable lines: for a terminal. Logs stay JSON (pino's own
 * format, for machines) whenever stdout is not a terminal.
 */
export function readableLogStream(out: NodeJS.WritableStream = process.stdout): Writable {
  return new Writable({
    write(chunk, _encoding, done) {
      const text = String(chunk);
      out.write(
        text
          .split('\n')
          .filter((l) => l !== '')
          .map(formatLogLine)
          .join(''),
      );
      done();
    },
  });
}
