/**
 * Transfer learning (issue 12): a tiny ResNet trained here on data-samples/ is the pretrained source,
 * loaded from disk and over HTTP on 127.0.0.1 (cached, the cached copy checked); every bad source
 * fails with its name and what to do; head-only fine-tuning leaves the backbone bit for bit as loaded;
 * the fine-tuned export is scored by the prediction server as the trainer scored it, with the
 * source's normalisation and channel order. A hand-written TensorFlow graph model (format of TF Hub's
 * tfjs models) serves as a frozen feature extractor, exported with its graph and served.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { train } from '../lib/train';
import { planInitFrom, type InitFromOptions } from '../lib/train/init-from';
import { resolveSource } from '../lib/transfer/source';
import { buildTransferModel } from '../lib/transfer/model';
import * as tf from '@tensorflow/tfjs';
import { loadExport, exportModel } from '../lib/export';
import { startServer } from '../lib/serve';
import { predict } from '../lib/predict';
import { chooseBackend } from '../lib/engine/backend';
import { UserError } from '../lib/errors';
import { createOptimizer } from '../lib/train/recipe';
import { normalizeInto } from '../lib/train/preprocessing';
import { notebookSettings } from '../lib/steps/settings';
import { trainOptions, trainCommand } from '../lib/steps/trainer';
import { tempDir, removeDir, REPO_ROOT, CLI } from './helpers';
import { preprocessSamples } from './sample-shards';
import { useFakeGcs } from './fake-gcs';

const SAMPLES = path.join(REPO_ROOT, 'data-samples');
const LABELS = fs.readFileSync(path.join(SAMPLES, 'labels.txt'), 'utf8').trim().split('\n');
let work: string;
let dataDir: string;
/** The source: an imgclass export version folder of a ResNet-18 at 16 px, a quarter of the width (0.7 M weights). */
let sourceVersion: string;
let sourceExport: string;

before(async () => {
  work = tempDir('imgclass-transfer-');
  dataDir = path.join(work, 'data');
  await preprocessSamples(dataDir);
  sourceExport = path.join(work, 'source-export');
  const r = await train({ dataDir, modelDir: path.join(work, 'source-model'), exportDir: sourceExport, imageSize: 16, widthMultiplier: 0.25, trainBatchSize: 8, trainSteps: 3, workers: 1 });
  sourceVersion = r.exportPath!;
});

after(() => removeDir(work));

/** A static file server over `root` on 127.0.0.1 that counts the requests for each path. */
async function serveFolder(root: string): Promise<{ url: string; hits: Map<string, number>; close(): Promise<void> }> {
  const hits = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    hits.set(p, (hits.get(p) ?? 0) + 1);
    const file = path.join(root, p);
    if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    const data = fs.readFileSync(file);
    res.writeHead(200, { 'content-length': data.length }).end(data);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, hits, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function plan(o: Partial<InitFromOptions> & { initFrom: string }, imageSize?: number) {
  return planInitFrom({ cacheDir: path.join(work, 'cache'), ...o }, { numClasses: LABELS.length, labels: LABELS, imageSize, seed: 1, backend: 'wasm' });
}

async function rejectsWith(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof UserError, `a UserError, got ${String(err)}`);
    assert.match((err as Error).message, re);
    return true;
  });
}

