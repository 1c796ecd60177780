/**
 * The Model Garden experiment config `imgclass train --backend gcp` generates, checked against the
 * dataclass field names of tf-models-official (test/fixtures/model-garden-config-schema.json, source
 * named inside), its values for given flags, and its learning-rate schedule, evaluated with Model
 * Garden's semantics from the YAML as written, against lib/train/recipe.ts at every step.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { experimentConfig, configYaml, gcpSchedule, modelGardenLearningRate, ExperimentInput, ExperimentConfig, OptimizationConfig, warmupStepsOf } from '../lib/cloud/training/config';
import { tpuSpec } from '../lib/cloud/training/tpu';
import { learningRate } from '../lib/train/recipe';
import { UserError } from '../lib/errors';

type Schema = Record<string, Record<string, string | null>>;
const schema = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'test', 'fixtures', 'model-garden-config-schema.json'), 'utf8')) as Schema;

/** Every key path of `value` that the schema class `cls` does not define. */
function unknownKeys(value: unknown, cls: string, at = ''): string[] {
  const fields = schema[cls];
  assert.ok(fields, `schema has no class ${cls}`);
  const bad: string[] = [];
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const where = at ? `${at}.${k}` : k;
    if (!(k in fields)) {
      bad.push(`${where} (not a field of ${cls})`);
      continue;
    }
    const nested = fields[k];
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      if (!nested) bad.push(`${where} (a scalar field of ${cls}, given an object)`);
      else bad.push(...unknownKeys(v, nested, where));
    } else if (nested && v !== null) {
      bad.push(`${where} (a ${nested} config, given ${JSON.stringify(v)})`);
    }
  }
  return bad;
}

function input(over: Partial<ExperimentInput> = {}): ExperimentInput {
  return {
    dataDir: 'gs://b/flowers/tfrecords',
    resnetDepth: 18,
    imageSize: 224,
    trainBatchSize: 128,
    evalBatchSize: 32,
    trainSteps: 1000,
    stepsPerEval: 250,
    numTrainImages: 3300,
    numEvalImages: 370,
    numClasses: 5,
    tpu: tpuSpec('v5e-4'),
    ...over,
  };
}

function near(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) <= 1e-12 * Math.max(1, Math.abs(want)), `${what}: ${got}, expected ${want}`);
}

const roundTrip = (c: ExperimentConfig): ExperimentConfig => parse(configYaml(c)) as ExperimentConfig;

test('the generated config has only keys Model Garden defines', () => {
  for (const o of [input(), input({ initCheckpoint: 'gs://b/resnet18/ckpt-100', minCropArea: 0.35, trainSteps: 7 })]) {
    assert.deepEqual(unknownKeys(roundTrip(experimentConfig(o)), 'ExperimentConfig'), []);
  }
  // The check itself finds a misspelt key.
  const bad = roundTrip(experimentConfig(input())) as unknown as { trainer: Record<string, unknown> };
  bad.trainer.train_step = 3;
  assert.deepEqual(unknownKeys(bad, 'ExperimentConfig'), ['trainer.train_step (not a field of TrainerConfig)']);
});

