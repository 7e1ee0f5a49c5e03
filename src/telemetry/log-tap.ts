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

export class LogTap implements DestinationStream {
  private local: number;
  private telemetry: number;
  /** Where lines at or above the telemetry level go; none until an uplink takes them. */
  sink: ((line: string) => void) | undefined;

  constructor(
    private readonly out: DestinationStream,
    localLevel: string,
    telemetryLevel = 'silent',
  ) {
    this.local = levelValue(localLevel);
    this.telemetry = levelValue(telemetryLevel);
  }

  write(line: string): void {
    const level = lineLevel(line);
    if (level >= this.local) this.out.write(line);
    if (level >= this.telemetry) this.sink?.(line);
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

/**
 * For a logger made by tappedLogger, a writer of lines of a child with `bindings` (a Wasm gear's
 * log lines, the one place a flood comes from) that builds the line pino would, byte for byte,
 * without pino's per-line work: a gear at 50,000 lines a second spent more in pino's call,
 * serializer checks and formatting than in anything else of its log. Undefined for any other
 * logger (its options may format lines differently): use the logger.
 */
export function lineWriter(logger: Logger, bindings: Record<string, string>): ((level: number, text: string) => void) | undefined {
  const tap = TAPPED.get(logger);
  if (tap === undefined) return undefined;
  // The child's bindings as pino serialized them: ,"pid":..,"hostname":..,"name":..,<bindings>.
  const chindings = (logger.child(bindings) as unknown as Record<symbol, unknown>)[pino.symbols.chindingsSym];
  if (typeof chindings !== 'string') return undefined;
  return (level, text) => {
    if (level < logger.levelVal) return;
    tap.write(`{"level":${level},"time":${Date.now()}${chindings},"msg":${JSON.stringify(text)}}\n`);
  };
}
