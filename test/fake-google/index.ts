/**
 * One fake of the Google Cloud APIs our gcp backend calls, for tests: HTTP on 127.0.0.1 that
 * answers only the requests the published APIs define (checked against the trimmed discovery
 * documents in test/fixtures/discovery/), with in-memory state enough for end-to-end flows.
 *
 * Several APIs share `v1/projects/...` paths, so each API has a root of its own, in two forms:
 * - its own port: `roots.aiplatform` = http://127.0.0.1:PORT_A/ (and dataflow, ...). env() gives
 *   these as CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>, because googleapis keeps only the origin of a
 *   service-level `rootUrl`: googleapis-common's createAPIRequest rebuilds every URL as
 *   `new URL(path, rootUrl)` with an absolute path (build/src/apirequest.js, "Rewrite url if
 *   rootUrl is globally set"), so a root like http://host/aiplatform/ loses its /aiplatform/.
 * - a path prefix on the one main server: `root` + `aiplatform/v1/projects/...` (and /dataflow/,
 *   /cloudresourcemanager/, /serviceusage/, /iam/, /logging/, /cloudbuild/, /artifactregistry/),
 *   for raw fetch, curl, and a per-call googleapis `rootUrl` option (which keeps the path).
 * All roots share one state. Cloud Storage is the FakeGcs server (its own port), reached through
 * STORAGE_EMULATOR_HOST or CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE as an apiEndpoint / rootUrl.
 *
 * A request that does not match the API (path, HTTP method, path/query parameters, body fields,
 * JSON types, enum values, fields documented "Required.", bearer token) gets Google's error shape
 * with a message naming what is wrong, and is recorded with `rejected` set; `rejected()` lists
 * them so a test can assert there were none.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { FakeGcs } from '../fake-gcs';
import type { FakeBucket, FakeGcsRequest } from '../fake-gcs';
import { aiplatformHandlers } from './aiplatform';
import { buildHandlers } from './build';
import { Core } from './core';
import type { Handler, Predictor } from './core';
import { dataflowHandlers } from './dataflow';
import { DiscoveryApi, SchemaViolation, loadDiscovery } from './discovery';
import { FAIL_KINDS, GoogleError, faultFor, invalidArgument, serviceDisabled, unauthenticated } from './errors';
import type { FailKind } from './errors';
import { platformHandlers } from './platform';
import { DEFAULT_SERVICES, newProject, newState } from './state';
import type { FakeState as CoreState, FakeProject } from './state';

export type { FailKind } from './errors';
export type { Predictor } from './core';
export type * from './state';

export interface FakeGoogleOptions {
  projectId?: string /* default 'imgclass-test' */;
  projectNumber?: string /* default '123456789012' */;
  token?: string /* default 'fake-token' */;
  buckets?: Array<{ name: string; location?: string }>;
  enabledServices?: string[] /* default: all the APIs served */;
}

export interface FakeRequest {
  api: string;
  methodId: string | null;
  httpMethod: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
  status: number;
  rejected?: string;
}

export interface FakeState extends CoreState {
  /** Cloud Storage buckets (objects and IAM policy), held by the FakeGcs part. */
  buckets: Map<string, FakeBucket>;
}

export interface FakeGoogle {
  /** The main server: http://127.0.0.1:PORT/, with each API under its name (root + 'aiplatform/v1/...'). */
  root: string;
  /** Each API's own server root (http://127.0.0.1:PORT_X/), by API name; env() hands out these. */
  roots: Record<string, string>;
  env(): Record<string, string>;
  requests: FakeRequest[];
  rejected(): FakeRequest[];
  failNext(match: { method: string }, kind: FailKind, times?: number): void;
  setPredictor(fn: Predictor): void;
  state: FakeState;
  gcs: FakeGcs;
  /** The default project (also state.projects.get(projectNumber)). */
  project: FakeProject;
  close(): Promise<void>;
}

interface ApiEntry {
  root: string;
  discovery: DiscoveryApi;
  service: string;
  handlers: Record<string, Handler>;
}

const APIS: Array<[root: string, discovery: string, handlers: Record<string, Handler>]> = [
  ['aiplatform', 'aiplatform-v1', aiplatformHandlers],
  ['dataflow', 'dataflow-v1b3', dataflowHandlers],
  ['cloudresourcemanager', 'cloudresourcemanager-v1', platformHandlers],
  ['serviceusage', 'serviceusage-v1', platformHandlers],
  ['iam', 'iam-v1', platformHandlers],
  ['logging', 'logging-v2', dataflowHandlers],
  ['cloudbuild', 'cloudbuild-v1', buildHandlers],
  ['artifactregistry', 'artifactregistry-v1', buildHandlers],
];

/** Headers that change what a Google API does (system parameters sent as headers, method override, uploads). */
const SIGNIFICANT_HEADER = /^(x-goog-|x-http-method-override$|x-upload-|x-server-timeout$)/;
/** The ones googleapis/gaxios send, whose meaning the fake honours or which change nothing here. */
const KNOWN_GOOG_HEADERS = new Set(['x-goog-api-client', 'x-goog-user-project', 'x-goog-request-params', 'x-goog-api-version']);

