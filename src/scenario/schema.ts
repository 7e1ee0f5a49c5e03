import type { ConfigSchema } from '../gears/manifest.js';
import { GEAR_MANIFESTS } from '../gears/registry.js';
import { LANES_SCHEMA, WIRE_DELIVERY_SCHEMA } from './lanes.js';

function toJsonSchema(schema: ConfigSchema): Record<string, unknown> {
  switch (schema.type) {
    case 'any':
      return { description: schema.description };
    case 'array':
      return {
        type: 'array',
        description: schema.description,
        items: toJsonSchema(schema.items),
        ...(schema.minItems !== undefined ? { minItems: schema.minItems } : {}),
      };
    case 'object':
      return {
        type: 'object',
        description: schema.description,
        properties: Object.fromEntries(Object.entries(schema.properties).map(([k, v]) => [k, toJsonSchema(v)])),
        ...(schema.required ? { required: schema.required } : {}),
        ...(schema.oneRequired ? { anyOf: schema.oneRequired.map((key) => ({ required: [key] })) } : {}),
        additionalProperties: schema.additionalProperties === undefined ? false : toJsonSchema(schema.additionalProperties),
      };
    default: {
      const { type, ...rest } = schema;
      return { type, ...rest };
    }
  }
}

const NAME = { type: 'string', pattern: '^[a-z0-9_-]+$' };
const END = { type: 'string', pattern: '^([a-z0-9_-]+\\.)?[a-z0-9_-]+\\.[a-z0-9_-]+$', description: 'gear.port or rack.gear.port' };

/** The JSON Schema (2020-12) of scenario files, from the gear manifests: editors check scenarios with it. */
export function scenarioJsonSchema(): Record<string, unknown> {
  const wire = {
    type: 'object',
    required: ['from', 'to'],
    additionalProperties: false,
    properties: {
      from: END,
      to: END,
      lane: { enum: ['hot', 'guaranteed'], default: 'hot' },
      ...(toJsonSchema(WIRE_DELIVERY_SCHEMA).properties as Record<string, unknown>),
    },
  };
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'fluxrig scenario',
    type: 'object',
    additionalProperties: false,
    required: ['meta', 'gears'],
    properties: {
      meta: { type: 'object', required: ['name'], properties: { name: NAME, version: { type: ['string', 'number'] } } },
      racks: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            name: NAME,
            group: NAME,
            match: { type: 'object', properties: { labels: { type: 'object', additionalProperties: { type: 'string' } } } },
            labels: { type: 'object', additionalProperties: { type: 'string' } },
            config: { type: 'object' },
          },
        },
      },
      gears: {
        type: 'array',
        items: {
          type: 'object',
          required: ['name', 'type'],
          properties: {
            name: NAME,
            type: { enum: Object.keys(GEAR_MANIFESTS) },
            deploy: NAME,
            labels: { type: 'object', additionalProperties: { type: 'string' } },
            config: { type: 'object' },
          },
          allOf: Object.values(GEAR_MANIFESTS).map((m) => ({
            if: { properties: { type: { const: m.type } } },
            // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then, not a thenable
            then: { properties: { config: toJsonSchema(m.config) } },
          })),
        },
      },
      lanes: toJsonSchema(LANES_SCHEMA),
      wires: { type: 'array', items: wire },
      pipes: { type: 'array', items: wire, description: 'older name for wires' },
    },
  };
}
