/**
 * Section 3 on gcp: the trainer is TensorFlow Model Garden's `resnet_imagenet` experiment, unmodified;
 * what we ship is its config, generated here from the flags of `imgclass train` and passed to
 * `python -m official.vision.train --experiment=resnet_imagenet --config_file=…` (which overrides the
 * experiment's defaults with it, strictly: an unknown key is an error there, so none is written here).
 *
 * The recipe is the local one (lib/train/recipe.ts): SGD with Nesterov momentum 0.9, 1e-4 L2, the
 * learning rate base × batch/256 ramped up over the warm-up and ×0.1 at 30, 60 and 80 of 90 "epochs"
 * scaled to train_steps. Model Garden expresses it as a `stepwise` schedule (Keras
 * PiecewiseConstantDecay: values[i] while step <= boundaries[i]) under a `linear` warm-up
 * (lr_schedule.LinearWarmup: init + step/warmup_steps × (after(warmup_steps) − init) while
 * step < warmup_steps, then the stepwise value). Its warmup_steps is an int, so the warm-up here is
 * rounded to a whole number of steps, and the local schedule it equals is learningRate() with that
 * warm-up (gcpSchedule()); the decay boundaries are read off learningRate() itself, so both switch at
 * the same step.
 */
import { stringify } from 'yaml';
import { UserError } from '../../errors';
import * as storage from '../../storage';
import { learningRate, LrScheduleConfig, LR_SCHEDULE, REFERENCE_EPOCHS, BASE_LEARNING_RATE, MOMENTUM, WEIGHT_DECAY } from '../../train/recipe';
import { TpuSpec, checkBatchDivides } from './tpu';

/** Model Garden's experiment whose defaults our config overrides. */
export const EXPERIMENT = 'resnet_imagenet';

/** What the config is made from: the flags of `imgclass train`, counts from the data, the TPU. */
export interface ExperimentInput {
  dataDir: string;
  resnetDepth: number;
  imageSize: number;
  trainBatchSize: number;
  evalBatchSize: number;
  trainSteps: number;
  stepsPerEval: number;
  stepsPerCheckpoint?: number;
  numTrainImages: number;
  numEvalImages: number;
  /** Our classes (labels 1..numClasses); Model Garden gets numClasses + 1 outputs, label 0 unused. */
  numClasses: number;
  baseLearningRate?: number;
  weightDecay?: number;
  labelSmoothing?: number;
  minCropArea?: number;
  initCheckpoint?: string;
  /** --precision; on the TPU the default is bfloat16, as tensorflow/tpu's resnet_main and Model Garden's TPU configs. */
  precision?: 'float32' | 'bfloat16';
  tpu: TpuSpec;
}

// The subset of Model Garden's dataclasses we write (names as upstream; see the schema fixture).
export interface StepwiseLr { boundaries: number[]; values: number[]; offset?: number }
export interface LinearWarmup { warmup_steps: number; warmup_learning_rate: number }
export interface OptimizationConfig {
  optimizer: { type: 'sgd'; sgd: { momentum: number; nesterov: boolean } };
  learning_rate: { type: 'stepwise'; stepwise: StepwiseLr };
  warmup: { type: 'linear'; linear: LinearWarmup } | { type: null };
}
export interface DataConfig {
  input_path: string;
  global_batch_size: number;
  is_training: boolean;
  drop_remainder: boolean;
  crop_area_range?: [number, number];
}
export interface ExperimentConfig {
  task: {
    init_checkpoint?: string;
    init_checkpoint_modules?: string;
    model: {
      num_classes: number;
      input_size: [number, number, number];
      backbone: { type: 'resnet'; resnet: { model_id: number } };
    };
    losses: { l2_weight_decay: number; label_smoothing: number; one_hot: boolean };
    train_data: DataConfig;
    validation_data: DataConfig;
  };
  trainer: {
    train_steps: number;
    validation_steps: number;
    validation_interval: number;
    steps_per_loop: number;
    summary_interval: number;
    checkpoint_interval: number;
    max_to_keep: number;
    optimizer_config: OptimizationConfig;
  };
  runtime: { distribution_strategy: 'tpu'; tpu: string; mixed_precision_dtype: string; enable_xla: boolean };
}

