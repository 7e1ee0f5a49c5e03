import type { ConfigSchema } from '../gears/manifest.js';
import { didYouMean } from './suggest.js';

/** Checks a value against a manifest schema; calls `report(path, message)` for each problem. */
export function checkConfig(
  schema: ConfigSchema,
  value: unknown,
  path: Array<string | number>,
  report: (path: Array<string | number>, message: string) => void,
  root = 'config',
): void {
  const where = path.length === 0 ? root : `${root}.${path.join('.')}`;
  switch (schema.type) {
    case 'any':
      return;
    case 'string':
      if (typeof value !== 'string') return report(path, `${where} must be text`);
      if (schema.enum && !schema.enum.includes(value)) return report(path, `${where} must be one of ${schema.enum.join(', ')} (got ${JSON.stringify(value)})`);
      if (schema.pattern && !new RegExp(schema.pattern).test(value)) return report(path, `${where} ${JSON.stringify(value)} does not match ${schema.pattern}`);
      return;
    case 'integer':
    case 'number':
      if (typeof value !== 'number' || (schema.type === 'integer' && !Number.isInteger(value)))
        return report(path, `${where} must be ${schema.type === 'integer' ? 'an integer' : 'a number'}`);
      if (schema.minimum !== undefined && value < schema.minimum) return report(path, `${where} must be at least ${schema.minimum} (got ${value})`);
      if (schema.maximum !== undefined && value > schema.maximum) return report(path, `${where} must be at most ${schema.maximum} (got ${value})`);
      return;
    case 'boolean':
      if (typeof value !== 'boolean') report(path, `${where} must be true or false`);
      return;
    case 'array':
      if (!Array.isArray(value)) return report(path, `${where} must be a list`);
      if (schema.minItems !== undefined && value.length < schema.minItems)
        return report(path, `${where} needs at least ${schema.minItems} item${schema.minItems === 1 ? '' : 's'}`);
      for (const [i, item] of value.entries()) checkConfig(schema.items, item, [...path, i], report, root);
      return;
    case 'object': {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) return report(path, `${where} must be a map`);
      const map = value as Record<string, unknown>;
      for (const key of schema.required ?? []) if (!(key in map)) report(path, `${where} needs ${key}`);
      const alternatives = schema.oneRequired ?? [];
      if (alternatives.length > 0 && !alternatives.some((key) => key in map))
        report(path, `${where} needs ${alternatives.join(' (or ')}${')'.repeat(alternatives.length - 1)}`);
      for (const [key, v] of Object.entries(map)) {
        const property = schema.properties[key] ?? schema.additionalProperties;
        if (property === undefined)
          report(
            [...path, key],
            `unknown key ${key} in ${where}${didYouMean(key, Object.keys(schema.properties))} (expected ${Object.keys(schema.properties).join(', ')})`,
          );
        else checkConfig(property, v, [...path, key], report, root);
      }
      return;
    }
  }
}
