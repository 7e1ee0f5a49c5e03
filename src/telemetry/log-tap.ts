// A pino destination with two outlets: the local log (stdout, a file, a terminal) and the
// telemetry uplink, each with its own level. The logger runs at the lower of the two, and each
// line goes where its level reaches.
import { type DestinationStream, type Logger, pino } from 'pino';

/** pino's numeric levels, and `silent` (nothing). */
export const LEVEL_VALUES: Readonly<Record<string, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

export function levelValue(level: string): number {
  const value = LEVEL_VALUES[level];
  if (value === undefined) throw new RangeError(`unknown log level ${JSON.stringify(level)} (expected ${Object.keys(LEVEL_VALUES).join(', ')})`);
  return value;
}

/** The name of a numeric level (the inverse of levelValue). */
function levelName(value: number): string {
  return Object.keys(LEVEL_VALUES).find((k) => LEVEL_VALUES[k] === value) ?? 'silent';
}

const LEVEL_PREFIX = '{"level":';

/**
 * The numeric level of one of pino's JSON lines (they begin {"level":NN), read without parsing
 * the line: this runs for every line logged.
 */
export function lineLevel(line: string): number {
  if (!line.startsWith(LEVEL_PREFIX)) return 0;
  let value = 0;
  for (let i = LEVEL_PREFIX.length; i < line.length; i++) {
    const digit = line.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) break;
    value = value * 10 + digit;
  }
  return value;
}

/** A destination that also takes a line as UTF-8 bytes, and copies them before returning. */
export interface Utf8Destination extends DestinationStream {
  writeUtf8(line: Uint8Array): void;
}

function takesUtf8(out: DestinationStream): out is Utf8Destination {
  return typeof (out as Partial<Utf8Destination>).writeUtf8 === 'function';
}

export class LogTap implements DestinationStream {
  private local: number;
  private telemetry: number;
  private readonly utf8Out: Utf8Destination | undefined;
  /** Where lines at or above the telemetry level go; none until an uplink takes them. */
  sink: ((line: string) => void) | undefined;
  /** The same for a line as UTF-8 bytes (read only during the call); without it, `sink` gets the text. */
  sinkUtf8: ((line: Uint8Array) => void) | undefined;

  constructor(
    private readonly out: DestinationStream,
    localLevel: string,
    telemetryLevel = 'silent',
  ) {
    this.local = levelValue(localLevel);
    this.telemetry = levelValue(telemetryLevel);
    this.utf8Out = takesUtf8(out) ? out : undefined;
  }

  write(line: string): void {
    const level = lineLevel(line);
    if (level >= this.local) this.out.write(line);
    if (level >= this.telemetry) this.sink?.(line);
  }

  /** A whole line (its newline included) as UTF-8 bytes, read only during the call, its level known. */
  writeUtf8(level: number, line: Uint8Array): void {
    if (level >= this.local) {
      if (this.utf8Out !== undefined) this.utf8Out.writeUtf8(line);
      else this.out.write(TEXT.decode(line));
    }
    if (level >= this.telemetry) {
      if (this.sinkUtf8 !== undefined) this.sinkUtf8(line);
      else this.sink?.(TEXT.decode(line));
    }
  }

  /** Sets either level; returns the one the logger must run at (the lower). */
  setLevels(levels: { local?: string; telemetry?: string }): string {
    if (levels.local !== undefined) this.local = levelValue(levels.local);
    if (levels.telemetry !== undefined) this.telemetry = levelValue(levels.telemetry);
    return this.loggerLevel;
  }

  get loggerLevel(): string {
    return levelName(Math.min(this.local, this.telemetry));
  }

  get localLevel(): string {
    return levelName(this.local);
  }

  get telemetryLevel(): string {
    return levelName(this.telemetry);
  }
}

/** A logger writing through a LogTap: pino's JSON lines to `out` (stdout by default). */
export function tappedLogger(name: string, localLevel: string, telemetryLevel = 'silent', out?: DestinationStream): { logger: Logger; tap: LogTap } {
  const tap = new LogTap(out ?? pino.destination(1), localLevel, telemetryLevel);
  const logger = pino({ name, level: tap.loggerLevel }, tap);
  TAPPED.set(logger, tap);
  return { logger, tap };
}

