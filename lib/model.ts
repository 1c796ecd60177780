/**
 * ResNet v1 as in tensorflow/tpu models/official/resnet/resnet_model.py (`resnet_v1`), built with
 * tf.layers (NHWC). The architecture is written once, as a plan of layer specs; the same plan is
 * turned into tf.layers by `buildResNet` and walked analytically by `modelSummary(cfg)`, so the
 * summary of a 224-px ResNet-152 costs no weights and no forward pass.
 *
 * Points that follow the tpu code rather than Keras defaults:
 * - strided convolutions use "fixed padding" (pad (k-1)/2 before, the rest after, then VALID), not
 *   SAME, whose split depends on the input size; the 3x3 max pool is SAME, as there;
 * - the first block of every stage has a projection shortcut (1x1 conv + BN), even stage 1 of
 *   ResNet-18/34 where the shapes match (`block_group` always passes use_projection=True);
 * - the stride of a bottleneck block sits on its 3x3 conv ("v1.5");
 * - conv kernels: tf.variance_scaling_initializer() = scale 1, fan_in, truncated normal whose
 *   stddev is corrected by 1/0.8796 for the truncation (LeCun-style, not He's scale 2);
 * - the last BN of each residual branch starts with gamma = 0 (`init_zero`);
 * - dense head: kernel ~ N(0, 0.01), bias zeros; BN decay 0.9, epsilon 1e-5.
 */
import * as tf from '@tensorflow/tfjs';
import { withFusedTrainingBatchNorm } from './engine/batch-norm';
import { mulberry32, Rng } from './random';
import { UserError } from './errors';

export type ResNetDepth = 18 | 34 | 50 | 101 | 152 | 200;

export interface ResNetConfig {
  depth: ResNetDepth;
  numClasses: number;
  /** Square input side in pixels; input is [batch, S, S, 3] float32, already normalised. */
  imageSize: number;
  /** Moving-average decay of batch-norm statistics (tpu MOVING_AVERAGE_DECAY). */
  bnMomentum?: number;
  bnEpsilon?: number;
  /** Seeds every initialiser, so replicas built from the same config start identical. */
  seed?: number;
  /**
   * Scales every layer's filter count (64, 128, 256, 512 at 1). Not in tpu: for quick experiments
   * and tests, since tfjs's cpu backend computes conv filter gradients with a scalar loop, which at
   * full width costs ~15 s per ResNet-18 step even on 16-px images. Default 1.
   */
  widthMultiplier?: number;
}

export const BLOCKS_PER_STAGE: Readonly<Record<ResNetDepth, readonly [number, number, number, number]>> = {
  18: [2, 2, 2, 2],
  34: [3, 4, 6, 3],
  50: [3, 4, 6, 3],
  101: [3, 4, 23, 3],
  152: [3, 8, 36, 3],
  200: [3, 24, 36, 3],
};

const STAGE_FILTERS = [64, 128, 256, 512] as const;
const DEFAULT_BN_MOMENTUM = 0.9;
const DEFAULT_BN_EPSILON = 1e-5;
// TF's truncated-normal variance scaling divides stddev by the stddev of a unit normal truncated
// at 2 sigma; tfjs's does not, so the scale is raised to match.
const TRUNCATED_NORMAL_STDDEV = 0.87962566103423978;
const DENSE_INIT_STDDEV = 0.01;

/** One layer of the architecture, enough to build it or to count its shape, params and MACs. */
type LayerSpec =
  | { kind: 'input'; name: string }
  | { kind: 'pad'; name: string; input: string; before: number; after: number }
  | { kind: 'conv'; name: string; input: string; filters: number; kernel: number; stride: number; padding: 'same' | 'valid' }
  | { kind: 'bn'; name: string; input: string; zeroGamma: boolean }
  | { kind: 'relu'; name: string; input: string }
  | { kind: 'maxpool'; name: string; input: string }
  | { kind: 'add'; name: string; inputs: [string, string] }
  | { kind: 'gap'; name: string; input: string }
  | { kind: 'dense'; name: string; input: string; units: number };

