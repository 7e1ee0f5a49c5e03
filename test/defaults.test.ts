// Defaults are named once in code (src/rack/defaults.ts, src/fluxar/constants.ts, the gear
// manifests); the documents that quote them are held to them here.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_MAX_FRAME, DEFAULT_MAX_IN_FLIGHT, MAX_FRAME_CEILING, MIN_MAX_FRAME } from '../src/fluxar/constants.js';
import { GEAR_MANIFESTS } from '../src/gears/registry.js';
import { defaultRackConfig } from '../src/rack/config.js';
import { RACK_DEFAULTS } from '../src/rack/defaults.js';

const root = new URL('../../', import.meta.url).pathname;
const read = (file: string) => readFileSync(`${root}${file}`, 'utf8');

/** "4 MiB" -> 4194304, "10000" -> 10000, "none" -> undefined, anything else as written. */
function documented(text: string): unknown {
  if (text === 'none') return undefined;
  const mib = /^(\d+) MiB$/.exec(text);
  if (mib !== null) return Number(mib[1]) * 1024 * 1024;
  return /^\d+$/.test(text) ? Number(text) : text;
}

describe('defaults in one place', () => {
  it('docs/rack.md states the rack config defaults the code has', () => {
    const config = defaultRackConfig() as unknown as Record<string, Record<string, unknown>>;
    const rows = [...read('docs/rack.md').matchAll(/^\| (rack|nats|log|wasm)\.([a-z_]+) \| ([^|]+) \|/gm)];
    assert.ok(rows.length >= 10, 'the configuration table is there');
    for (const [, section, key, text] of rows) {
      const value = config[section!]![key!];
      if (key === 'workers') assert.equal(text!.trim(), 'cores');
      else if (Array.isArray(value)) assert.equal(text!.trim(), 'none', `${section}.${key}`);
      else assert.equal(documented(text!.trim()), value, `${section}.${key} is documented as ${text!.trim()}`);
    }
  });

  it('the rack config reads RACK_DEFAULTS', () => {
    const { rack, nats, log } = defaultRackConfig();
    assert.equal(rack.drain_timeout_ms, RACK_DEFAULTS.drain_timeout_ms);
    assert.equal(rack.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS);
    assert.equal(rack.ring_bytes, RACK_DEFAULTS.ring_bytes);
    assert.equal(nats.kv_bucket, RACK_DEFAULTS.kv_bucket);
    assert.equal(log.level, RACK_DEFAULTS.log_level);
  });

  it('fluxrig rack --help quotes the same defaults', () => {
    const help = execFileSync(process.execPath, [`${root}dist/src/cli/main.js`, 'rack', '--help'], { encoding: 'utf8' });
    assert.match(help, new RegExp(`default ${RACK_DEFAULTS.scenario}`));
    assert.match(help, new RegExp(`default ${RACK_DEFAULTS.log_level}`));
  });

  it('the fluxar gear manifest and the spec quote the protocol constants', () => {
    const props = GEAR_MANIFESTS.fluxar!.config.properties as Record<string, { default?: unknown; minimum?: number; maximum?: number }>;
    assert.equal(props.max_frame!.default, DEFAULT_MAX_FRAME);
    assert.equal(props.max_frame!.minimum, MIN_MAX_FRAME);
    assert.equal(props.max_frame!.maximum, MAX_FRAME_CEILING);
    assert.equal(props.max_in_flight!.default, DEFAULT_MAX_IN_FLIGHT);
    const spec = read('docs/fluxar-spec.md');
    assert.match(spec, new RegExp(`calls in flight per connection \\| ${DEFAULT_MAX_IN_FLIGHT} `));
    assert.match(spec, new RegExp(`least \\*\\*${MIN_MAX_FRAME}\\*\\*`));
  });
});
