/**
 * The gs:// side of lib/storage.ts, through the real @google-cloud/storage client, against the local
 * fake of the Cloud Storage JSON API in fake-gcs.ts. Assertions look at the requests the client sent
 * as well as at the results, and at every outgoing connection of this thread (only 127.0.0.1).
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as dc from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import * as http from 'node:http';
import type { ClientRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Storage } from '@google-cloud/storage';
import * as storage from '../lib/storage';
import { UserError } from '../lib/errors';
import { preprocess, REPORT_NAME, PreprocessReport } from '../lib/preprocess';
import { readRecordFile } from '../lib/tfrecord';
import { decodeExample, getBytes, getInt64, getString } from '../lib/example';
import { isLockClaim } from '../lib/folder-lock';
import { FakeGcs, FakeGcsRequest } from './fake-gcs';
import { tempDir, removeDir, jpeg, REPO_ROOT } from './helpers';

const execFileAsync = promisify(execFile);
const BUCKET = 'imgclass-test';
const fake = new FakeGcs();
/** Hosts this thread opened HTTP requests or TCP connections to. */
const contacted = new Set<string>();

function onHttpStart(msg: unknown): void {
  contacted.add(`http:${(msg as { request: ClientRequest }).request.host}`);
}
function onSocket(msg: unknown): void {
  const socket = (msg as { socket: Socket }).socket;
  socket.once('lookup', (_err: Error | null, address: string) => contacted.add(`lookup:${address}`));
  socket.once('connect', () => contacted.add(`tcp:${socket.remoteAddress}`));
}

before(async () => {
  dc.subscribe('http.client.request.start', onHttpStart);
  dc.subscribe('net.client.socket', onSocket);
  await fake.start();
  fake.createBucket(BUCKET);
  // Explicit endpoint: the JSON API is then reached under /storage/v1, as on storage.googleapis.com.
  storage.setGcsClient(new Storage({ apiEndpoint: fake.endpoint, projectId: 'imgclass-test-project' }));
});

after(async () => {
  storage.setGcsClient(undefined);
  await fake.stop();
  dc.unsubscribe('http.client.request.start', onHttpStart);
  dc.unsubscribe('net.client.socket', onSocket);
  // No credentials lookup, metadata server (169.254.169.254) or googleapis.com: only the fake.
  for (const c of contacted) assert.match(c, /:127\.0\.0\.1$/, `unexpected connection ${c}`);
  assert.ok(contacted.size > 0, 'the connection monitor saw nothing; it is not working');
});

beforeEach(() => fake.clearRequests());

function url(key: string): string {
  return `gs://${BUCKET}/${key}`;
}

function ops(reqs: FakeGcsRequest[] = fake.requests): string[] {
  return reqs.map((r) => `${r.op} ${r.object ?? ''}`.trim());
}

function assertClean(reqs: FakeGcsRequest[] = fake.requests): void {
  const rejected = reqs.filter((r) => r.op === 'rejected' || r.status === 400);
  assert.deepEqual(rejected, [], 'the fake rejected requests it does not implement');
  assert.ok(reqs.every((r) => !r.hasAuthorization), 'a request carried credentials; a custom endpoint should need none');
}

test('the fake rejects what it does not implement, in Google error format', async () => {
  const res = await fetch(`${fake.endpoint}/storage/v1/b/${BUCKET}/o?prefix=a&versions=true`);
  assert.equal(res.status, 400);
  const body = (await res.json()) as { error: { code: number; message: string; errors: { reason: string }[] } };
  assert.equal(body.error.code, 400);
  assert.match(body.error.message, /"versions"/);
  const missing = await fetch(`${fake.endpoint}/storage/v1/b/${BUCKET}/o/${encodeURIComponent('no/such')}`);
  assert.equal(missing.status, 404);
  const m = (await missing.json()) as { error: { code: number; errors: { reason: string }[] } };
  assert.equal(m.error.code, 404);
  assert.equal(m.error.errors[0]?.reason, 'notFound');
  const resumable = await fetch(`${fake.endpoint}/upload/storage/v1/b/${BUCKET}/o?uploadType=resumable&name=x`, { method: 'POST' });
  assert.equal(resumable.status, 400);
});