export function isResNetDepth(depth: number): depth is ResNetDepth {
  return Object.prototype.hasOwnProperty.call(BLOCKS_PER_STAGE, depth);
}

function validate(cfg: ResNetConfig): void {
  if (!isResNetDepth(cfg.depth)) {
    throw new UserError(`ResNet depth ${cfg.depth} is not supported: use one of ${Object.keys(BLOCKS_PER_STAGE).join(', ')}.`);
  }
  if (!Number.isInteger(cfg.numClasses) || cfg.numClasses < 2) {
    throw new UserError(`numClasses must be an integer >= 2 (got ${cfg.numClasses}).`);
  }
  const w = cfg.widthMultiplier ?? 1;
  if (!(w > 0) || Math.round(64 * w) < 1) {
    throw new UserError(`widthMultiplier must be a number > 0 that leaves at least one filter (got ${cfg.widthMultiplier}).`);
  }
  // Five stride-2 steps: below 32 px the last stages work on 1x1 maps, below 1 px nothing is left.
  if (!Number.isInteger(cfg.imageSize) || cfg.imageSize < 8) {
    throw new UserError(`imageSize must be an integer >= 8 pixels (got ${cfg.imageSize}); 224 is the ImageNet size.`);
  }
}

/** The ResNet v1 layer plan, in topological order. */
function resnetPlan(cfg: ResNetConfig): LayerSpec[] {
  const plan: LayerSpec[] = [{ kind: 'input', name: 'images' }];
  const width = (filters: number): number => Math.max(1, Math.round(filters * (cfg.widthMultiplier ?? 1)));
  const add = <T extends LayerSpec>(spec: T): string => {
    plan.push(spec);
    return spec.name;
  };
  // conv2d_fixed_padding: SAME at stride 1; otherwise pad (k-1)/2 before and the rest after, then VALID.
  const conv = (input: string, name: string, filters: number, kernel: number, stride: number): string => {
    if (stride > 1 && kernel > 1) {
      const before = Math.floor((kernel - 1) / 2);
      input = add({ kind: 'pad', name: `${name}_pad`, input, before, after: kernel - 1 - before });
    }
    return add({ kind: 'conv', name, input, filters, kernel, stride, padding: stride === 1 ? 'same' : 'valid' });
  };
  const bn = (input: string, name: string, zeroGamma = false): string => add({ kind: 'bn', name, input, zeroGamma });
  const relu = (input: string, name: string): string => add({ kind: 'relu', name, input });

  let x = conv('images', 'stem/conv', width(64), 7, 2);
  x = relu(bn(x, 'stem/bn'), 'stem/relu');
  x = add({ kind: 'maxpool', name: 'stem/pool', input: x });

  const bottleneck = cfg.depth >= 50;
  BLOCKS_PER_STAGE[cfg.depth].forEach((blocks, s) => {
    const filters = width(STAGE_FILTERS[s] as number);
    for (let b = 0; b < blocks; b++) {
      const p = `stage${s + 1}/block${b}`;
      const stride = b === 0 && s > 0 ? 2 : 1;
      let shortcut = x;
      if (b === 0) {
        shortcut = bn(conv(x, `${p}/proj_conv`, bottleneck ? 4 * filters : filters, 1, stride), `${p}/proj_bn`);
      }
      let y: string;
      if (bottleneck) {
        y = relu(bn(conv(x, `${p}/conv1`, filters, 1, 1), `${p}/bn1`), `${p}/relu1`);
        y = relu(bn(conv(y, `${p}/conv2`, filters, 3, stride), `${p}/bn2`), `${p}/relu2`);
        y = bn(conv(y, `${p}/conv3`, 4 * filters, 1, 1), `${p}/bn3`, true);
      } else {
        y = relu(bn(conv(x, `${p}/conv1`, filters, 3, stride), `${p}/bn1`), `${p}/relu1`);
        y = bn(conv(y, `${p}/conv2`, filters, 3, 1), `${p}/bn2`, true);
      }
      x = relu(add({ kind: 'add', name: `${p}/add`, inputs: [y, shortcut] }), `${p}/relu_out`);
    }
  });
  x = add({ kind: 'gap', name: 'head/pool', input: x });
  add({ kind: 'dense', name: 'head/dense', input: x, units: cfg.numClasses });
  return plan;
}

