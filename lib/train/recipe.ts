/**
 * The training recipe of tensorflow/tpu models/official/resnet/resnet_main.py, step by step:
 * learning-rate schedule (linear scaling, warm-up, step decays), SGD with Nesterov momentum 0.9,
 * softmax cross-entropy with optional label smoothing plus 1e-4 x L2 on every non-batch-norm weight,
 * and top-1 / top-5 evaluation. The training loop itself (data, replicas, checkpoints) lives elsewhere.
 */
import * as tf from '@tensorflow/tfjs';
import { decayedWeightNames } from '../model';
import { canUpdateInPlace, momentumUpdateInPlace, sumOfSquaresNative } from '../engine/onednn';
import { UserError } from '../errors';

/** tpu LR_SCHEDULE: (multiplier, epoch it starts at) in a 90-epoch ImageNet run. */
export const LR_SCHEDULE: ReadonlyArray<readonly [number, number]> = [
  [1.0, 5],
  [0.1, 30],
  [0.01, 60],
  [0.001, 80],
];
/** Length of the reference run the LR_SCHEDULE epochs belong to. */
export const REFERENCE_EPOCHS = 90;
export const BASE_LEARNING_RATE = 0.1;
/** The base rate (per 256 images) the project's own accuracy benchmark trains with (bench/accuracy.ts). */
export const BENCHMARK_BASE_LEARNING_RATE = 0.4;
export const MOMENTUM = 0.9;
export const WEIGHT_DECAY = 1e-4;

/** A tensor with a name, as tfjs optimizers' getWeights/setWeights use (not exported by tfjs). */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

export interface LrScheduleConfig {
  /** Global batch size (all replicas together). */
  batchSize: number;
  trainSteps: number;
  /** Learning rate for a batch of 256 images; scaled linearly with the batch size. Default 0.1. */
  baseLr?: number;
  /** Warm-up length in epochs of the 90-epoch reference schedule (default 5, i.e. 5/90 of the run). */
  warmupEpochs?: number;
  /**
   * Training-set size. When given, boundaries are whole epochs exactly as tpu's get_lr_schedule
   * computes them (floor(5/90 x train_epochs) ...), so a short run can lose its warm-up entirely
   * (floor < 1); without it, boundaries are the plain fractions 5/90, 30/90, 60/90, 80/90 of trainSteps.
   */
  numTrainImages?: number;
}

export interface LrPhase {
  /** First step (value of the global step before the update) at which this phase applies. */
  startStep: number;
  /** Multiplier of the scaled learning rate; warm-up ramps up to the first one. */
  multiplier: number;
}

interface ResolvedSchedule {
  scaledLr: number;
  stepsPerEpoch: number;
  /** (multiplier, start epoch), with start epochs already fitted to this run. */
  phases: Array<readonly [number, number]>;
}

function resolveSchedule(cfg: LrScheduleConfig): ResolvedSchedule {
  const { batchSize, trainSteps } = cfg;
  if (!(batchSize > 0) || !Number.isFinite(batchSize)) throw new UserError(`batch size must be a positive number (got ${batchSize}).`);
  if (!(trainSteps > 0) || !Number.isFinite(trainSteps)) throw new UserError(`train steps must be a positive number (got ${trainSteps}).`);
  const baseLr = cfg.baseLr ?? BASE_LEARNING_RATE;
  const scaledLr = baseLr * (batchSize / 256);
  const schedule = LR_SCHEDULE.map(([m, e], i) => [m, i === 0 && cfg.warmupEpochs !== undefined ? cfg.warmupEpochs : e] as const);
  if (cfg.numTrainImages === undefined) {
    // The run is treated as the 90-epoch reference compressed into trainSteps.
    return { scaledLr, stepsPerEpoch: trainSteps / REFERENCE_EPOCHS, phases: schedule };
  }
  const fullBatchesPerEpoch = Math.floor(cfg.numTrainImages / batchSize);
  if (fullBatchesPerEpoch < 1) {
    throw new UserError(`the training set (${cfg.numTrainImages} images) is smaller than one batch of ${batchSize}: lower the batch size.`);
  }
  const trainEpochs = trainSteps / fullBatchesPerEpoch;
  return {
    scaledLr,
    // tpu: current_epoch = global_step / (num_train_images / train_batch_size), not floored.
    stepsPerEpoch: cfg.numTrainImages / batchSize,
    phases: schedule.map(([m, e]) => [m, Math.floor((e / REFERENCE_EPOCHS) * trainEpochs)] as const),
  };
}