/**
 * proto3 JSON leaves out repeated fields that are empty (the APIs' lists say `{}`, not
 * `{"models": []}`), so the fake's answers do too.
 */
function omitEmptyRepeated(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(omitEmptyRepeated);
  if (!v || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (x === undefined || (Array.isArray(x) && x.length === 0)) continue;
    out[k] = omitEmptyRepeated(x);
  }
  return out;
}

class FakeGoogleServer implements FakeGoogle {
  root = '';
  readonly roots: Record<string, string> = {};
  readonly requests: FakeRequest[] = [];
  readonly state: FakeState;
  readonly gcs = new FakeGcs();
  readonly project: FakeProject;
  private readonly core: Core;
  private readonly apis = new Map<string, ApiEntry>();
  private readonly faults: { method: string; kind: FailKind; times: number }[] = [];
  private readonly server = http.createServer((req, res) => void this.handle(req, res));
  private readonly apiServers = new Map<string, http.Server>();
  private readonly token: string;

  constructor(o: FakeGoogleOptions) {
    this.token = o.token ?? 'fake-token';
    const base = newState();
    this.state = Object.assign(base, { buckets: this.gcs.buckets });
    this.project = newProject(o.projectId ?? 'imgclass-test', o.projectNumber ?? '123456789012', o.enabledServices ?? DEFAULT_SERVICES);
    this.state.projects.set(this.project.projectNumber, this.project);
    this.core = new Core(this.state, this.project);
    for (const [root, doc, handlers] of APIS) {
      const discovery = loadDiscovery(doc);
      for (const id of discovery.methods.keys()) {
        if (!handlers[id]) throw new Error(`fake-google: ${id} is in the fixture but has no handler`);
      }
      this.apis.set(root, { root, discovery, service: `${discovery.name}.googleapis.com`, handlers });
    }
    this.gcs.token = this.token;
    this.gcs.projectNumber = this.project.projectNumber;
    this.gcs.onRecord = (r) => this.recordGcs(r);
    for (const b of o.buckets ?? []) this.gcs.createBucket(b.name, b.location === undefined ? {} : { location: b.location });
  }

  async start(): Promise<void> {
    await this.gcs.start();
    const listen = async (server: http.Server): Promise<string> => {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    };
    this.root = await listen(this.server);
    for (const root of this.apis.keys()) {
      const server = http.createServer((req, res) => void this.handle(req, res, root));
      this.apiServers.set(root, server);
      this.roots[root] = await listen(server);
    }
  }

  env(): Record<string, string> {
    const env: Record<string, string> = {};
    for (const root of this.apis.keys()) env[`CLOUDSDK_API_ENDPOINT_OVERRIDES_${root.toUpperCase()}`] = this.roots[root] as string;
    env.CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE = `${this.gcs.endpoint}/`;
    env.STORAGE_EMULATOR_HOST = this.gcs.endpoint;
    env.GOOGLE_OAUTH_ACCESS_TOKEN = this.token;
    return env;
  }

  rejected(): FakeRequest[] {
    return this.requests.filter((r) => r.rejected !== undefined);
  }

  failNext(match: { method: string }, kind: FailKind, times = 1): void {
    if (!FAIL_KINDS.includes(kind)) throw new Error(`fake-google: unknown fault kind ${String(kind)}`);
    if (match.method.startsWith('storage.')) return this.gcs.failNext(match, kind, times);
    const known = [...this.apis.values()].some((a) => a.discovery.methods.has(match.method));
    if (!known) throw new Error(`fake-google: no method ${match.method} in the fixtures (use the discovery method id, e.g. aiplatform.projects.locations.endpoints.list)`);
    this.faults.push({ method: match.method, kind, times });
  }

  setPredictor(fn: Predictor): void {
    this.core.predictor = fn;
  }

  async close(): Promise<void> {
    for (const server of [this.server, ...this.apiServers.values()]) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await this.gcs.stop();
  }

  private recordGcs(r: FakeGcsRequest): void {
    const rec: FakeRequest = { api: 'storage', methodId: r.methodId, httpMethod: r.method, path: r.path, query: r.query, body: r.body, status: r.status };
    if (r.rejected !== undefined) rec.rejected = r.rejected;
    this.requests.push(rec);
  }

