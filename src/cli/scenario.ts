import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ModuleStore } from '../gears/wasm/store.js';
import { loadRackConfig } from '../rack/config.js';
import { preflight } from '../rack/preflight.js';
import { GEAR_MANIFESTS } from '../gears/registry.js';
import { loadScenario } from '../scenario/parse.js';
import { scenarioJsonSchema } from '../scenario/schema.js';
import { runScenarioMixer, SCENARIO_MIXER_USAGE } from './mixer.js';
import { readKeyFile } from './rack.js';
import { formatIssue, type Scenario, ScenarioError } from '../scenario/types.js';

export async function runScenario(argv: string[]): Promise<number> {
  const [command, file] = argv;
  if (command === 'validate' && file !== undefined) return validate(file, argv.slice(2));
  if (command === 'push' || command === 'status' || command === 'diff') return runScenarioMixer(command, argv.slice(1));
  if (command === 'schema') {
    const text = `${JSON.stringify(scenarioJsonSchema(), null, 2)}\n`;
    if (file === undefined) process.stdout.write(text);
    else writeFileSync(file, text);
    return 0;
  }
  console.error(
    `usage: fluxrig scenario validate FILE [--config RACK.yaml] [--module-store DIR] [--trusted-key FILE ...]\n       fluxrig scenario schema [OUT]\n${SCENARIO_MIXER_USAGE}`,
  );
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

/**
 * Checks a scenario the way a rack would before starting it: the document (every problem at
 * file:line:column), then each gear's preparation (modules found, parsed, signed, within their
 * grants and memory limit; secrets readable; endpoints valid) with the rack config's module
 * store, trusted keys and cluster keys.
 */
async function validate(file: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string' }, 'module-store': { type: 'string' }, 'trusted-key': { type: 'string', multiple: true } },
  });
  let scenario: Scenario;
  try {
    scenario = await loadScenario(file);
  } catch (err) {
    if (err instanceof ScenarioError) {
      for (const issue of err.issues) console.error(formatIssue(issue));
      console.error(`${err.issues.length} ${err.issues.length === 1 ? 'problem' : 'problems'}`);
      return 1;
    }
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      console.error(`${file}: no such file`);
      return 1;
    }
    throw err;
  }
  const config = loadRackConfig({
    file: values.config,
    env: process.env,
    flags: { 'wasm.module_store': values['module-store'], 'wasm.trusted_keys': values['trusted-key'] },
  });
  const { problems } = await preflight(scenario, scenario.gears, {
    // As the rack would run it: guaranteed wires need its NATS.
    onBus: config.nats.url !== undefined,
    env: process.env,
    moduleStore: config.wasm.module_store === undefined ? undefined : new ModuleStore(config.wasm.module_store),
    // The keys the rack would check with, read as the rack reads them.
    trustedKeys: config.wasm.trusted_keys.map((f) => readKeyFile(f, 'wasm.trusted_keys')),
    clusterKeys: config.wasm.cluster_keys.map((f) => readKeyFile(f, 'wasm.cluster_keys')),
    ringBytes: config.rack.ring_bytes,
  });
  for (const w of scenario.warnings) console.log(formatIssue(w));
  if (problems.length > 0) {
    for (const p of problems) console.error(`${p.at}: ${p.message}`);
    console.error(`${problems.length} ${problems.length === 1 ? 'problem' : 'problems'}: a rack would refuse to start`);
    return 1;
  }
  console.log(`${file}: valid (${scenario.gears.length} gears, ${scenario.wires.length} wires)`);
  return 0;
}
