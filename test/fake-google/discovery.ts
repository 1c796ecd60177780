/**
 * The published shape of the Google APIs the fake answers, read from the trimmed discovery
 * documents in test/fixtures/discovery/ (each names its source), and the checks of a request
 * against it: route (path template + HTTP method), path and query parameters, JSON body.
 *
 * Discovery semantics used (https://developers.google.com/discovery/v1/reference/apis):
 * - `flatPath` (or `path` where there is none) is the URL template under the service root; a
 *   `{x}` segment is one path segment, `{+x}` (reserved expansion) may hold slashes.
 * - parameters with `location: "query"`, plus the API-wide `parameters` (alt, fields, ...), are
 *   the only query parameters; `repeated` ones may appear more than once.
 * - `request.$ref` is the body schema; `type`/`format`/`enum`/`items`/`additionalProperties`/
 *   `properties` describe JSON values as proto3 JSON mapping encodes them (int64 as string or
 *   number, google-duration as "1.5s", ...). A property whose description starts with
 *   "Required." must be set.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface DiscoverySchema {
  id?: string;
  type?: string;
  format?: string;
  $ref?: string;
  enum?: string[];
  items?: DiscoverySchema;
  properties?: Record<string, DiscoverySchema>;
  additionalProperties?: DiscoverySchema;
  description?: string;
  readOnly?: boolean;
  pattern?: string;
  repeated?: boolean;
  required?: boolean;
  location?: string;
  _cut?: string;
}

export interface DiscoveryMethod {
  id: string;
  path: string;
  flatPath?: string;
  httpMethod: string;
  parameters?: Record<string, DiscoverySchema>;
  parameterOrder?: string[];
  request?: { $ref: string };
  response?: { $ref: string };
  supportsMediaUpload?: boolean;
  supportsMediaDownload?: boolean;
  mediaUpload?: { protocols?: Record<string, { path: string; multipart?: boolean }> };
}

interface DiscoveryResource {
  methods?: Record<string, DiscoveryMethod>;
  resources?: Record<string, DiscoveryResource>;
}

export interface DiscoveryDoc {
  _source: Record<string, string>;
  name: string;
  version: string;
  revision: string;
  servicePath: string;
  parameters: Record<string, DiscoverySchema>;
  resources: Record<string, DiscoveryResource>;
  schemas: Record<string, DiscoverySchema>;
}

/** A problem with a request, phrased like Google's own messages where one is known. */
export class SchemaViolation extends Error {
  constructor(
    message: string,
    /** The field (or parameter) at fault, for a BadRequest.fieldViolations entry. */
    readonly field?: string,
  ) {
    super(message);
  }
}

interface Route {
  method: DiscoveryMethod;
  /** Matches the request path relative to the service root (no leading slash). */
  flat: RegExp;
  /** Captures the path parameters, in `pathParams` order, from the same path. */
  template: RegExp;
  /** Characters of the flat template outside `{...}`: the more, the more specific the route. */
  literal: number;
  pathParams: string[];
}

export interface MatchedMethod {
  method: DiscoveryMethod;
  pathParams: Record<string, string>;
}

const FIXTURES = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'discovery');

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** `{x}` is one path segment, `{+x}` one or more. */
function templateToRegex(template: string, names?: string[]): RegExp {
  let re = '';
  let last = 0;
  for (const m of template.matchAll(/\{(\+?)([^}]+)\}/g)) {
    re += escapeRe(template.slice(last, m.index));
    re += m[1] ? '(.+?)' : '([^/]+)';
    names?.push(m[2] as string);
    last = (m.index as number) + m[0].length;
  }
  re += escapeRe(template.slice(last));
  return new RegExp(`^${re}$`);
}

export class DiscoveryApi {
  readonly routes: Route[] = [];
  readonly methods = new Map<string, DiscoveryMethod>();

