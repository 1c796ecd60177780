/**
 * train()'s training step on batches already in memory: the same replica pool (sized by poolLayout),
 * engine, gradient averaging, Nesterov update and learning-rate schedule, without the TFRecord/JPEG
 * input pipeline, evaluation, checkpoints or metrics/TensorBoard writes. It exists for the benchmark's
 * compute-only figure (bench/train.ts), which is compared with PyTorch training on one fixed batch;
 * the step itself is ReplicaPool.trainStep, shared with train(), not a copy of it.
 */
import { modelSummary, ResNetConfig } from '../model';
import { likelyEngine, type BackendName } from '../engine/backend';
import type { Precision } from '../engine/native-train';
import type { TrainingStepChoice } from './protocol';
import { learningRate, WEIGHT_DECAY } from './recipe';
import { defaultPreprocessing } from './preprocessing';
import { poolLayout, ReplicaPool, StepResult } from './replicas';
import type { Batch } from './input';

export interface ComputeOnlyOptions {
  /** Batches to train on, in turn (cycled when `steps` is larger): e.g. what TrainInput yielded. */
  batches: readonly Pick<Batch, 'images' | 'labels' | 'size'>[];
  steps: number;
  resnetDepth?: ResNetConfig['depth'];
  widthMultiplier?: number;
  imageSize: number;
  numClasses: number;
  /** Global batch size the schedule is scaled for; default the first batch's size. */
  batchSize?: number;
  /** Worker threads, one replica each, as train()'s `workers` (default one per core). */
  workers?: number;
  backend?: BackendName;
  precision?: Precision;
  trainingStep?: TrainingStepChoice;
  /** As train()'s (default 42), so both start from the same weights. */
  seed?: number;
  baseLearningRate?: number;
  /** Called once the replicas are ready, before the first step. */
  onStart?: (info: ComputeOnlyStart) => void;
  onStep?: (s: ComputeOnlyStep) => void;
}

export interface ComputeOnlyStart {
  engine: BackendName;
  backendNote: string;
  replicas: number;
}

export interface ComputeOnlyStep extends StepResult {
  /** 1-based, as train()'s step events. */
  step: number;
  lr: number;
  /** Wall time of the whole step (picking the batch included). */
  ms: number;
}

export interface ComputeOnlyResult extends ComputeOnlyStart {
  steps: ComputeOnlyStep[];
}

function checkBatches(batches: ComputeOnlyOptions['batches'], imageSize: number): void {
  if (batches.length === 0) throw new Error('compute-only training needs at least one batch');
  const pixels = imageSize * imageSize * 3;
  batches.forEach((b, i) => {
    if (!(b.size >= 1) || b.images.length < b.size * pixels || b.labels.length < b.size) {
      throw new Error(`batch ${i} of ${b.size} images holds ${b.images.length} bytes and ${b.labels.length} labels; expected ${b.size * pixels} and ${b.size} at ${imageSize} px`);
    }
  });
}

/** Runs `steps` training steps on the given batches and returns each step's loss and timings. */
export async function trainComputeOnly(opts: ComputeOnlyOptions): Promise<ComputeOnlyResult> {
  checkBatches(opts.batches, opts.imageSize);
  const batchSize = opts.batchSize ?? (opts.batches[0] as Batch).size;
  const model: ResNetConfig = {
    depth: opts.resnetDepth ?? 18,
    numClasses: opts.numClasses,
    imageSize: opts.imageSize,
    seed: opts.seed ?? 42,
    ...(opts.widthMultiplier !== undefined ? { widthMultiplier: opts.widthMultiplier } : {}),
  };
  const pool = await ReplicaPool.start({
    ...poolLayout(opts.workers, batchSize, undefined, likelyEngine(opts.backend)),
    trainableParams: modelSummary(model).trainableParams,
    model,
    preprocessing: defaultPreprocessing(opts.imageSize),
    backend: opts.backend,
    ...(opts.precision ? { precision: opts.precision } : {}),
    ...(opts.trainingStep ? { trainingStep: opts.trainingStep } : {}),
    labelSmoothing: 0,
    weightDecay: WEIGHT_DECAY,
  });
  try {
    const start: ComputeOnlyStart = { engine: pool.engine, backendNote: pool.backendNote, replicas: pool.size };
    opts.onStart?.(start);
    const steps: ComputeOnlyStep[] = [];
    for (let step = 0; step < opts.steps; step++) {
      const t0 = performance.now();
      const b = opts.batches[step % opts.batches.length] as Batch;
      const lr = learningRate(step, { batchSize, trainSteps: opts.steps, baseLr: opts.baseLearningRate });
      const r = await pool.trainStep(b.images, b.labels, b.size, lr);
      const s: ComputeOnlyStep = { ...r, step: step + 1, lr, ms: performance.now() - t0 };
      steps.push(s);
      opts.onStep?.(s);
    }
    return { ...start, steps };
  } finally {
    await pool.close();
  }
}