/**
 * Learning rate for the update made when `step` updates have already been applied (tpu's
 * global_step; so step 0 has rate 0): baseLr x batch/256, ramped linearly from 0 over the warm-up,
 * then x1, x0.1, x0.01, x0.001 from 5, 30, 60 and 80 epochs of 90, as tpu's learning_rate_schedule.
 */
export function learningRate(step: number, cfg: LrScheduleConfig): number {
  const { scaledLr, stepsPerEpoch, phases } = resolveSchedule(cfg);
  const epoch = step / stepsPerEpoch;
  const [m0, e0] = phases[0] as readonly [number, number];
  // Mirrors the chain of tf.where: the last boundary already passed wins; before the first, ramp.
  let lr = epoch < e0 ? (scaledLr * m0 * epoch) / e0 : NaN;
  for (const [m, e] of phases) if (epoch >= e) lr = scaledLr * m;
  return lr;
}

/** The schedule's phases as step numbers: where warm-up ends and each decay starts. */
export function learningRatePhases(cfg: LrScheduleConfig): LrPhase[] {
  const { stepsPerEpoch, phases } = resolveSchedule(cfg);
  return phases.map(([multiplier, e]) => ({ startStep: Math.ceil(e * stepsPerEpoch - 1e-9), multiplier }));
}

/**
 * One line for a run that trains at tensorflow/tpu's base rate but is so short that the schedule's
 * first decay (x0.1 at 30 of 90 epochs, compressed into trainSteps) comes within its first two
 * epochs: the rate is cut before the model has seen the data twice, and such runs train poorly
 * (60 steps of 32 on three Fashion-MNIST classes: 76 % top-1 at 0.1, 93 % at 0.4). Undefined
 * otherwise, and for any other base rate: whoever chose one needs no advice.
 */
export function shortRunNotice(cfg: { batchSize: number; trainSteps: number; numTrainImages: number; baseLr?: number }): string | undefined {
  if ((cfg.baseLr ?? BASE_LEARNING_RATE) !== BASE_LEARNING_RATE) return undefined;
  const decay = learningRatePhases({ batchSize: cfg.batchSize, trainSteps: cfg.trainSteps }).find((p) => p.multiplier < 1);
  if (!decay) return undefined;
  const epochs = (decay.startStep * cfg.batchSize) / cfg.numTrainImages;
  if (epochs > 2) return undefined;
  return (
    `note: in this ${cfg.trainSteps}-step run the learning rate first decays at step ${decay.startStep}, ` +
    `${epochs.toFixed(1)} epochs in; tensorflow/tpu's base rate ${BASE_LEARNING_RATE} trains poorly in a run this short ` +
    `(the project's benchmarks use --base_learning_rate ${BENCHMARK_BASE_LEARNING_RATE})`
  );
}

/**
 * SGD with Nesterov momentum, as tf.train.MomentumOptimizer(lr, 0.9, use_nesterov=True):
 *   accum = momentum x accum + g;   var -= lr x (g + momentum x accum).
 * It wraps tfjs's own MomentumOptimizer, which applies exactly that update and whose
 * setLearningRate takes effect on the next step, and guards the two ways it can go wrong silently:
 * tfjs keeps one accumulator per *position* in the gradient map (not per name), so the key order is
 * checked on every step; and its setWeights would leak the accumulators it replaces, so restoring
 * state swaps in a fresh optimizer.
 */
