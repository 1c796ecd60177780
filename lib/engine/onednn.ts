/**
 * Convolution kernels for the tfjs `wasm` backend computed by oneDNN, the CPU deep-learning primitive
 * library under libtensorflow and PyTorch, through our small native addon (native/onednn).
 *
 * Why: on the wasm backend a ResNet training step spends ~75 % of its time in the forward convolution
 * and its two gradients, which XNNPACK runs as 128-bit wasm SIMD without fused multiply-add on one core.
 * oneDNN runs the same convolutions with AVX2/AVX-512 FMA, 3-4x faster per core (bench/train.ts measures
 * both). Everything else (batch norm, ReLU, pooling, the optimizer) stays on wasm: only these kernels
 * change, so models, checkpoints and exports are the same whichever engine trained them.
 *
 * The tensors never leave the wasm heap: the addon receives the heap's ArrayBuffer and byte offsets and
 * oneDNN reads and writes in place, in tfjs's own layouts (NHWC activations, HWIO filters).
 *
 * The addon is optional. It is built by `npm run build` when oneDNN's headers are installed (Debian:
 * `apt-get install libdnnl-dev`; scripts/setup.sh does it) and otherwise training falls back to the
 * XNNPACK kernels of ./wasm-kernels, with the reason printed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { errorMessage } from '../errors';

type Shape4 = [number, number, number, number];
type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
type RoundingMode = 'floor' | 'round' | 'ceil' | undefined;

interface Addon {
  conv(kind: 0 | 1 | 2, heap: ArrayBuffer, a: number, b: number, c: number, bias: number, params: Int32Array): void;
  maxPoolGrad(heap: ArrayBuffer, x: number, dy: number, dx: number, params: Int32Array): void;
  reduceRows(heap: ArrayBuffer, src: number, dst: number, rows: number, cols: number, mean: 0 | 1): void;
  sumSquares(heap: ArrayBuffer, offset: number, count: number): number;
  bnForward(heap: ArrayBuffer, x: number, scale: number, offset: number, y: number, mean: number, variance: number,
    rows: number, cols: number, epsilon: number): void;
  bnBackward(heap: ArrayBuffer, dy: number, x: number, scale: number, mean: number, variance: number, dx: number,
    dscale: number, doffset: number, rows: number, cols: number, epsilon: number): void;
  weightedSum(out: Float32Array, inputs: Float32Array[], weights: number[]): void;
  momentumUpdate(heap: ArrayBuffer, weights: number, accumulator: number, grad: Float32Array, lr: number,
    momentum: number, nesterov: boolean, weightDecay: number): void;
  createNetwork(ops: Int32Array, weights: Float32Array[], input: Int32Array): NativeNetworkHandle;
  networkForward(net: NativeNetworkHandle, images: Float32Array, n: number): Float32Array;
  disposeNetwork(net: NativeNetworkHandle): void;
  createTrainNetwork(ops: Int32Array, refs: Int32Array, floats: Float32Array, tensors: Int32Array, input: Int32Array, bf16: boolean): NativeTrainHandle;
  trainNetworkStep(net: NativeTrainHandle, heap: ArrayBuffer, offsets: Float64Array, images: Float32Array, labels: Int32Array, n: number,
    grad: Float32Array, stats: Float32Array, labelSmoothing: number): Float64Array;
  disposeTrainNetwork(net: NativeTrainHandle): void;
  setThreads(n: number): void;
  info(): { version: string; isa: string; threads: number };
}

/** A whole inference network held by the addon (./native-forward builds them). */
export type NativeNetworkHandle = { readonly __brand: 'imgclass-onednn-network' };

/** The addon's network calls (see native/onednn createNetwork), when the addon loads in this thread. */
export type NativeNetworkApi = Pick<Addon, 'createNetwork' | 'networkForward' | 'disposeNetwork'>;

/** A whole training network held by the addon (./native-train builds them). */
export type NativeTrainHandle = { readonly __brand: 'imgclass-onednn-train-network' };

/** The addon's training-network calls (see native/onednn/train-network.cc). */
export type NativeTrainApi = Pick<Addon, 'createTrainNetwork' | 'trainNetworkStep' | 'disposeTrainNetwork'>;

