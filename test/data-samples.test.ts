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
    // Every image: the same files under images/, byte for byte (and nothing else there).
    const files = (root: string): string[] =>
      fs.readdirSync(path.join(root, 'images'), { recursive: true, encoding: 'utf8' })
        .map((f) => path.join('images', f))
        .filter((f) => fs.statSync(path.join(root, f)).isFile())
        .sort();
    const built = files(dir);
    assert.deepEqual(built, files(SAMPLES), 'the same image files');
    assert.equal(built.length, 400);
    const differ = built.filter((f) => !fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(SAMPLES, f))));
    assert.deepEqual(differ, [], 'images that differ from the committed ones');
  } finally {
    removeDir(dir);
  }
});
