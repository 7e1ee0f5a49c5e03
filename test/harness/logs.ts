import { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';

/** A pino logger whose lines a test reads back, parsed. */
export function captureLogs(level = 'info'): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level },
    new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    }),
  );
  return { logger, lines };
}