/** Builds the ResNet v1 classifier: input [null, S, S, 3] normalised float32, output logits [null, numClasses]. */
export function buildResNet(cfg: ResNetConfig): tf.LayersModel {
  validate(cfg);
  const momentum = cfg.bnMomentum ?? DEFAULT_BN_MOMENTUM;
  const epsilon = cfg.bnEpsilon ?? DEFAULT_BN_EPSILON;
  // One seed per initialiser: a shared seed would give equal-shaped kernels equal values.
  const rng: Rng | undefined = cfg.seed === undefined ? undefined : mulberry32(cfg.seed);
  const nextSeed = (): number | undefined => (rng ? Math.floor(rng() * 2 ** 31) : undefined);

  const tensors = new Map<string, tf.SymbolicTensor>();
  const get = (name: string): tf.SymbolicTensor => tensors.get(name) as tf.SymbolicTensor;
  let input: tf.SymbolicTensor | undefined;
  let output: tf.SymbolicTensor | undefined;
  for (const spec of resnetPlan(cfg)) {
    let out: tf.SymbolicTensor;
    switch (spec.kind) {
      case 'input':
        out = input = tf.input({ shape: [cfg.imageSize, cfg.imageSize, 3], dtype: 'float32', name: spec.name });
        break;
      case 'pad':
        out = tf.layers
          .zeroPadding2d({ name: spec.name, padding: [[spec.before, spec.after], [spec.before, spec.after]] })
          .apply(get(spec.input)) as tf.SymbolicTensor;
        break;
      case 'conv':
        out = tf.layers
          .conv2d({
            name: spec.name,
            filters: spec.filters,
            kernelSize: spec.kernel,
            strides: spec.stride,
            padding: spec.padding,
            useBias: false,
            kernelInitializer: tf.initializers.varianceScaling({
              scale: 1 / (TRUNCATED_NORMAL_STDDEV * TRUNCATED_NORMAL_STDDEV),
              mode: 'fanIn',
              distribution: 'normal', // tfjs draws 'normal' from a truncated normal
              seed: nextSeed(),
            }),
          })
          .apply(get(spec.input)) as tf.SymbolicTensor;
        break;
      case 'bn':
        // Trains through one native kernel on the oneDNN engine; a plain BatchNormalization otherwise.
        out = withFusedTrainingBatchNorm(
          tf.layers.batchNormalization({
            name: spec.name,
            axis: -1,
            momentum,
            epsilon,
            center: true,
            scale: true,
            gammaInitializer: spec.zeroGamma ? 'zeros' : 'ones',
          }),
        ).apply(get(spec.input)) as tf.SymbolicTensor;
        break;
      case 'relu':
        out = tf.layers.reLU({ name: spec.name }).apply(get(spec.input)) as tf.SymbolicTensor;
        break;
      case 'maxpool':
        out = tf.layers
          .maxPooling2d({ name: spec.name, poolSize: 3, strides: 2, padding: 'same' })
          .apply(get(spec.input)) as tf.SymbolicTensor;
        break;
      case 'add':
        out = tf.layers.add({ name: spec.name }).apply(spec.inputs.map(get)) as tf.SymbolicTensor;
        break;
      case 'gap':
        out = tf.layers.globalAveragePooling2d({ name: spec.name }).apply(get(spec.input)) as tf.SymbolicTensor;
        break;
      case 'dense':
        out = output = tf.layers
          .dense({
            name: spec.name,
            units: spec.units,
            useBias: true,
            kernelInitializer: tf.initializers.randomNormal({ mean: 0, stddev: DENSE_INIT_STDDEV, seed: nextSeed() }),
            biasInitializer: 'zeros',
          })
          .apply(get(spec.input)) as tf.SymbolicTensor;
        break;
    }
    tensors.set(spec.name, out);
  }
  return tf.model({ inputs: input as tf.SymbolicTensor, outputs: output as tf.SymbolicTensor, name: `resnet${cfg.depth}` });
}

