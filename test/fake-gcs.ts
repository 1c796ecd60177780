/**
 * A local stand-in for the part of the Cloud Storage JSON API v1 that our code uses, so tests can
 * drive the real @google-cloud/storage client (or googleapis' storage client) without network or
 * credentials.
 *
 * Routes come from the published API: test/fixtures/discovery/storage-v1.json (the JSON API's
 * discovery document, trimmed to the methods below). An object name is ONE path segment,
 * percent-encoded (`b/B/o/a%2Fb.txt`), as the API defines `{object}`; a raw slash after `o/`
 * (`o/a/b.txt`, `o/NAME/acl`) is no method this fake implements and gets a 400 naming the path.
 *
 * It is strict on purpose: any method, path, query parameter, API header or metadata field it does
 * not implement gets a 400 naming it, so a test fails as soon as our code starts sending something
 * new (which real GCS might treat differently from what we assumed). Query parameters are checked
 * twice: against the discovery document (unknown to the API) and against what the fake implements.
 * Every request is recorded; refused ones with `op: 'rejected'` and the reason in `rejected`.
 *
 * Implemented (https://cloud.google.com/storage/docs/json_api/v1):
 *   objects.insert  POST /upload/storage/v1/b/B/o?uploadType=multipart[&name=N]   (multipart/related)
 *   objects.get     GET  /storage/v1/b/B/o/N[?alt=json|media]
 *   objects.list    GET  /storage/v1/b/B/o[?prefix&delimiter&pageToken&maxResults]
 *   objects.delete  DELETE /storage/v1/b/B/o/N
 *   buckets.get          GET /storage/v1/b/B                 (location, locationType)
 *   buckets.getIamPolicy GET /storage/v1/b/B/iam[?optionsRequestedPolicyVersion]
 *   buckets.setIamPolicy PUT /storage/v1/b/B/iam             (etag checked: a stale one -> 412)
 * The client sends JSON-API calls to `/b/...` without the `/storage/v1` root when it takes its
 * endpoint from STORAGE_EMULATOR_HOST (its base URL is then the variable verbatim), while uploads
 * keep `/upload/storage/v1`; both roots are accepted and `emulatorRoot` records which one was used.
 */
import * as http from 'node:http';
import * as crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { crc32c } from '@node-rs/crc32';
import { Storage as GcsStorage } from '@google-cloud/storage';
import * as storageLib from '../lib/storage';
import { loadDiscovery, SchemaViolation } from './fake-google/discovery';
import { FAIL_KINDS, GoogleError, faultFor } from './fake-google/errors';
import type { FailKind } from './fake-google/errors';

export type FakeGcsOp = 'insert' | 'get' | 'media' | 'list' | 'delete' | 'bucket' | 'getIamPolicy' | 'setIamPolicy' | 'rejected';

export interface FakeGcsRequest {
  method: string;
  /** Path as received, still percent-encoded. */
  path: string;
  query: Record<string, string>;
  op: FakeGcsOp;
  bucket?: string;
  object?: string;
  /** True when the JSON API was reached at `/b/...` (STORAGE_EMULATOR_HOST style) rather than `/storage/v1/b/...`. */
  emulatorRoot: boolean;
  hasAuthorization: boolean;
  status: number;
  /** The discovery method id (storage.objects.get, ...), once the route is known. */
  methodId: string | null;
  /** Why the request was refused as not matching the API (or what the fake implements). */
  rejected?: string;
  /** The JSON body (setIamPolicy) or the metadata part of a multipart upload. */
  body?: unknown;
}

export interface StorageIamPolicy {
  kind?: string;
  resourceId?: string;
  version?: number;
  etag?: string;
  bindings?: { role: string; members: string[]; condition?: unknown }[];
}

export interface FakeBucket {
  name: string;
  /** Upper case, as the API returns it: US, EU, US-CENTRAL1, NAM4, ... */
  location: string;
  locationType: 'multi-region' | 'region' | 'dual-region';
  objects: Map<string, StoredObject>;
  iamPolicy: StorageIamPolicy;
  created: Date;
}

export interface StoredObject {
  data: Buffer;
  contentType: string;
  generation: number;
  created: Date;
}

