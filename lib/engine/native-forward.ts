/**
 * Inference of a whole tfjs LayersModel in one native oneDNN call (native/onednn createNetwork).
 *
 * Why: tfjs runs a ResNet forward op by op, reordering each convolution's input and output between
 * NHWC and oneDNN's blocked layout and doing batch norm, ReLU, the residual adds and the pools as
 * separate passes; at 64 px that is ~3.5x slower than PyTorch in process. Here the layer graph is
 * compiled once into a short list of ops: every inference-mode batch norm folded into the convolution
 * before it (w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta), ReLU
 * and residual adds fused into convolutions as oneDNN post-ops, zero padding folded into the
 * convolution's own padding. The activations then stay in oneDNN's layout from op to op.
 *
 * Compiles the ResNets of lib/model.ts and any plain layer graph of the same layer kinds (so the
 * transfer-learning models built from a Layers source, lib/transfer/model.ts, when they are); returns
 * the reason otherwise (graph backbones, nested models, other layers), and the caller runs tfjs.
 * The weights are copied when compiling: later changes to the model are not seen.
 */
import * as tf from '@tensorflow/tfjs';
import { errorMessage } from '../errors';
import { nativeNetworkApi, NativeNetworkApi, NativeNetworkHandle } from './onednn';
import { BatchNormFields, pair, Ref, Unsupported, unsupported, windowPads } from './layer-graph';

/** A compiled network: logits for a batch of NHWC images. */
export interface NativeForward {
  /** Logits [n, classes], row-major, for `n` images of imageSize x imageSize x 3 in `images` (NHWC). */
  logits(images: Float32Array, n: number): Float32Array;
  readonly classes: number;
  /** Ops after fusion (a ResNet-18 has 24: 21 convolutions, 2 pools and the dense layer). */
  readonly ops: number;
  dispose(): void;
}

export type CompileResult = { ok: true; forward: NativeForward } | { ok: false; reason: string };

const OP_INTS = 16;
const CONV = 0;
const MAX_POOL = 1;
const AVG_POOL = 2;
const DENSE = 3;

/** One op of the network being built; `weights` are the arrays the addon copies. */
interface Op {
  type: number;
  src: number;
  res: number;
  relu: boolean;
  /** co kh kw sh sw padT padL padB padR dh dw (conv); - kh kw sh sw padT padL padB padR (max pool); units (dense). */
  geometry: number[];
  kernel?: Float32Array;
  bias?: Float32Array;
  /** Output [h, w, c] per image; h = w = 0 for a vector. */
  shape: [number, number, number];
  /** Some layer other than the next in a chain reads this op's output: it can no longer absorb BN, ReLU or an add. */
  shared: boolean;
}

interface LayerNode {
  inboundLayers: tf.layers.Layer[];
}

function values(t: tf.Tensor | tf.LayerVariable): Float32Array {
  const v = t instanceof tf.Tensor ? t : t.read();
  return Float32Array.from(v.dataSync() as Float32Array);
}

function activationRelu(layer: tf.layers.Layer, activation: unknown): boolean {
  if (activation === 'linear' || activation == null) return false;
  if (activation === 'relu') return true;
  return unsupported(layer, `activation ${JSON.stringify(activation)} (only linear and relu)`);
}

function channelsLast(layer: tf.layers.Layer, config: tf.serialization.ConfigDict): void {
  if (config.dataFormat != null && config.dataFormat !== 'channelsLast') unsupported(layer, `dataFormat ${String(config.dataFormat)}`);
}

/** Compiles `model` to a native network, or says why it cannot (the caller then runs tfjs). */
export function compileNativeForward(model: tf.LayersModel): CompileResult {
  const api = nativeNetworkApi();
  if (!api) return { ok: false, reason: 'the oneDNN addon is not built or does not load' };
  let ops: Op[];
  let inputShape: [number, number, number];
  try {
    ({ ops, inputShape } = compileOps(model));
  } catch (err) {
    if (err instanceof Unsupported) return { ok: false, reason: err.message };
    throw err;
  }
  const ints = new Int32Array(ops.length * OP_INTS);
  const weights: Float32Array[] = [];
  ops.forEach((op, i) => {
    ints.set([op.type, op.src, op.res, op.relu ? 1 : 0, ...op.geometry], i * OP_INTS);
    if (op.kernel && op.bias) weights.push(op.kernel, op.bias);
  });
  let forward: NativeForward;
  try {
    const handle = api.createNetwork(ints, weights, Int32Array.from(inputShape));
    forward = makeForward(api, handle, inputShape, ops[ops.length - 1]!.shape[2], ops.length);
  } catch (err) {
    return { ok: false, reason: `the addon refused the network: ${errorMessage(err)}` };
  }
  try {
    // One image now, so that a primitive oneDNN cannot create here shows up as a reason, not as a failed request.
    forward.logits(new Float32Array(inputShape[0] * inputShape[1] * inputShape[2]), 1);
  } catch (err) {
    forward.dispose();
    return { ok: false, reason: `oneDNN cannot run it: ${errorMessage(err)}` };
  }
  return { ok: true, forward };
}