export class NesterovMomentum {
  private opt: tf.MomentumOptimizer;
  private lr: number;
  private keyOrder: string | undefined;
  /** How the last applyFlat ran: natively in place (oneDNN engine) or with tensor ops. */
  lastPath: 'in-place' | 'mixed' | 'tensors' | undefined;

  constructor(learningRate = 0, readonly momentum = MOMENTUM) {
    this.lr = learningRate;
    this.opt = tf.train.momentum(learningRate, momentum, true);
  }

  /** The tfjs optimizer currently in use (replaced by setWeights). */
  get optimizer(): tf.MomentumOptimizer {
    return this.opt;
  }

  get learningRate(): number {
    return this.lr;
  }

  /** Number of updates applied (tpu's global_step once restored from a checkpoint). */
  get iterations(): number {
    return this.opt.iterations;
  }

  setLearningRate(lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new Error(`learning rate must be a finite number >= 0 (got ${lr})`);
    this.lr = lr;
    this.opt.setLearningRate(lr);
  }

  /** Applies gradients keyed by variable name; always pass them in the same order (the model's). */
  applyGradients(grads: tf.NamedTensorMap): void {
    const order = Object.keys(grads).join('\n');
    if (this.keyOrder === undefined) this.keyOrder = order;
    else if (order !== this.keyOrder) {
      throw new Error('gradients must name the same variables in the same order at every step (tfjs matches momentum slots by position)');
    }
    // tfjs types the map as variables, but only reads values from it.
    this.opt.applyGradients(grads as Parameters<tf.MomentumOptimizer['applyGradients']>[0]);
  }

  /**
   * Applies a flat gradient (the replicas' shared average: `entries` say where each variable's slice
   * is) plus weightDecay x w for the names in `decayed`. With the oneDNN engine the update runs in
   * place on the wasm heap in one native pass per variable, reading the gradient where it lies; the
   * numbers are the same float32 operations in the same order as the tensor path below, which every
   * other engine (and the first step, which creates the accumulators) takes.
   *
   * `lrScale` gives some variables a fraction of the rate (a fine-tuned backbone): their gradient and
   * decay term are scaled instead, which for momentum SGD started from zero accumulators is the same
   * update as that variable's own learning rate, and keeps one rate for the tfjs optimizer.
   */
  applyFlat(entries: FlatEntry[], flat: Float32Array, weightDecay: number, decayed: ReadonlySet<string>,
    inPlace: ReadonlySet<string> = new Set(), lrScale?: ReadonlyMap<string, number>): void {
    const order = entries.map((e) => e.variable.name).join('\n');
    const accs = (this.opt as unknown as { accumulations: ({ variable: tf.Variable } | undefined)[] }).accumulations;
    const acc = (i: number): tf.Variable | undefined => accs[i]?.variable;
    // Per variable: in place when allowed and possible, else through tensors (the first step always,
    // since it creates the accumulators). Both give the same bits.
    const native = this.keyOrder === order && accs.length === entries.length
      ? entries.map((e, i) => inPlace.has(e.variable.name) && canUpdateInPlace(e.variable, acc(i) as tf.Variable))
      : entries.map(() => false);
    const nativeCount = native.filter(Boolean).length;
    this.lastPath = nativeCount === 0 ? 'tensors' : nativeCount === entries.length ? 'in-place' : 'mixed';
    const grads: tf.NamedTensorMap = {};
    entries.forEach((e, i) => {
      const f = lrScale?.get(e.variable.name) ?? 1;
      let slice = flat.subarray(e.offset, e.offset + e.variable.size);
      if (f !== 1) slice = this.scaled(slice, e.offset, f);
      const wd = (decayed.has(e.variable.name) ? weightDecay : 0) * f;
      if (native[i]) {
        momentumUpdateInPlace(e.variable, acc(i) as tf.Variable, slice, { lr: this.lr, momentum: this.momentum, nesterov: true, weightDecay: wd });
        return;
      }
      const g = tf.tensor(slice, e.variable.shape, 'float32');
      grads[e.variable.name] = wd !== 0 ? tf.tidy(() => tf.add(g, tf.mul(e.variable, wd))) : g;
      if (grads[e.variable.name] !== g) g.dispose();
    });
    try {
      if (nativeCount === 0) {
        this.applyGradients(grads);
        return;
      }
      // tfjs matches accumulators to gradients by position: give it the rest in their own positions by
      // running its update on each remaining variable alone, with the matching accumulator.
      entries.forEach((e, i) => {
        if (native[i]) return;
        momentumTensorUpdate(e.variable, acc(i) as tf.Variable, grads[e.variable.name] as tf.Tensor, this.lr, this.momentum);
      });
      (this.opt as unknown as { incrementIterations(): void }).incrementIterations();
    } finally {
      tf.dispose(grads);
    }
  }