test('the fake follows the JSON API routes: an object name is one percent-encoded segment; anything else is a named 400', async () => {
  fake.put(BUCKET, 'dir/a.txt', 'a');
  const ok = await fetch(`${fake.endpoint}/storage/v1/b/${BUCKET}/o/${encodeURIComponent('dir/a.txt')}`);
  assert.equal(ok.status, 200);
  assert.equal(((await ok.json()) as { name: string }).name, 'dir/a.txt');
  fake.clearRequests();
  const refusals: Array<[string, string, RegExp, RequestInit?]> = [
    ['unencoded slash in the object name', `/storage/v1/b/${BUCKET}/o/dir/a.txt`, /defines no method at path/],
    ['objectAccessControls (…/o/NAME/acl), not implemented', `/storage/v1/b/${BUCKET}/o/${encodeURIComponent('dir/a.txt')}/acl`, /defines no method at path/],
    ['unknown query parameter', `/storage/v1/b/${BUCKET}/o/x?colour=red`, /Unknown name "colour"/],
    ['value not in the enum', `/storage/v1/b/${BUCKET}/o?projection=everything`, /TYPE_ENUM\), "everything"/],
    ['wrong HTTP method', `/storage/v1/b/${BUCKET}/o/x`, /HTTP method PATCH is not defined .*storage\.objects\.(get|delete)/, { method: 'PATCH' }],
    ['defined parameter the fake does not implement', `/storage/v1/b/${BUCKET}/o/x?generation=3`, /"generation" \(the API defines it; this fake does not implement it\)/],
    ['no JSON API root', `/v1/b/${BUCKET}/o`, /unsupported path/],
    ['upload to an object path', `/upload/storage/v1/b/${BUCKET}/o/x?uploadType=multipart`, /HTTP method POST is not defined/, { method: 'POST' }],
    ['wrong JSON type in setIamPolicy', `/storage/v1/b/${BUCKET}/iam`, /Invalid value at 'version' \(TYPE_INT32\)/, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ version: 'three' }) }],
    ['unknown field in setIamPolicy', `/storage/v1/b/${BUCKET}/iam`, /Unknown name "owner"/, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ owner: 'me' }) }],
  ];
  for (const [what, p, message, init] of refusals) {
    const res = await fetch(`${fake.endpoint}${p}`, init);
    assert.equal(res.status, 400, what);
    const body = (await res.json()) as { error: { code: number; message: string; errors: { reason: string }[] } };
    assert.equal(body.error.code, 400, what);
    assert.equal(body.error.errors[0]?.reason, 'invalid', what);
    assert.match(body.error.message, message, what);
  }
  assert.equal(fake.rejected().length, refusals.length, 'every refusal is recorded as rejected');
  assert.ok(fake.rejected().every((r) => r.op === 'rejected' && r.status === 400 && typeof r.rejected === 'string'));
  assert.equal(fake.get(BUCKET, 'dir/a.txt')?.toString(), 'a', 'nothing was changed by a refused request');
});

