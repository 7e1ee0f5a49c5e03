import { writeFileSync } from 'node:fs';
import { GEAR_MANIFESTS } from '../gears/registry.js';
import { loadScenario } from '../scenario/parse.js';
import { scenarioJsonSchema } from '../scenario/schema.js';
import { ScenarioError } from '../scenario/types.js';

export async function runScenario(argv: string[]): Promise<number> {
  const [command, file] = argv;
  if (command === 'validate' && file !== undefined) {
    try {
      const scenario = await loadScenario(file);
      console.log(`${file}: valid (${scenario.gears.length} gears, ${scenario.wires.length} wires)`);
      for (const w of scenario.wires.filter((x) => x.lane === 'guaranteed' || x.crossRack)) {
        console.log(`${w.at}: note: ${w.from.gear}.${w.from.port} -> ${w.to.gear}.${w.to.port} needs the snake bus (not available in this rack yet)`);
      }
      return 0;
    } catch (err) {
      if (err instanceof ScenarioError) {
        for (const issue of err.issues) console.error(`${issue.file}:${issue.line}:${issue.column}: ${issue.message}`);
        console.error(`${err.issues.length} ${err.issues.length === 1 ? 'problem' : 'problems'}`);
        return 1;
      }
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        console.error(`${file}: no such file`);
        return 1;
      }
      throw err;
    }
  }
  if (command === 'schema') {
    const text = `${JSON.stringify(scenarioJsonSchema(), null, 2)}\n`;
    if (file === undefined) process.stdout.write(text);
    else writeFileSync(file, text);
    return 0;
  }
  console.error('usage: fluxrig scenario validate FILE | fluxrig scenario schema [OUT]');
  return 2;
}

export function runGears(argv: string[]): number {
  const [command, type] = argv;
  if (command === 'list' || command === undefined) {
    const width = Math.max(...Object.keys(GEAR_MANIFESTS).map((t) => t.length));
    for (const m of Object.values(GEAR_MANIFESTS)) console.log(`${m.type.padEnd(width)}  ${m.placement.padEnd(6)}  ${m.summary}`);
    return 0;
  }
  if (command === 'doc' && type !== undefined) {
    const m = GEAR_MANIFESTS[type];
    if (m === undefined) {
      console.error(`unknown gear type ${type} (known: ${Object.keys(GEAR_MANIFESTS).join(', ')})`);
      return 1;
    }
    console.log(`${m.type}: ${m.summary}\n`);
    console.log(`runs on: ${m.placement === 'main' ? 'the main thread (it does I/O)' : 'every worker'}`);
    console.log(`input ports: ${m.inputs.join(', ') || 'none'}`);
    console.log(`output ports: ${m.outputs.join(', ') || 'none'}\n`);
    console.log('config:');
    for (const [key, s] of Object.entries(m.config.properties)) {
      const required = m.config.required?.includes(key) ? ' (required)' : '';
      const def = 'default' in s && s.default !== undefined ? ` [default ${JSON.stringify(s.default)}]` : '';
      console.log(`  ${key}: ${s.type}${required}${def}  ${s.description}`);
    }
    for (const note of m.notes) console.log(`\n${note}`);
    return 0;
  }
  console.error('usage: fluxrig gears list | fluxrig gears doc TYPE');
  return 2;
}