/** The local schedule the gcp run follows: learningRate() with the warm-up a whole number of steps. */
export function gcpSchedule(o: { trainBatchSize: number; trainSteps: number; baseLearningRate?: number }): LrScheduleConfig {
  const warmupSteps = Math.round((LR_SCHEDULE[0]![1] / REFERENCE_EPOCHS) * o.trainSteps);
  return {
    batchSize: o.trainBatchSize,
    trainSteps: o.trainSteps,
    baseLr: o.baseLearningRate ?? BASE_LEARNING_RATE,
    warmupEpochs: (warmupSteps * REFERENCE_EPOCHS) / o.trainSteps,
  };
}

/** The warm-up length in steps of gcpSchedule(o). */
export function warmupStepsOf(cfg: LrScheduleConfig): number {
  return Math.round(((cfg.warmupEpochs ?? LR_SCHEDULE[0]![1]) * cfg.trainSteps) / REFERENCE_EPOCHS);
}

/** First step at which learningRate() is at most `target` (the decays only go down), from near `guess`. */
function firstStepAtOrBelow(cfg: LrScheduleConfig, target: number, guess: number): number {
  const at = (s: number): boolean => learningRate(s, cfg) <= target * (1 + 1e-12);
  let s = Math.max(0, Math.min(cfg.trainSteps, Math.round(guess)));
  while (s > 0 && at(s - 1)) s--;
  while (!at(s)) s++;
  return s;
}

/** Model Garden's optimizer config for `cfg` (its schedule equals learningRate(step, cfg) at every step). */
export function optimizationConfig(cfg: LrScheduleConfig): OptimizationConfig {
  const scaled = (cfg.baseLr ?? BASE_LEARNING_RATE) * (cfg.batchSize / 256);
  const boundaries: number[] = [];
  const values: number[] = [scaled * LR_SCHEDULE[0]![0]];
  for (const [m, e] of LR_SCHEDULE.slice(1)) {
    // The decay takes effect at step s; PiecewiseConstantDecay switches for step > boundary.
    const s = firstStepAtOrBelow(cfg, scaled * m, (e / REFERENCE_EPOCHS) * cfg.trainSteps);
    const b = s - 1;
    if (boundaries.length > 0 && boundaries[boundaries.length - 1] === b) {
      // Two decays at one step (a very short run): the later value holds from there.
      values[values.length - 1] = scaled * m;
      continue;
    }
    boundaries.push(b);
    values.push(scaled * m);
  }
  const warmupSteps = warmupStepsOf(cfg);
  return {
    optimizer: { type: 'sgd', sgd: { momentum: MOMENTUM, nesterov: true } },
    learning_rate: { type: 'stepwise', stepwise: { boundaries, values } },
    warmup: warmupSteps > 0 ? { type: 'linear', linear: { warmup_steps: warmupSteps, warmup_learning_rate: 0 } } : { type: null },
  };
}

/**
 * Model Garden's learning rate at `step` for an optimizer config, as optimizer_factory builds it:
 * PiecewiseConstantDecayWithOffset(boundaries, values, offset) wrapped in LinearWarmup when a warm-up
 * is set. (Used by the tests against learningRate() and by notebook 03's chart.)
 */
export function modelGardenLearningRate(step: number, opt: OptimizationConfig): number {
  const { boundaries, values, offset = 0 } = opt.learning_rate.stepwise;
  const after = (s: number): number => {
    const x = s - offset;
    for (let i = 0; i < boundaries.length; i++) if (x <= boundaries[i]!) return values[i]!;
    return values[values.length - 1]!;
  };
  if (opt.warmup.type === 'linear') {
    const { warmup_steps: w, warmup_learning_rate: init } = opt.warmup.linear;
    if (step < w) return init + (step / w) * (after(w) - init);
  }
  return after(step);
}