test('loads a Layers model from disk and over HTTP: a progress bar, one download, a cached copy checked and fetched again when damaged', async () => {
  await chooseBackend('wasm');
  const local = await resolveSource(sourceExport);
  assert.equal(local.dir, sourceVersion, 'an export root resolves to its newest version');
  assert.equal(local.format, 'layers');
  assert.ok(local.isExport);
  assert.deepEqual(local.labels, LABELS);

  const server = await serveFolder(sourceVersion);
  const cacheDir = path.join(work, 'http-cache');
  try {
    const progress: number[] = [];
    const url = `${server.url}/model.json`;
    const src = await resolveSource(url, { cacheDir, onProgress: (p) => progress.push(p.bytes / p.totalBytes) });
    assert.notEqual(src.dir, sourceVersion);
    assert.equal(src.format, 'layers');
    assert.deepEqual(src.labels, LABELS, 'labels.txt came with it');
    assert.ok(progress.length >= 2 && progress[0] === 0 && progress[progress.length - 1] === 1, `progress ${progress}`);
    const shard = fs.readdirSync(sourceVersion).find((f) => f.endsWith('.bin'))!;
    assert.deepEqual(fs.readFileSync(path.join(src.dir, shard)), fs.readFileSync(path.join(sourceVersion, shard)));

    // Used from the cache: no second download.
    const again = await resolveSource(url, { cacheDir });
    assert.equal(again.dir, src.dir);
    assert.equal(server.hits.get(`/${shard}`), 1);

    // A damaged copy is noticed and replaced.
    fs.truncateSync(path.join(src.dir, shard), 100);
    const notices: string[] = [];
    const fixed = await resolveSource(url, { cacheDir, onNotice: (m) => notices.push(m) });
    assert.match(notices.join('\n'), new RegExp(`cached copy of ${url.replace(/[.]/g, '\\.')} .* not usable \\(${shard}`));
    assert.equal(server.hits.get(`/${shard}`), 2);
    assert.deepEqual(fs.readFileSync(path.join(fixed.dir, shard)), fs.readFileSync(path.join(sourceVersion, shard)));

    // The downloaded model builds with a new head for other classes, the backbone's weights as loaded.
    const built = await buildTransferModel({ source: url, dir: fixed.dir, format: 'layers', keepHead: false, trainable: 'head', numClasses: 3, imageSize: 16, seed: 1 });
    const original = await loadExport(sourceVersion);
    assert.equal(built.cutAt, 'head/pool');
    assert.deepEqual(built.model.outputs[0]!.shape, [null, 3]);
    const conv = built.model.getLayer('stage4/block1/conv2').getWeights()[0]!.dataSync();
    assert.deepEqual(conv, original.model.getLayer('stage4/block1/conv2').getWeights()[0]!.dataSync());
    assert.equal(built.model.trainableWeights.length, 2, 'frozen backbone: only the head kernel and bias train');
    built.model.dispose();
    original.model.dispose();
  } finally {
    await server.close();
  }
});

test('bad sources fail with the source named and what to do', async () => {
  await chooseBackend('wasm');
  // Unreachable: a port nothing listens on any more.
  const gone = await serveFolder(sourceVersion);
  await gone.close();
  await rejectsWith(plan({ initFrom: `${gone.url}/model.json` }), new RegExp(`cannot reach ${gone.url.replace(/[.]/g, '\\.')}/model\\.json \\(ECONNREFUSED\\).*--init_from`));

  const server = await serveFolder(work);
  try {
    await rejectsWith(plan({ initFrom: `${server.url}/nothing/model.json` }), /answered HTTP 404.*check the address/);
  } finally {
    await server.close();
  }
  await rejectsWith(plan({ initFrom: path.join(work, 'no-such-folder') }), /no-such-folder: no such file or folder; give an imgclass export folder/);

  // Not a TensorFlow.js model at all, and a graph model asked to fine-tune.
  const notModel = path.join(work, 'not-a-model');
  fs.mkdirSync(notModel);
  fs.writeFileSync(path.join(notModel, 'model.json'), JSON.stringify({ weightsManifest: [] }));
  await rejectsWith(plan({ initFrom: notModel }), /not-a-model.*has no modelTopology: it is not a TensorFlow\.js model/);
  const graphDir = writeGraphModel(path.join(work, 'graph-bad'));
  await rejectsWith(plan({ initFrom: graphDir, trainable: 'backbone' }), /graph-bad is a graph model.*inference only.*--trainable head/);

  // Shapes that do not fit: another image size, and a model that does not take images.
  await rejectsWith(plan({ initFrom: sourceExport }, 32), /--image_size is 32 but --init_from .*source-export takes 16x16 images: omit --image_size/);
  const vectorDir = path.join(work, 'vector-model');
  await writeLayersModel(vectorDir, { inputShape: [10] });
  await rejectsWith(plan({ initFrom: vectorDir }), /vector-model takes input \[null,10\], not RGB images/);

  // A layer to cut at that does not exist.
  await rejectsWith(plan({ initFrom: sourceExport, initCutAt: 'stage9/nope' }), /source-export has no layer named "stage9\/nope" to cut at \(--init_cut_at\); its layers end with: .*head\/dense/);
});

