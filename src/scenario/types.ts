import { FluxrigError } from '../errors.js';
import type { GearSpec } from '../gears/gear.js';
import type { LaneSettings, WireDelivery } from './lanes.js';

export type { GearSpec };

export interface WireEnd {
  /** Set for the rack.gear.port form. */
  rack: string | undefined;
  gear: string;
  port: string;
}

export type Lane = 'hot' | 'guaranteed';

export interface WireSpec {
  from: WireEnd;
  to: WireEnd;
  lane: Lane;
  /** The two ends are deployed on different racks. */
  crossRack: boolean;
  /** "file:line:column" of the wire, for messages at run time. */
  at: string;
  /** How a bus wire (guaranteed, or across racks) is consumed; defaults when absent. */
  delivery?: WireDelivery;
}

export interface RackSpec {
  name: string | undefined;
  group: string | undefined;
  matchLabels: Record<string, string>;
  labels: Record<string, string>;
  config: Record<string, unknown>;
}

export interface Scenario {
  file: string;
  meta: { name: string; version: string };
  racks: RackSpec[];
  gears: GearSpec[];
  wires: WireSpec[];
  /** The stream of the bus wires (the top-level `lanes`); defaults when absent. */
  lanes?: LaneSettings;
  /** What is allowed but probably not meant (shown by `fluxrig scenario validate`). */
  warnings: ScenarioIssue[];
}

export interface ScenarioIssue {
  file: string;
  line: number;
  column: number;
  message: string;
}

export function formatIssue(issue: ScenarioIssue): string {
  return `${issue.file}:${issue.line}:${issue.column}: ${issue.message}`;
}

/** A scenario that failed pre-flight validation; `issues` lists every problem found, in order. */
export class ScenarioError extends FluxrigError {
  readonly issues: ScenarioIssue[];
  constructor(issues: ScenarioIssue[]) {
    super(`invalid scenario (${issues.length} ${issues.length === 1 ? 'problem' : 'problems'}):\n${issues.map(formatIssue).join('\n')}`);
    this.issues = issues;
  }
}