/** The largest divisor of n that is at most cap. */
function divisorAtMost(n: number, cap: number): number {
  for (let d = Math.min(n, cap); d > 1; d--) if (n % d === 0) return d;
  return 1;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** Summaries this often at most, so the live chart has points to draw on a short run. */
const MAX_STEPS_PER_LOOP = 100;

/** The experiment config for `o`; every error names the flag to change. */
export function experimentConfig(o: ExperimentInput): ExperimentConfig {
  checkBatchDivides('train_batch_size', o.trainBatchSize, o.tpu);
  checkBatchDivides('eval_batch_size', o.evalBatchSize, o.tpu);
  if (o.numTrainImages < o.trainBatchSize) {
    throw new UserError(`the training set (${o.numTrainImages} images in ${o.dataDir}) is smaller than one batch of ${o.trainBatchSize}: lower --train_batch_size`);
  }
  if (o.numEvalImages < o.evalBatchSize) {
    throw new UserError(
      `the validation set (${o.numEvalImages} images in ${o.dataDir}) is smaller than one evaluation batch of ${o.evalBatchSize}: ` +
        `lower --eval_batch_size (a multiple of ${o.tpu.cores}, the TPU's cores)`,
    );
  }
  const stepsPerCheckpoint = o.stepsPerCheckpoint ?? o.stepsPerEval;
  // Orbit requires the summary, checkpoint and evaluation intervals to be multiples of steps_per_loop.
  const stepsPerLoop = divisorAtMost(gcd(o.stepsPerEval, stepsPerCheckpoint), MAX_STEPS_PER_LOOP);
  const schedule = gcpSchedule(o);
  const dataPath = (split: string): string => storage.joinPath(o.dataDir, `${split}-*`);
  return {
    task: {
      ...(o.initCheckpoint ? { init_checkpoint: o.initCheckpoint, init_checkpoint_modules: 'backbone' } : {}),
      model: {
        num_classes: o.numClasses + 1,
        input_size: [o.imageSize, o.imageSize, 3],
        backbone: { type: 'resnet', resnet: { model_id: o.resnetDepth } },
      },
      losses: { l2_weight_decay: o.weightDecay ?? WEIGHT_DECAY, label_smoothing: o.labelSmoothing ?? 0, one_hot: true },
      train_data: {
        input_path: dataPath('train'),
        global_batch_size: o.trainBatchSize,
        is_training: true,
        drop_remainder: true,
        ...(o.minCropArea !== undefined ? { crop_area_range: [o.minCropArea, 1] as [number, number] } : {}),
      },
      // Static shapes on the TPU: whole batches only; validation_steps of them cover all but the remainder.
      validation_data: { input_path: dataPath('validation'), global_batch_size: o.evalBatchSize, is_training: false, drop_remainder: true },
    },
    trainer: {
      train_steps: o.trainSteps,
      validation_steps: Math.floor(o.numEvalImages / o.evalBatchSize),
      validation_interval: o.stepsPerEval,
      steps_per_loop: stepsPerLoop,
      summary_interval: stepsPerLoop,
      checkpoint_interval: stepsPerCheckpoint,
      max_to_keep: 5,
      optimizer_config: optimizationConfig(schedule),
    },
    // bfloat16 is the TPU's native matmul type (Model Garden's TPU ResNet configs use it) and the
    // default; --precision float32 asks for float32 throughout. The weights and the export stay float32.
    runtime: { distribution_strategy: 'tpu', tpu: 'local', mixed_precision_dtype: o.precision ?? 'bfloat16', enable_xla: true },
  };
}

/** The config as the YAML file the job reads. */
export function configYaml(c: ExperimentConfig): string {
  return `# TensorFlow Model Garden experiment config (overrides of ${EXPERIMENT}), written by imgclass train --backend gcp\n` + stringify(c);
}

/** How many validation images an evaluation covers (whole batches), for messages. */
export function evaluatedImages(c: ExperimentConfig): number {
  return c.trainer.validation_steps * c.task.validation_data.global_batch_size;
}
