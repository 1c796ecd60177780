import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-cpu';
import { exportModel, loadExport } from '../lib/export';
import { UserError } from '../lib/errors';
import * as storage from '../lib/storage';
import { tempDir, removeDir } from './helpers';
import { useFakeGcs, uploadOrder } from './fake-gcs';

before(async () => {
  await tf.setBackend('cpu');
});

const LABELS = ['cat', 'dog', 'horse'];
const PREPROCESSING = { image_size: 8, mean_rgb: [123.68, 116.78, 103.94], stddev_rgb: [58.4, 57.12, 57.38], resize: 'bilinear' };

function smallModel(units = 3, seed = 1): tfl.LayersModel {
  const model = tfl.sequential({
    layers: [
      tfl.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, useBias: false, name: 'conv1' }),
      tfl.layers.batchNormalization({ name: 'bn_conv1' }),
      tfl.layers.activation({ activation: 'relu', name: 'relu1' }),
      tfl.layers.globalAveragePooling2d({ name: 'pool' }),
      tfl.layers.dense({ units, activation: 'softmax', name: 'fc' }),
    ],
  });
  // Non-default values everywhere, batch-norm moving statistics included, so a lost weight shows.
  model.setWeights(model.weights.map((w, i) => tf.randomUniform(w.shape as number[], 0.5, 1.5, 'float32', seed * 100 + i)));
  return model;
}

function predict(model: tfl.LayersModel): Float32Array {
  return tf.tidy(() => (model.predict(tf.randomUniform([3, 8, 8, 3], 0, 255, 'float32', 5)) as tf.Tensor).dataSync() as Float32Array);
}

test('an export loads back as the same model, with labels, preprocessing and meta', async () => {
  const root = tempDir();
  try {
    const model = smallModel();
    const dir = await exportModel(model, path.join(root, 'export'), { labels: LABELS, preprocessing: PREPROCESSING, meta: { step: 1200, top1: 0.75 } });
    assert.match(path.basename(dir), /^\d{10}$/);
    assert.ok(Math.abs(Number(path.basename(dir)) - Date.now() / 1000) < 60);
    assert.deepEqual(fs.readdirSync(path.join(root, 'export')), [path.basename(dir)], 'no temporary folder left');
    assert.deepEqual(fs.readdirSync(dir).sort(), ['group1-shard1of1.bin', 'labels.txt', 'meta.json', 'model.json', 'preprocessing.json']);
    assert.equal(fs.readFileSync(path.join(dir, 'labels.txt'), 'utf8'), 'cat\ndog\nhorse\n');

    // Standard tfjs Layers format.
    const modelJson = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    assert.equal(modelJson.format, 'layers-model');
    assert.equal(modelJson.modelTopology.class_name, 'Sequential');
    assert.match(modelJson.generatedBy, /TensorFlow\.js tfjs-layers/);
    const specs = modelJson.weightsManifest.flatMap((g: { weights: { name: string }[] }) => g.weights.map((w) => w.name));
    assert.deepEqual(specs.sort(), model.weights.map((w) => w.originalName).sort());
    let bytes = 0;
    for (const group of modelJson.weightsManifest) for (const p of group.paths) bytes += fs.statSync(path.join(dir, p)).size;
    const params = model.weights.reduce((n, w) => n + w.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0);
    assert.equal(params, 3 * 3 * 3 * 4 + 4 * 4 + 4 * 3 + 3, 'conv, batch norm (gamma, beta, moving mean, moving variance), dense');
    assert.equal(bytes, params * 4);

    const loaded = await loadExport(dir);
    assert.deepEqual(predict(loaded.model), predict(model));
    assert.deepEqual(loaded.labels, LABELS);
    assert.deepEqual(loaded.preprocessing, PREPROCESSING);
    assert.equal(loaded.meta.step, 1200);
    assert.equal(loaded.meta.top1, 0.75);
    assert.equal(loaded.meta.num_classes, 3);
    assert.deepEqual(loaded.meta.input_shape, [null, 8, 8, 3]);
    assert.equal(loaded.version, path.basename(dir));
    assert.equal(loaded.path, dir);
  } finally {
    removeDir(root);
  }
});

test('weights split into several shards load back', async () => {
  const root = tempDir();
  try {
    const model = smallModel();
    const dir = await exportModel(model, root, { labels: LABELS, preprocessing: PREPROCESSING, shardBytes: 100 });
    const shards = fs.readdirSync(dir).filter((n) => n.endsWith('.bin')).sort();
    assert.ok(shards.length > 3);
    assert.ok(shards.every((n) => /^group1-shard\d+of\d+\.bin$/.test(n)));
    const loaded = await loadExport(dir);
    assert.deepEqual(predict(loaded.model), predict(model));
    // A truncated shard is named as an incomplete export.
    fs.truncateSync(path.join(dir, shards[0]!), 50);
    await assert.rejects(loadExport(dir), (err: unknown) => err instanceof UserError && /incomplete or damaged/.test(err.message));
  } finally {
    removeDir(root);
  }
});