  /**
   * `g` x `f` in a buffer of this optimizer's (at `offset`, so variables never share one): `flat` is
   * shared by every replica, each of which applies it, so it is not scaled in place. A plain loop:
   * TypedArray.map costs ~10x more, which made fine-tuning steps several times slower.
   */
  private scaled(g: Float32Array, offset: number, f: number): Float32Array {
    const need = offset + g.length;
    if (this.scratch.length < need) {
      const bigger = new Float32Array(need);
      bigger.set(this.scratch);
      this.scratch = bigger;
    }
    const out = this.scratch.subarray(offset, need);
    for (let i = 0; i < g.length; i++) out[i] = g[i]! * f;
    return out;
  }

  private scratch = new Float32Array(0);

  /**
   * Optimizer state for a checkpoint: the iteration count, then one `<variable>/momentum` slot per
   * trainable variable in model order (tfjs's layout). The tensors are copies: dispose them.
   */
  async getWeights(): Promise<NamedTensor[]> {
    const live = await this.opt.getWeights();
    // getWeights returns a fresh iterations scalar followed by the live accumulator variables.
    return live.map((w, i) => ({ name: w.name, tensor: i === 0 ? w.tensor : w.tensor.clone() }));
  }

  /** Restores state written by getWeights (the caller keeps ownership of `weights`). */
  async setWeights(weights: NamedTensor[]): Promise<void> {
    const fresh = tf.train.momentum(this.lr, this.momentum, true);
    await fresh.setWeights(weights);
    this.opt.dispose();
    this.opt = fresh;
    this.keyOrder = undefined;
  }

  dispose(): void {
    this.opt.dispose();
  }
}

/**
 * tfjs's MomentumOptimizer update (Nesterov) for one variable, with the same ops in the same order:
 * accum = m x accum + g;  var = (-lr) x (g + accum x m) + var.
 */
function momentumTensorUpdate(variable: tf.Variable, accumulator: tf.Variable, g: tf.Tensor, lr: number, m: number): void {
  tf.tidy(() => {
    const newAcc = tf.add(tf.mul(tf.scalar(m), accumulator), g);
    const newValue = tf.add(tf.mul(tf.scalar(-lr), tf.add(g, tf.mul(newAcc, tf.scalar(m)))), variable);
    accumulator.assign(newAcc);
    variable.assign(newValue);
  });
}

/** Where one variable's gradient lies in a flat gradient buffer. */
export interface FlatEntry {
  variable: tf.Variable;
  offset: number;
}

/** The model's trainable variables laid end to end in model order, and the floats they take in all. */
export function flatEntries(model: tf.LayersModel): { entries: FlatEntry[]; length: number } {
  let length = 0;
  const entries = model.trainableWeights.map((w) => {
    const variable = w.read() as tf.Variable;
    const e = { variable, offset: length };
    length += variable.size;
    return e;
  });
  return { entries, length };
}

/** The tpu optimizer: SGD, momentum 0.9, Nesterov. Set the rate every step with setLearningRate. */
export function createOptimizer(opts: { momentum?: number; learningRate?: number } = {}): NesterovMomentum {
  return new NesterovMomentum(opts.learningRate ?? 0, opts.momentum ?? MOMENTUM);
}