test('buckets.get, getIamPolicy and setIamPolicy with an etag precondition', async () => {
  fake.createBucket('located', { location: 'europe-west4' });
  const b = (await (await fetch(`${fake.endpoint}/storage/v1/b/located`)).json()) as { location: string; locationType: string };
  assert.deepEqual([b.location, b.locationType], ['EUROPE-WEST4', 'region']);
  const multi = (await (await fetch(`${fake.endpoint}/b/${BUCKET}`)).json()) as { location: string; locationType: string };
  assert.deepEqual([multi.location, multi.locationType], ['US', 'multi-region']);
  const policy = (await (await fetch(`${fake.endpoint}/storage/v1/b/located/iam?optionsRequestedPolicyVersion=3`)).json()) as { etag: string; bindings: unknown[] };
  const put = (body: unknown) => fetch(`${fake.endpoint}/storage/v1/b/located/iam`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const bindings = [...policy.bindings, { role: 'roles/storage.objectViewer', members: ['allUsers'] }];
  const first = await put({ bindings, etag: policy.etag });
  assert.equal(first.status, 200);
  const stale = await put({ bindings, etag: policy.etag });
  assert.equal(stale.status, 412);
  assert.equal(((await stale.json()) as { error: { errors: { reason: string }[] } }).error.errors[0]?.reason, 'conditionNotMet');
  assert.equal(fake.buckets.get('located')?.iamPolicy.bindings?.length, 3);
  assert.equal((await fetch(`${fake.endpoint}/storage/v1/b/located/iam?optionsRequestedPolicyVersion=2`)).status, 400);
  assert.equal((await fetch(`${fake.endpoint}/storage/v1/b/nowhere`)).status, 404);
});

test('writeFile / readFile / readText round-trip binary and text through multipart uploads and alt=media reads', async () => {
  const bin = crypto.randomBytes(70_000);
  bin[0] = 0;
  bin[1] = 0xff;
  await storage.writeFile(url('rt/blob.bin'), bin);
  assert.deepEqual(fake.get(BUCKET, 'rt/blob.bin'), bin, 'stored bytes differ from what was written');
  assert.deepEqual(await storage.readFile(url('rt/blob.bin')), bin);

  // A view into a larger buffer: only the viewed bytes may be uploaded.
  const backing = Buffer.from('XXXXhello, view!YYYY');
  await storage.writeFile(url('rt/view.txt'), new Uint8Array(backing.buffer, backing.byteOffset + 4, 12));
  assert.equal(fake.get(BUCKET, 'rt/view.txt')?.toString(), 'hello, view!');

  const text = 'naïve café ✓\nsecond line\n';
  await storage.writeFile(url('rt/text.txt'), text);
  assert.equal(await storage.readText(url('rt/text.txt')), text);

  const inserts = fake.requests.filter((r) => r.op === 'insert');
  assert.equal(inserts.length, 3);
  for (const r of inserts) {
    assert.equal(r.method, 'POST');
    assert.equal(r.path, `/upload/storage/v1/b/${BUCKET}/o`);
    assert.equal(r.query.uploadType, 'multipart', 'small writes must be single-request multipart uploads');
  }
  const reads = fake.requests.filter((r) => r.op === 'media');
  assert.deepEqual(reads.map((r) => [r.method, r.path, r.query.alt]), [
    ['GET', `/storage/v1/b/${BUCKET}/o/rt%2Fblob.bin`, 'media'],
    ['GET', `/storage/v1/b/${BUCKET}/o/rt%2Ftext.txt`, 'media'],
  ]);
  assert.ok(fake.requests.every((r) => !r.emulatorRoot));
  assertClean();
});

test('writeFile refuses to replace an object unless overwrite is set', async () => {
  await storage.writeFile(url('ow/a.txt'), 'first');
  fake.clearRequests();
  await assert.rejects(storage.writeFile(url('ow/a.txt'), 'second'), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, /gs:\/\/imgclass-test\/ow\/a\.txt already exists/);
    assert.match(err.message, /--overwrite/);
    return true;
  });
  assert.equal(fake.get(BUCKET, 'ow/a.txt')?.toString(), 'first');
  assert.ok(!fake.requests.some((r) => r.op === 'insert'), 'nothing may be uploaded when refusing');
  assert.deepEqual(ops(), ['get ow/a.txt'], 'the refusal should cost one metadata request');
  await storage.writeFile(url('ow/a.txt'), 'second', { overwrite: true });
  assert.equal(fake.get(BUCKET, 'ow/a.txt')?.toString(), 'second');
  // Objects named `ow/b/...` do not make `ow/b` taken: on GCS both names can hold objects.
  fake.put(BUCKET, 'ow/b/inner', 'x');
  await storage.writeFile(url('ow/b'), 'beside');
  assert.equal(fake.get(BUCKET, 'ow/b')?.toString(), 'beside');
  await assert.rejects(storage.writeFile(url('ow/'), 'x', { overwrite: true }), /is a folder name/);
  assertClean();
});

test('readFile of a missing object (or bucket) is a UserError naming the URL', async () => {
  await assert.rejects(storage.readFile(url('missing/nope.bin')), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.equal(err.message, `file not found: gs://${BUCKET}/missing/nope.bin`);
    return true;
  });
  await assert.rejects(storage.readText('gs://no-such-bucket/x.txt'), /^UserError: file not found: gs:\/\/no-such-bucket\/x\.txt$/);
  await assert.rejects(storage.readFile(url('missing/')), /is a folder, expected a file/);
  assert.equal(fake.requests.filter((r) => r.op === 'media' && r.status === 404).length, 2);
  assertClean();
});