function makeForward(api: NativeNetworkApi, handle: NativeNetworkHandle, inputShape: [number, number, number], classes: number,
  count: number): NativeForward {
  const pixels = inputShape[0] * inputShape[1] * inputShape[2];
  let disposed = false;
  return {
    classes,
    ops: count,
    logits(images: Float32Array, n: number): Float32Array {
      if (disposed) throw new Error('native forward: the network was disposed');
      if (images.length !== n * pixels) throw new RangeError(`native forward: ${images.length} values for ${n} images of ${inputShape.join('x')}`);
      return api.networkForward(handle, images, n);
    },
    dispose(): void {
      if (disposed) return;
      disposed = true;
      api.disposeNetwork(handle);
    },
  };
}

function compileOps(model: tf.LayersModel): { ops: Op[]; inputShape: [number, number, number] } {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) throw new Unsupported(`${model.inputs.length} inputs and ${model.outputs.length} outputs (need 1 and 1)`);
  const inShape = model.inputs[0]!.shape;
  if (inShape.length !== 4 || inShape.slice(1).some((d) => d == null || d < 1)) throw new Unsupported(`input shape ${JSON.stringify(inShape)} (need [null, h, w, c])`);
  const inputShape = inShape.slice(1) as [number, number, number];
  if (model.inputs[0]!.dtype !== 'float32') throw new Unsupported(`input dtype ${model.inputs[0]!.dtype}`);

  // How many times each layer's output is read (the model output counts as one read).
  const readers = new Map<string, number>();
  const inputsOf = (layer: tf.layers.Layer): tf.layers.Layer[] => {
    const nodes = (layer as unknown as { inboundNodes: LayerNode[] }).inboundNodes;
    if (nodes.length !== 1) unsupported(layer, `applied ${nodes.length} times (shared layers are not compiled)`);
    return nodes[0]!.inboundLayers;
  };
  for (const layer of model.layers) {
    for (const i of inputsOf(layer)) readers.set(i.name, (readers.get(i.name) ?? 0) + 1);
  }
  const outputLayer = model.outputs[0]!.sourceLayer;
  readers.set(outputLayer.name, (readers.get(outputLayer.name) ?? 0) + 1);

  const ops: Op[] = [];
  const refs = new Map<string, Ref>();
  const shapeOf = (r: Ref): [number, number, number] => {
    if (r.kind === 'input') return inputShape;
    if (r.kind === 'op') return ops[r.index]!.shape;
    const [h, w, c] = shapeOf(r.of);
    return [h + r.pads[0] + r.pads[2], w + r.pads[1] + r.pads[3], c];
  };
  /** The op a layer's output is, when the layer may fold something into it (it is read by this one layer only). */
  const ownOp = (from: tf.layers.Layer): Op | undefined => {
    const r = refs.get(from.name)!;
    if (r.kind !== 'op') return undefined;
    const op = ops[r.index]!;
    return op.shared || readers.get(from.name) !== 1 ? undefined : op;
  };
  const plain = (from: tf.layers.Layer, layer: tf.layers.Layer): number => {
    const r = refs.get(from.name)!;
    if (r.kind === 'pad') unsupported(layer, 'reads zero padding (only convolutions absorb it)');
    return r.kind === 'input' ? -1 : r.index;
  };
  // Layers whose output is one vector per image (the global pool, Flatten of one, dense layers): what a dense layer may read.
  const vectors = new Set<string>();
  const push = (op: Omit<Op, 'shared'>): Ref => {
    ops.push({ ...op, shared: false });
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
      channelsLast(layer, config);
      const [[t, b], [l, r]] = config.padding as [[number, number], [number, number]];
      const of = refs.get(ins[0]!.name)!;
      ref = of.kind === 'pad'
        ? { kind: 'pad', of: of.of, pads: [of.pads[0] + t, of.pads[1] + l, of.pads[2] + b, of.pads[3] + r] }
        : { kind: 'pad', of, pads: [t, l, b, r] };
    } else if (cls === 'Conv2D') {
      channelsLast(layer, config);
      let src = refs.get(ins[0]!.name)!;
      let extra: [number, number, number, number] = [0, 0, 0, 0];
      if (src.kind === 'pad') {
        extra = src.pads;
        src = src.of;
        if (src.kind === 'pad') throw new Error('unreachable: pads are merged');
      }
      const [h, w, c] = shapeOf(src);
      const [ph, pw] = [h + extra[0] + extra[2], w + extra[1] + extra[3]];
      const [kh, kw] = pair(config.kernelSize, layer, 'kernelSize');
      const [sh, sw] = pair(config.strides, layer, 'strides');
      const [dh, dw] = pair(config.dilationRate, layer, 'dilationRate');
      const filters = config.filters as number;
      if ((config.groups as number | undefined ?? 1) !== 1) unsupported(layer, 'grouped convolution');
      const info = tf.backend_util.computeConv2DInfo([1, ph, pw, c], [kh, kw, c, filters], [sh, sw], [dh, dw],
        config.padding as 'same' | 'valid', undefined, false, 'channelsLast');
      const pads = windowPads(info, info.effectiveFilterHeight, info.effectiveFilterWidth);
      const weights = layer.getWeights();
      const kernel = values(weights[0]!);
      const bias = config.useBias ? values(weights[1]!) : new Float32Array(filters);
      ref = push({
        type: CONV, src: src.kind === 'input' ? -1 : src.index, res: -1, relu: activationRelu(layer, config.activation),
        geometry: [filters, kh, kw, sh, sw, pads[0] + extra[0], pads[1] + extra[1], pads[2] + extra[2], pads[3] + extra[3], dh, dw],
        kernel, bias, shape: [info.outHeight, info.outWidth, filters],
      });
    } else if (cls === 'BatchNormalization') {
      const op = ownOp(ins[0]!);
      if (!op || op.type !== CONV || op.relu || op.res >= 0) unsupported(layer, 'batch norm is compiled only right after a convolution that nothing else reads');
      const bn = layer as unknown as BatchNormFields;
      const channels = op.shape[2];
      if (bn.axis !== -1 && bn.axis !== 3) unsupported(layer, `axis ${bn.axis} (only channels, -1)`);
      const mean = values(bn.movingMean), variance = values(bn.movingVariance);
      const gamma = bn.scale && bn.gamma ? values(bn.gamma) : new Float32Array(channels).fill(1);
      const beta = bn.center && bn.beta ? values(bn.beta) : new Float32Array(channels);
      // In double, then rounded once: the fold itself should add no error beyond float32 storage. The
      // kernel is HWIO, output channel fastest, hence j % channels.
      const kernel = op.kernel!, bias = op.bias!;
      const scale = Array.from({ length: channels }, (_, o) => gamma[o]! / Math.sqrt(variance[o]! + bn.epsilon));
      for (let j = 0; j < kernel.length; j++) kernel[j] = kernel[j]! * scale[j % channels]!;
      for (let o = 0; o < channels; o++) bias[o] = (bias[o]! - mean[o]!) * scale[o]! + beta[o]!;
      ref = refs.get(ins[0]!.name)!;
    } else if (cls === 'ReLU' || cls === 'Activation') {
      const relu = cls === 'ReLU'
        ? config.maxValue == null && !((config.negativeSlope as number | undefined) ?? 0) && !((config.threshold as number | undefined) ?? 0)
        : config.activation === 'relu';
      if (!relu) unsupported(layer, cls === 'ReLU' ? 'a capped or leaky ReLU' : `activation ${JSON.stringify(config.activation)}`);
      const op = ownOp(ins[0]!);
      if (!op || op.relu || (op.type !== CONV && op.type !== DENSE)) unsupported(layer, 'ReLU is compiled only right after a convolution or dense layer that nothing else reads');
      op.relu = true;
      ref = refs.get(ins[0]!.name)!;
      if (vectors.has(ins[0]!.name)) vectors.add(layer.name);
    } else if (cls === 'Add') {
      if (ins.length !== 2) unsupported(layer, `${ins.length} inputs (only 2)`);
      // The sum is fused into the later of the two convolutions: the other operand exists by then.
      const [a, b] = ins.map((l) => plain(l, layer)) as [number, number];
      const fusable = (i: number, l: tf.layers.Layer): boolean => {
        const op = ownOp(l);
        return op !== undefined && op === ops[i] && op.type === CONV && !op.relu && op.res < 0;
      };
      const [into, other] = fusable(Math.max(a, b), ins[a > b ? 0 : 1]!) ? [Math.max(a, b), Math.min(a, b)] : [-1, -1];
      if (into < 0 || other < 0 || a === b) unsupported(layer, 'an add is compiled only into a convolution that nothing else reads, added to an earlier op');
      const sa = ops[into]!.shape, sb = ops[other]!.shape;
      if (sa.some((d, i) => d !== sb[i])) unsupported(layer, `adds [${sa}] and [${sb}]`);
      ops[into]!.res = other;
      ref = { kind: 'op', index: into };
    } else if (cls === 'MaxPooling2D') {
      channelsLast(layer, config);
      const src = plain(ins[0]!, layer);
      const [h, w, c] = shapeOf(refs.get(ins[0]!.name)!);
      if (h === 0) unsupported(layer, 'pools a vector');
      const [kh, kw] = pair(config.poolSize, layer, 'poolSize');
      const [sh, sw] = pair(config.strides ?? config.poolSize, layer, 'strides');
      const info = tf.backend_util.computePool2DInfo([1, h, w, c], [kh, kw], [sh, sw], 1, config.padding as 'same' | 'valid');
      const pads = windowPads(info, kh, kw);
      ref = push({ type: MAX_POOL, src, res: -1, relu: false, geometry: [0, kh, kw, sh, sw, ...pads], shape: [info.outHeight, info.outWidth, c] });
    } else if (cls === 'GlobalAveragePooling2D') {
      channelsLast(layer, config);
      if (config.keepDims) unsupported(layer, 'keepDims');
      const src = plain(ins[0]!, layer);
      const [h, , c] = shapeOf(refs.get(ins[0]!.name)!);
      if (h === 0) unsupported(layer, 'pools a vector');
      ref = push({ type: AVG_POOL, src, res: -1, relu: false, geometry: [], shape: [1, 1, c] });
      vectors.add(layer.name);
    } else if (cls === 'Flatten') {
      const [h, w] = shapeOf(refs.get(ins[0]!.name)!);
      // Flattening [1, 1, c] or [c] is the identity on the data; larger maps would need NHWC order, not oneDNN's.
      if (h > 1 || w > 1) unsupported(layer, 'flattens feature maps larger than 1x1');
      plain(ins[0]!, layer);
      ref = refs.get(ins[0]!.name)!;
      vectors.add(layer.name);
    } else if (cls === 'Dense') {
      const src = plain(ins[0]!, layer);
      // A dense layer on [h, w, c] maps in tfjs applies to the last axis at every pixel: not compiled.
      if (!vectors.has(ins[0]!.name) || src < 0) unsupported(layer, 'reads feature maps, not a vector (global pool or flatten first)');
      const units = config.units as number;
      const weights = layer.getWeights();
      const kernel = values(weights[0]!);
      const bias = config.useBias ? values(weights[1]!) : new Float32Array(units);
      ref = push({ type: DENSE, src, res: -1, relu: activationRelu(layer, config.activation), geometry: [units], kernel, bias, shape: [0, 0, units] });
      vectors.add(layer.name);
    } else if (cls === 'Dropout') {
      ref = refs.get(ins[0]!.name)!; // the identity at inference
      if (vectors.has(ins[0]!.name)) vectors.add(layer.name);
    } else {
      unsupported(layer, 'no native op for this layer type');
    }
    refs.set(layer.name, ref);
    // Read by more than one layer (or by the output and a layer): the op's value is fixed from here on.
    if (ref.kind === 'op' && (readers.get(layer.name) ?? 0) !== 1) ops[ref.index]!.shared = true;
  }
  const out = refs.get(outputLayer.name);
  if (!out || out.kind !== 'op' || out.index !== ops.length - 1 || ops[out.index]!.type !== DENSE) {
    throw new Unsupported('the model does not end in a dense layer (its logits)');
  }
  return { ops, inputShape };
}
