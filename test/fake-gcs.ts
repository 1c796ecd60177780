/**
 * A local stand-in for the part of the Cloud Storage JSON API v1 that lib/storage.ts uses, so tests
 * can drive the real @google-cloud/storage client without network or credentials.
 *
 * It is strict on purpose: any method, path, query parameter, API header or metadata field it does not
 * implement gets a 400 naming it, so a test fails as soon as our code starts sending something new
 * (which real GCS might treat differently from what we assumed). Every request is recorded.
 *
 * Implemented (https://cloud.google.com/storage/docs/json_api/v1/objects):
 *   objects.insert  POST /upload/storage/v1/b/B/o?uploadType=multipart[&name=N]   (multipart/related)
 *   objects.get     GET  /storage/v1/b/B/o/N[?alt=json|media]
 *   objects.list    GET  /storage/v1/b/B/o[?prefix&delimiter&pageToken&maxResults]
 *   objects.delete  DELETE /storage/v1/b/B/o/N
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

export type FakeGcsOp = 'insert' | 'get' | 'media' | 'list' | 'delete' | 'rejected';

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
}

interface StoredObject {
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
  ) {
    super(message);
  }
}

function badRequest(message: string): ApiError {
  return new ApiError(400, 'invalid', `fake-gcs: ${message}`);
}

function allowOnly(query: Record<string, string>, allowed: string[], what: string): void {
  for (const k of Object.keys(query)) {
    if (!allowed.includes(k)) throw badRequest(`${what} does not support query parameter "${k}"`);
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
  private readonly buckets = new Map<string, Map<string, StoredObject>>();
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

  createBucket(name: string): void {
    if (!this.buckets.has(name)) this.buckets.set(name, new Map());
  }

  put(bucket: string, key: string, data: Buffer | string, contentType = 'application/octet-stream'): void {
    this.bucketMap(bucket).set(key, { data: Buffer.from(data), contentType, generation: this.nextGeneration++, created: new Date() });
  }

  get(bucket: string, key: string): Buffer | undefined {
    return this.buckets.get(bucket)?.get(key)?.data;
  }

  keys(bucket: string): string[] {
    return [...(this.buckets.get(bucket)?.keys() ?? [])].sort();
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  private bucketMap(bucket: string): Map<string, StoredObject> {
    const b = this.buckets.get(bucket);
    if (!b) throw new ApiError(404, 'notFound', 'The specified bucket does not exist.');
    return b;
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
      for (const h of Object.keys(req.headers)) {
        if (SIGNIFICANT_HEADER.test(h) && !HARMLESS_GOOG_HEADERS.has(h)) throw badRequest(`header "${h}" is not supported`);
      }
      this.route(req.method ?? '', url.pathname, query, req.headers, body, rec, res);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(500, 'backendError', String(err));
      rec.status = e.status;
      const payload = { error: { code: e.status, message: e.message, errors: [{ message: e.message, domain: 'global', reason: e.reason }] } };
      res.writeHead(e.status, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify(payload));
    }
  }

  private route(
    method: string,
    pathname: string,
    query: Record<string, string>,
    headers: http.IncomingHttpHeaders,
    body: Buffer,
    rec: FakeGcsRequest,
    res: http.ServerResponse,
  ): void {
    let rest: string;
    let upload = false;
    if (pathname.startsWith('/upload/storage/v1/b/')) {
      upload = true;
      rest = pathname.slice('/upload/storage/v1'.length);
    } else if (pathname.startsWith('/storage/v1/b/')) {
      rest = pathname.slice('/storage/v1'.length);
    } else if (pathname.startsWith('/b/')) {
      rec.emulatorRoot = true;
      rest = pathname;
    } else {
      throw badRequest(`unsupported path ${pathname}`);
    }
    // rest: /b/BUCKET/o or /b/BUCKET/o/ENCODED_NAME
    const m = /^\/b\/([^/]+)\/o(?:\/(.+))?$/.exec(rest);
    if (!m) throw badRequest(`unsupported path ${pathname}`);
    const bucket = decodeURIComponent(m[1] as string);
    const object = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
    rec.bucket = bucket;
    rec.object = object;

    if (upload) {
      if (method !== 'POST' || object !== undefined) throw badRequest(`unsupported upload request ${method} ${pathname}`);
      rec.op = 'insert';
      this.insert(bucket, query, headers, body, rec, res);
      return;
    }
    if (object === undefined) {
      if (method !== 'GET') throw badRequest(`unsupported method ${method} on ${pathname}`);
      rec.op = 'list';
      this.list(bucket, query, rec, res);
      return;
    }
    if (method === 'GET') {
      allowOnly(query, ['alt'], 'objects.get');
      const alt = query.alt ?? 'json';
      if (alt !== 'json' && alt !== 'media') throw badRequest(`unsupported alt=${alt}`);
      rec.op = alt === 'media' ? 'media' : 'get';
      const o = this.bucketMap(bucket).get(object);
      if (!o) throw new ApiError(404, 'notFound', `No such object: ${bucket}/${object}`);
      rec.status = 200;
      if (alt === 'json') {
        res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
        res.end(JSON.stringify(this.resource(bucket, object, o)));
        return;
      }
      const r = this.resource(bucket, object, o);
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
    if (method === 'DELETE') {
      allowOnly(query, [], 'objects.delete');
      rec.op = 'delete';
      const b = this.bucketMap(bucket);
      if (!b.delete(object)) throw new ApiError(404, 'notFound', `No such object: ${bucket}/${object}`);
      rec.status = 204;
      res.writeHead(204);
      res.end();
      return;
    }
    throw badRequest(`unsupported method ${method} on ${pathname}`);
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