/** Sets this step's learning rate and applies the gradients. Does not dispose `grads`. */
export function applyGradients(optimizer: NesterovMomentum, grads: tf.NamedTensorMap, lr: number): void {
  optimizer.setLearningRate(lr);
  optimizer.applyGradients(grads);
}

export interface LossOptions {
  numClasses: number;
  /** tf.losses.softmax_cross_entropy label_smoothing: targets become (1-s) x onehot + s/numClasses. */
  labelSmoothing?: number;
  /** Coefficient of sum(w^2)/2 over conv and dense weights (tpu WEIGHT_DECAY = 1e-4). */
  weightDecay?: number;
}

export interface LossAndGradients {
  /** Cross-entropy + weight-decay term: the quantity differentiated. */
  loss: number;
  crossEntropy: number;
  /** d loss / d w for every trainable weight, keyed by variable name, in model order. The caller disposes them. */
  grads: tf.NamedTensorMap;
}

function checkLabels(labels: tf.Tensor1D, images: tf.Tensor4D): void {
  if (labels.dtype !== 'int32') throw new Error(`labels must be int32 class indices (got ${labels.dtype})`);
  if (labels.shape[0] !== images.shape[0]) {
    throw new Error(`${images.shape[0]} images but ${labels.shape[0]} labels`);
  }
}

/**
 * One forward/backward pass in training mode: batch norm normalises with batch statistics and
 * updates its moving averages as a side effect (tpu's UPDATE_OPS).
 */
export function lossAndGradients(
  model: tf.LayersModel,
  images: tf.Tensor4D,
  labels: tf.Tensor1D,
  opts: LossOptions,
): LossAndGradients {
  const weightDecay = opts.weightDecay ?? WEIGHT_DECAY;
  const ce = crossEntropyGradients(model, images, labels, opts);
  const decay = weightDecayLoss(model, weightDecay);
  const grads = addWeightDecay(model, ce.grads, weightDecay);
  tf.dispose(Object.values(ce.grads).filter((g) => !Object.values(grads).includes(g)));
  return { loss: ce.crossEntropy + decay, crossEntropy: ce.crossEntropy, grads };
}

/**
 * The cross-entropy of a training batch and its gradient for every trainable weight (model order).
 * Weight decay is not in it: `addWeightDecay` adds its gradient, wd x w, directly. That is the same
 * number as differentiating wd x sum(w^2)/2 through the tape, which for ResNet-18 costs ~600 extra
 * kernel calls and six passes over the 11M weights per step (~15 % of a step on wasm).
 */
export function crossEntropyGradients(
  model: tf.LayersModel,
  images: tf.Tensor4D,
  labels: tf.Tensor1D,
  opts: Omit<LossOptions, 'weightDecay'>,
): { crossEntropy: number; grads: tf.NamedTensorMap } {
  checkLabels(labels, images);
  const labelSmoothing = opts.labelSmoothing ?? 0;
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const { value, grads } = tf.variableGrads(() => {
    const logits = model.apply(images, { training: true }) as tf.Tensor2D;
    const onehot = tf.oneHot(labels, opts.numClasses);
    return tf.losses.softmaxCrossEntropy(onehot, logits, undefined, labelSmoothing) as tf.Scalar;
  }, variables);
  const crossEntropy = value.dataSync()[0] as number;
  value.dispose();
  // Model order, whatever order variableGrads used, because the optimizer matches slots by position.
  const ordered: tf.NamedTensorMap = {};
  for (const v of variables) {
    const g = grads[v.name];
    if (g) ordered[v.name] = g;
  }
  return { crossEntropy, grads: ordered };
}

/** weightDecay x sum(w^2)/2 over the decayed weights (tf.nn.l2_loss, conv and dense kernels only). */
export function weightDecayLoss(model: tf.LayersModel, weightDecay: number): number {
  if (weightDecay === 0) return 0;
  const decayed = new Set(decayedWeightNames(model));
  const vars = model.trainableWeights.filter((w) => decayed.has(w.name)).map((w) => w.read());
  if (vars.length === 0) return 0;
  const native = sumOfSquaresNative(vars);
  if (native !== undefined) return 0.5 * weightDecay * native;
  return tf.tidy(() => tf.mul(tf.addN(vars.map((v) => tf.sum(tf.square(v)))), 0.5 * weightDecay).dataSync()[0] as number);
}

