// A pushed scenario as the dashboard draws it: the racks it went to, the gears each runs, and
// the wires between them as concrete (rack, gear) pairs, each with its lane.
import { parseScenario } from '../scenario/parse.js';
import { gearsOnRack } from '../scenario/placement.js';
import type { WireEnd } from '../scenario/types.js';
import type { ScenarioGraph } from './api-shapes.js';
import type { ScenarioRecord } from './registry.js';

export function scenarioGraph(record: ScenarioRecord): ScenarioGraph {
  const scenario = parseScenario(record.yaml, `${record.name}.yaml`);
  const racks = Object.entries(record.targets).map(([rack, groups]) => ({
    rack,
    groups,
    gears: gearsOnRack(scenario, rack, groups).map((g) => ({ name: g.name, type: g.type })),
  }));
  /** The racks an end of a wire is on: the one it names (a rack or a group), else every rack running its gear. */
  const racksOf = (end: WireEnd) =>
    racks
      .filter((r) => r.gears.some((g) => g.name === end.gear))
      .filter((r) => end.rack === undefined || r.rack === end.rack || r.groups.includes(end.rack))
      .map((r) => r.rack);
  const wires: ScenarioGraph['wires'] = [];
  for (const w of scenario.wires) {
    const to = racksOf(w.to);
    for (const fromRack of racksOf(w.from)) {
      for (const toRack of to) {
        // A wire within a rack joins its gears there; only one across racks joins two racks.
        if ((fromRack === toRack) === w.crossRack) continue;
        wires.push({
          from: { rack: fromRack, gear: w.from.gear, port: w.from.port },
          to: { rack: toRack, gear: w.to.gear, port: w.to.port },
          lane: w.lane,
          cross_rack: w.crossRack,
        });
      }
    }
  }
  return { name: record.name, version: record.version, racks, wires };
}