/** What the wasm backend offers its kernels (tfjs-backend-wasm's BackendWasm, the parts we use). */
interface WasmBackend extends tf.KernelBackend {
  wasm: { HEAPU8: Uint8Array };
  getMemoryOffset(dataId: tf.DataId): number;
  refCount(dataId: tf.DataId): number;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.backend_util.TypedArray;
}

export type OneDnnLoad = { ok: true; version: string; isa: string } | { ok: false; reason: string };

const ADDON_FILE = path.join('native', 'onednn', 'build', 'Release', 'imgclass_onednn.node');

let addon: Addon | undefined;
let loadResult: OneDnnLoad | undefined;

/** The package root: the nearest folder above this module holding our package.json (works from dist/). */
function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'imgclass') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`imgclass package.json not found above ${__dirname}`);
    dir = up;
  }
}

/** Loads the addon once per thread; says why not when it cannot (not built, oneDNN missing, ...). */
export function loadOneDnn(): OneDnnLoad {
  if (loadResult) return loadResult;
  const file = path.join(packageRoot(), ADDON_FILE);
  if (!fs.existsSync(file)) {
    loadResult = {
      ok: false,
      reason: 'the oneDNN addon is not built (install oneDNN, e.g. apt-get install libdnnl-dev, then npm run build)',
    };
    return loadResult;
  }
  try {
    addon = require(file) as Addon;
    const info = addon.info();
    loadResult = { ok: true, version: info.version, isa: info.isa };
  } catch (err) {
    loadResult = { ok: false, reason: `the oneDNN addon failed to load: ${errorMessage(err).split('\n')[0]}` };
  }
  return loadResult;
}

/** The addon's whole-network inference calls, or undefined when it is not built or does not load. */
export function nativeNetworkApi(): NativeNetworkApi | undefined {
  return loadOneDnn().ok ? addon : undefined;
}

/**
 * oneDNN's thread count for the calling thread (OpenMP's is per thread). Training replicas each own a
 * core and use 1; a single process (serving, evaluation) may use all cores.
 */
/**
 * The training-network calls, when the oneDNN engine is active in this thread (the native step reads
 * the weights on tfjs-wasm's heap), else undefined.
 */
export function nativeTrainApi(): NativeTrainApi | undefined {
  return addon && oneDnnKernelsActive() && tf.getBackend() === BACKEND ? addon : undefined;
}

/**
 * Whether oneDNN runs bfloat16 convolutions natively here (AVX512_BF16 or AMX, as its effective ISA
 * reports them); the reason otherwise.
 */
export function bfloat16Support(): { ok: true; isa: string } | { ok: false; reason: string } {
  const r = loadOneDnn();
  if (!r.ok) return { ok: false, reason: r.reason };
  return bfloat16Isa(r.isa) ? { ok: true, isa: r.isa } : { ok: false, reason: `this CPU's oneDNN reports ${r.isa}, without bfloat16 (needs AVX512_BF16 or AMX)` };
}

/** oneDNN ISA names (dnnl::cpu_isa) with native bfloat16 arithmetic. */
export function bfloat16Isa(isa: string): boolean {
  return isa === 'avx512_core_bf16' || isa.startsWith('avx512_core_amx');
}

/** The wasm heap and the byte offset of each float32 tensor on it, read at the moment of the call. */
export function wasmHeapOffsets(tensors: tf.Tensor[]): { heap: ArrayBuffer; offsets: Float64Array } {
  if (tf.getBackend() !== BACKEND) throw new Error(`wasmHeapOffsets: the active backend is ${tf.getBackend()}, not wasm`);
  const b = tf.backend() as WasmBackend;
  const offsets = new Float64Array(tensors.length);
  tensors.forEach((t, i) => {
    if (t.dtype !== 'float32' || t.isDisposed) throw new Error(`wasmHeapOffsets: tensor ${i} is ${t.isDisposed ? 'disposed' : t.dtype}`);
    offsets[i] = b.getMemoryOffset(t.dataId);
  });
  return { heap: b.wasm.HEAPU8.buffer as ArrayBuffer, offsets };
}

export function setOneDnnThreads(n: number): void {
  requireAddon().setThreads(Math.max(1, Math.floor(n)));
}

export function oneDnnThreads(): number {
  return requireAddon().info().threads;
}

function requireAddon(): Addon {
  const r = loadOneDnn();
  if (!r.ok || !addon) throw new Error(`oneDNN kernels unavailable: ${r.ok ? 'not loaded' : r.reason}`);
  return addon;
}