/**
 * Names (as registered with the engine, i.e. gradient-map keys) of the weights that get L2 weight
 * decay. tpu decays every trainable variable whose name lacks 'batch_normalization': the conv
 * kernels, the dense kernel and the dense bias. The test is on the layer class, not the name, so it
 * does not depend on how layers are named.
 */
export function decayedWeightNames(model: tf.LayersModel): string[] {
  const names: string[] = [];
  for (const layer of model.layers) {
    if (layer.getClassName() === 'BatchNormalization') continue;
    for (const w of layer.trainableWeights) names.push(w.name);
  }
  return names;
}

/**
 * Trainable weights that only convolutions and batch norm read. The optimizer may update these in place
 * (lib/engine/onednn.ts): their kernels read the memory afresh on every call. Dense layers are excluded
 * because tfjs-wasm's matrix multiply caches XNNPACK's packed copy of its weights and bias by tensor
 * identity, and an in-place update would leave that copy stale.
 */
export function inPlaceUpdatableWeightNames(model: tf.LayersModel): string[] {
  const names: string[] = [];
  for (const layer of model.layers) {
    if (!['Conv2D', 'BatchNormalization'].includes(layer.getClassName())) continue;
    for (const w of layer.trainableWeights) names.push(w.name);
  }
  return names;
}

export interface LayerSummary {
  name: string;
  /** tf.layers class name (Conv2D, BatchNormalization, ...). */
  type: string;
  /** Without the batch dimension. */
  outputShape: number[];
  /** All weights, including batch-norm moving statistics. */
  params: number;
  /** Multiply-accumulates for one image (conv and dense layers only; 0 elsewhere). */
  macs: number;
}

export interface ModelSummary {
  depth: number;
  imageSize: number;
  numClasses: number;
  layers: LayerSummary[];
  /** All weights, including the non-trainable batch-norm moving mean and variance. */
  params: number;
  trainableParams: number;
  /** Multiply-accumulates of the conv and dense layers for one forward pass of one image. */
  macsPerImage: number;
  /** 2 x macsPerImage: conv and dense layers only (BN, ReLU, pooling and adds are not counted). */
  flopsPerImage: number;
}

const KIND_TO_CLASS: Record<LayerSpec['kind'], string> = {
  input: 'InputLayer',
  pad: 'ZeroPadding2D',
  conv: 'Conv2D',
  bn: 'BatchNormalization',
  relu: 'ReLU',
  maxpool: 'MaxPooling2D',
  add: 'Add',
  gap: 'GlobalAveragePooling2D',
  dense: 'Dense',
};

function summaryFromPlan(cfg: ResNetConfig): ModelSummary {
  validate(cfg);
  const shapes = new Map<string, number[]>();
  const layers: LayerSummary[] = [];
  let trainable = 0;
  for (const spec of resnetPlan(cfg)) {
    const inShape = 'input' in spec ? (shapes.get(spec.input) as number[]) : [];
    let shape: number[];
    let params = 0;
    let macs = 0;
    switch (spec.kind) {
      case 'input':
        shape = [cfg.imageSize, cfg.imageSize, 3];
        break;
      case 'pad':
        shape = [inShape[0]! + spec.before + spec.after, inShape[1]! + spec.before + spec.after, inShape[2]!];
        break;
      case 'conv': {
        const side = (n: number): number =>
          spec.padding === 'same' ? Math.ceil(n / spec.stride) : Math.floor((n - spec.kernel) / spec.stride) + 1;
        shape = [side(inShape[0]!), side(inShape[1]!), spec.filters];
        params = spec.kernel * spec.kernel * inShape[2]! * spec.filters;
        trainable += params;
        macs = shape[0]! * shape[1]! * params;
        break;
      }
      case 'bn':
        shape = inShape;
        params = 4 * inShape[2]!;
        trainable += 2 * inShape[2]!;
        break;
      case 'maxpool':
        shape = [Math.ceil(inShape[0]! / 2), Math.ceil(inShape[1]! / 2), inShape[2]!];
        break;
      case 'add':
        shape = shapes.get(spec.inputs[0]) as number[];
        break;
      case 'gap':
        shape = [inShape[2]!];
        break;
      case 'dense':
        shape = [spec.units];
        params = inShape[0]! * spec.units + spec.units;
        trainable += params;
        macs = inShape[0]! * spec.units;
        break;
      default:
        shape = inShape;
    }
    shapes.set(spec.name, shape);
    layers.push({ name: spec.name, type: KIND_TO_CLASS[spec.kind], outputShape: shape, params, macs });
  }
  return finish(cfg.depth, cfg.imageSize, cfg.numClasses, layers, trainable);
}

