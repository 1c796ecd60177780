/**
 * A whole training step of a tfjs LayersModel (forward in training mode, softmax cross-entropy,
 * backward) in one native oneDNN call (native/onednn/train-network.cc).
 *
 * Why: tfjs runs the step op by op, reordering every convolution's input and output between NHWC and
 * oneDNN's blocked layout and doing batch norm, ReLU, the adds and the pools as separate passes over
 * the wasm heap; the native step keeps activations and their gradients in oneDNN's layout throughout
 * and fuses ReLU into batch norm and the residual adds. It reads the weights where tfjs keeps them and
 * writes the gradients into the replica's flat gradient array in model order, so the optimizer,
 * checkpoints and exports are those of the tfjs path; the new batch-norm moving averages are written
 * back into the model's variables after each step.
 *
 * Compiles the ResNets of lib/model.ts and plain graphs of the same layer kinds with every weight
 * trainable; anything else (frozen layers, dropout, other layer types) returns the reason, and the
 * caller trains through tfjs.
 */
import * as tf from '@tensorflow/tfjs';
import { errorMessage } from '../errors';
import { decayedWeightNames } from '../model';
import { nativeTrainApi, NativeTrainApi, NativeTrainHandle, wasmHeapOffsets } from './onednn';
import { BatchNormFields, pair, Ref, Unsupported, unsupported, windowPads } from './layer-graph';

export type Precision = 'float32' | 'bfloat16';

export interface NativeTrainStep {
  /**
   * One step's loss and gradients: `grad` receives d(cross-entropy)/dw of every trainable weight at
   * its offset in model order (weight decay not included), and the batch-norm moving averages are
   * updated. Returns the cross-entropy and the sum of squares of the decayed weights (before the update).
   */
  run(images: Float32Array, labels: Int32Array, n: number, grad: Float32Array, labelSmoothing: number): { crossEntropy: number; sumSquares: number };
  /** Ops in the native graph (ResNet-18: 62). */
  readonly ops: number;
  readonly precision: Precision;
  dispose(): void;
}

export type CompileTrainResult = { ok: true; step: NativeTrainStep } | { ok: false; reason: string };

const OP_INTS = 16;
const REFS = 4;
const CONV = 0;
const BN = 1;
const RELU = 2;
const ADD = 3;
const MAX_POOL = 4;
const AVG_POOL = 5;
const DENSE = 6;

interface Op {
  type: number;
  a: number;
  b: number;
  relu: boolean;
  geometry: number[];
  refs: number[];
  floats: [number, number];
  /** Output [h, w, c] per image. */
  shape: [number, number, number];
}

/** The weights the native step reads, in the order of its tensor table. */
interface TensorTable {
  variables: tf.LayerVariable[];
  /** count, gradient offset (-1), statistics offset (-1), decayed (0/1): four per tensor. */
  ints: number[];
  statsLength: number;
  index(v: tf.LayerVariable): number;
}

function tensorTable(model: tf.LayersModel): TensorTable {
  const variables: tf.LayerVariable[] = [];
  const ints: number[] = [];
  const byName = new Map<string, number>();
  const decayed = new Set(decayedWeightNames(model));
  let gradOffset = 0;
  for (const w of model.trainableWeights) {
    byName.set(w.name, variables.length);
    variables.push(w);
    const size = (w.shape as number[]).reduce((p, d) => p * d, 1);
    ints.push(size, gradOffset, -1, decayed.has(w.name) ? 1 : 0);
    gradOffset += size;
  }
  let statsLength = 0;
  for (const w of model.nonTrainableWeights) {
    byName.set(w.name, variables.length);
    variables.push(w);
    const size = (w.shape as number[]).reduce((p, d) => p * d, 1);
    ints.push(size, -1, statsLength, 0);
    statsLength += size;
  }
  return {
    variables,
    ints,
    statsLength,
    index(v: tf.LayerVariable): number {
      const i = byName.get(v.name);
      if (i === undefined) throw new Unsupported(`weight ${v.name} is not one of the model's`);
      return i;
    },
  };
}