test('exists: objects, "folders" (name prefixes) with and without a slash, console folder placeholders', async () => {
  fake.put(BUCKET, 'ex/data/a.csv', 'x');
  fake.put(BUCKET, 'ex/data/deep/b.csv', 'x');
  fake.put(BUCKET, 'ex/database.csv', 'x');
  fake.put(BUCKET, 'ex/made-in-console/', '');
  assert.equal(await storage.exists(url('ex/data/a.csv')), true);
  assert.equal(await storage.exists(url('ex/data/zzz.csv')), false);
  assert.equal(await storage.exists(url('ex/data/')), true);
  assert.equal(await storage.exists(url('ex/data')), true);
  assert.equal(await storage.exists(url('ex/data/deep')), true);
  assert.equal(await storage.exists(url('ex/dat')), false, '"dat" is not a folder just because "database.csv" starts with it');
  assert.equal(await storage.exists(url('ex/empty/')), false);
  assert.equal(await storage.exists(url('ex/made-in-console')), true);
  // Folder checks ask for one entry, not the whole listing.
  for (const r of fake.requests.filter((q) => q.op === 'list')) assert.equal(r.query.maxResults, '1');
  assertClean();
});

test('list is recursive, follows every page, and leaves out folder placeholders and neighbours', async () => {
  const keys = ['ls/data/', 'ls/data/a', 'ls/data/b', 'ls/data/c/1', 'ls/data/c/2', 'ls/data/d', 'ls/data/e/f/g', 'ls/data/h'];
  for (const k of keys) fake.put(BUCKET, k, k);
  fake.put(BUCKET, 'ls/database.csv', 'not inside');
  const want = keys.filter((k) => !k.endsWith('/')).map(url);
  assert.deepEqual(await storage.list(url('ls/data')), want);
  const pages = fake.requests.filter((r) => r.op === 'list');
  assert.ok(pages.length >= 3, `expected several pages of ${fake.pageSize}, got ${pages.length} requests`);
  assert.equal(pages[0]?.query.prefix, 'ls/data/');
  assert.equal(pages[0]?.query.pageToken, undefined);
  assert.ok(pages.slice(1).every((r) => r.query.pageToken), 'later pages must carry the nextPageToken');
  assert.deepEqual(await storage.list(url('ls/data/')), want);
  assert.deepEqual(await storage.list(url('ls/nothing-here')), []);
  assertClean();
});

test('glob matches direct children only, sorted, across pages', async () => {
  const shards = [0, 1, 2, 3].map((i) => `gl/data/train-0000${i}-of-00004`);
  for (const k of [...shards].reverse()) fake.put(BUCKET, k, k);
  fake.put(BUCKET, 'gl/data/', '');
  fake.put(BUCKET, 'gl/data/validation-00000-of-00001', 'v');
  fake.put(BUCKET, 'gl/data/xtrain-1', 'no');
  fake.put(BUCKET, 'gl/data/train-extra/inner', 'a prefix, not a file');
  fake.put(BUCKET, 'gl/data/sub/train-00009-of-00010', 'too deep');
  fake.put(BUCKET, 'gl/data-other/train-00000-of-00001', 'other folder');
  assert.deepEqual(await storage.glob(url('gl/data/train-*')), shards.map(url));
  const pages = fake.requests.filter((r) => r.op === 'list');
  assert.ok(pages.length >= 3, `glob must follow pages; saw ${pages.length} list requests`);
  for (const r of pages) {
    assert.equal(r.query.prefix, 'gl/data/');
    assert.equal(r.query.delimiter, '/');
  }
  assert.deepEqual(await storage.glob(url('gl/data/validation-?????-of-00001')), [url('gl/data/validation-00000-of-00001')]);
  assert.deepEqual(await storage.glob(url('gl/nowhere/train-*')), []);
  assertClean();
});

test('remove deletes an object; removing a missing one is not an error', async () => {
  fake.put(BUCKET, 'rm/a', 'a');
  await storage.remove(url('rm/a'));
  assert.equal(fake.get(BUCKET, 'rm/a'), undefined);
  await storage.remove(url('rm/a'));
  await storage.remove(url('rm/never-there'));
  assert.deepEqual(fake.requests.map((r) => [r.method, r.op, r.object, r.status]), [
    ['DELETE', 'delete', 'rm/a', 204],
    ['DELETE', 'delete', 'rm/a', 404],
    ['DELETE', 'delete', 'rm/never-there', 404],
  ]);
  assertClean();
});

