import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as http from 'node:http';
import { spawn } from 'node:child_process';
import sharp from 'sharp';
import { startServer, RunningServer, parseByteSize } from '../lib/serve';
import { exportFixture, inProcessProbabilities, LABELS, ServingFixture } from './serve-fixture';
import { tempDir, removeDir, jpeg, CLI } from './helpers';

const MAX_BATCH = 8;
const MAX_BODY = 300_000;

let dir: string;
let fx: ServingFixture;
let server: RunningServer;
/** Real images: JPEGs of several sizes and colours, a PNG with alpha, a WebP. */
let images: { name: string; bytes: Buffer }[];

async function solid(colour: string, width: number, height: number): Promise<sharp.Sharp> {
  return sharp({ create: { width, height, channels: 3, background: colour } });
}

before(async () => {
  dir = tempDir();
  images = [
    { name: 'red.jpg', bytes: await (await solid('#d04020', 500, 375)).jpeg().toBuffer() },
    { name: 'green.jpg', bytes: await (await solid('#20a040', 200, 300)).jpeg().toBuffer() },
    { name: 'dark.jpg', bytes: await (await solid('#303030', 640, 480)).jpeg().toBuffer() },
    { name: 'noise.jpg', bytes: await jpeg(333, 250, 17) },
    { name: 'noise2.jpg', bytes: await jpeg(120, 90, 3) },
    { name: 'blue.png', bytes: await sharp({ create: { width: 90, height: 70, channels: 4, background: { r: 32, g: 64, b: 208, alpha: 0.5 } } }).png().toBuffer() },
    { name: 'yellow.webp', bytes: await (await solid('#c0c020', 150, 150)).webp().toBuffer() },
  ];
  fx = await exportFixture(path.join(dir, 'export'), images.map((i) => i.bytes));
  server = await startServer({ modelDir: fx.exportDir, port: 0, maxBatch: MAX_BATCH, maxBody: MAX_BODY, batchWaitMs: 20 });
});

after(async () => {
  await server?.close();
  fx?.model.dispose();
  if (dir) removeDir(dir);
});

function body(imgs: Buffer[], extra: (i: number) => object = () => ({})): string {
  return JSON.stringify({ instances: imgs.map((b, i) => ({ image_bytes: { b64: b.toString('base64') }, ...extra(i) })) });
}

async function post(url: string, data: string | Buffer | undefined, contentType: string | null = 'application/json'): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', headers: contentType ? { 'content-type': contentType } : {}, body: data });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) };
}

function assertClose(actual: number[], expected: number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, what);
  actual.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) <= tol, `${what}[${i}]: ${v} vs ${expected[i]}`));
}

test('predict: TF Serving / Cloud ML Engine contract, equal to in-process predictions', async () => {
  const r = await post(server.predictUrl, body(images.map((i) => i.bytes), (i) => (i % 2 === 0 ? { key: images[i]!.name } : {})));
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.predictions.length, images.length);
  const seen = new Set<number>();
  for (const [i, p] of (r.json.predictions as any[]).entries()) {
    const what = images[i]!.name;
    assert.deepEqual(Object.keys(p).sort(), i % 2 === 0 ? ['classes', 'key', 'labels', 'probabilities'] : ['classes', 'labels', 'probabilities'], what);
    if (i % 2 === 0) assert.equal(p.key, what);
    assert.equal(p.probabilities.length, LABELS.length, what);
    const sum = p.probabilities.reduce((a: number, b: number) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5, `${what}: probabilities sum to ${sum}`);
    assert.equal(p.classes, p.probabilities.indexOf(Math.max(...p.probabilities)), `${what}: classes is the argmax`);
    assert.equal(p.labels, LABELS[p.classes], what);
    assertClose(p.probabilities, await inProcessProbabilities(fx, images[i]!.bytes), 1e-5, what);
    seen.add(p.classes);
  }
  assert.ok(seen.size >= 2, 'the fixture model tells these images apart');
});

