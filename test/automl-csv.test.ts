/**
 * AutoML's import CSV, `[ML_USE,]GCS_FILE_PATH,LABEL`, as the input of make-dataset and preprocess:
 * rows placed by ML_USE, UNASSIGNED split 80/10/10 by our seeded stratified split, a test split of
 * real test-*-of-* shards that training never reads, errors that name the CSV line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { readAutoMlCsv, makeDataset, readLabeledCsv } from '../lib/dataset';
import { preprocess } from '../lib/preprocess';
import { readRecordFile } from '../lib/tfrecord';
import { decodeExample, getInt64, getString } from '../lib/example';
import { datasetInfo } from '../lib/train/input';
import { tempDir, removeDir, jpeg, CLI } from './helpers';

const LABELS = ['cat', 'dog', 'fish'];

/** Images of three classes, and the AutoML CSV lines naming them (ML_USE by `use(i)`, or none). */
async function images(dir: string, perClass: number, use?: (i: number) => string): Promise<string[]> {
  const lines: string[] = [];
  let seed = 0;
  for (const label of LABELS) {
    fs.mkdirSync(path.join(dir, label), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const rel = `${label}/${i}.jpg`;
      fs.writeFileSync(path.join(dir, rel), await jpeg(24 + (i % 5), 20, seed++));
      lines.push(use ? `${use(i)},${rel},${label}` : `${rel},${label}`);
    }
  }
  return lines;
}

test('readAutoMlCsv: TRAINING/VALIDATION/TEST placed as written, UNASSIGNED split 80/10/10 per class, the same every run', async () => {
  const dir = tempDir('imgclass-automl-');
  try {
    const uses = (i: number): string => (i === 0 ? 'TEST' : i === 1 ? 'VALIDATION' : i === 2 ? 'training' : 'UNASSIGNED');
    fs.writeFileSync(path.join(dir, 'automl.csv'), (await images(dir, 23, uses)).join('\n') + '\n');
    const r = await readAutoMlCsv(path.join(dir, 'automl.csv'));
    assert.equal(r.hasMlUse, true);
    assert.deepEqual(r.counts, { TRAINING: 3, VALIDATION: 3, TEST: 3, UNASSIGNED: 60 });
    // 20 UNASSIGNED per class: 2 test, 2 validation, 16 train, plus the assigned row of each.
    for (const label of LABELS) {
      const n = (rows: { label: string }[]): number => rows.filter((x) => x.label === label).length;
      assert.deepEqual([n(r.train), n(r.validation), n(r.test)], [17, 3, 3], label);
    }
    assert.ok(r.test.some((x) => x.path.endsWith('cat/0.jpg')) && r.validation.some((x) => x.path.endsWith('cat/1.jpg')));
    const paths = [...r.train, ...r.validation, ...r.test].map((x) => x.path);
    assert.equal(new Set(paths).size, 69, 'every row in exactly one split');
    const again = await readAutoMlCsv(path.join(dir, 'automl.csv'));
    assert.deepEqual(again.test.map((x) => x.path), r.test.map((x) => x.path));
    const other = await readAutoMlCsv(path.join(dir, 'automl.csv'), { seed: 7 });
    assert.notDeepEqual(other.test.map((x) => x.path), r.test.map((x) => x.path), 'the seed chooses the split');
  } finally {
    removeDir(dir);
  }
});