test('head-only fine-tuning keeps the backbone bit for bit; the export carries the source\'s normalisation and the server scores it as the trainer did', async () => {
  // The source, told (as a downloaded model's preprocessing.json would) to take BGR in [-1, 1].
  const bgr = path.join(work, 'source-bgr');
  fs.cpSync(sourceVersion, bgr, { recursive: true });
  const prep = JSON.parse(fs.readFileSync(path.join(bgr, 'preprocessing.json'), 'utf8'));
  fs.writeFileSync(path.join(bgr, 'preprocessing.json'), JSON.stringify({ ...prep, meanRgb: [127.5, 127.5, 127.5], stddevRgb: [127.5, 127.5, 127.5], channelOrder: 'bgr' }));
  const exportDir = path.join(work, 'tuned-export');
  const r = await train({
    dataDir, modelDir: path.join(work, 'tuned-model'), exportDir, initFrom: bgr, initCutAt: 'head/pool', trainable: 'head',
    trainBatchSize: 8, trainSteps: 4, workers: 2, baseLearningRate: 2,
  });
  assert.ok(r.exportPath && r.lastEval);
  await chooseBackend('wasm');
  const source = await loadExport(bgr);
  const tuned = await loadExport(r.exportPath);
  assert.equal(tuned.preprocessing.channelOrder, 'bgr');
  assert.deepEqual(tuned.preprocessing.meanRgb, [127.5, 127.5, 127.5]);
  assert.equal(tuned.meta.init_from, bgr);
  let compared = 0;
  for (const layer of source.model.layers) {
    if (layer.name === 'head/dense') {
      assert.notDeepEqual(tuned.model.getLayer(layer.name).getWeights()[0]!.dataSync(), layer.getWeights()[0]!.dataSync(), 'a new head');
      continue;
    }
    const a = layer.getWeights();
    const b = tuned.model.getLayer(layer.name).getWeights();
    assert.equal(b.length, a.length, layer.name);
    a.forEach((w, i) => {
      assert.deepEqual(Buffer.from(b[i]!.dataSync().buffer), Buffer.from(w.dataSync().buffer), `${layer.name} weight ${i}`);
      compared++;
    });
  }
  assert.ok(compared > 100, `compared ${compared} backbone weights (conv kernels, batch-norm gamma/beta/mean/variance)`);
  source.model.dispose();
  tuned.model.dispose();

  await scoredByServerAsByTrainer(exportDir, r.lastEval);
});

async function scoredByServerAsByTrainer(exportDir: string, lastEval: { top1: number; loss: number; count: number }): Promise<void> {
  const server = await startServer({ modelDir: exportDir, port: 0, backend: 'wasm' });
  try {
    const rows = fs.readFileSync(path.join(SAMPLES, 'eval_set.csv'), 'utf8').trim().split('\n').map((l) => l.split(','));
    const res = await predict(server.predictUrl, rows.map(([p]) => path.join(SAMPLES, p!)));
    let correct = 0;
    let lossSum = 0;
    res.predictions.forEach((p, i) => {
      const label = LABELS.indexOf(rows[i]![1]!);
      if (p.classes === label) correct++;
      lossSum += -Math.log(p.probabilities[label]!);
    });
    assert.equal(lastEval.count, rows.length);
    assert.equal(correct / rows.length, lastEval.top1, 'the server\'s top-1 is the trainer\'s');
    assert.ok(Math.abs(lossSum / rows.length - lastEval.loss) < 1e-3 * Math.max(1, lastEval.loss), `loss ${lossSum / rows.length} vs ${lastEval.loss}`);
  } finally {
    await server.close();
  }
}

