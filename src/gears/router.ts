// The router gear: the first rule whose meta and data match picks the out port; `default` takes
// the rest.
import type { FluxMsg } from '../fluxmsg/fluxmsg.js';
import { configOf, type GearType } from './gear.js';
import type { GearManifest } from './manifest.js';

export const manifest: GearManifest = {
  type: 'router',
  summary: 'routes each message to the first named out port whose rule matches its meta or data',
  placement: 'worker',
  inputs: ['in'],
  outputs: ['default'],
  config: {
    type: 'object',
    description: 'router',
    properties: {
      routes: {
        type: 'array',
        description: 'rules, first match wins; messages matching none go to `default`',
        items: {
          type: 'object',
          description: 'a rule',
          properties: {
            port: { type: 'string', description: 'out port this rule sends to', pattern: '^[a-z0-9_-]+$' },
            meta: {
              type: 'object',
              description: 'meta keys and the text they must equal',
              properties: {},
              additionalProperties: { type: 'string', description: 'value' },
            },
            data: {
              type: 'object',
              description: 'data keys and the value they must equal (text, number or boolean)',
              properties: {},
              additionalProperties: { type: 'any', description: 'value' },
            },
          },
          required: ['port'],
        },
        minItems: 1,
      },
    },
    required: ['routes'],
  },
  notes: [
    'Its out ports are `default` plus every `port` named in routes.',
    "A rule matches when every data field it lists equals the message's (text, number or boolean, compared exactly) and every meta header it lists equals the message's (text). The first matching rule wins; a message matching none goes to `default`.",
    'Example: routes: [{ port: big, data: { tier: gold } }, { port: eu, meta: { region: eu } }]',
  ],
};

export interface RouterConfig {
  routes: Array<{ port: string; meta?: Record<string, string>; data?: Record<string, unknown> }>;
}

/** A router's out ports: `default` and every port its routes name. */
export function routerPorts(config: unknown): string[] {
  const routes = (config as { routes?: unknown } | null)?.routes;
  const named = Array.isArray(routes) ? routes.map((r: { port?: unknown }) => r?.port).filter((p): p is string => typeof p === 'string') : [];
  return [...new Set([...manifest.outputs, ...named])];
}

export const routerGear: GearType = {
  manifest,
  worker: (spec, _prepared, ctx) => {
    const rules = configOf<RouterConfig>(spec, manifest).routes.map((r) => ({
      port: r.port,
      meta: Object.entries(r.meta ?? {}),
      data: Object.entries(r.data ?? {}),
    }));
    const matches = (rule: (typeof rules)[number], msg: FluxMsg) =>
      rule.meta.every(([k, v]) => msg.meta[k] === v) && rule.data.every(([k, v]) => msg.data[k] === v);
    return {
      input: (_port, msg) => {
        const rule = rules.find((r) => matches(r, msg));
        ctx.emit(spec.name, rule?.port ?? 'default', msg);
      },
    };
  },
};