test('the config carries the flags, the counts and the TPU strategy', () => {
  const c = roundTrip(experimentConfig(input({ initCheckpoint: 'gs://b/ckpt/ckpt-9' })));
  assert.equal(c.task.model.num_classes, 6, 'label 0 unused: our labels are 1-based');
  assert.deepEqual(c.task.model.input_size, [224, 224, 3]);
  assert.deepEqual(c.task.model.backbone, { type: 'resnet', resnet: { model_id: 18 } });
  assert.equal(c.task.train_data.input_path, 'gs://b/flowers/tfrecords/train-*');
  assert.equal(c.task.validation_data.input_path, 'gs://b/flowers/tfrecords/validation-*');
  assert.equal(c.task.train_data.global_batch_size, 128);
  assert.equal(c.task.validation_data.global_batch_size, 32);
  assert.equal(c.task.init_checkpoint, 'gs://b/ckpt/ckpt-9');
  assert.equal(c.trainer.train_steps, 1000);
  assert.equal(c.trainer.validation_interval, 250);
  assert.equal(c.trainer.validation_steps, 11, '370 validation images in whole batches of 32');
  assert.equal(c.trainer.checkpoint_interval, 250);
  assert.equal(250 % c.trainer.steps_per_loop, 0);
  assert.equal(c.trainer.summary_interval % c.trainer.steps_per_loop, 0);
  assert.equal(c.runtime.distribution_strategy, 'tpu');
  assert.equal(c.trainer.optimizer_config.optimizer.sgd.nesterov, true);
  assert.equal(c.trainer.optimizer_config.optimizer.sgd.momentum, 0.9);
  assert.equal(c.task.losses.l2_weight_decay, 1e-4);
  const opt = c.trainer.optimizer_config;
  const want = [0.05, 0.005, 0.0005, 0.00005];
  assert.equal(opt.learning_rate.stepwise.values.length, 4);
  opt.learning_rate.stepwise.values.forEach((v, i) => near(v, want[i]!, `values[${i}]: base 0.1 × 128/256, ×0.1 three times`));
});

function assertSameSchedule(opt: OptimizationConfig, steps: number, batch: number, baseLr?: number): void {
  const cfg = gcpSchedule({ trainBatchSize: batch, trainSteps: steps, baseLearningRate: baseLr });
  for (let s = 0; s <= steps; s++) {
    const want = learningRate(s, cfg);
    const got = modelGardenLearningRate(s, opt);
    assert.ok(Math.abs(got - want) <= 1e-9 * Math.max(1, want), `step ${s} of ${steps}: Model Garden ${got}, recipe ${want}`);
  }
}

test('Model Garden\'s schedule from the YAML equals learningRate() at every step', () => {
  for (const [steps, batch, baseLr] of [[1000, 128, undefined], [999, 256, 0.2], [90, 64, undefined], [12345, 1024, 0.1], [37, 8, undefined], [10, 8, undefined]] as const) {
    const c = roundTrip(experimentConfig(input({ trainSteps: steps, trainBatchSize: batch, baseLearningRate: baseLr, tpu: tpuSpec('v2-8'), numTrainImages: 5000 })));
    assertSameSchedule(c.trainer.optimizer_config, steps, batch, baseLr);
  }
});

test('the gcp schedule is the local one with the warm-up rounded to whole steps', () => {
  const local = { batchSize: 128, trainSteps: 1000 };
  const gcp = gcpSchedule({ trainBatchSize: 128, trainSteps: 1000 });
  assert.equal(warmupStepsOf(gcp), 56, '5/90 of 1000 steps = 55.6');
  for (let s = 56; s <= 1000; s++) assert.equal(learningRate(s, gcp), learningRate(s, local), `step ${s}`);
  // The decays of the 1000-step run: ×0.1 from step 334 (30/90 = 333.3), as locally.
  const opt = experimentConfig(input()).trainer.optimizer_config;
  assert.deepEqual(opt.learning_rate.stepwise.boundaries, [333, 666, 888]);
  near(modelGardenLearningRate(333, opt), 0.05, 'step 333');
  near(modelGardenLearningRate(334, opt), 0.005, 'step 334');
});

test('a batch that does not divide across the TPU cores is a clear error', () => {
  assert.throws(() => experimentConfig(input({ trainBatchSize: 100, tpu: tpuSpec('v5e-8') })), (e: unknown) =>
    e instanceof UserError && /--train_batch_size 100 does not divide across the 8 TensorCores of a TPU v5e-8: use a multiple of 8 \(96 or 104\)/.test(e.message));
  assert.throws(() => experimentConfig(input({ evalBatchSize: 30, tpu: tpuSpec('v5e-4') })), /--eval_batch_size 30 .* multiple of 4/);
  assert.throws(() => experimentConfig(input({ numEvalImages: 10 })), /validation set \(10 images in gs:\/\/b\/flowers\/tfrecords\) is smaller than one evaluation batch of 32/);
  assert.throws(() => tpuSpec('v4-8'), /--tpu "v4-8" is not known: use v5e-1, v5e-4, v5e-8, v2-8, v3-8/);
});
