// What a rack's fluxar gear serves, read from its scenario: the targets its router rules name,
// where each goes, and the topics wired into it. This is the gear's fluxar.describe answer
// (docs/fluxar-spec.md section 17). Wasm gears declare no schemas, so the entries carry names
// and descriptions (from the gear manifests), not input and output schemas.
import type { DescribeDocument, DescribedTarget, DescribedTopic } from '../fluxar/describe.js';
import { DESCRIBE_VERSION } from '../fluxar/describe.js';
import type { GearSpec } from '../gears/gear.js';
import { GEAR_MANIFESTS } from '../gears/registry.js';
import type { WireSpec } from '../scenario/types.js';

/** The name that stands for every target the scenario does not name (spec section 17). */
export const ANY_TARGET = '*';

interface Rule {
  port: string;
  meta?: Record<string, string>;
}

/** A gear as "name (type: what its manifest says it does)". */
function label(gears: ReadonlyMap<string, GearSpec>, name: string): string {
  const spec = gears.get(name);
  const summary = spec === undefined ? undefined : GEAR_MANIFESTS[spec.type]?.summary;
  return summary === undefined ? name : `${name} (${spec!.type}: ${summary})`;
}

/** The gears reached from gear.port. */
function destinations(wires: readonly WireSpec[], gears: ReadonlyMap<string, GearSpec>, gear: string, port: string): string[] {
  return wires.filter((w) => w.from.gear === gear && w.from.port === port).map((w) => label(gears, w.to.gear));
}

/** The describe document of fluxar gear `fluxar` in a scenario of `gears` and `wires`. */
export function scenarioTargets(gears: readonly GearSpec[], wires: readonly WireSpec[], fluxar: string): DescribeDocument {
  const byName = new Map(gears.map((g) => [g.name, g]));
  const methods = new Map<string, Set<string>>();
  const streams = new Map<string, Set<string>>();
  const add = (into: Map<string, Set<string>>, name: string, to: string[]) => {
    const set = into.get(name) ?? new Set<string>();
    for (const d of to) set.add(d);
    into.set(name, set);
  };
  for (const wire of wires.filter((w) => w.from.gear === fluxar && w.from.port === 'out')) {
    const next = byName.get(wire.to.gear);
    if (next?.type !== 'router') {
      // Any target reaches this gear.
      const to = [label(byName, wire.to.gear)];
      add(methods, ANY_TARGET, to);
      add(streams, ANY_TARGET, to);
      continue;
    }
    const routes = ((next.config as { routes?: Rule[] }).routes ?? []) as Rule[];
    for (const rule of routes) {
      const to = destinations(wires, byName, next.name, rule.port).map((d) => `${d} by ${next.name}`);
      if (to.length === 0) continue;
      const target = rule.meta?.['fluxar.target'];
      const kind = rule.meta?.['fluxar.type'];
      // A rule on data (or other meta) takes some calls of every target: the rest stays open.
      const name = target ?? ANY_TARGET;
      if (kind !== 'stream') add(methods, name, to);
      if (kind === 'stream' || (target === undefined && kind === undefined)) add(streams, name, to);
    }
    const fallback = destinations(wires, byName, next.name, 'default').map((d) => `${d} by ${next.name}`);
    if (fallback.length > 0) {
      add(methods, ANY_TARGET, fallback);
      add(streams, ANY_TARGET, fallback);
    }
  }
  const listed = (map: Map<string, Set<string>>): DescribedTarget[] =>
    [...map]
      .sort(([a], [b]) => (a === ANY_TARGET ? 1 : b === ANY_TARGET ? -1 : a < b ? -1 : a > b ? 1 : 0))
      .map(([name, to]) => ({ name, description: `${name === ANY_TARGET ? 'every other target' : name}: to ${[...to].join(', ')}` }));
  const topics: DescribedTopic[] = [];
  for (const wire of wires.filter((w) => w.to.gear === fluxar && w.to.port === 'in')) {
    const from = byName.get(wire.from.gear);
    const topic = (from?.config as { meta?: Record<string, unknown> } | undefined)?.meta?.['fluxar.topic'];
    if (typeof topic === 'string' && !topics.some((t) => t.pattern === topic)) {
      topics.push({ pattern: topic, description: `published by ${from!.name} (${from!.type})` });
    }
  }
  return { version: DESCRIBE_VERSION, methods: listed(methods), streams: listed(streams), topics };
}