test('predict: bare {"b64"} instances, numeric keys and the versioned URL', async () => {
  const imgs = images.slice(0, 2).map((i) => i.bytes);
  const data = JSON.stringify({ instances: imgs.map((b, i) => ({ b64: b.toString('base64'), key: i + 100 })) });
  const versioned = `${server.url}/v1/models/${server.modelName}/versions/${server.version}:predict`;
  const a = await post(versioned, data);
  assert.equal(a.status, 200, JSON.stringify(a.json));
  assert.deepEqual(a.json.predictions.map((p: any) => p.key), [100, 101]);
  const b = await post(server.predictUrl, body(imgs));
  assert.deepEqual(a.json.predictions.map((p: any) => p.probabilities), b.json.predictions.map((p: any) => p.probabilities));
  // curl -d sends application/x-www-form-urlencoded; TF Serving takes it, so this server does too.
  const c = await post(server.predictUrl, body(imgs), 'application/x-www-form-urlencoded');
  assert.equal(c.status, 200);
});

test('model status in TF Serving\'s model_version_status shape', async () => {
  const expected = { model_version_status: [{ version: server.version, state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } }] };
  for (const u of [`/v1/models/${server.modelName}`, `/v1/models/${server.modelName}/versions/${server.version}`]) {
    const res = await fetch(server.url + u);
    assert.equal(res.status, 200, u);
    assert.deepEqual(await res.json(), expected);
  }
  assert.equal(server.version, path.basename(fx.versionDir));
  const h = await fetch(`${server.url}/healthz`);
  assert.equal(h.status, 200);
  assert.equal(((await h.json()) as any).status, 'ok');
});

test('bad requests get 400/404/413 with {"error"} naming the problem; the server keeps serving', async () => {
  const good = images[0]!.bytes.toString('base64');
  const notImage = Buffer.from('this is plain text, not an image').toString('base64');
  const inst = (n: number) => Array.from({ length: n }, () => ({ b64: good }));
  const u = server.predictUrl;
  const cases: { what: string; url?: string; data?: string | Buffer; type?: string | null; status: number; error: RegExp }[] = [
    { what: 'malformed JSON', data: '{"instances": [', status: 400, error: /not valid JSON/ },
    { what: 'empty body', data: '', status: 400, error: /body is empty/ },
    { what: 'no body, no content-type', data: undefined, type: null, status: 400, error: /JSON object|instances/ },
    { what: 'body not an object', data: '[1, 2]', status: 400, error: /must be a JSON object/ },
    { what: 'missing instances', data: '{"inputs": []}', status: 400, error: /no "instances"/ },
    { what: 'instances not a list', data: '{"instances": "x"}', status: 400, error: /must be a list/ },
    { what: 'empty instances', data: '{"instances": []}', status: 400, error: /"instances" is empty/ },
    { what: 'instance not an object', data: JSON.stringify({ instances: [{ b64: good }, 5] }), status: 400, error: /instance 1 must be an object/ },
    { what: 'instance without b64', data: JSON.stringify({ instances: [{ b64: good }, { b64: good }, { image: good }] }), status: 400, error: /instance 2 has no image/ },
    { what: 'image_bytes without b64', data: JSON.stringify({ instances: [{ image_bytes: { data: good } }] }), status: 400, error: /instance 0: image_bytes has no "b64"/ },
    { what: 'b64 not a string', data: JSON.stringify({ instances: [{ b64: good }, { b64: 12345 }] }), status: 400, error: /instance 1: b64 must be string/ },
    { what: 'key not a string or number', data: JSON.stringify({ instances: [{ b64: good, key: { a: 1 } }] }), status: 400, error: /instance 0: key must be a string or a number/ },
    { what: 'bad base64', data: JSON.stringify({ instances: [{ b64: good }, { b64: good }, { b64: good }, { b64: 'not*base64!' }] }), status: 400, error: /instance 3: b64 is not valid base64/ },
    { what: 'empty b64', data: JSON.stringify({ instances: [{ b64: '' }] }), status: 400, error: /instance 0: b64 is empty/ },
    { what: 'bytes that are not an image', data: JSON.stringify({ instances: [{ b64: good }, { b64: notImage }] }), status: 400, error: /instance 1: the bytes are not an image/ },
    { what: 'truncated JPEG', data: JSON.stringify({ instances: [{ b64: images[0]!.bytes.subarray(0, 600).toString('base64') }] }), status: 400, error: /instance 0: the bytes are not an image/ },
    { what: 'too many instances', data: JSON.stringify({ instances: inst(MAX_BATCH + 1) }), status: 400, error: new RegExp(`too many instances: at most ${MAX_BATCH}`) },
    { what: 'body over --max_body', data: JSON.stringify({ instances: [{ b64: 'A'.repeat(MAX_BODY) }] }), status: 413, error: new RegExp(`larger than the server's limit of ${MAX_BODY} bytes`) },
    { what: 'wrong content-type', data: JSON.stringify({ instances: inst(1) }), type: 'image/jpeg', status: 400, error: /content-type "image\/jpeg" is not accepted/ },
    { what: 'text/plain', data: JSON.stringify({ instances: inst(1) }), type: 'text/plain', status: 400, error: /content-type "text\/plain" is not accepted/ },
    { what: 'wrong model name', url: `${server.url}/v1/models/nosuchmodel:predict`, data: JSON.stringify({ instances: inst(1) }), status: 404, error: /model "nosuchmodel" is not served here.*serves "default"/ },
    { what: 'wrong version', url: `${server.url}/v1/models/${server.modelName}/versions/1:predict`, data: JSON.stringify({ instances: inst(1) }), status: 404, error: /no version "1"/ },
    { what: 'unsupported verb', url: `${server.url}/v1/models/${server.modelName}:classify`, data: JSON.stringify({ instances: inst(1) }), status: 404, error: /":classify" is not supported/ },
    { what: 'no verb', url: `${server.url}/v1/models/${server.modelName}`, data: JSON.stringify({ instances: inst(1) }), status: 404, error: /no verb given/ },
    { what: 'unknown route', url: `${server.url}/v2/whatever`, data: '{}', status: 404, error: /no route POST \/v2\/whatever/ },
  ];
  for (const c of cases) {
    const r = await post(c.url ?? u, c.data, c.type === undefined ? 'application/json' : c.type);
    assert.equal(r.status, c.status, `${c.what}: ${JSON.stringify(r.json)}`);
    assert.deepEqual(Object.keys(r.json), ['error'], c.what);
    assert.match(r.json.error, c.error, c.what);
  }
  for (const [u2, status] of [['/nope', 404], [`/v1/models/other`, 404], [`/v1/models/${server.modelName}/versions/42`, 404]] as const) {
    const res = await fetch(server.url + u2);
    assert.equal(res.status, status, u2);
    assert.equal(typeof ((await res.json()) as any).error, 'string', u2);
  }
  // Still alive and still right.
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  const ok = await post(u, body([images[1]!.bytes]));
  assert.equal(ok.status, 200);
  assertClose(ok.json.predictions[0].probabilities, await inProcessProbabilities(fx, images[1]!.bytes), 1e-5, 'after errors');
});

