/**
 * lib/train/compute-only.ts runs train()'s own step: fed the batches train()'s input pipeline yields,
 * it must give train()'s losses step for step, bit for bit (same replicas, averaging, update and
 * schedule), while writing nothing. Small model (width x0.25, 32 px) on data-samples' shards.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { train } from '../lib/train';
import { trainComputeOnly } from '../lib/train/compute-only';
import { TrainInput, type Batch } from '../lib/train/input';
import { defaultPreprocessing } from '../lib/train/preprocessing';
import { poolLayout } from '../lib/train/replicas';
import { tempDir, removeDir } from './helpers';
import { preprocessSamples } from './sample-shards';

const SIZE = 32;
const BATCH = 12;
const STEPS = 6;
const WIDTH = 0.25;
let work: string;
let dataDir: string;

before(async () => {
  work = tempDir('imgclass-compute-only-');
  dataDir = path.join(work, 'data');
  await preprocessSamples(dataDir);
});

after(() => removeDir(work));

test('poolLayout: one replica on all cores for oneDNN, else one per core; at most one per image, cores shared out', () => {
  assert.deepEqual(poolLayout(undefined, 32, 2, 'wasm'), { replicas: 2, threads: 1 });
  assert.deepEqual(poolLayout(undefined, 32, 4, 'onednn'), { replicas: 1, threads: 4 });
  assert.deepEqual(poolLayout(1, 32, 2, 'wasm'), { replicas: 1, threads: 2 });
  assert.deepEqual(poolLayout(2, 32, 2, 'onednn'), { replicas: 2, threads: 1 });
  assert.deepEqual(poolLayout(8, 3, 4, 'wasm'), { replicas: 3, threads: 1 });
  assert.deepEqual(poolLayout(2, 32, 1, 'wasm'), { replicas: 2, threads: 1 });
});

test('compute-only training gives train()\'s losses on train()\'s batches, step for step, and writes nothing', async () => {
  const modelDir = path.join(work, 'model');
  const viaTrain: number[] = [];
  await train({
    dataDir, modelDir, imageSize: SIZE, trainBatchSize: BATCH, trainSteps: STEPS, widthMultiplier: WIDTH, workers: 2,
    stepsPerEval: 1_000_000, stepsPerCheckpoint: 1_000_000,
    onEvent: (e) => {
      if (e.kind === 'step') viaTrain.push(e.loss);
    },
  });

  const input = await TrainInput.open({ dataDir, imageSize: SIZE, batchSize: BATCH, seed: 42, numClasses: 5, settings: defaultPreprocessing(SIZE) });
  const batches: Batch[] = [];
  for (let i = 0; i < STEPS; i++) batches.push(await input.next());
  await input.close();
  const before = fs.readdirSync(work).sort();
  const r = await trainComputeOnly({ batches, steps: STEPS, imageSize: SIZE, numClasses: 5, widthMultiplier: WIDTH, workers: 2 });

  assert.equal(r.replicas, 2);
  assert.equal(r.steps.length, STEPS);
  assert.deepEqual(r.steps.map((s) => s.loss), viaTrain);
  assert.ok(viaTrain[STEPS - 1]! !== viaTrain[0], 'the weights moved between steps');
  assert.deepEqual(r.steps.map((s) => s.step), [1, 2, 3, 4, 5, 6]);
  for (const s of r.steps) assert.deepEqual(Object.keys(s.phaseMs).sort(), ['apply', 'average', 'grads']);
  assert.deepEqual(fs.readdirSync(work).sort(), before, 'no files written');

  // Fewer batches than steps: cycled, and a batch is not consumed by a step (the next run sees the same data).
  const again = await trainComputeOnly({ batches: batches.slice(0, 1), steps: 2, imageSize: SIZE, numClasses: 5, widthMultiplier: WIDTH, workers: 2, batchSize: BATCH });
  assert.equal(again.steps[0]!.loss, r.steps[0]!.loss);
});

test('compute-only training refuses batches that do not match the image size', async () => {
  const bad = { images: new Uint8Array(10), labels: new Int32Array(2), size: 2 };
  await assert.rejects(trainComputeOnly({ batches: [bad], steps: 1, imageSize: SIZE, numClasses: 5 }), /batch 0 of 2 images holds 10 bytes/);
  await assert.rejects(trainComputeOnly({ batches: [], steps: 1, imageSize: SIZE, numClasses: 5 }), /at least one batch/);
});