/** Compiles `model`'s training step natively, or says why it cannot (the caller then trains through tfjs). */
export function compileNativeTraining(model: tf.LayersModel, opts: { precision?: Precision } = {}): CompileTrainResult {
  const precision = opts.precision ?? 'float32';
  const api = nativeTrainApi();
  if (!api) return { ok: false, reason: 'the oneDNN engine is not active in this thread' };
  let ops: Op[];
  let inputShape: [number, number, number];
  const table = tensorTable(model);
  try {
    ({ ops, inputShape } = compileOps(model, table));
  } catch (err) {
    if (err instanceof Unsupported) return { ok: false, reason: err.message };
    throw err;
  }
  const ints = new Int32Array(ops.length * OP_INTS);
  const refs = new Int32Array(ops.length * REFS).fill(-1);
  const floats = new Float32Array(ops.length * 2);
  ops.forEach((op, i) => {
    ints.set([op.type, op.a, op.b, op.relu ? 1 : 0, ...op.geometry], i * OP_INTS);
    refs.set(op.refs, i * REFS);
    floats.set(op.floats, i * 2);
  });
  let handle: NativeTrainHandle;
  try {
    handle = api.createTrainNetwork(ints, refs, floats, Int32Array.from(table.ints), Int32Array.from(inputShape), precision === 'bfloat16');
  } catch (err) {
    return { ok: false, reason: `the addon refused the network: ${errorMessage(err)}` };
  }
  return { ok: true, step: makeStep(api, handle, table, inputShape, ops.length, precision) };
}

function makeStep(api: NativeTrainApi, handle: NativeTrainHandle, table: TensorTable, inputShape: [number, number, number], count: number,
  precision: Precision): NativeTrainStep {
  const pixels = inputShape[0] * inputShape[1] * inputShape[2];
  const stats = new Float32Array(table.statsLength);
  const statVars = table.variables.map((v, i) => ({ v, offset: table.ints[i * 4 + 2] as number, size: table.ints[i * 4] as number }))
    .filter((s) => s.offset >= 0);
  let disposed = false;
  return {
    ops: count,
    precision,
    run(images, labels, n, grad, labelSmoothing) {
      if (disposed) throw new Error('native training step: the network was disposed');
      if (images.length !== n * pixels) throw new RangeError(`native training step: ${images.length} values for ${n} images of ${inputShape.join('x')}`);
      // Read now: the variables' memory moves whenever tfjs replaces them (restore, moving averages).
      const { heap, offsets } = wasmHeapOffsets(table.variables.map((v) => v.read()));
      const r = api.trainNetworkStep(handle, heap, offsets, images, labels, n, grad, stats, labelSmoothing);
      tf.tidy(() => {
        for (const s of statVars) s.v.write(tf.tensor(stats.subarray(s.offset, s.offset + s.size), s.v.shape as number[]));
      });
      return { crossEntropy: r[0] as number, sumSquares: r[1] as number };
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      api.disposeTrainNetwork(handle);
    },
  };
}