const BACKEND = 'wasm';

/** The kernels tfjs-backend-wasm registered itself, kept so FusedConv2D can hand it what we don't run. */
const native = new Map<string, tf.KernelConfig>();
const OURS = Symbol('imgclass-onednn-kernel');

/**
 * Batch normalisation in training mode as one kernel: inputs x (channels last), scale, offset; attr
 * varianceEpsilon; outputs [y, batch mean, batch variance (biased)], what tfjs-layers' BatchNormalization
 * computes with tf.moments and tf.batchNorm in ~12 kernels (and ~20 more for their gradients). Used by
 * ./batch-norm for layers in training mode when the oneDNN engine is active.
 */
export const BATCH_NORM_TRAINING = 'ImgclassBatchNormTraining';
/** Its gradient: inputs dy, x, scale, mean, variance; outputs [dx, dscale, doffset]. */
export const BATCH_NORM_TRAINING_GRAD = 'ImgclassBatchNormTrainingGrad';

/**
 * The kernels replaced. Besides the convolutions: MaxPoolGrad (tfjs-wasm's is scalar C++, 30 ms for
 * the ResNet stem's 16x32x32x64 at batch 16, 7 % of a step), and Sum / Mean over all axes but the
 * channels, i.e. batch-norm statistics and their gradients, which tfjs-wasm computes by transposing the
 * whole activation first. Other reductions are handed to the wasm backend's own kernels.
 */
const KERNELS: [string, (args: KernelArgs) => tf.TensorInfo][] = [
  [tf.Conv2D, conv2dKernel],
  [tf.FusedConv2D, fusedConv2dKernel],
  [tf.Conv2DBackpropInput, backpropInputKernel],
  [tf.Conv2DBackpropFilter, backpropFilterKernel],
  [tf.MaxPoolGrad, maxPoolGradKernel],
  [tf.Sum, (args) => channelReduceKernel(tf.Sum, args)],
  [tf.Mean, (args) => channelReduceKernel(tf.Mean, args)],
  [BATCH_NORM_TRAINING, batchNormTrainingKernel as unknown as (args: KernelArgs) => tf.TensorInfo],
  [BATCH_NORM_TRAINING_GRAD, batchNormTrainingGradKernel as unknown as (args: KernelArgs) => tf.TensorInfo],
];

/**
 * Registers the oneDNN kernels (KERNELS) for the 'wasm' backend, replacing XNNPACK's, tfjs-wasm's or
 * ours from ./wasm-kernels. Idempotent; per thread, like every tfjs registry. Throws when the addon
 * cannot load: call `loadOneDnn()` first to decide.
 */
export function registerOneDnnKernels(): void {
  requireAddon();
  if (tf.getGradient(BATCH_NORM_TRAINING) !== batchNormTrainingGradConfig) tf.registerGradient(batchNormTrainingGradConfig);
  for (const [kernelName, kernelFunc] of KERNELS) {
    const existing = tf.getKernel(kernelName, BACKEND);
    if (existing && (existing.kernelFunc as unknown as Record<symbol, boolean>)[OURS]) continue;
    if (existing) {
      if (!native.has(kernelName)) native.set(kernelName, existing);
      tf.unregisterKernel(kernelName, BACKEND);
    }
    (kernelFunc as unknown as Record<symbol, boolean>)[OURS] = true;
    tf.registerKernel({ kernelName, backendName: BACKEND, kernelFunc: kernelFunc as unknown as tf.KernelFunc });
  }
}

/** Puts back the kernels registerOneDnnKernels replaced (for choosing the plain wasm engine later). */
export function unregisterOneDnnKernels(): void {
  for (const [name] of KERNELS) {
    const existing = tf.getKernel(name, BACKEND);
    if (!existing || !(existing.kernelFunc as unknown as Record<symbol, boolean>)[OURS]) continue;
    tf.unregisterKernel(name, BACKEND);
    const original = native.get(name);
    if (original) tf.registerKernel(original);
  }
}

export function oneDnnKernelsActive(): boolean {
  const k = tf.getKernel(tf.Conv2DBackpropFilter, BACKEND);
  return k != null && (k.kernelFunc as unknown as Record<symbol, boolean>)[OURS] === true;
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: tf.KernelBackend;
  attrs: tf.NamedAttrMap;
}

const FLAG_BIAS = 1;
const FLAG_RELU = 2;

