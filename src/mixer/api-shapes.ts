// The shapes the Mixer's API answers with that the dashboard reads too: plain types with no
// imports, so the page (dashboard/) shares them without pulling in any of the Mixer's code.

export interface RackSample {
  /** The end of the interval (the rack's clock, ms). */
  time: number;
  /** Calls the rack's fluxar gears answered, per second. */
  calls_per_s: number;
  /** Messages through all its gears, per second. */
  messages_per_s: number;
  /** Gear errors in the interval. */
  errors: number;
  /** p99 of the calls answered in the interval, from the latency buckets (ms); null without calls. */
  p99_ms: number | null;
}

/** A log line or an event of a rack, as the Mixer keeps it. */
export interface LogRecord {
  /** Increasing within this Mixer: where a follower is. */
  id: number;
  rack: string;
  kind: 'log' | 'event';
  time: number;
  level: string;
  msg: string;
  /** The other fields (a log line's) or the detail (an event's), as JSON text. */
  fields: string;
}

export interface GraphEnd {
  rack: string;
  gear: string;
  port: string;
}

export interface ScenarioGraph {
  name: string;
  version: number;
  racks: Array<{ rack: string; groups: string[]; gears: Array<{ name: string; type: string }> }>;
  wires: Array<{ from: GraphEnd; to: GraphEnd; lane: 'hot' | 'guaranteed'; cross_rack: boolean }>;
}
