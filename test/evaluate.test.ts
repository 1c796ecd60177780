/**
 * `imgclass evaluate` end to end: the serving fixture's export over real TFRecords (validation and
 * test splits of an AutoML CSV), every figure of evaluation.json and of --json checked against
 * scikit-learn on the predictions it wrote, and those predictions against the model run in process.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir, removeDir, jpeg, CLI } from './helpers';
import { exportFixture, inProcessProbabilities, LABELS, ServingFixture } from './serve-fixture';
import { preprocess } from '../lib/preprocess';
import { evaluateModel, EvaluationFile } from '../lib/evaluation/run';
import { sklearnFigures } from './sklearn';
import { useFakeGcs } from './fake-gcs';

const dir = tempDir('imgclass-evaluate-');
let fixture: ServingFixture;
let records: string;
/** The images of each split, in CSV order (the order preprocess writes held-out records in). */
const images: Record<'validation' | 'test', Buffer[]> = { validation: [], test: [] };
const truth: Record<'validation' | 'test', number[]> = { validation: [], test: [] };

before(async () => {
  const probes = await Promise.all(Array.from({ length: 12 }, (_, i) => jpeg(36 + i * 2, 34, i * 13)));
  fixture = await exportFixture(path.join(dir, 'export'), probes.slice(0, 6));
  const lines: string[] = [];
  probes.forEach((img, i) => {
    const use = i < 3 ? 'TRAINING' : i < 8 ? 'VALIDATION' : 'TEST';
    const label = i % LABELS.length;
    fs.writeFileSync(path.join(dir, `${i}.jpg`), img);
    lines.push(`${use},${i}.jpg,${LABELS[label]}`);
    if (use !== 'TRAINING') {
      images[use === 'TEST' ? 'test' : 'validation'].push(img);
      truth[use === 'TEST' ? 'test' : 'validation'].push(label);
    }
  });
  fs.writeFileSync(path.join(dir, 'automl.csv'), lines.join('\n') + '\n');
  records = path.join(dir, 'records');
  await preprocess({ trainCsv: path.join(dir, 'automl.csv'), outputDir: records, workers: 1 });
});

after(() => removeDir(dir));

interface JsonOut {
  split: string;
  top1: number;
  top5: number;
  per_class: { label: string; precision: number; recall: number; f1: number; support: number; average_precision: number | null }[];
  confusion: number[][];
  at_threshold: { threshold: number; coverage: number; top1: number | null };
  mistakes: { record: string; true_label: string; predicted_label: string; probability: number }[];
  files: { evaluation: string; predictions: string };
}