test('dynamic batching: concurrent requests share model calls and get the sequential answers', async () => {
  const n = 12;
  const pick = (i: number) => images[i % images.length]!.bytes;
  const sequential: any[] = [];
  for (let i = 0; i < n; i++) sequential.push((await post(server.predictUrl, body([pick(i)]))).json.predictions[0]);

  const before = server.stats().batcher;
  const concurrent = await Promise.all(Array.from({ length: n }, (_, i) => post(server.predictUrl, body([pick(i)]))));
  const after = server.stats().batcher;
  const calls = after.batches - before.batches;
  assert.equal(after.items - before.items, n);
  assert.ok(calls < n, `${n} concurrent requests took ${calls} model calls`);
  assert.ok(after.largestBatch > 1);
  concurrent.forEach((r, i) => {
    assert.equal(r.status, 200);
    const p = r.json.predictions[0];
    assert.equal(p.classes, sequential[i].classes, `request ${i}`);
    assertClose(p.probabilities, sequential[i].probabilities, 1e-5, `request ${i}`);
  });
  // The counters are public on /healthz too (for the benchmark and operators).
  const h = (await (await fetch(`${server.url}/healthz`)).json()) as any;
  assert.ok(h.batcher.batches >= after.batches && h.requests.received >= 2 * n);
});

test('parseByteSize', () => {
  assert.equal(parseByteSize('10MB'), 10 * 1024 * 1024);
  assert.equal(parseByteSize('512kb'), 512 * 1024);
  assert.equal(parseByteSize('1.5 MiB'), 1.5 * 1024 * 1024);
  assert.equal(parseByteSize('1000'), 1000);
  assert.throws(() => parseByteSize('ten'), /not a size/);
});