/**
 * The gradients with weightDecay x w added for the decayed weights. Returns a new map; its tensors
 * for undecayed weights are the same objects as in `grads`, the others are new (the caller disposes
 * both maps' tensors, once each).
 */
export function addWeightDecay(model: tf.LayersModel, grads: tf.NamedTensorMap, weightDecay: number): tf.NamedTensorMap {
  if (weightDecay === 0) return { ...grads };
  const decayed = new Set(decayedWeightNames(model));
  const weights = new Map(model.trainableWeights.map((w) => [w.name, w]));
  const out: tf.NamedTensorMap = {};
  for (const [name, g] of Object.entries(grads)) {
    const w = weights.get(name);
    out[name] = decayed.has(name) && w ? tf.tidy(() => tf.add(g, tf.mul(w.read(), weightDecay))) : g;
  }
  return out;
}

export interface EvalMetrics {
  /** Mean softmax cross-entropy (no label smoothing, no weight decay). */
  loss: number;
  /** Fraction of images whose top logit is the label. */
  top1: number;
  /** Fraction whose label is among the 5 top logits; NaN with fewer than 5 classes. */
  top5: number;
  /** Images in the batch, to weight batch means into a dataset mean. */
  count: number;
}

/**
 * evaluateBatch's metrics from logits already computed ([n, numClasses] row-major), e.g. by the native
 * forward: mean softmax cross-entropy (in double), top-1 (the first largest logit, as tf.argMax) and
 * top-5 (fewer than 5 logits rank above the label's, ties going to the lower index, as tf.topk).
 */
export function metricsFromLogits(logits: Float32Array, labels: Int32Array, numClasses: number): EvalMetrics {
  const count = labels.length;
  if (logits.length !== count * numClasses) throw new Error(`${logits.length} logits for ${count} images of ${numClasses} classes`);
  let loss = 0;
  let top1 = 0;
  let top5 = 0;
  for (let r = 0; r < count; r++) {
    const row = logits.subarray(r * numClasses, (r + 1) * numClasses);
    const label = labels[r] as number;
    let max = -Infinity;
    let arg = 0;
    for (let k = 0; k < numClasses; k++) if ((row[k] as number) > max) (max = row[k] as number), (arg = k);
    let sum = 0;
    for (let k = 0; k < numClasses; k++) sum += Math.exp((row[k] as number) - max);
    loss += Math.log(sum) + max - (row[label] as number);
    if (arg === label) top1++;
    const z = row[label] as number;
    let above = 0;
    for (let k = 0; k < numClasses; k++) if ((row[k] as number) > z || ((row[k] as number) === z && k < label)) above++;
    if (above < 5) top5++;
  }
  return { loss: loss / count, top1: top1 / count, top5: numClasses >= 5 ? top5 / count : NaN, count };
}

/** Metrics of one batch in inference mode (batch norm uses its moving statistics). */
export function evaluateBatch(model: tf.LayersModel, images: tf.Tensor4D, labels: tf.Tensor1D, numClasses: number): EvalMetrics {
  checkLabels(labels, images);
  const count = labels.shape[0];
  const values = tf.tidy(() => {
    const logits = model.apply(images, { training: false }) as tf.Tensor2D;
    const ce = tf.losses.softmaxCrossEntropy(tf.oneHot(labels, numClasses), logits);
    const top1 = tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32'));
    const top5 =
      numClasses >= 5
        ? tf.mean(tf.cast(tf.any(tf.equal(tf.topk(logits, 5).indices, tf.expandDims(labels, 1)), 1), 'float32'))
        : tf.scalar(NaN);
    return tf.stack([ce, top1, top5]);
  });
  const [loss, top1, top5] = Array.from(values.dataSync());
  values.dispose();
  return { loss: loss as number, top1: top1 as number, top5: top5 as number, count };
}
