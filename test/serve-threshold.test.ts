/**
 * `imgclass serve --confidence_threshold`: a prediction below the threshold keeps the TF Serving
 * contract (classes, probabilities) and says "labels": null, so a caller can tell "don't know" from
 * a guess; imgclass predict shows it as unsure.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startServer, RunningServer } from '../lib/serve';
import { exportFixture, inProcessProbabilities, LABELS, ServingFixture } from './serve-fixture';
import { tempDir, removeDir, jpeg, CLI } from './helpers';

const dir = tempDir('imgclass-threshold-');
let fx: ServingFixture;
let server: RunningServer;
let images: Buffer[];
let top: number[];
let threshold: number;

before(async () => {
  images = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => jpeg(50 + i * 7, 40, i * 29)));
  fx = await exportFixture(path.join(dir, 'export'), images);
  top = await Promise.all(images.map(async (img) => Math.max(...(await inProcessProbabilities(fx, img)))));
  // Between the images' top probabilities, so some are answered and some are not.
  const sorted = [...top].sort((a, b) => a - b);
  threshold = (sorted[2]! + sorted[3]!) / 2;
  server = await startServer({ modelDir: fx.exportDir, port: 0, confidenceThreshold: threshold });
});

after(async () => {
  await server?.close();
  fx?.model.dispose();
  removeDir(dir);
});

test('serve --confidence_threshold: below it "labels" is null, classes and probabilities as always', async () => {
  const res = await fetch(server.predictUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ instances: images.map((b) => ({ image_bytes: { b64: b.toString('base64') } })) }),
  });
  assert.equal(res.status, 200);
  const json = (await res.json()) as { predictions: { classes: number; probabilities: number[]; labels: string | null }[] };
  assert.equal(json.predictions.length, images.length);
  json.predictions.forEach((p, i) => {
    assert.deepEqual(Object.keys(p).sort(), ['classes', 'labels', 'probabilities']);
    assert.equal(p.probabilities.length, LABELS.length);
    assert.equal(p.classes, p.probabilities.indexOf(Math.max(...p.probabilities)));
    assert.equal(p.labels, top[i]! >= threshold ? LABELS[p.classes] : null, `image ${i}: top ${top[i]} vs threshold ${threshold}`);
  });
  assert.equal(json.predictions.filter((p) => p.labels === null).length, 3);

  // imgclass predict says which answers are unsure.
  const files = images.map((b, i) => {
    const f = path.join(dir, `${i}.jpg`);
    fs.writeFileSync(f, b);
    return f;
  });
  // Not spawnSync: the server runs in this process and must keep answering.
  const r = await promisify(execFile)(process.execPath, [CLI, 'predict', '--endpoint', server.predictUrl, ...files.flatMap((f) => ['--image', f])], { encoding: 'utf8' });
  const lines = r.stdout.trim().split('\n');
  lines.forEach((l, i) => assert.equal(/\tunsure \(best guess [^)]+\)\t/.test(l), top[i]! < threshold, l));
});

test('serve --confidence_threshold outside 0..1 is refused', async () => {
  await assert.rejects(startServer({ modelDir: fx.exportDir, port: 0, confidenceThreshold: 1.5 }), /--confidence_threshold must be between 0 and 1, got 1\.5/);
});
