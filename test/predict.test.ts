import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { predict, predictUrl } from '../lib/predict';
import { UserError } from '../lib/errors';
import { startServer, RunningServer } from '../lib/serve';
import { exportFixture, inProcessProbabilities, LABELS, ServingFixture } from './serve-fixture';
import { tempDir, removeDir, jpeg, CLI } from './helpers';

const run = promisify(execFile);

let dir: string;
let fx: ServingFixture;
let server: RunningServer;
let jpgPath: string;
let pngPath: string;
let pngBytes: Buffer;

before(async () => {
  dir = tempDir();
  jpgPath = path.join(dir, 'flower one.jpg');
  pngPath = path.join(dir, 'flower2.png');
  fs.writeFileSync(jpgPath, await sharp({ create: { width: 500, height: 375, channels: 3, background: '#d04020' } }).jpeg().toBuffer());
  pngBytes = await sharp({ create: { width: 120, height: 200, channels: 3, background: '#2040d0' } }).png().toBuffer();
  fs.writeFileSync(pngPath, pngBytes);
  fx = await exportFixture(path.join(dir, 'export'), [fs.readFileSync(jpgPath), pngBytes, await jpeg(200, 150, 5)]);
  server = await startServer({ modelDir: fx.exportDir, port: 0, modelName: 'flowers' });
});

after(async () => {
  await server?.close();
  fx?.model.dispose();
  if (dir) removeDir(dir);
});

/** A port nothing listens on: bound by the OS, then released. */
async function deadPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

test('predictUrl: full predict URLs as given; server and model URLs completed', () => {
  assert.equal(predictUrl('http://127.0.0.1:8501/v1/models/flowers:predict'), 'http://127.0.0.1:8501/v1/models/flowers:predict');
  assert.equal(predictUrl('http://127.0.0.1:8501'), 'http://127.0.0.1:8501/v1/models/default:predict');
  assert.equal(predictUrl('http://127.0.0.1:8501/', 'flowers'), 'http://127.0.0.1:8501/v1/models/flowers:predict');
  assert.equal(predictUrl('http://h:1/v1/models/flowers/versions/3'), 'http://h:1/v1/models/flowers/versions/3:predict');
  const vertex = 'https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/endpoints/123:predict';
  assert.equal(predictUrl(vertex), vertex);
  assert.throws(() => predictUrl('127.0.0.1:8501'), UserError);
  assert.throws(() => predictUrl('ftp://h/x:predict'), /http:\/\/ or https:\/\//);
  assert.throws(() => predictUrl('http://h/some/other/path'), /neither a server URL/);
});

test('predict: files and bytes → one prediction each, equal to in-process, with labels and keys', async () => {
  const r = await predict(server.predictUrl, [jpgPath, pngBytes], { keys: ['a', 'b'] });
  assert.equal(r.predictions.length, 2);
  const expected = [await inProcessProbabilities(fx, fs.readFileSync(jpgPath)), await inProcessProbabilities(fx, pngBytes)];
  r.predictions.forEach((p, i) => {
    assert.equal(p.key, ['a', 'b'][i]);
    assert.equal(p.label, LABELS[p.classes]);
    assert.equal(p.classes, expected[i]!.indexOf(Math.max(...expected[i]!)));
    p.probabilities.forEach((v, j) => assert.ok(Math.abs(v - expected[i]![j]!) < 1e-5));
  });
  // A server base URL plus the model name reaches the same model.
  const viaBase = await predict(server.url, [pngBytes], { modelName: 'flowers' });
  assert.deepEqual(viaBase.predictions[0]!.probabilities, r.predictions[1]!.probabilities);
});

test('predict: unreachable server → UserError naming the URL and `imgclass serve`', async () => {
  const url = `http://127.0.0.1:${await deadPort()}/v1/models/flowers:predict`;
  await assert.rejects(predict(url, [pngBytes]), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, new RegExp(`cannot reach ${url.replace(/[.:/]/g, '\\$&')} \\(ECONNREFUSED\\)`));
    assert.match(err.message, /imgclass serve/);
    return true;
  });
});

test('predict: a non-200 answer shows the server\'s error', async () => {
  await assert.rejects(predict(`${server.url}/v1/models/daisies:predict`, [pngBytes]), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.match(err.message, /HTTP 404: model "daisies" is not served here; this server serves "flowers"/);
    return true;
  });
  await assert.rejects(predict(server.predictUrl, [pngBytes, Buffer.from('not an image at all')]), /HTTP 400: instance 1: the bytes are not an image/);
});

test('predict: a missing file is named, and nothing is sent', async () => {
  const missing = path.join(dir, 'no-such.jpg');
  const before = server.stats().requests.received;
  await assert.rejects(predict(server.predictUrl, [pngBytes, missing]), (err: unknown) => {
    assert.ok(err instanceof UserError);
    assert.ok(err.message.includes(missing), err.message);
    return true;
  });
  assert.equal(server.stats().requests.received, before);
  await assert.rejects(predict(server.predictUrl, []), /no images given/);
  await assert.rejects(predict(server.predictUrl, [pngBytes], { keys: ['a', 'b'] }), /2 keys given for 1 images/);
});

test('predict: headers hook reaches the endpoint (the seam for bearer tokens); a non-JSON answer is explained', async () => {
  const seen: (string | undefined)[] = [];
  const fake = http.createServer((req, res) => {
    seen.push(req.headers.authorization);
    req.resume();
    req.on('end', () => res.writeHead(502, { 'content-type': 'text/html' }).end('<html>Bad Gateway</html>'));
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(fake.address() as AddressInfo).port}/v1/projects/p/locations/r/endpoints/e:predict`;
  try {
    await assert.rejects(predict(url, [pngBytes], { headers: async () => ({ Authorization: 'Bearer t0k3n' }) }), /answered HTTP 502 with a body that is not JSON: "<html>Bad Gateway<\/html>"/);
    assert.deepEqual(seen, ['Bearer t0k3n']);
  } finally {
    fake.closeAllConnections();
    await new Promise((r) => fake.close(r));
  }
});

test('imgclass predict: a line per image, --json, and exit 2 with a message when unreachable', async () => {
  const lines = (await run(process.execPath, [CLI, 'predict', '--endpoint', server.predictUrl, '--image', jpgPath, '--image', pngPath])).stdout.trim().split('\n');
  const direct = await predict(server.predictUrl, [jpgPath, pngPath]);
  assert.equal(lines.length, 2);
  lines.forEach((line, i) => {
    const p = direct.predictions[i]!;
    assert.deepEqual(line.split('\t'), [[jpgPath, pngPath][i], p.label, p.probabilities[p.classes]!.toFixed(4)]);
  });

  const json = JSON.parse((await run(process.execPath, [CLI, 'predict', `--endpoint=${server.url}`, '--model_name', 'flowers', '--image', pngPath, '--json'])).stdout);
  assert.deepEqual(json, { predictions: [direct.predictions[1]] });

  const url = `http://127.0.0.1:${await deadPort()}`;
  await assert.rejects(run(process.execPath, [CLI, 'predict', '--endpoint', url, '--image', pngPath]), (err: any) => {
    assert.equal(err.code, 2);
    assert.match(err.stderr, /^imgclass: cannot reach http:\/\/127\.0\.0\.1:\d+\/v1\/models\/default:predict \(ECONNREFUSED\)/);
    return true;
  });
});
