/**
 * Parameter values → TypeScript source, the way papermill's translators turn them into Python:
 * each parameter becomes one `let NAME = VALUE;` line that tslab can run in a cell of its own.
 */
import { UserError } from '../errors';

/** What can be passed as a parameter: JSON values, plus the non-finite numbers `-p x inf` yields. */
export type ParameterValue = string | number | boolean | null | ParameterValue[] | { [key: string]: ParameterValue };
export type Parameters = Record<string, ParameterValue>;

// Words that cannot name a `let` binding in a module (tslab compiles cells as modules, so strict mode).
const RESERVED = new Set(
  (
    'break case catch class const continue debugger default delete do else enum export extends false finally for ' +
    'function if import in instanceof new null return super switch this throw true try typeof var void while with ' +
    'yield let static implements interface package private protected public await arguments eval undefined NaN Infinity'
  ).split(' '),
);

export function isValidIdentifier(name: string): boolean {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) && !RESERVED.has(name);
}

/** A TypeScript expression for `value`. `where` names the value in error messages. */
export function translateValue(value: unknown, where = 'parameter'): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      // A JSON string is a valid TS string literal, escapes and all (U+2028/9 are legal since ES2019).
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (Number.isNaN(value)) return 'NaN';
      if (value === Infinity) return 'Infinity';
      if (value === -Infinity) return '-Infinity';
      if (Object.is(value, -0)) return '-0';
      return String(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v, i) => translateValue(v, `${where}[${i}]`)).join(', ')}]`;
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new UserError(`${where}: only strings, numbers, booleans, null, lists and plain objects can be parameters`);
      }
      const entries = Object.entries(value as Record<string, unknown>).map(
        ([k, v]) => `${JSON.stringify(k)}: ${translateValue(v, `${where}.${k}`)}`,
      );
      return entries.length === 0 ? '{}' : `{ ${entries.join(', ')} }`;
    }
    default:
      throw new UserError(`${where}: a ${typeof value} cannot be a notebook parameter`);
  }
}

/**
 * One declaration per parameter. `let` (not `const`) so a later re-run, or the notebook itself, may
 * reassign it; tslab lets a later cell redeclare a name, so this also shadows a `const` in the
 * parameters cell. `types` gives the annotation the parameters cell used, if any, so a value of the
 * wrong type fails in the injected cell instead of somewhere later.
 */
export function translateParameters(params: Parameters, types: Record<string, string | undefined> = {}): string[] {
  return Object.entries(params).map(([name, value]) => {
    if (!isValidIdentifier(name)) {
      throw new UserError(`parameter name "${name}" is not a TypeScript identifier (letters, digits, _ and $, not starting with a digit, not a keyword)`);
    }
    const type = types[name];
    return `let ${name}${type ? `: ${type}` : ''} = ${translateValue(value, `parameter ${name}`)};`;
  });
}