  constructor(readonly doc: DiscoveryDoc) {
    const walk = (res: Record<string, DiscoveryResource>): void => {
      for (const r of Object.values(res)) {
        for (const m of Object.values(r.methods ?? {})) {
          const pathParams: string[] = [];
          this.routes.push({
            method: m,
            flat: templateToRegex(doc.servicePath + (m.flatPath ?? m.path)),
            template: templateToRegex(doc.servicePath + m.path, pathParams),
            pathParams,
            literal: (doc.servicePath + (m.flatPath ?? m.path)).replace(/\{[^}]*\}/g, '').length,
          });
          this.methods.set(m.id, m);
        }
        walk(r.resources ?? {});
      }
    };
    walk(doc.resources);
  }

  get name(): string {
    return this.doc.name;
  }

  schema(name: string): DiscoverySchema {
    const s = this.doc.schemas[name];
    if (!s) throw new Error(`discovery ${this.doc.name}: no schema ${name}`);
    return s;
  }

  /**
   * The method a request addresses. `rel` is the path after the root URL, still percent-encoded
   * (e.g. `v1/projects/p/locations/l/models`, or `storage/v1/b/B` where servicePath is `storage/v1/`). Throws a SchemaViolation naming
   * what is wrong: no method at that path, or none with that HTTP method.
   */
  match(httpMethod: string, rel: string): MatchedMethod {
    const atPath = this.routes.filter((r) => r.flat.test(rel));
    if (!atPath.length) {
      throw new SchemaViolation(`${this.doc.name} ${this.doc.version} defines no method at path /${rel} (of the methods this fake answers)`);
    }
    // `endpoints/E:predict` also matches `endpoints/{id}` (a segment may hold ':', as image
    // digests do); the route with the custom verb is the one meant.
    const most = Math.max(...atPath.map((r) => r.literal));
    const candidates = atPath.filter((r) => r.literal === most);
    const route = candidates.find((r) => r.method.httpMethod === httpMethod);
    if (!route) {
      const allowed = candidates.map((r) => `${r.method.httpMethod} (${r.method.id})`).join(', ');
      throw new SchemaViolation(`${this.doc.name} ${this.doc.version}: HTTP method ${httpMethod} is not defined for /${rel}; defined: ${allowed}`);
    }
    const m = route.template.exec(rel) as RegExpExecArray;
    const pathParams: Record<string, string> = {};
    route.pathParams.forEach((name, i) => {
      let v: string;
      try {
        v = decodeURIComponent(m[i + 1] as string);
      } catch {
        throw new SchemaViolation(`path parameter "${name}" is not valid percent-encoding`, name);
      }
      const spec = route.method.parameters?.[name];
      if (spec?.pattern && !new RegExp(spec.pattern).test(v)) {
        throw new SchemaViolation(`path parameter "${name}" = "${v}" does not match ${spec.pattern}`, name);
      }
      pathParams[name] = v;
    });
    return { method: route.method, pathParams };
  }

  /**
   * Check the query string against the method's query parameters and the API-wide ones; returns
   * the values (arrays for repeated parameters).
   */
  checkQuery(method: DiscoveryMethod, search: URLSearchParams): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of search) {
      const spec = method.parameters?.[k]?.location === 'query' ? method.parameters[k] : this.doc.parameters[k];
      if (!spec) {
        throw new SchemaViolation(
          `Invalid JSON payload received. Unknown name "${k}": Cannot bind query parameter. Field '${k}' could not be found in request message.`,
          k,
        );
      }
      // alt=media is how a method with supportsMediaDownload serves content; the API-wide `alt` enum leaves it out.
      if (!(k === 'alt' && v === 'media' && method.supportsMediaDownload)) checkScalar(spec, v, `query parameter "${k}"`, true);
      if (k in out) {
        if (!spec.repeated) throw new SchemaViolation(`query parameter "${k}" given more than once; it is not repeated`, k);
        const prev = out[k] as string | string[];
        out[k] = Array.isArray(prev) ? [...prev, v] : [prev, v];
      } else {
        out[k] = spec.repeated ? [v] : v;
      }
    }
    for (const [k, spec] of Object.entries(method.parameters ?? {})) {
      if (spec.location === 'query' && spec.required && !(k in out)) {
        throw new SchemaViolation(`required query parameter "${k}" is missing`, k);
      }
    }
    return out;
  }

  /** Check a JSON request body against the method's request schema. */
  checkBody(method: DiscoveryMethod, body: unknown): void {
    if (!method.request) {
      if (body !== undefined) throw new SchemaViolation(`${method.id} takes no request body`);
      return;
    }
    if (body === undefined) throw new SchemaViolation(`${method.id} needs a JSON request body (${method.request.$ref})`);
    this.checkValue({ $ref: method.request.$ref }, body, '', 'request');
  }

  /**
   * Check a value against a schema. In `response` mode "Required." is not enforced (responses
   * leave out fields at their default), so the fake can check its own answers too.
   */
  checkValue(schema: DiscoverySchema, value: unknown, at: string, mode: 'request' | 'response'): void {
    if (value === null) return; // proto3 JSON: null is the field's default
    if (schema.$ref) {
      const s = this.schema(schema.$ref);
      return this.checkObject(s, value, at, mode);
    }
    switch (schema.type) {
      case 'any':
        return;
      case 'object':
        if (schema.properties) return this.checkObject(schema, value, at, mode);
        if (typeof value !== 'object' || Array.isArray(value)) throw wrongType(at, 'TYPE_MESSAGE', value);
        if (schema.additionalProperties) {
          for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
            this.checkValue(schema.additionalProperties, v, join(at, k), mode);
          }
        }
        return;
      case 'array':
        if (!Array.isArray(value)) throw wrongType(at, 'TYPE_ARRAY', value);
        value.forEach((v, i) => this.checkValue(schema.items ?? { type: 'any' }, v, `${at}[${i}]`, mode));
        return;
      default:
        checkScalar(schema, value, `'${at}'`, false);
    }
  }

  private checkObject(schema: DiscoverySchema, value: unknown, at: string, mode: 'request' | 'response'): void {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw wrongType(at, 'TYPE_MESSAGE', value);
    const props = schema.properties ?? {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const p = props[k];
      if (!p) {
        const where = at ? ` at '${at}'` : '';
        throw new SchemaViolation(`Invalid JSON payload received. Unknown name "${k}"${where}: Cannot find field.`, join(at, k));
      }
      this.checkValue(p, v, join(at, k), mode);
    }
    if (mode === 'request') {
      for (const [k, p] of Object.entries(props)) {
        const v = (value as Record<string, unknown>)[k];
        if (/^Required\./.test(p.description ?? '') && (v === undefined || v === null || v === '')) {
          throw new SchemaViolation(`Required field '${join(at, k)}' is not set (${schema.id ?? 'schema'}.${k}: "${p.description}").`, join(at, k));
        }
      }
    }
  }
}