/**
 * The 18 integers the addon keys its primitives by. oneDNN wants the right/bottom padding that makes
 * the output size exact; tfjs's may be larger (explicit pads, 'ceil' rounding) or describe input rows
 * the convolution never reads ('valid' leftovers), so it is recomputed from the output size.
 */
function params(info: tf.backend_util.Conv2DInfo, flags: number): Int32Array {
  const { padInfo: p } = info;
  const bottom = (info.outHeight - 1) * info.strideHeight + info.effectiveFilterHeight - info.inHeight - p.top;
  const right = (info.outWidth - 1) * info.strideWidth + info.effectiveFilterWidth - info.inWidth - p.left;
  return Int32Array.from([
    info.batchSize, info.inHeight, info.inWidth, info.inChannels,
    info.outHeight, info.outWidth, info.outChannels,
    info.filterHeight, info.filterWidth, info.strideHeight, info.strideWidth,
    info.dilationHeight, info.dilationWidth,
    p.top, p.left, Math.max(bottom, 0), Math.max(right, 0), flags,
  ]);
}

function checkInput(kernel: string, name: string, t: tf.TensorInfo | undefined, rank: number): tf.TensorInfo {
  if (t == null) throw new Error(`${kernel}: missing input '${name}'`);
  if (t.dtype !== 'float32') throw new Error(`${kernel}: input '${name}' must be float32, got ${t.dtype}`);
  if (t.shape.length !== rank) throw new Error(`${kernel}: input '${name}' must have rank ${rank}, got [${t.shape}]`);
  return t;
}

function requireNhwc(kernel: string, dataFormat: unknown): void {
  if (dataFormat != null && dataFormat !== 'NHWC') {
    throw new Error(
      `${kernel} on the wasm backend (imgclass oneDNN kernels) supports dataFormat 'NHWC' only, got ` +
        `'${String(dataFormat)}': keep images channels-last.`,
    );
  }
}

function sameShape(kernel: string, what: string, got: number[], want: number[]): void {
  if (got.length !== want.length || got.some((v, i) => v !== want[i])) {
    throw new Error(`${kernel}: ${what} has shape [${got}] but the convolution implies [${want}]`);
  }
}

/** Runs one addon call writing a fresh output tensor; empty tensors short-cut to zeros. */
function run(backend: tf.KernelBackend, outShape: number[], kind: 0 | 1 | 2, a: tf.TensorInfo, b: tf.TensorInfo,
  bias: tf.TensorInfo | undefined, p: Int32Array): tf.TensorInfo {
  const wb = backend as WasmBackend;
  const out = wb.makeOutput(outShape, 'float32');
  const empty = (s: number[]): boolean => s.some((d) => d === 0);
  if (empty(outShape) || empty(a.shape) || empty(b.shape)) {
    wb.typedArrayFromHeap(out).fill(0);
    return out;
  }
  // Read the heap only now: makeOutput may have grown the wasm memory, which replaces its ArrayBuffer.
  const heap = wb.wasm.HEAPU8.buffer as ArrayBuffer;
  (addon as Addon).conv(kind, heap, wb.getMemoryOffset(a.dataId), wb.getMemoryOffset(b.dataId),
    wb.getMemoryOffset(out.dataId), bias ? wb.getMemoryOffset(bias.dataId) : -1, p);
  return out;
}

function forwardInfo(kernel: string, x: tf.TensorInfo, filter: tf.TensorInfo, attrs: tf.NamedAttrMap): tf.backend_util.Conv2DInfo {
  const a = attrs as unknown as tf.Conv2DAttrs;
  requireNhwc(kernel, a.dataFormat);
  const xs = x.shape as Shape4, fs4 = filter.shape as Shape4;
  if (xs[3] !== fs4[2]) {
    throw new Error(`${kernel}: input has ${xs[3]} channels but the filter expects ${fs4[2]} (filter shape [${fs4}])`);
  }
  return tf.backend_util.computeConv2DInfo(xs, fs4, a.strides, a.dilations ?? 1, a.pad as Pad,
    a.dimRoundingMode as RoundingMode, false, 'channelsLast');
}

function conv2dKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const x = checkInput(tf.Conv2D, 'x', inputs.x, 4);
  const filter = checkInput(tf.Conv2D, 'filter', inputs.filter, 4);
  const info = forwardInfo(tf.Conv2D, x, filter, attrs);
  return run(backend, info.outShape, 0, x, filter, undefined, params(info, 0));
}

