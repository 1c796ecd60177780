/**
 * Section 6 on the local backend: train a ResNet from scratch on our TFRecord shards with the
 * tensorflow/tpu resnet_main recipe, on every core, with checkpoints (resumable), an evaluation on
 * the full validation set every `stepsPerEval` steps, metrics.jsonl + TensorBoard event files, and
 * an export the prediction server loads.
 */
import * as storage from '../storage';
import { UserError } from '../errors';
import { lockFolder, withLock } from '../folder-lock';
import { modelSummary, ResNetConfig } from '../model';
import { learningRate, shortRunNotice, WEIGHT_DECAY } from './recipe';
import { TrainInput, evalBatches, datasetInfo, InputState } from './input';
import { defaultPreprocessing, PreprocessingSettings } from './preprocessing';
import { saveCheckpoint, loadLatestCheckpoint } from './checkpoint';
import { SummaryWriter } from './summary-writer';
import { MetricsLog, readMetrics } from './metrics';
import { ReplicaPool, poolLayout } from './replicas';
import { likelyEngine, type BackendName } from '../engine/backend';
import type { Precision } from '../engine/native-train';
import type { TrainingStepChoice } from './protocol';
import { planInitFrom, type InitFromOptions, type InitFromPlan } from './init-from';

export interface TrainOptions extends InitFromOptions {
  dataDir: string;
  modelDir: string;
  resnetDepth?: ResNetConfig['depth'];
  /** Filter counts x this (ResNetConfig.widthMultiplier): small models for tests and quick experiments. */
  widthMultiplier?: number;
  imageSize?: number;
  trainBatchSize?: number;
  evalBatchSize?: number;
  trainSteps: number;
  stepsPerEval?: number;
  stepsPerCheckpoint?: number;
  exportDir?: string;
  numTrainImages?: number;
  numEvalImages?: number;
  numLabelClasses?: number;
  labelSmoothing?: number;
  /** Smallest area of the training random crop, as a fraction of the image (default tensorflow/tpu's 0.08). */
  minCropArea?: number;
  weightDecay?: number;
  /** Learning rate for a batch of 256; scaled linearly with the batch size. */
  baseLearningRate?: number;
  seed?: number;
  /** Worker threads, one model replica each; default one per core. */
  workers?: number;
  backend?: BackendName;
  /** tensorflow/tpu's --precision: bfloat16 convolutions and matrix products with float32 accumulation (oneDNN engine on a CPU with bf16), or float32 (default). */
  precision?: Precision;
  /** The native one-graph step, tfjs ops, or (default) native where possible (ReplicaInit.trainingStep). */
  trainingStep?: TrainingStepChoice;
  /** Stop cleanly (checkpoint, then return) when this aborts: Ctrl-C in the CLI, a button in a notebook. */
  signal?: AbortSignal;
  onEvent?: (e: TrainEvent) => void;
}

export type TrainEvent =
  | {
      kind: 'start';
      backend: string;
      /** Which engine trains: tensorflow, onednn, wasm or cpu (onednn runs on the 'wasm' backend). */
      engine: BackendName;
      backendNote: string;
      replicas: number;
      startStep: number;
      trainSteps: number;
      params: number;
      flopsPerImage: number;
      numTrainImages: number;
      numEvalImages: number;
      numClasses: number;
      resumed: boolean;
      /** One line of advice on the learning rate for a short run (see shortRunNotice), to show with the start. */
      notice?: string;
      /** With --init_from: what is trained from what (lib/train/init-from.ts). */
      transfer?: string;
    }
  /** --init_from a URL: weight bytes downloaded so far. */
  | { kind: 'download'; source: string; bytes: number; totalBytes: number }
  /** Something the user should know that is not an error (a cached model downloaded again, say). */
  | { kind: 'notice'; message: string }
  | {
      kind: 'step';
      step: number;
      loss: number;
      crossEntropy: number;
      lr: number;
      epoch: number;
      imagesPerSecond: number;
      /** Where the step's wall time went (ms): waiting for input, gradients, averaging, update. */
      phaseMs: { input: number; grads: number; average: number; apply: number };
    }
  | { kind: 'eval'; step: number; top1: number; top5?: number; loss: number; count: number; seconds: number }
  | { kind: 'checkpoint'; step: number; path: string }
  | { kind: 'export'; step: number; path: string };