test('readAutoMlCsv: a wrong ML_USE, a file mixing rows with and without the column, an image in two splits: errors naming the line', async () => {
  const dir = tempDir('imgclass-automl-');
  try {
    const f = path.join(dir, 'a.csv');
    const bad = async (text: string, re: RegExp): Promise<void> => {
      fs.writeFileSync(f, text);
      await assert.rejects(readAutoMlCsv(f), re);
    };
    await bad('TRAINING,gs://b/1.jpg,cat\nTRAIN,gs://b/2.jpg,dog\n', new RegExp(`${f.replace(/[.]/g, '\\.')}:2: ML_USE "TRAIN" is not one of TRAINING, VALIDATION, TEST, UNASSIGNED`));
    await bad('TRAINING,gs://b/1.jpg,cat\n\ngs://b/2.jpg,dog\n', /a\.csv:3: 2 fields \(GCS_FILE_PATH,LABEL\), but line 1 has 3 fields \(ML_USE,GCS_FILE_PATH,LABEL\); give every line the ML_USE column/);
    await bad('gs://b/1.jpg,cat\nTEST,gs://b/2.jpg,dog\n', /a\.csv:2: 3 fields .*but line 1 has 2 fields/);
    await bad('TRAINING,gs://b/1.jpg,cat\nTEST,gs://b/1.jpg,cat\n', /a\.csv:2: gs:\/\/b\/1\.jpg is in TEST, but line 1 puts it in TRAINING/);
    await bad('TRAINING,gs://b/1.jpg,cat,dog\n', /a\.csv:1: expected ML_USE,GCS_FILE_PATH,LABEL or GCS_FILE_PATH,LABEL, got 4 fields \(several labels/);
    // The header some exports write is skipped; rows without the column are all UNASSIGNED.
    fs.writeFileSync(f, 'ml_use,gcs_file_path,label\nTEST,gs://b/1.jpg,cat\nTRAINING,gs://b/2.jpg,dog\n');
    assert.deepEqual((await readAutoMlCsv(f)).counts, { TRAINING: 1, VALIDATION: 0, TEST: 1, UNASSIGNED: 0 });
  } finally {
    removeDir(dir);
  }
});

test('make-dataset --csv AUTOML.csv writes train, eval and test CSVs and labels.txt; a two-field CSV is split as before', async () => {
  const dir = tempDir('imgclass-automl-');
  try {
    const lines = await images(dir, 10, (i) => (i < 2 ? 'TEST' : 'UNASSIGNED'));
    fs.writeFileSync(path.join(dir, 'automl.csv'), lines.join('\n') + '\n');
    const out = path.join(dir, 'out');
    const r = spawnSync(process.execPath, [CLI, 'make-dataset', '--csv', path.join(dir, 'automl.csv'), '--output_dir', out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /test_set\.csv/);
    const test = (await readLabeledCsv(path.join(out, 'test_set.csv'))).rows;
    const evalRows = (await readLabeledCsv(path.join(out, 'eval_set.csv'))).rows;
    const train = (await readLabeledCsv(path.join(out, 'train_set.csv'))).rows;
    // Per class: 2 TEST + 1 of the 8 UNASSIGNED (round(0.8)), 1 validation, 6 train.
    assert.deepEqual([train.length, evalRows.length, test.length], [18, 3, 9]);
    assert.equal(fs.readFileSync(path.join(out, 'labels.txt'), 'utf8'), LABELS.join('\n') + '\n');

    const plain = path.join(dir, 'plain.csv');
    fs.writeFileSync(plain, (await images(dir, 10)).join('\n') + '\n');
    const p = await makeDataset({ csv: plain, outputDir: path.join(dir, 'plain') });
    assert.equal(p.testCsv, undefined);
    assert.equal(fs.existsSync(path.join(dir, 'plain', 'test_set.csv')), false, 'the codelab form writes no test split');
    assert.deepEqual(p.summary.totals, { train: 27, eval: 3 });
  } finally {
    removeDir(dir);
  }
});

test('preprocess --train_csv AUTOML.csv alone: train/validation/test shards of real records, labels.txt derived beside them; training never counts test', async () => {
  const dir = tempDir('imgclass-automl-');
  try {
    const lines = await images(dir, 5, (i) => ['TEST', 'VALIDATION', 'TRAINING', 'TRAINING', 'UNASSIGNED'][i]!);
    fs.writeFileSync(path.join(dir, 'automl.csv'), lines.join('\n') + '\n');
    const out = path.join(dir, 'records');
    const r = spawnSync(process.execPath, [CLI, 'preprocess', '--train_csv', path.join(dir, 'automl.csv'), '--output_dir', out, '--workers', '1'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /test: 3 records in 1 shard\(s\)/);
    assert.deepEqual(fs.readdirSync(out).sort(), ['labels.txt', 'preprocess_report.json', 'test-00000-of-00001', 'train-00000-of-00001', 'validation-00000-of-00001']);
    assert.equal(fs.readFileSync(path.join(out, 'labels.txt'), 'utf8'), LABELS.join('\n') + '\n');
    const testRecords: string[] = [];
    for await (const rec of readRecordFile(path.join(out, 'test-00000-of-00001'))) {
      const ex = decodeExample(rec);
      testRecords.push(`${getString(ex, 'image/class/synset')}:${getInt64(ex, 'image/class/label')}`);
    }
    assert.deepEqual(testRecords, ['cat:1', 'dog:2', 'fish:3']);
    const info = await datasetInfo(out);
    assert.deepEqual([info.numTrainImages, info.numEvalImages], [9, 3], 'training reads train and validation only (the UNASSIGNED row of a class of 1 trains)');

    // --labels_file still wins, and an unknown label in it is reported with the CSV line.
    fs.writeFileSync(path.join(dir, 'two.txt'), 'cat\ndog\n');
    await assert.rejects(
      preprocess({ trainCsv: path.join(dir, 'automl.csv'), labelsFile: path.join(dir, 'two.txt'), outputDir: path.join(dir, 'r2'), workers: 1 }),
      /automl\.csv:1[1-5]: label "fish" is not in .*two\.txt/,
    );
    // The Dataflow job takes the codelab's two CSVs only, and says what to do instead.
    const g = spawnSync(process.execPath, [CLI, 'preprocess', '--backend', 'gcp', '--project', 'my-project', '--dry_run', '--train_csv', 'gs://b/automl.csv', '--output_dir', 'gs://b/out'], { encoding: 'utf8' });
    assert.equal(g.status, 2, g.stderr);
    assert.match(g.stderr, /on Dataflow, preprocess takes the codelab's --train_csv, --validation_csv and --labels_file.*make-dataset --csv AUTOML\.csv/);
  } finally {
    removeDir(dir);
  }
});

test('preprocess --test_csv adds a test split to the codelab\'s two CSVs; without it the outputs are as before', async () => {
  const dir = tempDir('imgclass-automl-');
  try {
    const lines = await images(dir, 4);
    const byIndex = (keep: (i: number) => boolean): string => lines.filter((_, i) => keep(i % 4)).join('\n') + '\n';
    fs.writeFileSync(path.join(dir, 'train.csv'), byIndex((i) => i < 2));
    fs.writeFileSync(path.join(dir, 'eval.csv'), byIndex((i) => i === 2));
    fs.writeFileSync(path.join(dir, 'test.csv'), byIndex((i) => i === 3) + `${lines[0]}\n`);
    fs.writeFileSync(path.join(dir, 'labels.txt'), LABELS.join('\n') + '\n');
    const base = { trainCsv: path.join(dir, 'train.csv'), validationCsv: path.join(dir, 'eval.csv'), labelsFile: path.join(dir, 'labels.txt'), workers: 1 };
    const r = await preprocess({ ...base, testCsv: path.join(dir, 'test.csv'), outputDir: path.join(dir, 'with') });
    assert.equal(r.report.splits.test?.records, 4);
    assert.ok(r.report.warnings.some((w) => /test\.csv:4: .*cat\/0\.jpg is also in training .*test accuracy will be overstated/.test(w)), r.report.warnings.join('\n'));
    assert.ok(fs.existsSync(path.join(dir, 'with', 'test-00000-of-00001')));
    const plain = await preprocess({ ...base, outputDir: path.join(dir, 'plain') });
    assert.equal(plain.report.splits.test, undefined);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'plain')).sort(), ['preprocess_report.json', 'train-00000-of-00001', 'validation-00000-of-00001']);
    await assert.rejects(preprocess({ trainCsv: base.trainCsv, testCsv: path.join(dir, 'test.csv'), outputDir: path.join(dir, 'x') }), /--test_csv goes with --validation_csv/);
  } finally {
    removeDir(dir);
  }
});