function fusedConv2dKernel(args: KernelArgs): tf.TensorInfo {
  const { inputs, backend, attrs } = args;
  const a = attrs as unknown as tf.FusedConv2DAttrs;
  const x = checkInput(tf.FusedConv2D, 'x', inputs.x, 4);
  const filter = checkInput(tf.FusedConv2D, 'filter', inputs.filter, 4);
  const bias = inputs.bias;
  const cout = filter.shape[3] as number;
  const biasFits = bias == null || (bias.dtype === 'float32' && bias.shape.reduce((p, d) => p * d, 1) === cout &&
    (bias.shape.length === 1 || bias.shape.slice(0, -1).every((d) => d === 1)));
  if ((a.activation !== 'linear' && a.activation !== 'relu') || inputs.preluActivationWeights != null || !biasFits) {
    // Other activations and broadcast biases are rare in training; XNNPACK's kernel runs them.
    return delegate(tf.FusedConv2D, args);
  }
  const info = forwardInfo(tf.FusedConv2D, x, filter, attrs);
  const flags = (bias ? FLAG_BIAS : 0) | (a.activation === 'relu' ? FLAG_RELU : 0);
  return run(backend, info.outShape, 0, x, filter, bias, params(info, flags));
}

function backpropInputKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const a = attrs as unknown as tf.Conv2DBackpropInputAttrs;
  requireNhwc(tf.Conv2DBackpropInput, a.dataFormat);
  const dy = checkInput(tf.Conv2DBackpropInput, 'dy', inputs.dy, 4);
  const filter = checkInput(tf.Conv2DBackpropInput, 'filter', inputs.filter, 4);
  const info = tf.backend_util.computeConv2DInfo(a.inputShape as Shape4, filter.shape as Shape4, a.strides, 1,
    a.pad as Pad, a.dimRoundingMode as RoundingMode, false, 'channelsLast');
  sameShape(tf.Conv2DBackpropInput, 'dy', dy.shape, info.outShape);
  return run(backend, [...a.inputShape], 1, dy, filter, undefined, params(info, 0));
}

function backpropFilterKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const a = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  requireNhwc(tf.Conv2DBackpropFilter, a.dataFormat);
  const x = checkInput(tf.Conv2DBackpropFilter, 'x', inputs.x, 4);
  const dy = checkInput(tf.Conv2DBackpropFilter, 'dy', inputs.dy, 4);
  const info = tf.backend_util.computeConv2DInfo(x.shape as Shape4, a.filterShape as Shape4, a.strides, 1,
    a.pad as Pad, a.dimRoundingMode as RoundingMode, false, 'channelsLast');
  sameShape(tf.Conv2DBackpropFilter, 'dy', dy.shape, info.outShape);
  return run(backend, [...a.filterShape], 2, x, dy, undefined, params(info, 0));
}