export interface EvalResult {
  step: number;
  top1: number;
  top5?: number;
  loss: number;
  count: number;
}

export interface TrainResult {
  modelDir: string;
  step: number;
  interrupted: boolean;
  lastEval?: EvalResult;
  exportPath?: string;
  seconds: number;
  /** Training images per second over this run's steps (excluding evaluation). */
  imagesPerSecond: number;
  backend: string;
  engine: BackendName;
  replicas: number;
}

interface SavedConfig {
  resnetDepth: number;
  imageSize: number;
  numClasses: number;
  /** --init_from of the run (absent when trained from scratch). */
  initFrom?: string;
}

function checkCount(name: string, given: number | undefined, actual: number, dataDir: string): number {
  if (given !== undefined && given !== actual) {
    throw new UserError(`--${name} is ${given} but ${dataDir} holds ${actual}; omit the flag to use the count from the data`);
  }
  return actual;
}

function positive(name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new UserError(`--${name} must be a whole number ≥ ${min}, got ${v}`);
}

/** Train; one run per model_dir at a time: a second one stops at once (lib/folder-lock.ts). */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  return withLock(lockFolder(opts.modelDir, { command: 'imgclass train', what: 'model_dir' }), () => trainLocked(opts));
}

async function trainLocked(opts: TrainOptions): Promise<TrainResult> {
  const started = Date.now();
  const depth = opts.resnetDepth ?? 18;
  let imageSize = opts.imageSize ?? 64;
  const batchSize = opts.trainBatchSize ?? 32;
  const evalBatchSize = opts.evalBatchSize ?? 32;
  const stepsPerEval = opts.stepsPerEval ?? opts.trainSteps;
  const stepsPerCheckpoint = opts.stepsPerCheckpoint ?? Math.max(1, Math.min(stepsPerEval, 1000));
  const seed = opts.seed ?? 42;
  positive('train_steps', opts.trainSteps);
  positive('train_batch_size', batchSize);
  positive('eval_batch_size', evalBatchSize);
  positive('steps_per_eval', stepsPerEval);
  positive('steps_per_checkpoint', stepsPerCheckpoint);
  positive('image_size', imageSize, 16);

  const info = await datasetInfo(opts.dataDir);
  const numTrainImages = checkCount('num_train_images', opts.numTrainImages, info.numTrainImages, opts.dataDir);
  const numEvalImages = checkCount('num_eval_images', opts.numEvalImages, info.numEvalImages, opts.dataDir);
  if (opts.numLabelClasses !== undefined && opts.numLabelClasses < info.numClasses) {
    throw new UserError(`--num_label_classes is ${opts.numLabelClasses} but ${opts.dataDir} has labels up to ${info.numClasses}`);
  }
  const numClasses = opts.numLabelClasses ?? info.numClasses;
  const labels = Array.from({ length: numClasses }, (_, i) => info.labels?.[i] ?? `class_${i}`);
  let transfer: InitFromPlan | undefined;
  if (opts.initFrom !== undefined) {
    transfer = await planInitFrom({ ...opts, initFrom: opts.initFrom }, {
      numClasses, labels, imageSize: opts.imageSize, seed, backend: opts.backend,
      onDownload: (p) => opts.onEvent?.({ kind: 'download', ...p }),
      onNotice: (message) => opts.onEvent?.({ kind: 'notice', message }),
    });
    imageSize = transfer.plan.imageSize;
  }
  const modelCfg: ResNetConfig = { depth, numClasses, imageSize, seed, ...(opts.widthMultiplier !== undefined ? { widthMultiplier: opts.widthMultiplier } : {}) };
  const summary = transfer?.summary ?? modelSummary(modelCfg);
  if (opts.minCropArea !== undefined && !(opts.minCropArea > 0 && opts.minCropArea <= 1)) {
    throw new UserError(`--min_crop_area must be a fraction of the image in (0, 1] (tensorflow/tpu uses 0.08), got ${opts.minCropArea}`);
  }
  const preprocessing: PreprocessingSettings = {
    ...(transfer?.preprocessing ?? defaultPreprocessing(imageSize)),
    ...(opts.minCropArea !== undefined ? { minCropArea: opts.minCropArea } : {}),
  };

  const ckpt = await loadLatestCheckpoint(opts.modelDir);
  if (ckpt) {
    const saved = ckpt.state.config as SavedConfig;
    const want: SavedConfig = { resnetDepth: depth, imageSize, numClasses, initFrom: opts.initFrom };
    for (const k of Object.keys(want) as (keyof SavedConfig)[]) {
      if (saved[k] !== want[k]) {
        throw new UserError(
          `${opts.modelDir} holds a checkpoint trained with ${k}=${saved[k] ?? 'none'}, but this run asks for ${want[k] ?? 'none'}: ` +
            `use the same flags to continue training, or a new --model_dir to start over`,
        );
      }
    }
  }
  const startStep = ckpt?.step ?? 0;

  await storage.makeDir(opts.modelDir);
  const metricsPath = storage.joinPath(opts.modelDir, 'metrics.jsonl');
  if (ckpt) {
    // Steps after the checkpoint will be trained again; drop their records so the log reads as one run.
    const kept = (await readMetrics(metricsPath)).filter((r) => Number((r as { step?: number }).step ?? 0) <= startStep);
    await storage.writeFile(metricsPath, kept.map((r) => JSON.stringify(r) + '\n').join(''), { overwrite: true });
  }
  const metrics = await MetricsLog.open(metricsPath);
  const tbTrain = await SummaryWriter.create(opts.modelDir);
  const tbEval = await SummaryWriter.create(storage.joinPath(opts.modelDir, 'eval'));

  const pool = await ReplicaPool.start({
    ...poolLayout(opts.workers, batchSize, undefined, likelyEngine(opts.backend)),
    trainableParams: summary.trainableParams,
    model: modelCfg,
    preprocessing,
    backend: opts.backend,
    ...(opts.precision ? { precision: opts.precision } : {}),
    ...(opts.trainingStep ? { trainingStep: opts.trainingStep } : {}),
    labelSmoothing: opts.labelSmoothing ?? 0,
    weightDecay: opts.weightDecay ?? WEIGHT_DECAY,
    ...(transfer ? { transfer: transfer.plan, backboneLrScale: transfer.lrScale } : {}),
  });
  const input = await TrainInput.open({ dataDir: opts.dataDir, imageSize, batchSize, seed, numClasses, settings: preprocessing });
  let step = startStep;
  let lastEval: EvalResult | undefined;
  let exportPath: string | undefined;
  let trainSeconds = 0;
  let trainedImages = 0;
  const emit = (e: TrainEvent) => opts.onEvent?.(e);

  const checkpoint = async () => {
    await pool.syncBatchNorm();
    const state = await pool.getState();
    const p = await saveCheckpoint(opts.modelDir, {
      step,
      weights: state.weights,
      optimizer: state.optimizer,
      state: { config: { resnetDepth: depth, imageSize, numClasses, initFrom: opts.initFrom } satisfies SavedConfig, input: input.state(), seed, labels },
    });
    emit({ kind: 'checkpoint', step, path: p });
  };

  const evaluate = async (): Promise<EvalResult> => {
    const t0 = Date.now();
    await pool.syncBatchNorm();
    const sums = { lossSum: 0, top1Sum: 0, top5Sum: 0, count: 0 };
    for await (const b of evalBatches({ dataDir: opts.dataDir, imageSize, batchSize: evalBatchSize, settings: preprocessing })) {
      const s = await pool.evalBatch(b.images, b.labels, b.size);
      sums.lossSum += s.lossSum;
      sums.top1Sum += s.top1Sum;
      sums.top5Sum += s.top5Sum;
      sums.count += s.count;
    }
    const n = Math.max(1, sums.count);
    const r: EvalResult = { step, top1: sums.top1Sum / n, loss: sums.lossSum / n, count: sums.count };
    // With 5 classes top-5 is always 100 %: reported only when it can say something.
    if (numClasses > 5) r.top5 = sums.top5Sum / n;
    const seconds = (Date.now() - t0) / 1000;
    await metrics.append({ kind: 'eval', step, top1: r.top1, top5: r.top5, loss: r.loss, count: r.count, wall_time: Date.now() / 1000 });
    tbEval.scalar('top_1_accuracy', r.top1, step);
    if (r.top5 !== undefined) tbEval.scalar('top_5_accuracy', r.top5, step);
    tbEval.scalar('loss', r.loss, step);
    await tbEval.flush();
    emit({ kind: 'eval', ...r, seconds });
    return r;
  };

  let failed = false;
  try {
    if (ckpt) {
      await pool.setState(ckpt.weights, ckpt.optimizer);
      input.restore(ckpt.state.input as InputState);
    }
    emit({
      kind: 'start',
      backend: pool.backend,
      engine: pool.engine,
      backendNote: pool.backendNote,
      replicas: pool.size,
      startStep,
      trainSteps: opts.trainSteps,
      params: summary.params,
      flopsPerImage: summary.flopsPerImage,
      numTrainImages,
      numEvalImages,
      numClasses,
      resumed: !!ckpt,
      notice: shortRunNotice({ batchSize, trainSteps: opts.trainSteps, numTrainImages, baseLr: opts.baseLearningRate }),
      ...(transfer ? { transfer: transfer.describe } : {}),
    });
    let interrupted = false;
    let rate = 0;
    while (step < opts.trainSteps) {
      if (opts.signal?.aborted) {
        interrupted = true;
        break;
      }
      const t0 = Date.now();
      const batch = await input.next();
      const inputMs = Date.now() - t0;
      const lr = learningRate(step, { batchSize, trainSteps: opts.trainSteps, baseLr: opts.baseLearningRate });
      const r = await pool.trainStep(batch.images, batch.labels, batch.size, lr);
      if (!Number.isFinite(r.loss)) {
        throw new UserError(`training diverged at step ${step + 1} (loss ${r.loss}); lower --base_learning_rate or check the data`);
      }
      step++;
      const dt = (Date.now() - t0) / 1000;
      trainSeconds += dt;
      trainedImages += batch.size;
      rate = batch.size / dt;
      const epoch = (step * batchSize) / numTrainImages;
      await metrics.append({ kind: 'train', step, loss: r.loss, cross_entropy: r.crossEntropy, lr, epoch, img_s: rate, wall_time: Date.now() / 1000 });
      tbTrain.scalar('loss', r.loss, step);
      tbTrain.scalar('learning_rate', lr, step);
      tbTrain.scalar('images_per_sec', rate, step);
      emit({ kind: 'step', step, loss: r.loss, crossEntropy: r.crossEntropy, lr, epoch, imagesPerSecond: rate,
        phaseMs: { input: inputMs, ...r.phaseMs } });
      if (step % stepsPerEval === 0 || step === opts.trainSteps) lastEval = await evaluate();
      if (step % stepsPerCheckpoint === 0 || step === opts.trainSteps) await checkpoint();
    }
    if (interrupted && step > startStep) await checkpoint();
    if (!interrupted && startStep >= opts.trainSteps) {
      // Nothing left to train (a finished run started again): evaluate what is there.
      lastEval = await evaluate();
    }
    if (!interrupted && opts.exportDir) {
      await pool.syncBatchNorm();
      exportPath = await pool.exportModel(opts.exportDir, labels, {
        resnetDepth: depth,
        imageSize,
        numClasses,
        step,
        top1: lastEval?.top1,
        dataDir: opts.dataDir,
        ...(transfer ? { init_from: opts.initFrom, trainable: transfer.plan.trainable, cut_at: transfer.plan.keepHead ? undefined : (transfer.plan.cutAt ?? 'default') } : {}),
      });
      emit({ kind: 'export', step, path: exportPath });
    }
    return {
      modelDir: opts.modelDir,
      step,
      interrupted,
      lastEval,
      exportPath,
      seconds: (Date.now() - started) / 1000,
      imagesPerSecond: trainSeconds > 0 ? trainedImages / trainSeconds : 0,
      backend: pool.backend,
      engine: pool.engine,
      replicas: pool.size,
    };
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // Every close runs; when the run already failed (a full disk, say), a second error from closing
    // must not replace the first.
    let closeError: unknown;
    for (const close of [() => input.close(), () => pool.close(), () => metrics.close(), () => tbTrain.close(), () => tbEval.close()]) {
      try {
        await close();
      } catch (err) {
        closeError ??= err;
      }
    }
    if (closeError !== undefined && !failed) throw closeError;
  }
}