test('imgclass evaluate --json: top1, per_class and confusion in labels.txt order, agreeing with scikit-learn on the predictions it wrote', async () => {
  for (const split of ['validation', 'test'] as const) {
    const r = spawnSync(process.execPath, [CLI, 'evaluate', '--model_dir', fixture.exportDir, '--data_dir', records, '--split', split, '--confidence_threshold', '0.6', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as JsonOut;
    assert.equal(out.split, split);
    assert.deepEqual(out.per_class.map((c) => c.label), LABELS);
    assert.equal(out.files.evaluation, path.join(fixture.versionDir, 'evaluation.json'));

    // The predictions file holds what the model answers in process, image by image.
    const lines = fs.readFileSync(out.files.predictions, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { true: number; probabilities: number[] });
    assert.deepEqual(lines.map((l) => l.true), truth[split]);
    for (const [i, img] of images[split].entries()) {
      const expected = await inProcessProbabilities(fixture, img);
      lines[i]!.probabilities.forEach((p, c) => assert.ok(Math.abs(p - expected[c]!) < 1e-4, `${split} image ${i} class ${c}: ${p} vs ${expected[c]}`));
    }
    const sk = sklearnFigures(out.files.predictions, LABELS.length, 0.6);
    const close = (a: number | null, b: number | null, what: string): void =>
      a === null || b === null ? assert.equal(a, b, what) : assert.ok(Math.abs(a - b) <= 1e-6, `${split} ${what}: ours ${a}, sklearn ${b}`);
    close(out.top1, sk.top1, 'top1');
    close(out.top5, sk.top5, 'top5');
    assert.deepEqual(out.confusion, sk.confusion);
    out.per_class.forEach((c, i) => {
      for (const k of ['precision', 'recall', 'f1'] as const) close(c[k], sk.per_class[i]![k], `${c.label} ${k}`);
      assert.equal(c.support, sk.per_class[i]!.support);
      close(c.average_precision, sk.average_precision[i]!, `${c.label} AP`);
    });
    close(out.at_threshold.coverage, sk.at_threshold.coverage, 'coverage');
    close(out.at_threshold.top1, sk.at_threshold.top1, 'top1 at threshold');
    // The gallery: wrong answers only, most confident first.
    const wrong = lines.filter((l) => l.probabilities.indexOf(Math.max(...l.probabilities)) !== l.true).length;
    assert.equal(out.mistakes.length, Math.min(wrong, 12));
    for (const m of out.mistakes) assert.notEqual(m.true_label, m.predicted_label);
    assert.deepEqual(out.mistakes.map((m) => m.probability), [...out.mistakes.map((m) => m.probability)].sort((a, b) => b - a));
  }
  // evaluation.json keeps both splits and the threshold.
  const saved = JSON.parse(fs.readFileSync(path.join(fixture.versionDir, 'evaluation.json'), 'utf8')) as EvaluationFile;
  assert.equal(saved.threshold, 0.6);
  assert.deepEqual(Object.keys(saved.splits).sort(), ['test', 'validation']);
  assert.equal(saved.splits.test!.count, images.test.length);
});

test('imgclass evaluate: a table on stdout; the gallery keeps the image bytes in memory only', async () => {
  const r = spawnSync(process.execPath, [CLI, 'evaluate', '--model-dir', fixture.exportDir, '--data-dir', records], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^validation: 5 images, export version \d+\ntop-1 [\d.]+ %, top-5 100\.0 %/);
  assert.match(r.stdout, /\ndaisy +[\d.]+ +[\d.]+ +[\d.]+ +2 /);
  assert.match(r.stdout, /at confidence >= 0\.5: top-1/);
  const e = await evaluateModel({ modelDir: fixture.exportDir, dataDir: records, save: false, gallerySize: 2 });
  assert.ok(e.mistakes.length <= 2);
  for (const m of e.mistakes) assert.deepEqual([m.image[0], m.image[1]], [0xff, 0xd8], 'a JPEG from the record');
});

test('imgclass evaluate: bad input exits 2 with what to do (no test split, a SavedModel, a bad split or threshold)', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'evaluate', ...args], { encoding: 'utf8' });
  const plain = path.join(dir, 'plain');
  fs.mkdirSync(plain);
  for (const f of fs.readdirSync(records).filter((n) => !n.startsWith('test-'))) fs.copyFileSync(path.join(records, f), path.join(plain, f));
  let r = run('--model_dir', fixture.exportDir, '--data_dir', plain, '--split', 'test');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no test shards in .*plain: expected files named test-00000-of-000NN/);
  r = run('--model_dir', fixture.exportDir, '--data_dir', records, '--split', 'train');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--split "train" is not known: use validation or test/);
  r = run('--model_dir', fixture.exportDir, '--data_dir', records, '--confidence_threshold', '2');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--confidence_threshold must be between 0 and 1, got 2/);
  const savedModel = path.join(dir, 'gcp-export', '1700000000');
  fs.mkdirSync(savedModel, { recursive: true });
  fs.writeFileSync(path.join(savedModel, 'saved_model.pb'), 'not read');
  r = run('--model_dir', path.dirname(savedModel), '--data_dir', records);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /holds a TensorFlow SavedModel .*TensorFlow\.js cannot run it/);
});

test('imgclass train reads train and validation only, and evaluates the held-out test split once at the end', () => {
  const work = path.join(dir, 'train');
  const r = spawnSync(process.execPath, [CLI, 'train', '--data_dir', records, '--model_dir', path.join(work, 'model'), '--export_dir', path.join(work, 'export'), '--train_steps', '2', '--image_size', '16', '--train_batch_size', '4', '--workers', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /3 training \/ 5 validation images, 3 classes/, 'the test records are not trained or evaluated on while training');
  assert.match(r.stdout, /held-out test split, evaluated once:\ntest: 4 images, export version \d+\ntop-1 [\d.]+ %/);
  const saved = JSON.parse(fs.readFileSync(/saved: (\S+evaluation\.json),/.exec(r.stdout)![1]!, 'utf8')) as EvaluationFile;
  assert.deepEqual(Object.keys(saved.splits), ['test']);
});

test('evaluate a gs:// export on gs:// shards (the gcp path: the model runs here), evaluation.json written beside it', async () => {
  const fake = await useFakeGcs('imgclass-eval');
  try {
    const upload = (local: string, prefix: string): void => {
      for (const f of fs.readdirSync(local, { recursive: true }) as string[]) {
        const full = path.join(local, f);
        if (fs.statSync(full).isFile() && !f.startsWith('.')) fake.put('imgclass-eval', `${prefix}/${f}`, fs.readFileSync(full));
      }
    };
    upload(fixture.exportDir, 'export');
    upload(records, 'records');
    const local = await evaluateModel({ modelDir: fixture.exportDir, dataDir: records, split: 'test', save: false });
    const remote = await evaluateModel({ modelDir: 'gs://imgclass-eval/export', dataDir: 'gs://imgclass-eval/records', split: 'test' });
    assert.deepEqual(remote.confusion, local.confusion);
    assert.equal(remote.top1, local.top1);
    const version = path.basename(fixture.versionDir);
    assert.equal(remote.files.evaluation, `gs://imgclass-eval/export/${version}/evaluation.json`);
    const saved = JSON.parse(fake.get('imgclass-eval', `export/${version}/evaluation.json`)!.toString()) as EvaluationFile;
    assert.equal(saved.splits.test!.top1, local.top1);
    assert.ok(fake.get('imgclass-eval', `export/${version}/predictions-test.jsonl`));
  } finally {
    await fake.done();
  }
});
