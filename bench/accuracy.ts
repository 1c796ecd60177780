/**
 * Benchmark 2 of issue 3: accuracy. Train a ResNet-18 from scratch on the first 10,000 Fashion-MNIST
 * training images (Debian dataset-fashion-mnist), evaluate on all 10,000 test images every
 * `--eval_every_epochs`; report the wall time to reach 88 % top-1 and the final accuracy.
 *   npm run build && node dist/bench/accuracy.js [--train_images 10000] [--image_size 64]
 *       [--epochs 30] [--batch 64] [--eval_every_epochs 2] [--base_lr 0.4] [--min_crop_area 0.5]
 *       [--label_smoothing 0] [--weight_decay 1e-4] [--seed 42] [--precision float32|bfloat16]
 * The defaults are the README's run that reaches 88 %. Compared with tensorflow/tpu's ImageNet
 * recipe, the random crop keeps at least half the image (0.08 cost 2.5 points on 28x28 items) and
 * the base LR is higher (0.4 per 256 images), which a 10,000-image set trains well with.
 * Wall time counts training and evaluation, from the first step (not data preparation).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { exportFashionMnistJpegs, FASHION_MNIST_CLASSES } from '../lib/fashion-mnist';
import { preprocess } from '../lib/preprocess';
import { train } from '../lib/train';
import { BENCHMARK_BASE_LEARNING_RATE } from '../lib/train/recipe';
import { numberArg, stringArg } from './args';
import type { Precision } from '../lib/engine/native-train';

const TRAIN_IMAGES = numberArg('train_images', 10000);
const IMAGE_SIZE = numberArg('image_size', 64);
const EPOCHS = numberArg('epochs', 30);
const BATCH = numberArg('batch', 64);
const EVAL_EVERY_EPOCHS = numberArg('eval_every_epochs', 2);
const BASE_LR = numberArg('base_lr', BENCHMARK_BASE_LEARNING_RATE);
/** Smallest random-crop area (tensorflow/tpu's default is 0.08). */
const MIN_CROP_AREA = numberArg('min_crop_area', 0.5);
const LABEL_SMOOTHING = numberArg('label_smoothing', 0);
const WEIGHT_DECAY = numberArg('weight_decay', 1e-4);
/** Seed of initialisation, shuffling and augmentation (the train command's default is 42). */
const SEED = numberArg('seed', 42);
const TARGET = 0.88;
/** tensorflow/tpu's --precision (issue 14: bfloat16 should end within 0.5 points of float32). */
const PRECISION = stringArg('precision', 'float32') as Precision;

/** JPEG folders → CSVs → shards, cached in the temp folder across runs. */
async function prepare(work: string): Promise<string> {
  const dataDir = path.join(work, 'shards');
  if (fs.existsSync(path.join(dataDir, 'preprocess_report.json'))) return dataDir;
  const trainDir = path.join(work, 'train');
  const testDir = path.join(work, 'test');
  if (!fs.existsSync(path.join(work, 'labels.txt'))) {
    await exportFashionMnistJpegs({ split: 'train', outDir: trainDir, first: TRAIN_IMAGES });
    await exportFashionMnistJpegs({ split: 't10k', outDir: testDir });
    for (const [dir, csv] of [[trainDir, 'train.csv'], [testDir, 'test.csv']] as const) {
      const rows = FASHION_MNIST_CLASSES.flatMap((c) => fs.readdirSync(path.join(dir, c)).map((f) => `${path.join(dir, c, f)},${c}`));
      fs.writeFileSync(path.join(work, csv), rows.join('\n') + '\n');
    }
    fs.writeFileSync(path.join(work, 'labels.txt'), [...FASHION_MNIST_CLASSES].sort().join('\n') + '\n');
  }
  await preprocess({
    trainCsv: path.join(work, 'train.csv'),
    validationCsv: path.join(work, 'test.csv'),
    labelsFile: path.join(work, 'labels.txt'),
    outputDir: dataDir,
    overwrite: true,
  });
  return dataDir;
}

async function main(): Promise<void> {
  const work = path.join(os.tmpdir(), `imgclass-bench-fashion-${TRAIN_IMAGES}`);
  fs.mkdirSync(work, { recursive: true });
  const dataDir = await prepare(work);
  const modelDir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-bench-acc-'));
  const stepsPerEpoch = Math.ceil(TRAIN_IMAGES / BATCH);
  const trainSteps = EPOCHS * stepsPerEpoch;
  const evals: { step: number; epoch: number; top1: number; seconds: number }[] = [];
  let t0 = 0;
  const r = await train({
    dataDir,
    modelDir,
    imageSize: IMAGE_SIZE,
    trainBatchSize: BATCH,
    evalBatchSize: 128,
    trainSteps,
    stepsPerEval: Math.max(1, Math.round(EVAL_EVERY_EPOCHS * stepsPerEpoch)),
    stepsPerCheckpoint: trainSteps,
    baseLearningRate: BASE_LR,
    minCropArea: MIN_CROP_AREA,
    labelSmoothing: LABEL_SMOOTHING,
    weightDecay: WEIGHT_DECAY,
    seed: SEED,
    precision: PRECISION,
    onEvent: (e) => {
      if (e.kind === 'start') t0 = Date.now();
      if (e.kind === 'step' && e.step % 50 === 0) process.stderr.write(`step ${e.step}/${trainSteps} loss ${e.loss.toFixed(3)} ${e.imagesPerSecond.toFixed(1)} img/s\n`);
      if (e.kind === 'eval') {
        const ev = { step: e.step, epoch: Number(((e.step * BATCH) / TRAIN_IMAGES).toFixed(2)), top1: e.top1, seconds: Math.round((Date.now() - t0) / 1000) };
        evals.push(ev);
        process.stderr.write(`eval ${JSON.stringify(ev)}\n`);
      }
    },
  });
  const hit = evals.find((e) => e.top1 >= TARGET);
  process.stdout.write(
    JSON.stringify({
      bench: 'accuracy',
      data: `Fashion-MNIST: first ${TRAIN_IMAGES} training images, all 10000 test images`,
      model: 'resnet18',
      image_size: IMAGE_SIZE,
      batch: BATCH,
      epochs: EPOCHS,
      base_lr: BASE_LR,
      min_crop_area: MIN_CROP_AREA,
      label_smoothing: LABEL_SMOOTHING,
      weight_decay: WEIGHT_DECAY,
      seed: SEED,
      precision: PRECISION,
      backend: `${r.engine} x${r.replicas}`,
      train_img_s: Number(r.imagesPerSecond.toFixed(1)),
      target_top1: TARGET,
      seconds_to_target: hit ? hit.seconds : null,
      final_top1: r.lastEval?.top1,
      final_top5: r.lastEval?.top5,
      total_seconds: Math.round(r.seconds),
      evals,
    }) + '\n',
  );
  fs.rmSync(modelDir, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