/** Hands a call to the kernel the wasm backend had before ours. */
function delegate(kernel: string, args: KernelArgs): tf.TensorInfo {
  const original = native.get(kernel);
  if (!original) throw new Error(`${kernel}: this case needs the wasm backend's own kernel, which is not registered`);
  return original.kernelFunc(args as unknown as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo;
}

function maxPoolGradKernel(args: KernelArgs): tf.TensorInfo {
  const { inputs, backend, attrs } = args;
  const a = attrs as unknown as tf.MaxPoolGradAttrs;
  const dy = checkInput(tf.MaxPoolGrad, 'dy', inputs.dy, 4);
  const x = checkInput(tf.MaxPoolGrad, 'input', inputs.input, 4);
  const info = tf.backend_util.computePool2DInfo(x.shape as Shape4, a.filterSize, a.strides, 1, a.pad as Pad,
    a.dimRoundingMode as RoundingMode);
  sameShape(tf.MaxPoolGrad, 'dy', dy.shape, info.outShape);
  const wb = backend as WasmBackend;
  const dx = wb.makeOutput([...x.shape], 'float32');
  if (x.shape.some((d) => d === 0) || dy.shape.some((d) => d === 0)) {
    wb.typedArrayFromHeap(dx).fill(0);
    return dx;
  }
  const p = info.padInfo;
  const bottom = (info.outHeight - 1) * info.strideHeight + info.filterHeight - info.inHeight - p.top;
  const right = (info.outWidth - 1) * info.strideWidth + info.filterWidth - info.inWidth - p.left;
  const params = Int32Array.from([info.batchSize, info.inHeight, info.inWidth, info.inChannels, info.outHeight,
    info.outWidth, info.filterHeight, info.filterWidth, info.strideHeight, info.strideWidth, p.top, p.left,
    Math.max(bottom, 0), Math.max(right, 0)]);
  (addon as Addon).maxPoolGrad(wb.wasm.HEAPU8.buffer as ArrayBuffer, wb.getMemoryOffset(x.dataId),
    wb.getMemoryOffset(dy.dataId), wb.getMemoryOffset(dx.dataId), params);
  return dx;
}

/** Sum or Mean over every axis but the last (channels), natively; anything else goes to tfjs-wasm's kernel. */
function channelReduceKernel(kernel: string, args: KernelArgs): tf.TensorInfo {
  const { inputs, backend, attrs } = args;
  const x = inputs.x;
  const a = attrs as unknown as tf.SumAttrs;
  if (x == null || x.dtype !== 'float32' || x.shape.length < 2) return delegate(kernel, args);
  const rank = x.shape.length;
  const axes = [...new Set(tf.util.parseAxisParam(a.axis, x.shape))].sort((p, q) => p - q);
  const rows = x.shape.slice(0, -1).reduce((p, d) => p * d, 1);
  const cols = x.shape[rank - 1] as number;
  if (axes.length !== rank - 1 || axes.some((v, i) => v !== i) || rows === 0 || cols === 0) return delegate(kernel, args);
  const wb = backend as WasmBackend;
  const out = wb.makeOutput(a.keepDims ? [...Array(rank - 1).fill(1), cols] : [cols], 'float32');
  (addon as Addon).reduceRows(wb.wasm.HEAPU8.buffer as ArrayBuffer, wb.getMemoryOffset(x.dataId),
    wb.getMemoryOffset(out.dataId), rows, cols, kernel === tf.Mean ? 1 : 0);
  return out;
}

/**
 * out = sum_k weights[k] x inputs[k], natively on all cores when the addon is loaded in this thread;
 * false (nothing written) otherwise, for the caller's JavaScript loop.
 */
export function weightedSumNative(out: Float32Array, inputs: Float32Array[], weights: number[]): boolean {
  if (!loadOneDnn().ok || !addon) return false;
  addon.weightedSum(out, inputs, weights);
  return true;
}

/**
 * Whether `momentumUpdateInPlace` may update these variables: the oneDNN engine is active on the wasm
 * backend, and no other tensor shares their memory (so changing it in place is invisible to tfjs).
 */
export function canUpdateInPlace(...vars: tf.Variable[]): boolean {
  if (!addon || !oneDnnKernelsActive() || tf.getBackend() !== BACKEND) return false;
  const b = tf.backend() as WasmBackend;
  return vars.every((v) => v.dtype === 'float32' && !v.isDisposed && b.refCount(v.dataId) === 1);
}

/**
 * One SGD-with-momentum update of `weights` and its `accumulator`, in place on the wasm heap, from a
 * gradient anywhere in JavaScript memory (a SharedArrayBuffer slice): see native/onednn MomentumUpdate.
 * Call `canUpdateInPlace` first.
 */
export function momentumUpdateInPlace(weights: tf.Variable, accumulator: tf.Variable, grad: Float32Array,
  opts: { lr: number; momentum: number; nesterov: boolean; weightDecay: number }): void {
  if (grad.length !== weights.size || accumulator.size !== weights.size) {
    throw new Error(`momentum update of ${weights.name}: gradient has ${grad.length} values, weights ${weights.size}, accumulator ${accumulator.size}`);
  }
  const b = tf.backend() as WasmBackend;
  (addon as Addon).momentumUpdate(b.wasm.HEAPU8.buffer as ArrayBuffer, b.getMemoryOffset(weights.dataId),
    b.getMemoryOffset(accumulator.dataId), grad, opts.lr, opts.momentum, opts.nesterov, opts.weightDecay);
}

/**
 * Sum of squares of float32 tensors, natively (one pass, double accumulator), when the oneDNN engine is
 * active on the wasm backend; undefined otherwise, for the caller's tensor ops.
 */
export function sumOfSquaresNative(tensors: tf.Tensor[]): number | undefined {
  if (!addon || !oneDnnKernelsActive() || tf.getBackend() !== BACKEND) return undefined;
  if (tensors.some((t) => t.dtype !== 'float32' || t.isDisposed)) return undefined;
  const b = tf.backend() as WasmBackend;
  const heap = b.wasm.HEAPU8.buffer as ArrayBuffer;
  let total = 0;
  for (const t of tensors) total += (addon as Addon).sumSquares(heap, b.getMemoryOffset(t.dataId), t.size);
  return total;
}

function channelsOf(kernel: string, x: tf.TensorInfo, ...perChannel: [string, tf.TensorInfo | undefined][]): { rows: number; cols: number } {
  if (x.dtype !== 'float32' || x.shape.length < 2) throw new Error(`${kernel}: x must be float32 of rank >= 2, got ${x.dtype} [${x.shape}]`);
  const cols = x.shape[x.shape.length - 1] as number;
  const rows = x.shape.slice(0, -1).reduce((p, d) => p * d, 1);
  for (const [name, t] of perChannel) {
    if (t == null || t.dtype !== 'float32' || t.shape.length !== 1 || t.shape[0] !== cols) {
      throw new Error(`${kernel}: ${name} must be float32 [${cols}], got ${t ? `${t.dtype} [${t.shape}]` : 'nothing'}`);
    }
  }
  if (rows === 0 || cols === 0) throw new Error(`${kernel}: empty input [${x.shape}]`);
  return { rows, cols };
}

function batchNormTrainingKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const x = inputs.x as tf.TensorInfo;
  const { rows, cols } = channelsOf(BATCH_NORM_TRAINING, x, ['scale', inputs.scale], ['offset', inputs.offset]);
  const wb = backend as WasmBackend;
  const y = wb.makeOutput([...x.shape], 'float32');
  const mean = wb.makeOutput([cols], 'float32');
  const variance = wb.makeOutput([cols], 'float32');
  const off = (t: tf.TensorInfo): number => wb.getMemoryOffset(t.dataId);
  (addon as Addon).bnForward(wb.wasm.HEAPU8.buffer as ArrayBuffer, off(x), off(inputs.scale as tf.TensorInfo),
    off(inputs.offset as tf.TensorInfo), off(y), off(mean), off(variance), rows, cols, Number(attrs.varianceEpsilon));
  return [y, mean, variance];
}

function batchNormTrainingGradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const x = inputs.x as tf.TensorInfo;
  const dy = inputs.dy as tf.TensorInfo;
  const { rows, cols } = channelsOf(BATCH_NORM_TRAINING_GRAD, x, ['scale', inputs.scale], ['mean', inputs.mean],
    ['variance', inputs.variance]);
  sameShape(BATCH_NORM_TRAINING_GRAD, 'dy', dy.shape, x.shape);
  const wb = backend as WasmBackend;
  const dx = wb.makeOutput([...x.shape], 'float32');
  const dscale = wb.makeOutput([cols], 'float32');
  const doffset = wb.makeOutput([cols], 'float32');
  const off = (t: tf.TensorInfo): number => wb.getMemoryOffset(t.dataId);
  (addon as Addon).bnBackward(wb.wasm.HEAPU8.buffer as ArrayBuffer, off(dy), off(x), off(inputs.scale as tf.TensorInfo),
    off(inputs.mean as tf.TensorInfo), off(inputs.variance as tf.TensorInfo), off(dx), off(dscale), off(doffset), rows, cols,
    Number(attrs.varianceEpsilon));
  return [dx, dscale, doffset];
}

const batchNormTrainingGradConfig: tf.GradConfig = {
  kernelName: BATCH_NORM_TRAINING,
  inputsToSave: ['x', 'scale'],
  outputsToSave: [false, true, true],
  gradFunc: (dys: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
    // Only y's gradient matters: the batch statistics feed the moving averages, not the loss.
    const dy = (Array.isArray(dys) ? dys[0] : dys) as tf.Tensor;
    const [x, scale, mean, variance] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    const [dx, dscale, doffset] = tf.engine().runKernel(BATCH_NORM_TRAINING_GRAD, { dy, x, scale, mean, variance },
      attrs) as tf.Tensor[];
    return { x: () => dx as tf.Tensor, scale: () => dscale as tf.Tensor, offset: () => doffset as tf.Tensor };
  },
};