function summaryFromModel(model: tf.LayersModel): ModelSummary {
  const layers: LayerSummary[] = [];
  let trainable = 0;
  for (const layer of model.layers) {
    const out = layer.outputShape as (number | null)[];
    const outputShape = out.slice(1) as number[];
    const cls = layer.getClassName();
    const kernelSize = layer.weights[0] ? layer.weights[0].shape.reduce((a: number, b) => a * (b ?? 1), 1) : 0;
    let macs = 0;
    if (cls === 'Conv2D') macs = outputShape[0]! * outputShape[1]! * kernelSize;
    else if (cls === 'Dense') macs = kernelSize;
    layers.push({ name: layer.name, type: cls, outputShape, params: layer.countParams(), macs });
    for (const w of layer.trainableWeights) trainable += w.shape.reduce((a: number, b) => a * (b ?? 1), 1);
  }
  const inShape = model.inputs[0]!.shape;
  const outShape = model.outputs[0]!.shape;
  const depth = Number(/^resnet(\d+)$/.exec(model.name)?.[1] ?? NaN);
  return finish(depth, inShape[1] as number, outShape[1] as number, layers, trainable);
}

function finish(depth: number, imageSize: number, numClasses: number, layers: LayerSummary[], trainable: number): ModelSummary {
  const params = layers.reduce((a, l) => a + l.params, 0);
  const macs = layers.reduce((a, l) => a + l.macs, 0);
  return { depth, imageSize, numClasses, layers, params, trainableParams: trainable, macsPerImage: macs, flopsPerImage: 2 * macs };
}

/**
 * Layers, parameter counts and forward FLOPs of a built model, or of a config without building it
 * (no weights are allocated, so any depth and size is cheap).
 */
export function modelSummary(modelOrConfig: tf.LayersModel | ResNetConfig): ModelSummary {
  return modelOrConfig instanceof tf.LayersModel ? summaryFromModel(modelOrConfig) : summaryFromPlan(modelOrConfig);
}

function human(n: number, unit = ''): string {
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(2)} G${unit}`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(2)} M${unit}`;
  if (abs >= 1e3) return `${(n / 1e3).toFixed(1)} k${unit}`;
  return `${n}${unit ? ' ' + unit : ''}`;
}

/** A stage-level table (stem, stage1..4, head) for the notebook or terminal. */
export function formatSummary(summary: ModelSummary): string {
  interface Row { group: string; blocks: Set<string>; shape: number[]; params: number; macs: number }
  const rows = new Map<string, Row>();
  for (const l of summary.layers) {
    if (l.type === 'InputLayer') continue;
    const [group = l.name, block] = l.name.split('/');
    let row = rows.get(group);
    if (!row) {
      row = { group, blocks: new Set(), shape: l.outputShape, params: 0, macs: 0 };
      rows.set(group, row);
    }
    if (block?.startsWith('block')) row.blocks.add(block);
    row.shape = l.outputShape;
    row.params += l.params;
    row.macs += l.macs;
  }
  const header = ['part', 'blocks', 'output', 'params', 'FLOPs'];
  const table = [...rows.values()].map((r) => [
    r.group,
    r.blocks.size ? String(r.blocks.size) : '',
    r.shape.join('x'),
    human(r.params),
    human(2 * r.macs),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const title =
    `ResNet-${summary.depth}, ${summary.imageSize}x${summary.imageSize}x3 -> ${summary.numClasses} classes`;
  return [
    title,
    line(header),
    ...table.map(line),
    `params ${human(summary.params)} (${human(summary.trainableParams)} trainable); ` +
      `${human(summary.flopsPerImage, 'FLOPs')} per image forward (2 x conv/dense multiply-adds)`,
  ].join('\n');
}
