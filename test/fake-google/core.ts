/**
 * What every API handler of the fake shares: the state, project lookup, resource names with the
 * project NUMBER (as Google returns them), numeric ids, long-running operations, list paging.
 */
import type { DiscoveryApi } from './discovery';
import { GoogleError, notFound, badValue } from './errors';
import type { FakeOperation, FakeProject, FakeState, Operation } from './state';

export type Predictor = (endpointName: string, instances: unknown[], parameters?: unknown) => unknown[] | Promise<unknown[]>;

export interface HandlerContext {
  core: Core;
  api: DiscoveryApi;
  methodId: string;
  /** Path parameters, percent-decoded. */
  params: Record<string, string>;
  query: Record<string, string | string[]>;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- checked against the discovery schema before a handler sees it
}

export type Handler = (c: HandlerContext) => unknown | Promise<unknown>;

export class Core {
  predictor?: Predictor;

  constructor(
    readonly state: FakeState,
    readonly defaultProject: FakeProject,
  ) {}

  /** The project a `projects/X` segment names, by id or number; 403 as Google answers for one the caller cannot see. */
  project(idOrNumber: string): FakeProject {
    if (idOrNumber === '-') return this.defaultProject;
    for (const p of this.state.projects.values()) {
      if (p.projectId === idOrNumber || p.projectNumber === idOrNumber) return p;
    }
    throw new GoogleError(403, 'PERMISSION_DENIED', `Permission denied on resource project ${idOrNumber}.`, [
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: 'CONSUMER_INVALID',
        domain: 'googleapis.com',
        metadata: { consumer: `projects/${idOrNumber}` },
      },
    ]);
  }

  /** `projects/ID_OR_NUMBER/rest` with the project number, the form Google puts in resource names. */
  canonical(name: string): string {
    const m = /^projects\/([^/]+)(\/.*)?$/.exec(name);
    if (!m) return name;
    return `projects/${this.project(m[1] as string).projectNumber}${m[2] ?? ''}`;
  }

  newId(): string {
    this.state.nextId += 1n;
    return String(this.state.nextId);
  }

  now(): string {
    return new Date().toISOString();
  }

  /** Register an operation and return it as first answered: `done: false`. */
  startOperation(name: string, metadata: Record<string, unknown>, finish: FakeOperation['finish']): Operation {
    const op: FakeOperation = { name, metadata, pollsLeft: this.state.operationPolls, finish };
    this.state.operations.set(name, op);
    return { name, metadata, done: false };
  }

  /** operations.get: `done: false` while polls are left, then the result (computed once). */
  pollOperation(name: string): Operation {
    const op = this.state.operations.get(name) ?? this.state.operations.get(this.canonicalOperation(name)) ?? this.findOperation(name);
    if (!op) throw notFound(`Operation "${name}" not found.`);
    if (op.pollsLeft > 0) {
      op.pollsLeft--;
      return { name: op.name, metadata: op.metadata, done: false };
    }
    op.result ??= op.finish();
    const out: Operation = { name: op.name, metadata: op.metadata, done: true };
    if (op.result.error) out.error = op.result.error;
    else out.response = op.result.response ?? { '@type': 'type.googleapis.com/google.protobuf.Empty' };
    return out;
  }

  /** An operation named with the project ID where it was registered with the number, or the other way round. */
  private findOperation(name: string): FakeOperation | undefined {
    if (!name.startsWith('projects/')) return undefined;
    const want = this.canonical(name);
    for (const op of this.state.operations.values()) if (op.name.startsWith('projects/') && this.canonical(op.name) === want) return op;
    return undefined;
  }

  private canonicalOperation(name: string): string {
    return name.startsWith('projects/') ? this.canonical(name) : name;
  }

  /** One page of `items` for pageSize/pageToken (the token is the offset, opaque to clients). */
  page<T>(items: T[], query: Record<string, string | string[]>, defaultSize = 100): { items: T[]; nextPageToken?: string } {
    const size = query.pageSize === undefined ? defaultSize : Number(query.pageSize);
    if (!(size > 0)) return this.page(items, { ...query, pageSize: String(defaultSize) }, defaultSize);
    let start = 0;
    if (query.pageToken !== undefined && query.pageToken !== '') {
      start = Number(Buffer.from(String(query.pageToken), 'base64url').toString('utf8'));
      if (!Number.isInteger(start) || start < 0) throw badValue(`Invalid page token "${String(query.pageToken)}".`);
    }
    const out: { items: T[]; nextPageToken?: string } = { items: items.slice(start, start + size) };
    if (start + size < items.length) out.nextPageToken = Buffer.from(String(start + size)).toString('base64url');
    return out;
  }
}

/**
 * The AIP-160 subset that Vertex AI documents for models.list / endpoints.list filters:
 * `display_name="X"` (or displayName), `labels.KEY="VALUE"`, `model=ID` / `endpoint=ID`, with = and
 * !=, joined by AND. Anything else is refused by name, so a test notices a filter the fake does not
 * evaluate instead of getting a silently wrong list.
 */
export function vertexFilter(filter: string | undefined, idField: 'model' | 'endpoint'): (r: { name?: string | null; displayName?: string | null; labels?: Record<string, string> | null }) => boolean {
  if (!filter || !filter.trim()) return () => true;
  const terms = filter.split(/\s+AND\s+/).map((t) => {
    const m = /^\s*([A-Za-z_]+(?:\.(?:"[^"]+"|[A-Za-z0-9_-]+))?)\s*(!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))\s*$/.exec(t);
    if (!m) throw new GoogleError(400, 'INVALID_ARGUMENT', `fake-google: filter term "${t}" is not one the fake evaluates (display_name, labels.KEY, ${idField}; = or !=)`, [], true);
    const field = m[1] as string;
    const want = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : (m[4] as string);
    const neg = m[2] === '!=';
    let get: (r: { name?: string | null; displayName?: string | null; labels?: Record<string, string> | null }) => string | undefined;
    if (field === 'display_name' || field === 'displayName') get = (r) => r.displayName ?? undefined;
    else if (field === idField) get = (r) => r.name?.split('/').pop();
    else if (field.startsWith('labels.')) {
      const key = field.slice('labels.'.length).replace(/^"|"$/g, '');
      get = (r) => r.labels?.[key];
    } else {
      throw new GoogleError(400, 'INVALID_ARGUMENT', `fake-google: filter field "${field}" is not one the fake evaluates`, [], true);
    }
    return (r: Parameters<typeof get>[0]) => (get(r) === want) !== neg;
  });
  return (r) => terms.every((t) => t(r));
}