test('the export root resolves to the newest complete version; a taken second moves to the next', async () => {
  const root = tempDir();
  try {
    const first = await exportModel(smallModel(3, 1), root, { labels: LABELS, preprocessing: PREPROCESSING });
    const secondModel = smallModel(3, 2);
    const second = await exportModel(secondModel, root, { labels: LABELS, preprocessing: PREPROCESSING });
    assert.ok(Number(path.basename(second)) > Number(path.basename(first)));
    // Same second again, with the next one also taken: lands after both.
    const now = Math.floor(Date.now() / 1000);
    fs.mkdirSync(path.join(root, String(now + 5)));
    fs.mkdirSync(path.join(root, String(now + 6)));
    fs.writeFileSync(path.join(root, String(now + 6), 'x'), '');
    // Incomplete or hidden folders never count as versions.
    fs.mkdirSync(path.join(root, '9999999999'));
    fs.writeFileSync(path.join(root, '9999999999', 'labels.txt'), 'a\n');
    fs.mkdirSync(path.join(root, '.tmp-export-1-abcd'));
    fs.writeFileSync(path.join(root, '.tmp-export-1-abcd', 'model.json'), '{}');
    fs.writeFileSync(path.join(root, '9999999998'), 'a file, not a folder');

    const loaded = await loadExport(root);
    assert.equal(loaded.path, second);
    assert.deepEqual(predict(loaded.model), predict(secondModel));
    assert.equal((await loadExport(first)).version, path.basename(first));

    const third = await exportModel(secondModel, root, { labels: LABELS, preprocessing: PREPROCESSING });
    assert.ok(Number(path.basename(third)) > Number(path.basename(second)));
    assert.equal(fs.readdirSync(path.join(root, String(now + 6))).length, 1, 'an existing folder is never replaced');
  } finally {
    removeDir(root);
  }
});

test('clear errors: no export, missing labels.txt, labels that do not match the outputs', async () => {
  const root = tempDir();
  try {
    const missing = path.join(root, 'nothing-here');
    await assert.rejects(loadExport(missing), (err: unknown) => err instanceof UserError && err.message.includes(`no exported model found in ${missing}`));
    await assert.rejects(loadExport(root), (err: unknown) => err instanceof UserError && err.message.includes(`no exported model found in ${root}`));

    await assert.rejects(
      exportModel(smallModel(), root, { labels: ['cat', 'dog'], preprocessing: PREPROCESSING }),
      (err: unknown) => err instanceof UserError && /2 labels given but the model has 3 output units/.test(err.message),
    );
    await assert.rejects(exportModel(smallModel(), root, { labels: ['cat', 'dog\nwolf', 'x'], preprocessing: PREPROCESSING }), UserError);

    const dir = await exportModel(smallModel(), root, { labels: LABELS, preprocessing: PREPROCESSING });
    const labels = path.join(dir, 'labels.txt');
    fs.writeFileSync(labels, 'cat\ndog\n');
    await assert.rejects(
      loadExport(root),
      (err: unknown) => err instanceof UserError && err.message.includes(`${labels} has 2 labels but the model has 3 output units`),
    );
    fs.rmSync(labels);
    await assert.rejects(loadExport(root), (err: unknown) => err instanceof UserError && err.message.includes(`${labels} is missing`));
    fs.writeFileSync(labels, 'a\nb\nc\n');
    fs.writeFileSync(path.join(dir, 'model.json'), '{"modelTopology": ');
    await assert.rejects(loadExport(dir), (err: unknown) => err instanceof UserError && /model\.json is not valid JSON/.test(err.message));
  } finally {
    removeDir(root);
  }
});

test('gs:// export root: written with model.json last, loaded through storage', async () => {
  const gcs = await useFakeGcs('bucket');
  try {
    const model = smallModel();
    const dir = await exportModel(model, 'gs://bucket/exports', { labels: LABELS, preprocessing: PREPROCESSING });
    assert.match(dir, /^gs:\/\/bucket\/exports\/\d{10}$/);
    const keys = uploadOrder(gcs);
    assert.equal(keys[keys.length - 1], `${dir.slice('gs://bucket/'.length)}/model.json`, 'model.json is the last object written');
    // A half-uploaded newer version (no model.json yet) is not picked.
    gcs.put('bucket', 'exports/9999999999/labels.txt', 'a\n');
    const loaded = await loadExport('gs://bucket/exports');
    assert.equal(loaded.path, dir);
    assert.deepEqual(predict(loaded.model), predict(model));
    assert.deepEqual(loaded.labels, LABELS);
  } finally {
    await gcs.done();
  }
});