/**
 * Request headers that change what the API does (ranges, preconditions, encryption keys, upload
 * protocols): none is implemented, so each is refused. Plain HTTP headers pass.
 */
const SIGNIFICANT_HEADER = /^(x-goog-|x-upload-|x-http-method-override$|range$|if-|content-range$|content-encoding$)/;
/** Significant-looking headers the client sends on every request that carry no API meaning. */
const HARMLESS_GOOG_HEADERS = new Set(['x-goog-api-client', 'x-goog-gcs-idempotency-token']);

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    /** True when the request does not match the API or what the fake implements. */
    readonly rejected = false,
  ) {
    super(message);
  }
}

function badRequest(message: string): ApiError {
  return new ApiError(400, 'invalid', `fake-gcs: ${message}`, true);
}

const STORAGE = loadDiscovery('storage-v1');

/** The reason GCS puts in error.errors[0].reason for an HTTP status. */
const GCS_REASON: Record<number, string> = { 401: 'required', 403: 'forbidden', 404: 'notFound', 429: 'rateLimitExceeded', 500: 'backendError', 503: 'backendError' };

/** Multi-regions and predefined dual-regions (https://cloud.google.com/storage/docs/locations). */
function locationType(location: string): FakeBucket['locationType'] {
  if (/^(US|EU|ASIA)$/.test(location)) return 'multi-region';
  if (/^(NAM4|EUR4|EUR5|EUR7|EUR8|ASIA1)$/.test(location)) return 'dual-region';
  return 'region';
}

function allowOnly(query: Record<string, string>, allowed: string[], what: string): void {
  for (const k of Object.keys(query)) {
    if (!allowed.includes(k)) throw badRequest(`${what} does not support query parameter "${k}" (the API defines it; this fake does not implement it)`);
  }
}

function b64(buf: Buffer): string {
  return buf.toString('base64');
}

function crc32cBase64(data: Buffer): string {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(crc32c(data) >>> 0);
  return b64(out);
}