function compileOps(model: tf.LayersModel, table: TensorTable): { ops: Op[]; inputShape: [number, number, number] } {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) throw new Unsupported(`${model.inputs.length} inputs and ${model.outputs.length} outputs (need 1 and 1)`);
  const inShape = model.inputs[0]!.shape;
  if (inShape.length !== 4 || inShape.slice(1).some((d) => d == null || d < 1)) throw new Unsupported(`input shape ${JSON.stringify(inShape)} (need [null, h, w, c])`);
  const inputShape = inShape.slice(1) as [number, number, number];
  if (model.nonTrainableWeights.some((w) => !/moving_(mean|variance)/.test(w.name))) {
    throw new Unsupported('some weights are frozen (only batch-norm moving statistics may be non-trainable)');
  }
  const inputsOf = (layer: tf.layers.Layer): tf.layers.Layer[] => {
    const nodes = (layer as unknown as { inboundNodes: { inboundLayers: tf.layers.Layer[] }[] }).inboundNodes;
    if (nodes.length !== 1) unsupported(layer, `applied ${nodes.length} times`);
    return nodes[0]!.inboundLayers;
  };
  const readers = new Map<string, number>();
  for (const layer of model.layers) for (const i of inputsOf(layer)) readers.set(i.name, (readers.get(i.name) ?? 0) + 1);

  const ops: Op[] = [];
  const refs = new Map<string, Ref>();
  const shapeOf = (r: Ref): [number, number, number] => {
    if (r.kind === 'input') return inputShape;
    if (r.kind === 'op') return ops[r.index]!.shape;
    const [h, w, c] = shapeOf(r.of);
    return [h + r.pads[0] + r.pads[2], w + r.pads[1] + r.pads[3], c];
  };
  const plain = (from: tf.layers.Layer, layer: tf.layers.Layer): number => {
    const r = refs.get(from.name)!;
    if (r.kind === 'pad') unsupported(layer, 'reads zero padding (only convolutions absorb it)');
    return r.kind === 'input' ? -1 : r.index;
  };
  const push = (op: Omit<Op, 'refs' | 'floats' | 'b' | 'relu'> & Partial<Op>): Ref => {
    ops.push({ b: -1, relu: false, refs: [-1, -1, -1, -1], floats: [0, 0], ...op });
    return { kind: 'op', index: ops.length - 1 };
  };

  for (const layer of model.layers) {
    const cls = layer.getClassName();
    const ins = inputsOf(layer);
    const config = layer.getConfig();
    let ref: Ref;
    if (cls === 'InputLayer') {
      ref = { kind: 'input' };
    } else if (ins.length !== 1 && cls !== 'Add') {
      unsupported(layer, `${ins.length} inputs`);
    } else if (cls === 'ZeroPadding2D') {
      const [[t, b], [l, r]] = config.padding as [[number, number], [number, number]];
      const of = refs.get(ins[0]!.name)!;
      ref = of.kind === 'pad' ? { kind: 'pad', of: of.of, pads: [of.pads[0] + t, of.pads[1] + l, of.pads[2] + b, of.pads[3] + r] } : { kind: 'pad', of, pads: [t, l, b, r] };
    } else if (cls === 'Conv2D') {
      if (config.dataFormat != null && config.dataFormat !== 'channelsLast') unsupported(layer, `dataFormat ${String(config.dataFormat)}`);
      if (config.activation !== 'linear' && config.activation != null) unsupported(layer, `activation ${JSON.stringify(config.activation)}`);
      if (((config.groups as number | undefined) ?? 1) !== 1) unsupported(layer, 'grouped convolution');
      let src = refs.get(ins[0]!.name)!;
      let extra: [number, number, number, number] = [0, 0, 0, 0];
      if (src.kind === 'pad') {
        extra = src.pads;
        src = src.of;
        if (src.kind === 'pad') throw new Error('unreachable: pads are merged');
      }
      const [h, w, c] = shapeOf(src);
      const [kh, kw] = pair(config.kernelSize, layer, 'kernelSize');
      const [sh, sw] = pair(config.strides, layer, 'strides');
      const [dh, dw] = pair(config.dilationRate, layer, 'dilationRate');
      const filters = config.filters as number;
      const info = tf.backend_util.computeConv2DInfo([1, h + extra[0] + extra[2], w + extra[1] + extra[3], c], [kh, kw, c, filters], [sh, sw], [dh, dw],
        config.padding as 'same' | 'valid', undefined, false, 'channelsLast');
      const pads = windowPads(info, info.effectiveFilterHeight, info.effectiveFilterWidth);
      const weights = layer.trainableWeights;
      ref = push({
        type: CONV, a: src.kind === 'input' ? -1 : src.index,
        geometry: [filters, kh, kw, sh, sw, pads[0] + extra[0], pads[1] + extra[1], pads[2] + extra[2], pads[3] + extra[3], dh, dw],
        refs: [table.index(weights[0]!), config.useBias ? table.index(weights[1]!) : -1, -1, -1],
        shape: [info.outHeight, info.outWidth, filters],
      });
    } else if (cls === 'BatchNormalization') {
      const bn = layer as unknown as BatchNormFields;
      const a = plain(ins[0]!, layer);
      if (a < 0) unsupported(layer, 'normalises the images');
      if (bn.axis !== -1 && bn.axis !== 3) unsupported(layer, `axis ${bn.axis}`);
      if (!bn.center || !bn.scale || !bn.gamma || !bn.beta) unsupported(layer, 'batch norm without both gamma and beta');
      ref = push({
        type: BN, a, geometry: [],
        refs: [table.index(bn.gamma), table.index(bn.beta), table.index(bn.movingMean), table.index(bn.movingVariance)],
        // (1 - momentum) as tfjs-layers computes it: in double, then rounded to float32 once.
        floats: [bn.epsilon, 1 - bn.momentum],
        shape: ops[a]!.shape,
      });
    } else if (cls === 'ReLU' || cls === 'Activation') {
      const relu = cls === 'ReLU'
        ? config.maxValue == null && !((config.negativeSlope as number | undefined) ?? 0) && !((config.threshold as number | undefined) ?? 0)
        : config.activation === 'relu';
      if (!relu) unsupported(layer, 'only a plain ReLU');
      const a = plain(ins[0]!, layer);
      if (a < 0) unsupported(layer, 'applies ReLU to the images');
      const op = ops[a]!;
      // Fused into the batch norm or add before it when nothing else reads that op's output.
      if ((op.type === BN || op.type === ADD) && !op.relu && readers.get(ins[0]!.name) === 1) {
        op.relu = true;
        ref = { kind: 'op', index: a };
      } else {
        ref = push({ type: RELU, a, geometry: [], shape: op.shape });
      }
    } else if (cls === 'Add') {
      if (ins.length !== 2) unsupported(layer, `${ins.length} inputs (only 2)`);
      const [a, b] = ins.map((l) => plain(l, layer)) as [number, number];
      if (a < 0 || b < 0 || a === b) unsupported(layer, 'adds the images or a tensor to itself');
      const sa = ops[a]!.shape, sb = ops[b]!.shape;
      if (sa.some((d, i) => d !== sb[i])) unsupported(layer, `adds [${sa}] and [${sb}]`);
      ref = push({ type: ADD, a, b, geometry: [], shape: sa });
    } else if (cls === 'MaxPooling2D') {
      const a = plain(ins[0]!, layer);
      if (a < 0) unsupported(layer, 'pools the images');
      const [h, w, c] = ops[a]!.shape;
      const [kh, kw] = pair(config.poolSize, layer, 'poolSize');
      const [sh, sw] = pair(config.strides ?? config.poolSize, layer, 'strides');
      const info = tf.backend_util.computePool2DInfo([1, h, w, c], [kh, kw], [sh, sw], 1, config.padding as 'same' | 'valid');
      ref = push({ type: MAX_POOL, a, geometry: [0, kh, kw, sh, sw, ...windowPads(info, kh, kw)], shape: [info.outHeight, info.outWidth, c] });
    } else if (cls === 'GlobalAveragePooling2D') {
      if (config.keepDims) unsupported(layer, 'keepDims');
      const a = plain(ins[0]!, layer);
      if (a < 0) unsupported(layer, 'pools the images');
      ref = push({ type: AVG_POOL, a, geometry: [], shape: [1, 1, ops[a]!.shape[2]] });
    } else if (cls === 'Dense') {
      const a = plain(ins[0]!, layer);
      if (a < 0 || ops[a]!.type !== AVG_POOL) unsupported(layer, 'reads something other than the global average pool');
      if (config.activation !== 'linear' && config.activation != null) unsupported(layer, `activation ${JSON.stringify(config.activation)}`);
      if (!config.useBias) unsupported(layer, 'a dense layer without bias');
      const units = config.units as number;
      const weights = layer.trainableWeights;
      ref = push({ type: DENSE, a, geometry: [units], refs: [table.index(weights[0]!), table.index(weights[1]!), -1, -1], shape: [0, 0, units] });
    } else {
      unsupported(layer, 'no native training op for this layer type');
    }
    refs.set(layer.name, ref);
  }
  const out = refs.get(model.outputs[0]!.sourceLayer.name);
  if (!out || out.kind !== 'op' || out.index !== ops.length - 1 || ops[out.index]!.type !== DENSE) {
    throw new Unsupported('the model does not end in its dense layer (the logits)');
  }
  return { ops, inputShape };
}