/** Loggers made by tappedLogger: pino's defaults, so their lines can be written without pino. */
const TAPPED = new WeakMap<Logger, LogTap>();

const TEXT = new TextDecoder();

/**
 * Writes a gear's log lines at a numeric (pino) level, unless the logger's level is above it. The
 * shape of gears' GearLineWriter, declared here because telemetry may not import gears.
 */
export interface LineWriter {
  text(level: number, text: string): void;
  /** The line's text as UTF-8 bytes (a guest's buffer, read only during the call). */
  utf8(level: number, bytes: Uint8Array): void;
}

/** The longest line built as bytes; a longer one goes the way of text. */
const LINE_BYTES = 16 * 1024;
/** JSON's two-character escapes, by byte (0: none; others are written \u00XX). */
const SHORT_ESCAPE = new Uint8Array(128);
for (const [byte, letter] of [
  [0x08, 'b'],
  [0x09, 't'],
  [0x0a, 'n'],
  [0x0c, 'f'],
  [0x0d, 'r'],
  [0x22, '"'],
  [0x5c, '\\'],
] as const)
  SHORT_ESCAPE[byte] = letter.charCodeAt(0);
const HEX = '0123456789abcdef';

/**
 * For a logger made by tappedLogger, a writer of lines of a child with `bindings` (a Wasm gear's
 * log lines, the one place a flood comes from) that builds the line pino would, byte for byte,
 * without pino's per-line work: a gear at 50,000 lines a second spent more in pino's call,
 * serializer checks and formatting than in anything else of its log. Undefined for any other
 * logger (its options may format lines differently): use the logger.
 *
 * A line given as bytes is built as bytes, in one reused buffer, when its text is ASCII: no
 * string is made of it, and the tap hands the bytes on. The line's start (level, time, bindings)
 * is rebuilt only when the millisecond or the level changes. Other text goes the way of a string,
 * decoded as before, so that JSON.stringify's output for it (lone surrogates, replacement
 * characters) stays exactly pino's.
 */
export function lineWriter(logger: Logger, bindings: Record<string, string>): LineWriter | undefined {
  const tap = TAPPED.get(logger);
  if (tap === undefined) return undefined;
  // The child's bindings as pino serialized them: ,"pid":..,"hostname":..,"name":..,<bindings>.
  const chindings = (logger.child(bindings) as unknown as Record<symbol, unknown>)[pino.symbols.chindingsSym];
  if (typeof chindings !== 'string') return undefined;
  const text = (level: number, text: string): void => {
    if (level < logger.levelVal) return;
    tap.write(`{"level":${level},"time":${Date.now()}${chindings},"msg":${JSON.stringify(text)}}\n`);
  };
  const line = Buffer.allocUnsafe(LINE_BYTES);
  let startMs = -1;
  let startLevel = -1;
  let startLength = 0;
  const utf8 = (level: number, bytes: Uint8Array): void => {
    if (level < logger.levelVal) return;
    const now = Date.now();
    if (now !== startMs || level !== startLevel) {
      startLength = line.write(`{"level":${level},"time":${now}${chindings},"msg":"`);
      startMs = now;
      startLevel = level;
    }
    // Room for the worst case: every byte escaped to six, and the closing "}\n (a start past half
    // the buffer, from bindings of kilobytes, may have been cut short: it too goes as text).
    if (startLength * 2 > LINE_BYTES || startLength + bytes.length * 6 + 3 > LINE_BYTES) return text(level, TEXT.decode(bytes));
    let at = startLength;
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i]!;
      if (byte >= 0x80) return text(level, TEXT.decode(bytes));
      if (byte >= 0x20 && byte !== 0x22 && byte !== 0x5c) {
        line[at++] = byte;
        continue;
      }
      line[at++] = 0x5c;
      const letter = SHORT_ESCAPE[byte]!;
      if (letter !== 0) {
        line[at++] = letter;
        continue;
      }
      line[at++] = 0x75; // u00XX
      line[at++] = 0x30;
      line[at++] = 0x30;
      line[at++] = HEX.charCodeAt(byte >> 4);
      line[at++] = HEX.charCodeAt(byte & 15);
    }
    line[at++] = 0x22;
    line[at++] = 0x7d;
    line[at++] = 0x0a;
    tap.writeUtf8(level, line.subarray(0, at));
  };
  return { text, utf8 };
}