  /** `fixedApi`: the request came to that API's own port, so its path has no API prefix. */
  private async handle(req: http.IncomingMessage, res: http.ServerResponse, fixedApi?: string): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const rec: FakeRequest = {
      api: '',
      methodId: null,
      httpMethod: req.method ?? '',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      body: undefined,
      status: 0,
    };
    this.requests.push(rec);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    try {
      const result = await this.serve(req, url, raw, rec, fixedApi);
      if (result === RESET) {
        rec.status = -1;
        req.socket.destroy();
        return;
      }
      rec.status = 200;
      res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify(result));
    } catch (err) {
      const e = err instanceof GoogleError ? err : new GoogleError(500, 'INTERNAL', `fake-google: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, [], true);
      rec.status = e.code;
      if (e.rejected) rec.rejected = e.message;
      res.writeHead(e.code, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify(e.body()));
    }
  }

  private async serve(req: http.IncomingMessage, url: URL, raw: Buffer, rec: FakeRequest, fixedApi?: string): Promise<unknown> {
    const m = fixedApi ? [url.pathname, fixedApi, url.pathname.slice(1)] : /^\/([a-z]+)\/(.*)$/.exec(url.pathname);
    const api = m ? this.apis.get(m[1] as string) : undefined;
    if (!m || !api) {
      throw invalidArgument(`fake-google: no API at ${url.pathname}; roots are ${[...this.apis.keys()].map((k) => `/${k}/`).join(', ')}`);
    }
    rec.api = api.root;
    const rel = m[2] as string;
    for (const h of Object.keys(req.headers)) {
      if (SIGNIFICANT_HEADER.test(h) && !KNOWN_GOOG_HEADERS.has(h)) throw invalidArgument(`fake-google: header "${h}" changes what the API does and the fake does not implement it`, h);
    }
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      const e = unauthenticated();
      throw new GoogleError(e.code, e.status, e.message, e.details, true);
    }
    let matched;
    let query: Record<string, string | string[]>;
    let body: unknown;
    try {
      matched = api.discovery.match(req.method ?? '', rel);
      rec.methodId = matched.method.id;
      query = api.discovery.checkQuery(matched.method, url.searchParams);
      if (raw.length) {
        if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) {
          throw new SchemaViolation(`request body must be application/json, got "${req.headers['content-type'] ?? ''}"`);
        }
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch (err) {
          throw new SchemaViolation(`Invalid JSON payload received. ${(err as Error).message}`);
        }
        rec.body = body;
      }
      api.discovery.checkBody(matched.method, body);
    } catch (err) {
      if (err instanceof SchemaViolation) throw invalidArgument(err.message, err.field);
      throw err;
    }

    const project = this.projectOf(matched.pathParams, body);
    const fault = this.takeFault(matched.method.id);
    if (fault === 'RESET') return RESET;
    if (fault !== undefined) {
      throw faultFor(fault, {
        service: api.service,
        projectNumber: project?.projectNumber ?? this.project.projectNumber,
        methodId: matched.method.id,
        resource: Object.values(matched.pathParams)[0] ?? '',
      });
    }
    // A disabled service answers every call on its project with SERVICE_DISABLED (Service Usage
    // itself excepted: it is how one enables the others).
    if (project && api.root !== 'serviceusage' && !project.enabledServices.has(api.service)) {
      throw serviceDisabled(api.service, project.projectNumber);
    }

    const handler = api.handlers[matched.method.id] as Handler;
    const out = omitEmptyRepeated(JSON.parse(JSON.stringify((await handler({ core: this.core, api: api.discovery, methodId: matched.method.id, params: matched.pathParams, query, body })) ?? {})));
    // The fake checks its own answers against the response schema, so a test never trusts a
    // response shape the real API would not send.
    if (matched.method.response) {
      try {
        api.discovery.checkValue({ $ref: matched.method.response.$ref }, out, '', 'response');
      } catch (err) {
        if (err instanceof SchemaViolation) throw new GoogleError(500, 'INTERNAL', `fake-google bug: the answer to ${matched.method.id} does not fit ${matched.method.response.$ref}: ${err.message}`, [], true);
        throw err;
      }
    }
    return out;
  }

  /** The project a call is about: a `projects/X` in its path parameters, or a projectId one, or logging's resourceNames. */
  private projectOf(params: Record<string, string>, body: unknown): FakeProject | undefined {
    let ref: string | undefined;
    if (params.projectId) ref = params.projectId;
    for (const v of Object.values(params)) {
      const m = /^projects\/([^/]+)/.exec(v);
      if (m && !ref) ref = m[1];
    }
    const names = (body as { resourceNames?: unknown } | undefined)?.resourceNames;
    if (!ref && Array.isArray(names) && typeof names[0] === 'string') ref = /^projects\/([^/]+)/.exec(names[0])?.[1];
    if (!ref || ref === '-') return undefined;
    return this.core.project(ref);
  }

  private takeFault(methodId: string): FailKind | undefined {
    const i = this.faults.findIndex((f) => f.method === methodId);
    if (i < 0) return undefined;
    const f = this.faults[i] as (typeof this.faults)[0];
    if (--f.times <= 0) this.faults.splice(i, 1);
    return f.kind;
  }
}

const RESET = Symbol('reset');

export async function startFakeGoogle(o: FakeGoogleOptions = {}): Promise<FakeGoogle> {
  const fake = new FakeGoogleServer(o);
  await fake.start();
  return fake;
}
