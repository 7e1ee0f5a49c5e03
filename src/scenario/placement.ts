import type { GearSpec, Scenario } from './types.js';

/**
 * The gears of `scenario` a rack runs: those deployed to it by name, to one of its groups, or to
 * every rack (no deploy); a scenario without racks runs all its gears on whichever rack loads it.
 */
export function gearsOnRack(scenario: Scenario, rack: string, groups: readonly string[]): GearSpec[] {
  const mine = new Set([rack, ...groups]);
  return scenario.gears.filter((g) => g.deploy === undefined || mine.has(g.deploy) || scenario.racks.length === 0);
}