/** Split a multipart/related body into its parts (RFC 2046 framing, as objects.insert expects). */
function parseMultipart(body: Buffer, boundary: string): { headers: Record<string, string>; content: Buffer }[] {
  const open = Buffer.from(`--${boundary}`);
  const delim = Buffer.from(`\r\n--${boundary}`);
  if (body.indexOf(open) !== 0) throw badRequest('multipart body does not start with its boundary');
  const parts: { headers: Record<string, string>; content: Buffer }[] = [];
  let pos = open.length;
  for (;;) {
    if (body.subarray(pos, pos + 2).toString() === '--') break;
    if (body.subarray(pos, pos + 2).toString() !== '\r\n') throw badRequest('malformed multipart boundary line');
    const headerEnd = body.indexOf('\r\n\r\n', pos + 2);
    if (headerEnd < 0) throw badRequest('multipart part without a blank line after its headers');
    const headers: Record<string, string> = {};
    for (const line of body.subarray(pos + 2, headerEnd).toString('latin1').split('\r\n')) {
      const i = line.indexOf(':');
      if (i < 0) throw badRequest(`malformed multipart header line "${line}"`);
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const end = body.indexOf(delim, headerEnd + 4);
    if (end < 0) throw badRequest('multipart body is not terminated by its closing boundary');
    parts.push({ headers, content: body.subarray(headerEnd + 4, end) });
    pos = end + delim.length;
  }
  return parts;
}

export class FakeGcs {
  readonly requests: FakeGcsRequest[] = [];
  /** Entries (objects and prefixes) per objects.list page, unless the caller asks for fewer. */
  pageSize = 3;
  /** Buckets with their objects and IAM policy, by name (tests may seed and inspect them). */
  readonly buckets = new Map<string, FakeBucket>();
  /** When set, a request that carries an Authorization header must carry `Bearer <token>`. */
  token?: string;
  /** Project number shown in bucket resources and IAM policy members. */
  projectNumber = '123456789012';
  /** Called with every finished request record (the combined fake keeps one list for all APIs). */
  onRecord?: (r: FakeGcsRequest) => void;
  private readonly faults: { method: string; kind: FailKind; times: number }[] = [];
  private nextGeneration = 1_700_000_000_000_000;
  private server?: http.Server;
  private url = '';

  /** Start listening on 127.0.0.1 and return the endpoint URL (http://127.0.0.1:PORT). */
  async start(): Promise<string> {
    const server = http.createServer((req, res) => void this.handle(req, res));
    this.server = server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  get endpoint(): string {
    return this.url;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  createBucket(name: string, opts: { location?: string } = {}): void {
    if (this.buckets.has(name)) return;
    const location = (opts.location ?? 'US').toUpperCase();
    const p = this.projectNumber;
    this.buckets.set(name, {
      name,
      location,
      locationType: locationType(location),
      objects: new Map(),
      created: new Date(),
      iamPolicy: {
        version: 1,
        etag: 'CAE=',
        bindings: [
          { role: 'roles/storage.legacyBucketOwner', members: [`projectEditor:${p}`, `projectOwner:${p}`] },
          { role: 'roles/storage.legacyBucketReader', members: [`projectViewer:${p}`] },
        ],
      },
    });
  }

  put(bucket: string, key: string, data: Buffer | string, contentType = 'application/octet-stream'): void {
    this.bucketMap(bucket).set(key, { data: Buffer.from(data), contentType, generation: this.nextGeneration++, created: new Date() });
  }

  get(bucket: string, key: string): Buffer | undefined {
    return this.buckets.get(bucket)?.objects.get(key)?.data;
  }

  keys(bucket: string): string[] {
    return [...(this.buckets.get(bucket)?.objects.keys() ?? [])].sort();
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  /** Answer the next `times` calls of a method (discovery id, e.g. storage.objects.get) with a fault. */
  failNext(match: { method: string }, kind: FailKind, times = 1): void {
    if (!FAIL_KINDS.includes(kind)) throw new Error(`unknown fault kind ${String(kind)}`);
    if (!STORAGE.methods.has(match.method)) throw new Error(`fake-gcs: no method ${match.method} (known: ${[...STORAGE.methods.keys()].join(', ')})`);
    this.faults.push({ method: match.method, kind, times });
  }

  rejected(): FakeGcsRequest[] {
    return this.requests.filter((r) => r.rejected !== undefined);
  }

  private bucket(name: string): FakeBucket {
    const b = this.buckets.get(name);
    if (!b) throw new ApiError(404, 'notFound', 'The specified bucket does not exist.');
    return b;
  }

  private bucketMap(bucket: string): Map<string, StoredObject> {
    return this.bucket(bucket).objects;
  }

  private resource(bucket: string, name: string, o: StoredObject): Record<string, unknown> {
    const enc = encodeURIComponent(name);
    return {
      kind: 'storage#object',
      id: `${bucket}/${name}/${o.generation}`,
      selfLink: `${this.url}/storage/v1/b/${bucket}/o/${enc}`,
      mediaLink: `${this.url}/download/storage/v1/b/${bucket}/o/${enc}?generation=${o.generation}&alt=media`,
      name,
      bucket,
      generation: String(o.generation),
      metageneration: '1',
      contentType: o.contentType,
      storageClass: 'STANDARD',
      size: String(o.data.length),
      md5Hash: b64(crypto.createHash('md5').update(o.data).digest()),
      crc32c: crc32cBase64(o.data),
      etag: b64(Buffer.from(String(o.generation))),
      timeCreated: o.created.toISOString(),
      updated: o.created.toISOString(),
    };
  }

  private bucketResource(b: FakeBucket): Record<string, unknown> {
    return {
      kind: 'storage#bucket',
      selfLink: `${this.url}/storage/v1/b/${b.name}`,
      id: b.name,
      name: b.name,
      projectNumber: this.projectNumber,
      metageneration: '1',
      location: b.location,
      locationType: b.locationType,
      storageClass: 'STANDARD',
      etag: 'CAE=',
      timeCreated: b.created.toISOString(),
      updated: b.created.toISOString(),
      iamConfiguration: {
        bucketPolicyOnly: { enabled: true, lockedTime: new Date(b.created.getTime() + 90 * 86400_000).toISOString() },
        uniformBucketLevelAccess: { enabled: true, lockedTime: new Date(b.created.getTime() + 90 * 86400_000).toISOString() },
        publicAccessPrevention: 'inherited',
      },
      rpo: b.locationType === 'region' ? undefined : 'DEFAULT',
    };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query: Record<string, string> = {};
    const rec: FakeGcsRequest = {
      method: req.method ?? '',
      path: url.pathname,
      query,
      op: 'rejected',
      emulatorRoot: false,
      hasAuthorization: req.headers.authorization !== undefined,
      status: 0,
      methodId: null,
    };
    this.requests.push(rec);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    try {
      for (const [k, v] of url.searchParams) {
        if (k in query) throw badRequest(`query parameter "${k}" given twice`);
        query[k] = v;
      }
      if (this.token !== undefined && req.headers.authorization !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
        throw new ApiError(401, 'authError', 'Invalid Credentials', true);
      }
      for (const h of Object.keys(req.headers)) {
        if (SIGNIFICANT_HEADER.test(h) && !HARMLESS_GOOG_HEADERS.has(h)) throw badRequest(`header "${h}" is not supported`);
      }
      if (this.injectFault(req.method ?? '', url, rec, res)) return;
      this.route(req.method ?? '', url, query, req.headers, body, rec, res);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(500, 'backendError', String(err));
      rec.status = e.status;
      if (e.rejected) {
        rec.op = 'rejected';
        rec.rejected = e.message;
      }
      const payload = { error: { code: e.status, message: e.message, errors: [{ message: e.message, domain: 'global', reason: e.reason }] } };
      res.writeHead(e.status, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify(payload));
    } finally {
      if (rec.status === 0 && res.headersSent) rec.status = res.statusCode;
      this.onRecord?.(rec);
    }
  }

  /** The path as the JSON API's discovery document sees it (`storage/v1/b/...`), and whether it is an upload. */
  private apiPath(pathname: string, rec: FakeGcsRequest): { rel: string; upload: boolean } {
    if (pathname.startsWith('/upload/storage/v1/')) return { rel: pathname.slice('/upload/'.length), upload: true };
    if (pathname.startsWith('/storage/v1/')) return { rel: pathname.slice(1), upload: false };
    if (pathname.startsWith('/b/') || pathname === '/b') {
      rec.emulatorRoot = true;
      return { rel: `storage/v1${pathname}`, upload: false };
    }
    throw badRequest(`unsupported path ${pathname} (the JSON API lives under /storage/v1/ and /upload/storage/v1/)`);
  }

  /** Match method and path against the discovery document: objects.insert for uploads, the rest by route. */
  private match(method: string, pathname: string, rec: FakeGcsRequest): { id: string; params: Record<string, string> } {
    const { rel, upload } = this.apiPath(pathname, rec);
    try {
      const m = STORAGE.match(method, rel);
      const uploadPath = m.method.mediaUpload?.protocols?.simple?.path;
      if (upload !== (uploadPath !== undefined)) {
        throw new SchemaViolation(upload ? `${m.method.id} takes no media upload at ${pathname}` : `unsupported path ${pathname}`);
      }
      return { id: m.method.id, params: m.pathParams };
    } catch (err) {
      if (err instanceof SchemaViolation) throw badRequest(`${err.message} [${method} ${pathname}]`);
      throw err;
    }
  }

  private injectFault(method: string, url: URL, rec: FakeGcsRequest, res: http.ServerResponse): boolean {
    if (!this.faults.length) return false;
    let id: string;
    try {
      id = this.match(method, url.pathname, { ...rec }).id;
    } catch {
      return false;
    }
    const i = this.faults.findIndex((f) => f.method === id);
    if (i < 0) return false;
    const f = this.faults[i] as (typeof this.faults)[0];
    if (--f.times <= 0) this.faults.splice(i, 1);
    rec.methodId = id;
    if (f.kind === 'RESET') {
      rec.status = -1;
      res.socket?.destroy();
      return true;
    }
    const g: GoogleError = faultFor(f.kind, { service: 'storage.googleapis.com', projectNumber: this.projectNumber, methodId: id, resource: `projects/_/buckets/${url.pathname.split('/b/')[1]?.split('/')[0] ?? ''}` });
    rec.status = g.code;
    const payload = { error: { ...g.body().error, errors: [{ message: g.message, domain: 'global', reason: GCS_REASON[g.code] ?? 'invalid' }] } };
    res.writeHead(g.code, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify(payload));
    return true;
  }

  private json(res: http.ServerResponse, rec: FakeGcsRequest, status: number, value: unknown): void {
    rec.status = status;
    res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify(value));
  }

  private route(
    method: string,
    url: URL,
    query: Record<string, string>,
    headers: http.IncomingHttpHeaders,
    body: Buffer,
    rec: FakeGcsRequest,
    res: http.ServerResponse,
  ): void {
    const { id, params } = this.match(method, url.pathname, rec);
    rec.methodId = id;
    const spec = STORAGE.methods.get(id) as NonNullable<ReturnType<typeof STORAGE.methods.get>>;
    try {
      STORAGE.checkQuery(spec, url.searchParams);
    } catch (err) {
      if (err instanceof SchemaViolation) throw badRequest(err.message);
      throw err;
    }
    const bucket = params.bucket as string;
    const object = params.object;
    rec.bucket = bucket;
    rec.object = object;

    switch (id) {
      case 'storage.objects.insert':
        rec.op = 'insert';
        return this.insert(bucket, query, headers, body, rec, res);
      case 'storage.objects.list':
        rec.op = 'list';
        return this.list(bucket, query, rec, res);
      case 'storage.objects.get': {
        allowOnly(query, ['alt'], 'objects.get');
        const alt = query.alt ?? 'json';
        rec.op = alt === 'media' ? 'media' : 'get';
        const o = this.bucketMap(bucket).get(object as string);
        if (!o) throw new ApiError(404, 'notFound', `No such object: ${bucket}/${object as string}`);
        const r = this.resource(bucket, object as string, o);
        if (alt === 'json') return this.json(res, rec, 200, r);
        rec.status = 200;
        res.writeHead(200, {
          'content-type': o.contentType,
          'content-length': String(o.data.length),
          'x-goog-hash': `crc32c=${r.crc32c as string},md5=${r.md5Hash as string}`,
          'x-goog-generation': String(o.generation),
          'x-goog-metageneration': '1',
          'x-goog-stored-content-encoding': 'identity',
          'x-goog-stored-content-length': String(o.data.length),
        });
        res.end(o.data);
        return;
      }
      case 'storage.objects.delete': {
        allowOnly(query, [], 'objects.delete');
        rec.op = 'delete';
        const b = this.bucketMap(bucket);
        if (!b.delete(object as string)) throw new ApiError(404, 'notFound', `No such object: ${bucket}/${object as string}`);
        rec.status = 204;
        res.writeHead(204);
        res.end();
        return;
      }
      case 'storage.buckets.get':
        allowOnly(query, [], 'buckets.get');
        rec.op = 'bucket';
        return this.json(res, rec, 200, JSON.parse(JSON.stringify(this.bucketResource(this.bucket(bucket)))));
      case 'storage.buckets.getIamPolicy': {
        allowOnly(query, ['optionsRequestedPolicyVersion'], 'buckets.getIamPolicy');
        rec.op = 'getIamPolicy';
        const b = this.bucket(bucket);
        const requested = query.optionsRequestedPolicyVersion === undefined ? 1 : Number(query.optionsRequestedPolicyVersion);
        if (![1, 3].includes(requested)) throw new ApiError(400, 'invalid', `Invalid argument: optionsRequestedPolicyVersion must be 1 or 3, got ${requested}.`);
        const conditional = (b.iamPolicy.bindings ?? []).some((x) => x.condition !== undefined);
        if (conditional && requested < 3) {
          throw new ApiError(400, 'invalid', 'The IAM policy of this bucket has conditions; request it with optionsRequestedPolicyVersion=3.');
        }
        return this.json(res, rec, 200, { kind: 'storage#policy', resourceId: `projects/_/buckets/${bucket}`, ...b.iamPolicy, version: conditional ? 3 : 1 });
      }
      case 'storage.buckets.setIamPolicy':
        allowOnly(query, [], 'buckets.setIamPolicy');
        rec.op = 'setIamPolicy';
        return this.setIamPolicy(bucket, headers, body, rec, res);
      default:
        throw badRequest(`${id} is in the discovery document but not implemented by this fake`);
    }
  }

  private setIamPolicy(bucket: string, headers: http.IncomingHttpHeaders, raw: Buffer, rec: FakeGcsRequest, res: http.ServerResponse): void {
    const b = this.bucket(bucket);
    if (!/^application\/json\b/i.test(headers['content-type'] ?? '')) throw badRequest(`setIamPolicy body must be application/json, got "${headers['content-type'] ?? ''}"`);
    let policy: StorageIamPolicy;
    try {
      policy = JSON.parse(raw.toString('utf8')) as StorageIamPolicy;
    } catch {
      throw badRequest('setIamPolicy body is not JSON');
    }
    rec.body = policy;
    try {
      STORAGE.checkBody(STORAGE.methods.get('storage.buckets.setIamPolicy') as NonNullable<ReturnType<typeof STORAGE.methods.get>>, policy);
    } catch (err) {
      if (err instanceof SchemaViolation) throw badRequest(err.message);
      throw err;
    }
    // A read-modify-write with a stale etag is refused, so concurrent edits do not overwrite each other.
    // 412 conditionNotMet is the JSON API's precondition failure (gsutil retries its IAM edits on it).
    if (policy.etag !== undefined && policy.etag !== b.iamPolicy.etag) {
      throw new ApiError(412, 'conditionNotMet', `Precondition Failed: the policy etag "${policy.etag}" is not the current one ("${b.iamPolicy.etag ?? ''}"); read the policy again and retry.`);
    }
    for (const binding of policy.bindings ?? []) {
      if (!binding.role || !binding.members?.length) throw new ApiError(400, 'invalid', 'Every binding needs a role and at least one member.');
      for (const m of binding.members) {
        if (!/^(allUsers|allAuthenticatedUsers|(user|serviceAccount|group|domain|projectOwner|projectEditor|projectViewer|principal|principalSet):.+)$/.test(m)) {
          throw new ApiError(400, 'invalid', `Invalid member "${m}" in binding for ${binding.role}.`);
        }
      }
    }
    const n = Number.parseInt(Buffer.from(b.iamPolicy.etag ?? 'CAE=', 'base64').toString('hex') || '1', 16) + 1;
    b.iamPolicy = {
      version: policy.version ?? 1,
      bindings: policy.bindings ?? [],
      etag: Buffer.from(n.toString(16).padStart(4, '0'), 'hex').toString('base64'),
    };
    this.json(res, rec, 200, { kind: 'storage#policy', resourceId: `projects/_/buckets/${bucket}`, ...b.iamPolicy });
  }

  private insert(
    bucket: string,
    query: Record<string, string>,
    headers: http.IncomingHttpHeaders,
    body: Buffer,
    rec: FakeGcsRequest,
    res: http.ServerResponse,
  ): void {
    allowOnly(query, ['uploadType', 'name'], 'objects.insert');
    if (query.uploadType !== 'multipart') throw badRequest(`uploadType=${query.uploadType ?? '(none)'} is not supported (only multipart)`);
    const ct = /^multipart\/related;\s*boundary=("?)([^";]+)\1\s*$/i.exec(headers['content-type'] ?? '');
    if (!ct) throw badRequest(`multipart upload with Content-Type "${headers['content-type'] ?? ''}"`);
    const parts = parseMultipart(body, ct[2] as string);
    if (parts.length !== 2) throw badRequest(`multipart upload must have 2 parts (metadata, media), got ${parts.length}`);
    const [metaPart, mediaPart] = parts as [(typeof parts)[0], (typeof parts)[0]];
    if (!/^application\/json\b/i.test(metaPart.headers['content-type'] ?? '')) {
      throw badRequest(`first multipart part must be application/json metadata, got "${metaPart.headers['content-type'] ?? ''}"`);
    }
    for (const h of [...Object.keys(metaPart.headers), ...Object.keys(mediaPart.headers)]) {
      if (h !== 'content-type') throw badRequest(`multipart part header "${h}" is not supported`);
    }
    let meta: Record<string, unknown>;
    try {
      meta = JSON.parse(metaPart.content.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw badRequest('metadata part is not JSON');
    }
    rec.body = meta;
    try {
      STORAGE.checkValue({ $ref: 'Object' }, meta, '', 'request');
    } catch (err) {
      if (err instanceof SchemaViolation) throw badRequest(err.message);
      throw err;
    }
    for (const k of Object.keys(meta)) {
      if (k !== 'name' && k !== 'contentType') throw badRequest(`object metadata field "${k}" is not supported`);
    }
    if (query.name !== undefined && meta.name !== undefined && query.name !== meta.name) {
      throw badRequest(`name in query ("${query.name}") and metadata ("${String(meta.name)}") differ`);
    }
    const name = query.name ?? (meta.name as string | undefined);
    if (!name) throw new ApiError(400, 'required', 'Required: object name');
    const contentType = (meta.contentType as string | undefined) ?? mediaPart.headers['content-type'] ?? 'application/octet-stream';
    this.bucketMap(bucket);
    this.put(bucket, name, Buffer.from(mediaPart.content), contentType);
    rec.object = name;
    rec.status = 200;
    res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify(this.resource(bucket, name, this.bucketMap(bucket).get(name) as StoredObject)));
  }

  private list(bucket: string, query: Record<string, string>, rec: FakeGcsRequest, res: http.ServerResponse): void {
    allowOnly(query, ['prefix', 'delimiter', 'pageToken', 'maxResults'], 'objects.list');
    const b = this.bucketMap(bucket);
    const prefix = query.prefix ?? '';
    const delimiter = query.delimiter;
    if (delimiter === '') throw badRequest('empty delimiter');
    let max = this.pageSize;
    if (query.maxResults !== undefined) {
      const n = Number(query.maxResults);
      if (!Number.isInteger(n) || n < 1) throw badRequest(`invalid maxResults=${query.maxResults}`);
      max = Math.min(max, n);
    }
    let after: string | undefined;
    if (query.pageToken !== undefined) {
      after = Buffer.from(query.pageToken, 'base64url').toString('utf8');
      if (!after) throw badRequest('invalid pageToken');
    }
    // Objects and rolled-up prefixes, in name order, as one sequence that pages are cut from.
    const entries: { name: string; prefix: boolean }[] = [];
    const seenPrefixes = new Set<string>();
    for (const name of [...b.keys()].sort()) {
      if (!name.startsWith(prefix)) continue;
      const cut = delimiter === undefined ? -1 : name.indexOf(delimiter, prefix.length);
      if (cut >= 0) {
        const p = name.slice(0, cut + (delimiter as string).length);
        if (!seenPrefixes.has(p)) {
          seenPrefixes.add(p);
          entries.push({ name: p, prefix: true });
        }
      } else {
        entries.push({ name, prefix: false });
      }
    }
    const start = after === undefined ? 0 : entries.findIndex((e) => e.name > (after as string));
    const page = start < 0 ? [] : entries.slice(start, start + max);
    const more = start >= 0 && start + max < entries.length;
    const out: Record<string, unknown> = { kind: 'storage#objects' };
    const items = page.filter((e) => !e.prefix).map((e) => this.resource(bucket, e.name, b.get(e.name) as StoredObject));
    const prefixes = page.filter((e) => e.prefix).map((e) => e.name);
    if (items.length) out.items = items;
    if (prefixes.length) out.prefixes = prefixes;
    if (more) out.nextPageToken = Buffer.from((page[page.length - 1] as { name: string }).name).toString('base64url');
    rec.status = 200;
    res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify(out));
  }
}

/**
 * Start a fake with the given buckets and point lib/storage at it through the real client; `stop()`
 * restores the default client. For tests whose subject is not storage itself.
 */
export async function useFakeGcs(...buckets: string[]): Promise<FakeGcs & { done(): Promise<void> }> {
  const fake = new FakeGcs();
  await fake.start();
  for (const b of buckets) fake.createBucket(b);
  storageLib.setGcsClient(new GcsStorage({ apiEndpoint: fake.endpoint, projectId: 'imgclass-test-project' }));
  return Object.assign(fake, {
    async done() {
      storageLib.setGcsClient(undefined);
      await fake.stop();
    },
  });
}

/** Object names in upload order, as recorded (for tests of write ordering). */
export function uploadOrder(fake: FakeGcs): string[] {
  return fake.requests.filter((r) => r.op === 'insert' && r.object).map((r) => r.object as string);
}