/** The CLI server as a child process; resolves with its predict URL once it is listening. */
function spawnServer(exportDir: string): { child: ReturnType<typeof spawn>; ready: Promise<string>; exited: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn(process.execPath, [CLI, 'serve', '--model_dir', exportDir, '--port', '0', '--max_batch', '16'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      stdout += d;
      const m = /predict: POST (\S+)/.exec(stdout);
      if (m) resolve(m[1]!);
    });
    void exited.then(({ code }) => reject(new Error(`server exited ${code} before listening: ${stderr}`)));
  });
  return { child, ready, exited };
}

test('SIGTERM drains: every in-flight request is answered, then the process exits 0 and refuses connections', async () => {
  const { child, ready, exited } = spawnServer(fx.exportDir);
  const url = await ready;
  const base = new URL(url).origin;
  const n = 20;
  // Heavy enough (16 full-size JPEGs each) that the requests are still being worked on at SIGTERM.
  const data = body(Array.from({ length: 16 }, (_, i) => images[i % 3]!.bytes));
  let answered = 0;
  const responses = Array.from({ length: n }, () =>
    post(url, data).then((r) => {
      answered++;
      return r;
    }),
  );
  // SIGTERM once the server has all 20 requests, not before (a request still in the client is not "lost").
  for (;;) {
    const h = (await (await fetch(`${base}/healthz`)).json()) as any;
    if (h.requests.received >= n) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  child.kill('SIGTERM');
  const answeredAtSignal = answered;
  const results = await Promise.all(responses);
  assert.ok(answeredAtSignal < n, 'the signal must arrive while requests are in flight');
  for (const r of results) {
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.predictions.length, 16);
  }
  const { code, stderr } = await exited;
  assert.equal(code, 0, stderr);
  assert.match(stderr, /SIGTERM: finishing requests in flight/);
  assert.match(stderr, new RegExp(`served ${n} request`));
  await assert.rejects(fetch(`${base}/healthz`), (err: any) => err?.cause?.code === 'ECONNREFUSED');
});

test('close() waits for the work of requests whose clients hung up before it frees the model', async () => {
  // A load generator ends its run by dropping its sockets mid-request. The socket is gone at once, but
  // the handler still decodes and classifies; the model must not be freed under it.
  const s = await startServer({ modelDir: fx.versionDir, port: 0, batchWaitMs: 20 });
  const logged: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: any[]) => {
    logged.push(String(chunk));
    return (write as any).call(process.stderr, chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    const n = 16;
    const data = body(Array.from({ length: n }, (_, i) => images[i % 3]!.bytes));
    const req = http.request(s.predictUrl, { method: 'POST', headers: { 'content-type': 'application/json' } });
    req.on('error', () => {});
    req.end(data);
    while (s.stats().requests.received < 1) await new Promise((r) => setTimeout(r, 1));
    req.destroy();
    const itemsBefore = s.stats().batcher.items;
    await s.close();
    assert.equal(s.stats().batcher.items - itemsBefore, n, 'close() returned before the abandoned request\'s images went through the model');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(logged.filter((l) => /imgclass serve|disposed/.test(l)), []);
  } finally {
    process.stderr.write = write;
    await s.close();
  }
});

test('close() drains and then refuses new connections', async () => {
  const s = await startServer({ modelDir: fx.versionDir, port: 0, modelName: 'flowers' });
  assert.match(s.predictUrl, /\/v1\/models\/flowers:predict$/);
  const pending = post(s.predictUrl, body([images[0]!.bytes, images[1]!.bytes]));
  while (s.stats().requests.received < 1) await new Promise((r) => setTimeout(r, 1));
  await s.close();
  const r = await pending;
  assert.equal(r.status, 200);
  await assert.rejects(fetch(`${s.url}/healthz`), (err: any) => err?.cause?.code === 'ECONNREFUSED');
  // Raw TCP as well: the port no longer accepts.
  await assert.rejects(
    new Promise((resolve, reject) => http.get(`${s.url}/healthz`, resolve).on('error', reject)),
    (err: any) => err?.code === 'ECONNREFUSED',
  );
});