test('a graph model is a frozen feature extractor: trained head, exported with its graph, served as trained', async () => {
  const graphDir = writeGraphModel(path.join(work, 'graph-model'));
  const exportDir = path.join(work, 'graph-export');
  const r = await train({ dataDir, modelDir: path.join(work, 'graph-run'), exportDir, initFrom: graphDir, trainBatchSize: 8, trainSteps: 4, workers: 1, baseLearningRate: 2 });
  assert.ok(r.exportPath && r.lastEval);
  assert.ok(fs.existsSync(path.join(r.exportPath, 'backbone', 'model.json')), 'the graph travels with the export');
  const prep = JSON.parse(fs.readFileSync(path.join(r.exportPath, 'preprocessing.json'), 'utf8'));
  assert.deepEqual([prep.meanRgb, prep.stddevRgb, prep.imageSize], [[0, 0, 0], [255, 255, 255], 16], 'TF Hub convention: [0, 1]');
  await scoredByServerAsByTrainer(exportDir, r.lastEval);
});

/**
 * A TensorFlow graph in tfjs's graph-model format, as the converter writes TF Hub models: input
 * [-1, 16, 16, 3] → 3x3 conv (8 filters, stride 2) → ReLU → spatial mean → features [-1, 8].
 */
function writeGraphModel(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const f32 = { type: 'DT_FLOAT' };
  const dims = (...d: number[]) => ({ dim: d.map((size) => ({ size: String(size) })) });
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const filter = Float32Array.from({ length: 3 * 3 * 3 * 8 }, (_, i) => Math.sin(i * 1.7) * 0.3);
  const axes = Int32Array.from([1, 2]);
  const modelJson = {
    format: 'graph-model',
    generatedBy: 'imgclass test',
    convertedBy: 'hand-written (test/transfer.test.ts)',
    modelTopology: {
      node: [
        { name: 'images', op: 'Placeholder', attr: { dtype: f32, shape: { shape: dims(-1, 16, 16, 3) } } },
        { name: 'filter', op: 'Const', attr: { dtype: f32, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: dims(3, 3, 3, 8) } } } },
        { name: 'axes', op: 'Const', attr: { dtype: { type: 'DT_INT32' }, value: { tensor: { dtype: 'DT_INT32', tensorShape: dims(2) } } } },
        {
          name: 'conv', op: 'Conv2D', input: ['images', 'filter'],
          attr: { T: f32, strides: { list: { i: ['1', '2', '2', '1'] } }, padding: { s: b64('SAME') }, data_format: { s: b64('NHWC') }, dilations: { list: { i: ['1', '1', '1', '1'] } } },
        },
        { name: 'relu', op: 'Relu', input: ['conv'], attr: { T: f32 } },
        { name: 'features', op: 'Mean', input: ['relu', 'axes'], attr: { T: f32, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } } },
      ],
      versions: { producer: 1 },
    },
    weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: [{ name: 'filter', shape: [3, 3, 3, 8], dtype: 'float32' }, { name: 'axes', shape: [2], dtype: 'int32' }] }],
  };
  fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(modelJson));
  fs.writeFileSync(path.join(dir, 'group1-shard1of1.bin'), Buffer.concat([Buffer.from(filter.buffer), Buffer.from(axes.buffer)]));
  return dir;
}

/** A small tfjs Layers model saved as model.json + weights (here: one that does not take images). */
async function writeLayersModel(dir: string, o: { inputShape: number[] }): Promise<void> {
  const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: o.inputShape, units: 4, activation: 'relu' }), tf.layers.dense({ units: 2 })] });
  const v = await exportModel(m, dir, { labels: ['a', 'b'], preprocessing: {} });
  m.dispose();
  fs.rmSync(path.join(v, 'labels.txt'));
}

test('a smaller backbone learning rate is the same update as scaling that variable\'s gradient and decay (momentum SGD)', async () => {
  await chooseBackend('wasm');
  const run = (lr: number, scale?: number): Float32Array => {
    const opt = createOptimizer();
    opt.setLearningRate(lr);
    const v = tf.variable(tf.tensor1d([0.5, -1, 2, 0.25]), true, 'w');
    const grads = [Float32Array.from([0.1, -0.3, 0.2, 1]), Float32Array.from([-0.5, 0.4, 0, 0.1]), Float32Array.from([0.3, 0.3, -0.2, -1])];
    for (const g of grads) opt.applyFlat([{ variable: v, offset: 0 }], g, 1e-2, new Set(['w']), new Set(), scale === undefined ? undefined : new Map([['w', scale]]));
    const out = v.dataSync() as Float32Array;
    v.dispose();
    opt.dispose();
    return Float32Array.from(out);
  };
  const scaled = run(0.4, 0.25);
  const direct = run(0.1);
  scaled.forEach((x, i) => assert.ok(Math.abs(x - direct[i]!) < 1e-6, `${x} vs ${direct[i]}`));
  assert.ok(Math.abs(run(0.4)[0]! - scaled[0]!) > 1e-3, 'and the scale changes the update');
});

