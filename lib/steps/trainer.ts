/**
 * Notebook 03 (section 3, the trainer): what will be trained (the model's stages, parameters and
 * FLOPs), how (the learning-rate schedule), and the exact command; notebook 06 trains with the
 * same options, built by the same function, so the command shown is the run made.
 */
import { UserError } from '../errors';
import * as storage from '../storage';
import { readLabels } from '../dataset';
import { isResNetDepth, modelSummary, ModelSummary, ResNetConfig } from '../model';
import { learningRate, learningRatePhases } from '../train/recipe';
import { shellQuote } from '../cloud/service-account';
import type { BackendTrainOptions } from '../backend';
import { backendOf, type Settings } from './settings';
import { refuseInitFromOnGcp } from '../train/init-from';
import type { Trainable } from '../transfer/model';

/** The training parameters of notebooks 03 and 06, as the notebooks name them. */
export interface TrainParameters {
  resnet_depth: number;
  image_size: number;
  train_batch_size: number;
  train_steps: number;
  steps_per_eval: number;
  base_learning_rate: number;
  /** Replicas (worker threads); 0: the default (one on all cores with the onednn engine, else one per core). */
  workers?: number;
  /** tensorflow/tpu's --precision: 'float32' or 'bfloat16'; '' = float32 here, bfloat16 on a TPU. */
  precision?: string;
  /** gcp: the TPU (v5e-4, v5e-1, v5e-8, v2-8, v3-8). */
  tpu?: string;
  /** gcp: a trainer image to use instead of building one. */
  trainer_image?: string;
  /** Start from a pretrained model (lib/train/init-from.ts); '' trains from scratch. Local backend only. */
  init_from?: string;
  /** With init_from: 'backbone' (whole network) or 'head' (backbone frozen); '' = the source's default. */
  trainable?: string;
}

/** The options notebook 06 passes to train(), from the work folder and the parameters. */
export function trainOptions(s: Settings, p: TrainParameters): BackendTrainOptions {
  if (!isResNetDepth(p.resnet_depth)) throw new UserError(`resnet_depth ${p.resnet_depth} is not supported: use 18, 34, 50, 101, 152 or 200`);
  const transfer = {
    ...(p.init_from ? { initFrom: p.init_from } : {}),
    ...(p.trainable ? { trainable: p.trainable as Trainable } : {}),
  };
  if (s.backend === 'gcp') refuseInitFromOnGcp(transfer);
  if (p.precision && p.precision !== 'float32' && p.precision !== 'bfloat16') {
    throw new UserError(`precision "${p.precision}" is not known: use "float32", "bfloat16" or "" (float32 here, bfloat16 on a TPU)`);
  }
  return {
    dataDir: s.paths.tfrecords,
    modelDir: s.paths.model,
    exportDir: s.paths.export,
    resnetDepth: p.resnet_depth as ResNetConfig['depth'],
    imageSize: p.image_size,
    trainBatchSize: p.train_batch_size,
    trainSteps: p.train_steps,
    stepsPerEval: p.steps_per_eval,
    baseLearningRate: p.base_learning_rate,
    ...(p.workers ? { workers: p.workers } : {}),
    ...(p.precision ? { precision: p.precision as 'float32' | 'bfloat16' } : {}),
    ...(p.tpu ? { tpu: p.tpu } : {}),
    ...(p.trainer_image ? { trainerImage: p.trainer_image } : {}),
    // The source model decides the input size.
    ...(p.init_from ? { ...transfer, imageSize: undefined } : {}),
  };
}

/** The `imgclass train` command line that does what train(trainOptions(s, p)) does. */
export function trainCommand(s: Settings, p: TrainParameters): string {
  const o = trainOptions(s, p);
  const cloud: [string, string | number | undefined][] = s.backend === 'gcp'
    ? [['backend', 'gcp'], ['project', s.project], ['region', s.region], ['tpu', o.tpu], ['trainer_image', o.trainerImage]]
    : [];
  const flags: [string, string | number | undefined][] = [
    ...cloud,
    ['data_dir', o.dataDir],
    ['model_dir', o.modelDir],
    ['export_dir', o.exportDir],
    ['resnet_depth', o.resnetDepth],
    ['image_size', o.imageSize],
    ['train_batch_size', o.trainBatchSize],
    ['train_steps', o.trainSteps],
    ['steps_per_eval', o.stepsPerEval],
    ['base_learning_rate', o.baseLearningRate],
    ['init_from', o.initFrom],
    ['trainable', o.trainable],
    ['precision', o.precision],
    ...(s.backend === 'gcp' ? [] : [['workers', o.workers] as [string, number | undefined]]),
  ];
  const args = flags.filter(([, v]) => v !== undefined).map(([k, v]) => `--${k}=${shellQuote(String(v))}`);
  return `imgclass train \\\n  ${args.join(' \\\n  ')}`;
}

/** Classes to build the model for: `numClasses` when > 0, else the lines of WORK/dataset/labels.txt. */
export async function classCount(s: Settings, numClasses = 0): Promise<number> {
  if (numClasses > 0) return numClasses;
  if (!(await storage.exists(s.paths.labels))) {
    throw new UserError(`${s.paths.labels} does not exist: run 01-data first (it writes labels.txt), or set the num_classes parameter`);
  }
  return (await readLabels(s.paths.labels)).length;
}

/**
 * The learning rate at every step of the run (at most ~400 samples, plus both sides of each decay,
 * so the steps stay sharp on a long run), as train() computes it.
 */
export function learningRatePoints(p: Pick<TrainParameters, 'train_batch_size' | 'train_steps' | 'base_learning_rate'>): { step: number; lr: number }[] {
  const cfg = { batchSize: p.train_batch_size, trainSteps: p.train_steps, baseLr: p.base_learning_rate };
  const steps = new Set<number>();
  const stride = Math.max(1, Math.ceil(p.train_steps / 400));
  for (let k = 0; k <= p.train_steps; k += stride) steps.add(k);
  steps.add(p.train_steps);
  for (const ph of learningRatePhases(cfg)) {
    for (const k of [ph.startStep - 1, ph.startStep]) if (k >= 0 && k <= p.train_steps) steps.add(k);
  }
  return [...steps].sort((a, b) => a - b).map((step) => ({ step, lr: learningRate(step, cfg) }));
}

export interface TrainerPlan {
  summary: ModelSummary;
  /** The codelab's model (its job passed --resnet_depth=18) at the TPU trainer's 224 px, for scale. */
  codelabSummary: ModelSummary;
  learningRates: { step: number; lr: number }[];
  command: string;
  /** Where the run goes: this machine, or (gcp) the Vertex AI job and its Model Garden config. */
  job: string;
}

export async function trainerPlan(s: Settings, p: TrainParameters & { num_classes?: number }): Promise<TrainerPlan> {
  const numClasses = await classCount(s, p.num_classes);
  const o = trainOptions(s, p);
  return {
    summary: modelSummary({ depth: o.resnetDepth!, imageSize: p.image_size, numClasses }),
    codelabSummary: modelSummary({ depth: 18, imageSize: 224, numClasses }),
    learningRates: learningRatePoints(p),
    command: trainCommand(s, p),
    job: await backendOf(s).describeTraining({ ...o, numLabelClasses: numClasses }),
  };
}
