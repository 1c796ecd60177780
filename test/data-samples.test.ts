import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { readLabeledCsv, readLabels, validateDataset } from '../lib/dataset';
import { FASHION_MNIST_DIR } from '../lib/fashion-mnist';
import { buildSamples } from '../data-samples/build';
import { REPO_ROOT, tempDir, removeDir } from './helpers';

const SAMPLES = path.join(REPO_ROOT, 'data-samples');

test('data-samples/ is a valid data set of real RGB JPEGs, small enough to commit', async () => {
  const labels = await readLabels(path.join(SAMPLES, 'labels.txt'));
  const train = (await readLabeledCsv(path.join(SAMPLES, 'train_set.csv'))).rows;
  const evalRows = (await readLabeledCsv(path.join(SAMPLES, 'eval_set.csv'))).rows;
  validateDataset({ train, eval: evalRows, labels, labelsFile: path.join(SAMPLES, 'labels.txt') });
  assert.equal(labels.length, 5);
  assert.equal(train.length, 360);
  assert.equal(evalRows.length, 40);
  let bytes = 0;
  for (const row of [...train, ...evalRows]) {
    const meta = await sharp(row.path).metadata();
    assert.equal(meta.format, 'jpeg', row.path);
    assert.equal(meta.channels, 3, row.path);
    bytes += fs.statSync(row.path).size;
  }
  assert.ok(bytes < 3 * 1024 * 1024, `data-samples images take ${bytes} bytes`);
});

test('the build script reproduces data-samples/ byte for byte', { skip: !fs.existsSync(FASHION_MNIST_DIR) && 'needs apt-get install dataset-fashion-mnist' }, async () => {
  const dir = tempDir();
  try {
    await buildSamples(dir);
    for (const f of ['train_set.csv', 'eval_set.csv', 'labels.txt']) {
      assert.equal(fs.readFileSync(path.join(dir, f), 'utf8'), fs.readFileSync(path.join(SAMPLES, f), 'utf8'), f);
    }
    const train = (await readLabeledCsv(path.join(dir, 'train_set.csv'))).rows;
    for (const row of train.slice(0, 50)) {
      const committed = path.join(SAMPLES, path.relative(dir, row.path));
      assert.ok(fs.readFileSync(row.path).equals(fs.readFileSync(committed)), committed);
    }
  } finally {
    removeDir(dir);
  }
});