test('imgclass train --backend gcp --init_from: refused, pointing at --init_checkpoint', () => {
  const r = spawnSync(process.execPath, [CLI, 'train', '--backend', 'gcp', '--project', 'p', '--data_dir', 'gs://b/d', '--model_dir', 'gs://b/m', '--train_steps', '1', '--init_from', sourceExport], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--init_from is for the local backend.*--init_checkpoint/);
});

test('notebook 06: init_from and trainable reach train() and the command shown; the source decides the image size; refused on gcp', () => {
  const p = { resnet_depth: 18, image_size: 32, train_batch_size: 16, train_steps: 80, steps_per_eval: 40, base_learning_rate: 2, init_from: sourceExport, trainable: 'head' };
  const s = notebookSettings({ backend: 'local', work_dir: path.join(work, 'nb') });
  const o = trainOptions(s, p);
  assert.equal(o.initFrom, sourceExport);
  assert.equal(o.trainable, 'head');
  assert.equal(o.imageSize, undefined);
  assert.match(trainCommand(s, p), new RegExp(`--init_from=${sourceExport.replace(/[.]/g, '\\.')} \\\\\n  --trainable=head`));
  assert.equal(trainOptions(s, { ...p, init_from: '', trainable: '' }).initFrom, undefined, '"" trains from scratch');
  const gcp = notebookSettings({ backend: 'gcp', work_dir: 'gs://b/w', project: 'p', bucket: 'b' });
  assert.throws(() => trainOptions(gcp, p), /--init_from is for the local backend/);
});

test('a gs:// export root: its newest version copied into the cache once, then used from there', async () => {
  const gcs = await useFakeGcs('bucket');
  try {
    for (const f of fs.readdirSync(sourceVersion)) gcs.put('bucket', `exports/1700000000/${f}`, fs.readFileSync(path.join(sourceVersion, f)));
    gcs.put('bucket', 'exports/1800000000/labels.txt', 'half-written\n'); // no model.json: not a version yet
    const cacheDir = path.join(work, 'gs-cache');
    const src = await resolveSource('gs://bucket/exports', { cacheDir });
    assert.ok(src.dir.startsWith(cacheDir) && src.isExport);
    assert.deepEqual(src.labels, LABELS);
    const reads = () => gcs.requests.filter((r) => r.op === 'media' && String(r.object).endsWith('.bin')).length;
    const before = reads();
    assert.ok(before >= 1);
    assert.equal((await resolveSource('gs://bucket/exports/1700000000', { cacheDir })).dir, src.dir);
    assert.equal(reads(), before, 'the cached copy is used');
  } finally {
    await gcs.done();
  }
});

test('channel order bgr: the model\'s first channel is blue, and the mean/std are in the model\'s order', () => {
  const px = Uint8Array.from([10, 20, 30, 200, 100, 0]);
  const s = { imageSize: 1, cropPadding: 0, meanRgb: [1, 2, 3] as const, stddevRgb: [2, 4, 8] as const, resize: 'bicubic' as const };
  assert.deepEqual(Array.from(normalizeInto(px, new Float32Array(6), { ...s, channelOrder: 'bgr' })), [(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 8, (0 - 1) / 2, (100 - 2) / 4, (200 - 3) / 8]);
  assert.deepEqual(Array.from(normalizeInto(px, new Float32Array(6), s)), [(10 - 1) / 2, (20 - 2) / 4, (30 - 3) / 8, (200 - 1) / 2, (100 - 2) / 4, (0 - 3) / 8]);
});