test('commitFile uploads a local temporary file and removes it', async () => {
  const dir = tempDir();
  try {
    const tmp = path.join(dir, '.shard.tmp');
    const data = crypto.randomBytes(200_000);
    fs.writeFileSync(tmp, data);
    await storage.commitFile(tmp, url('commit/train-00000-of-00001'));
    assert.deepEqual(fake.get(BUCKET, 'commit/train-00000-of-00001'), data);
    assert.equal(fs.existsSync(tmp), false, 'the local temporary must be removed after the upload');
    assert.deepEqual(ops(), ['insert commit/train-00000-of-00001']);
    assert.equal(fake.requests[0]?.query.uploadType, 'multipart');
    assertClean();
  } finally {
    removeDir(dir);
  }
});

/**
 * A stand-in metadata server: google-auth-library (gcp-metadata) looks the GCE metadata server up at
 * GCE_METADATA_IP / GCE_METADATA_HOST when set, so pointed here, every credentials or project lookup
 * of any thread or process that inherits the environment is recorded. It answers 404, as a machine
 * off Google Cloud would make the library conclude.
 */
async function metadataListener(): Promise<{ host: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    res.writeHead(404, { 'Metadata-Flavor': 'Google' }).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { host: `127.0.0.1:${port}`, requests, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

test('preprocess reads JPEGs from gs:// in worker threads and writes shards to gs://', async () => {
  const metadata = await metadataListener();
  const labels = ['cat', 'dog'];
  const images = new Map<string, { bytes: Buffer; label: string }>();
  let seed = 0;
  for (const label of labels) {
    for (let i = 0; i < 5; i++) {
      const key = `pp/images/${label}/${i}.jpg`;
      const bytes = await jpeg(32 + i, 24 + i, seed++);
      images.set(key, { bytes, label });
      fake.put(BUCKET, key, bytes, 'image/jpeg');
    }
  }
  const keys = [...images.keys()];
  const train = keys.filter((k) => !k.endsWith('/4.jpg'));
  const evalKeys = keys.filter((k) => k.endsWith('/4.jpg'));
  // Train rows give full gs:// URLs; eval rows are relative to the CSV's own gs:// folder.
  fake.put(BUCKET, 'pp/train.csv', 'filename,label\n' + train.map((k) => `${url(k)},${(images.get(k) as { label: string }).label}`).join('\n') + '\n');
  fake.put(BUCKET, 'pp/eval.csv', evalKeys.map((k) => `${k.slice('pp/'.length)},${(images.get(k) as { label: string }).label}`).join('\n') + '\n');
  fake.put(BUCKET, 'pp/labels.txt', labels.join('\n') + '\n');
  // The output folder was made with the Cloud Console's "Create folder": a placeholder object.
  fake.put(BUCKET, 'pp/out/', '');

  const saved = { STORAGE_EMULATOR_HOST: process.env.STORAGE_EMULATOR_HOST, GCE_METADATA_HOST: process.env.GCE_METADATA_HOST, GCE_METADATA_IP: process.env.GCE_METADATA_IP };
  // Workers build their own client from the environment they copy when the pool starts.
  process.env.STORAGE_EMULATOR_HOST = fake.endpoint;
  process.env.GCE_METADATA_HOST = metadata.host;
  process.env.GCE_METADATA_IP = metadata.host;
  try {
    const opts = { trainCsv: url('pp/train.csv'), validationCsv: url('pp/eval.csv'), labelsFile: url('pp/labels.txt'), outputDir: url('pp/out'), numShards: 2, workers: 2 };
    const result = await preprocess(opts);
    const shardNames = ['train-00000-of-00002', 'train-00001-of-00002', 'validation-00000-of-00002', 'validation-00001-of-00002'];
    assert.deepEqual(result.files, [...shardNames, REPORT_NAME].map((n) => url(`pp/out/${n}`)));
    assert.deepEqual(fake.keys(BUCKET).filter((k) => k.startsWith('pp/out/')), ['pp/out/', ...[...shardNames, REPORT_NAME].map((n) => `pp/out/${n}`)].sort());

    // Every image was read by a worker through STORAGE_EMULATOR_HOST (the /b/... root), once.
    const workerReads = fake.requests.filter((r) => r.emulatorRoot);
    assert.deepEqual(workerReads.map((r) => `${r.op} ${r.object}`).sort(), keys.map((k) => `media ${k}`).sort());
    assert.ok(workerReads.every((r) => r.status === 200));
    // The output folder's lock (lib/folder-lock.ts): claimed, marked held, and deleted at the end.
    const lockOps = fake.requests.filter((r) => isLockClaim(r.object ?? '')).map((r) => r.op);
    assert.deepEqual([lockOps[0], lockOps[1], lockOps.at(-1)], ['insert', 'insert', 'delete']);
    const uploads = fake.requests.filter((r) => r.op === 'insert' && !isLockClaim(r.object ?? ''));
    assert.deepEqual(uploads.map((r) => r.object), [...shardNames, REPORT_NAME].map((n) => `pp/out/${n}`));
    assert.ok(uploads.every((r) => r.query.uploadType === 'multipart'));
    assertClean();

    const seen: { split: string; key: string; label: string; index: number }[] = [];
    for (const [split, shards] of [['train', shardNames.slice(0, 2)], ['validation', shardNames.slice(2)]] as const) {
      for (const shard of shards) {
        let n = 0;
        for await (const rec of readRecordFile(url(`pp/out/${shard}`))) {
          const ex = decodeExample(rec);
          const label = getString(ex, 'image/class/synset');
          const name = getString(ex, 'image/filename');
          const key = `pp/images/${label}/${name}`;
          const original = images.get(key);
          assert.ok(original, `record names an unknown image ${key}`);
          assert.equal(original.label, label);
          assert.equal(getInt64(ex, 'image/class/label'), labels.indexOf(label) + 1);
          assert.deepEqual(getBytes(ex, 'image/encoded'), original.bytes, `${key}: JPEG bytes changed`);
          seen.push({ split, key, label, index: n++ });
        }
        assert.ok(n > 0, `${shard} is empty`);
      }
    }
    assert.deepEqual(seen.filter((s) => s.split === 'train').map((s) => s.key).sort(), [...train].sort());
    assert.deepEqual(seen.filter((s) => s.split === 'validation').map((s) => s.key).sort(), [...evalKeys].sort());

    const report = JSON.parse(await storage.readText(url(`pp/out/${REPORT_NAME}`))) as PreprocessReport;
    assert.equal(report.splits.train.records, 8);
    assert.equal(report.splits.validation.records, 2);
    assert.deepEqual(report.splits.train.perClass, { cat: 4, dog: 4 });
    assert.deepEqual(report.skipped, []);

    // Re-run into the same folder with fewer shards: refused without overwrite, then stale shards go.
    await assert.rejects(preprocess(opts), /is not empty.*--overwrite/);
    fake.clearRequests();
    await preprocess({ ...opts, numShards: 1, overwrite: true });
    assert.deepEqual(fake.keys(BUCKET).filter((k) => k.startsWith('pp/out/')), ['pp/out/', `pp/out/${REPORT_NAME}`, 'pp/out/train-00000-of-00001', 'pp/out/validation-00000-of-00001']);
    assert.deepEqual(fake.requests.filter((r) => r.op === 'delete' && !isLockClaim(r.object ?? '')).map((r) => [r.object, r.status]), [
      ['pp/out/train-00000-of-00002', 204],
      ['pp/out/train-00001-of-00002', 204],
      ['pp/out/validation-00000-of-00002', 204],
      ['pp/out/validation-00001-of-00002', 204],
    ]);
    let records = 0;
    for await (const _ of readRecordFile(url('pp/out/train-00000-of-00001'))) records++;
    assert.equal(records, 8);
    assertClean();

    // Local temporaries (staging folder, shard files before upload) are gone.
    const leftovers = fs.readdirSync(os.tmpdir()).filter((n) => n.includes(`-${process.pid}-`) && n.startsWith('.imgclass-'));
    assert.deepEqual(leftovers, []);
    // No thread asked the metadata server for credentials or a project.
    assert.deepEqual(metadata.requests, [], 'a credentials or project lookup reached the metadata server');
    // The listener does see a lookup when one is made: google-auth-library with no credentials, in a
    // process with the same environment (and a HOME without gcloud's application-default file).
    const home = tempDir('imgclass-home-');
    try {
      const env = { ...process.env, HOME: home, GOOGLE_APPLICATION_CREDENTIALS: '' };
      // Asynchronously: the listener runs on this thread's event loop.
      await execFileAsync(process.execPath, ['-e', 'new (require("google-auth-library").GoogleAuth)().getClient().catch(() => undefined)'], { cwd: REPO_ROOT, env, timeout: 60_000 });
      const seen: string[] = metadata.requests;
      assert.ok(seen.some((r) => r.startsWith('GET /computeMetadata/v1/')), `the listener saw no lookup from the probe: ${JSON.stringify(seen)}`);
    } finally {
      removeDir(home);
    }
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await metadata.close();
  }
});