function join(at: string, k: string): string {
  return at ? `${at}.${k}` : k;
}

function wrongType(at: string, type: string, value: unknown): SchemaViolation {
  return new SchemaViolation(`Invalid value at '${at}' (${type}), ${JSON.stringify(value)}`, at);
}

const INT = /^-?\d+$/;
const DURATION = /^-?\d+(\.\d{1,9})?s$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/**
 * A scalar as proto3 JSON (body) or as a query-string value (`fromQuery`: always a string, so
 * numbers and booleans are parsed from text).
 */
function checkScalar(schema: DiscoverySchema, value: unknown, what: string, fromQuery: boolean): void {
  const fail = (type: string): never => {
    throw new SchemaViolation(`Invalid value at ${what} (${type}), ${JSON.stringify(value)}`, what.replace(/^'|'$/g, ''));
  };
  switch (schema.type) {
    case 'string': {
      if (typeof value !== 'string') {
        // int64/uint64 travel as strings but proto3 JSON parsers take numbers too.
        if ((schema.format === 'int64' || schema.format === 'uint64') && typeof value === 'number' && Number.isInteger(value)) return;
        fail('TYPE_STRING');
      }
      const s = value as string;
      if (schema.enum && !schema.enum.includes(s)) {
        throw new SchemaViolation(`Invalid value at ${what} (TYPE_ENUM), "${s}"; allowed: ${schema.enum.join(', ')}`, what.replace(/^'|'$/g, ''));
      }
      if ((schema.format === 'int64' || schema.format === 'uint64') && !INT.test(s)) fail('TYPE_INT64');
      if (schema.format === 'google-duration' && !DURATION.test(s)) fail('google.protobuf.Duration');
      if (schema.format === 'google-datetime' && (!DATETIME.test(s) || Number.isNaN(Date.parse(s)))) fail('google.protobuf.Timestamp');
      if (schema.format === 'byte' && !BASE64.test(s)) fail('TYPE_BYTES');
      return;
    }
    case 'integer':
      // proto3 JSON takes an int32 as a number or as a decimal string.
      if (typeof value === 'number' ? !Number.isInteger(value) : typeof value !== 'string' || !INT.test(value)) fail('TYPE_INT32');
      return;
    case 'number':
      if (typeof value === 'number') return;
      if (typeof value === 'string' && /^(NaN|-?Infinity)$/.test(value)) return;
      if (typeof value === 'string' && value.trim() !== '' && !Number.isNaN(Number(value))) return;
      return fail('TYPE_DOUBLE');
    case 'boolean':
      if (typeof value === 'boolean') return;
      if (fromQuery && (value === 'true' || value === 'false')) return;
      return fail('TYPE_BOOL');
    default:
      throw new SchemaViolation(`fake-google: schema type ${schema.type ?? '(none)'} at ${what} is not understood`);
  }
}

const cache = new Map<string, DiscoveryApi>();

/** Load `test/fixtures/discovery/<name>.json`, e.g. `aiplatform-v1`. */
export function loadDiscovery(name: string): DiscoveryApi {
  let api = cache.get(name);
  if (!api) {
    const doc = JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8')) as DiscoveryDoc;
    api = new DiscoveryApi(doc);
    cache.set(name, api);
  }
  return api;
}
