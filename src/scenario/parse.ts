import { readFile } from 'node:fs/promises';
import { LineCounter, type Node, parseDocument } from 'yaml';
import { GEAR_MANIFESTS, outputPorts } from '../gears/registry.js';
import { checkConfig } from './config-check.js';
import { LANES_SCHEMA, laneSettings, WIRE_DELIVERY_KEYS, WIRE_DELIVERY_SCHEMA, wireDelivery } from './lanes.js';
import { didYouMean } from './suggest.js';
import { type GearSpec, type Lane, type RackSpec, type Scenario, ScenarioError, type ScenarioIssue, type WireEnd, type WireSpec } from './types.js';

const NAME = /^[a-z0-9_-]+$/;
const TOP_LEVEL = ['meta', 'racks', 'gears', 'wires', 'pipes', 'lanes'];

type Path = Array<string | number>;

/**
 * Parses and validates a scenario (fluxrig's YAML). Every problem is reported at once, each with
 * file:line:column; a scenario with any problem throws ScenarioError.
 */
export function parseScenario(text: string, file: string): Scenario {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const issues: ScenarioIssue[] = [];
  const position = (offset: number) => lineCounter.linePos(offset);

  for (const err of doc.errors) {
    const { line, col } = position(err.pos[0]);
    issues.push({ file, line, column: col, message: `YAML: ${err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}` });
  }
  if (issues.length > 0) throw new ScenarioError(issues);

  /** The closest node that exists along `path`, for a position. */
  const nodeAt = (path: Path): Node | null => {
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n), true) as Node | undefined;
      if (node !== undefined && node !== null && (node as Node).range) return node as Node;
    }
    return null;
  };
  const where = (path: Path): string => {
    const node = nodeAt(path);
    const { line, col } = position(node?.range?.[0] ?? 0);
    return `${file}:${line}:${col}`;
  };
  const report = (path: Path, message: string) => {
    const node = nodeAt(path);
    const { line, col } = position(node?.range?.[0] ?? 0);
    issues.push({ file, line, column: col, message });
  };

  const root = doc.toJS({ maxAliasCount: 100 }) as unknown;
  if (root === null || typeof root !== 'object' || Array.isArray(root)) {
    report([], 'a scenario is a map with meta, gears and wires');
    throw new ScenarioError(issues);
  }
  const top = root as Record<string, unknown>;
  for (const key of Object.keys(top)) if (!TOP_LEVEL.includes(key)) report([key], `unknown top-level key ${key} (expected meta, racks, gears, wires, lanes)`);

  // meta
  const meta = (top.meta ?? {}) as Record<string, unknown>;
  if (top.meta === undefined) report([], 'meta is required: meta: {name, version}');
  else if (typeof top.meta !== 'object' || top.meta === null) report(['meta'], 'meta must be a map {name, version}');
  if (top.meta !== undefined && typeof meta.name !== 'string') report(['meta'], 'meta.name is required (text)');
  else if (typeof meta.name === 'string' && !NAME.test(meta.name)) report(['meta', 'name'], `meta.name ${JSON.stringify(meta.name)} must match [a-z0-9_-]+`);
  if (meta.version !== undefined && typeof meta.version !== 'string' && typeof meta.version !== 'number')
    report(['meta', 'version'], 'meta.version must be text');

  // lanes: the stream of the guaranteed wires
  if (top.lanes !== undefined) checkConfig(LANES_SCHEMA, top.lanes, [], (p, message) => report(['lanes', ...p], message), 'lanes');

  // racks
  const racks: RackSpec[] = [];
  const rackNames = new Set<string>();
  if (top.racks !== undefined && !Array.isArray(top.racks)) report(['racks'], 'racks must be a list');
  for (const [i, r] of (Array.isArray(top.racks) ? top.racks : []).entries()) {
    const rack = (r ?? {}) as Record<string, unknown>;
    const name = typeof rack.name === 'string' ? rack.name : undefined;
    const group = typeof rack.group === 'string' ? rack.group : undefined;
    if (name === undefined && group === undefined) report(['racks', i], 'a rack needs a name, or a group with match.labels');
    for (const n of [name, group]) {
      if (n === undefined) continue;
      if (!NAME.test(n)) report(['racks', i, name === n ? 'name' : 'group'], `rack name ${JSON.stringify(n)} must match [a-z0-9_-]+`);
      if (rackNames.has(n)) report(['racks', i], `rack ${n} is declared twice`);
      rackNames.add(n);
    }
    const match = (rack.match ?? {}) as Record<string, unknown>;
    racks.push({
      name,
      group,
      matchLabels: (match.labels ?? {}) as Record<string, string>,
      labels: (rack.labels ?? {}) as Record<string, string>,
      config: (rack.config ?? {}) as Record<string, unknown>,
    });
  }

  // gears
  const gears: GearSpec[] = [];
  const gearsByName = new Map<string, GearSpec>();
  if (!Array.isArray(top.gears)) report(top.gears === undefined ? [] : ['gears'], 'gears is required: a list of {name, type, config}');
  for (const [i, g] of (Array.isArray(top.gears) ? top.gears : []).entries()) {
    const gear = (g ?? {}) as Record<string, unknown>;
    const path: Path = ['gears', i];
    if (typeof gear.name !== 'string') {
      report(path, 'a gear needs a name');
      continue;
    }
    if (!NAME.test(gear.name)) report([...path, 'name'], `gear name ${JSON.stringify(gear.name)} must match [a-z0-9_-]+`);
    if (gearsByName.has(gear.name)) report([...path, 'name'], `gear ${gear.name} is declared twice (first at ${gearsByName.get(gear.name)!.at})`);
    const type = typeof gear.type === 'string' ? gear.type : '';
    const manifest = GEAR_MANIFESTS[type];
    if (manifest === undefined) {
      report(
        gear.type === undefined ? path : [...path, 'type'],
        gear.type === undefined
          ? `gear ${gear.name} needs a type`
          : `unknown gear type ${JSON.stringify(gear.type)}${typeof gear.type === 'string' ? didYouMean(gear.type, Object.keys(GEAR_MANIFESTS)) : ''} (known: ${Object.keys(GEAR_MANIFESTS).join(', ')})`,
      );
    }
    const config = gear.config === undefined ? {} : gear.config;
    if (manifest !== undefined) {
      checkConfig(manifest.config, config, [], (p, message) => report([...path, 'config', ...p], `gear ${gear.name} (${type}): ${message}`));
    }
    const deploy = typeof gear.deploy === 'string' ? gear.deploy : undefined;
    if (deploy !== undefined && racks.length > 0 && !rackNames.has(deploy))
      report([...path, 'deploy'], `gear ${gear.name} is deployed on ${deploy}, which is not a rack of this scenario`);
    const spec: GearSpec = {
      name: gear.name,
      type,
      deploy,
      config: (config ?? {}) as Record<string, unknown>,
      labels: (gear.labels ?? {}) as Record<string, string>,
      at: where(path),
    };
    gears.push(spec);
    gearsByName.set(gear.name, spec);
  }

  // wires (pipes is fluxrig's older name)
  const wiresKey = top.wires !== undefined ? 'wires' : 'pipes';
  const wireList = top.wires ?? top.pipes ?? [];
  const wires: WireSpec[] = [];
  if (!Array.isArray(wireList)) report([wiresKey], `${wiresKey} must be a list of {from, to}`);
  for (const [i, w] of (Array.isArray(wireList) ? wireList : []).entries()) {
    const wire = (w ?? {}) as Record<string, unknown>;
    const path: Path = [wiresKey, i];
    const ends: Array<WireEnd | undefined> = (['from', 'to'] as const).map((side) => {
      const text = wire[side];
      if (typeof text !== 'string') {
        report(path, `a wire needs ${side}: gear.port or rack.gear.port`);
        return undefined;
      }
      const parts = text.split('.');
      if ((parts.length !== 2 && parts.length !== 3) || parts.some((p) => !NAME.test(p))) {
        report([...path, side], `${side} ${JSON.stringify(text)} is not gear.port or rack.gear.port ([a-z0-9_-] names)`);
        return undefined;
      }
      const [rack, gearName, port] = parts.length === 3 ? parts : [undefined, ...parts];
      const end: WireEnd = { rack, gear: gearName!, port: port! };
      const gear = gearsByName.get(end.gear);
      if (gear === undefined) {
        report([...path, side], `unknown gear ${end.gear} in ${side} ${JSON.stringify(text)}${didYouMean(end.gear, gearsByName.keys())}`);
        return undefined;
      }
      if (rack !== undefined && racks.length > 0 && !rackNames.has(rack)) report([...path, side], `unknown rack ${rack} in ${side} ${JSON.stringify(text)}`);
      const manifest = GEAR_MANIFESTS[gear.type];
      if (manifest !== undefined) {
        const ports = side === 'from' ? outputPorts(gear.type, gear.config) : manifest.inputs;
        if (!ports.includes(end.port)) {
          report(
            [...path, side],
            `gear ${gear.name} (${gear.type}) has no ${side === 'from' ? 'output' : 'input'} port ${end.port}${didYouMean(end.port, ports)} (it has ${ports.length > 0 ? ports.join(', ') : 'none'})`,
          );
        }
      }
      return end;
    });
    const lane = wire.lane ?? 'hot';
    if (lane !== 'hot' && lane !== 'guaranteed') report([...path, 'lane'], `lane must be hot or guaranteed (got ${JSON.stringify(lane)})`);
    const deliveryGiven: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(wire)) {
      if (key === 'from' || key === 'to' || key === 'lane') continue;
      if (!WIRE_DELIVERY_KEYS.includes(key)) {
        report(
          [...path, key],
          `unknown key ${key} in a wire${didYouMean(key, ['from', 'to', 'lane', ...WIRE_DELIVERY_KEYS])} (expected from, to, lane, ${WIRE_DELIVERY_KEYS.join(', ')})`,
        );
        continue;
      }
      deliveryGiven[key] = value;
    }
    checkConfig(WIRE_DELIVERY_SCHEMA, deliveryGiven, [], (p, message) => report([...path, ...p], message), 'wire');
    const [from, to] = ends;
    if (from === undefined || to === undefined) continue;
    const fromRack = from.rack ?? gearsByName.get(from.gear)?.deploy;
    const toRack = to.rack ?? gearsByName.get(to.gear)?.deploy;
    const crossRack = fromRack !== undefined && toRack !== undefined && fromRack !== toRack;
    if (crossRack && lane === 'hot') {
      report(path, `hot lane across racks: ${from.gear} is on ${fromRack}, ${to.gear} on ${toRack}; a hot lane is in memory, use lane: guaranteed`);
    }
    const delivery = Object.keys(deliveryGiven).length > 0 ? deliveryGiven : undefined;
    if (delivery !== undefined && lane === 'hot' && !crossRack)
      report(
        [...path, Object.keys(delivery)[0]!],
        `${Object.keys(delivery).join(', ')} applies to guaranteed wires only; this wire is a hot lane (add lane: guaranteed)`,
      );
    wires.push({
      from,
      to,
      lane: lane as Lane,
      crossRack,
      at: where(path),
      ...(lane === 'guaranteed' || crossRack ? { delivery: wireDelivery(delivery) } : {}),
    });
  }

  if (issues.length > 0) throw new ScenarioError(issues);
  const warnings = unwiredErrorPorts(gears, wires).map((gear) => {
    const [line, column] = gear.at
      .slice(file.length + 1)
      .split(':')
      .map(Number) as [number, number];
    return {
      file,
      line,
      column,
      message: `warning: gear ${gear.name} is on a call path and its error port is wired to nothing: its rejects are answered directly (403), out of the chain's sight`,
    };
  });
  const lanes = wires.some((w) => w.delivery !== undefined) ? laneSettings(top.lanes as Record<string, unknown> | undefined) : undefined;
  return { file, meta: { name: String(meta.name), version: String(meta.version ?? '0') }, racks, gears, wires, warnings, ...(lanes ? { lanes } : {}) };
}

export async function loadScenario(file: string): Promise<Scenario> {
  return parseScenario(await readFile(file, 'utf8'), file);
}

/** Gears with an `error` port that a fluxar gear's calls reach, whose `error` is wired to nothing. */
function unwiredErrorPorts(gears: GearSpec[], wires: WireSpec[]): GearSpec[] {
  const next = new Map<string, string[]>();
  for (const w of wires) next.set(w.from.gear, [...(next.get(w.from.gear) ?? []), w.to.gear]);
  const reached = new Set<string>();
  const queue = gears.filter((g) => g.type === 'fluxar').flatMap((g) => next.get(g.name) ?? []);
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (reached.has(name)) continue;
    reached.add(name);
    queue.push(...(next.get(name) ?? []));
  }
  const wiredErrors = new Set(wires.filter((w) => w.from.port === 'error').map((w) => w.from.gear));
  return gears.filter((g) => reached.has(g.name) && outputPorts(g.type, g.config).includes('error') && !wiredErrors.has(g.name));
}
