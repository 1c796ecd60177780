/**
 * Training kernels for `@tensorflow/tfjs-backend-wasm` 4.22.
 *
 * The wasm backend runs convolutions through XNNPACK (SIMD) and is the fastest tfjs backend available
 * without `@tensorflow/tfjs-node`, but as shipped it cannot train a conv net. What a ResNet v1 training
 * step needs on wasm, found by running tf.layers ResNet blocks through `tf.variableGrads`,
 * `optimizer.minimize` and `model.trainOnBatch` with sgd / momentum / adam / rmsprop:
 *
 * - `Conv2DBackpropFilter` (the filter gradient): not registered at all; every conv layer's
 *   gradient throws `Kernel 'Conv2DBackpropFilter' not registered for backend 'wasm'`. Registered here.
 * - `Conv2DBackpropInput` (the input gradient): registered natively, but as scalar C++ loops, 3.5-8x
 *   slower than the XNNPACK convolution that replaces it here (ResNet-18 layer shapes, batch 8).
 *   `tf.conv2dTranspose` runs on this kernel too.
 * - The FusedBatchNorm gradient (tfjs-core's, composed of ops) works but materialises a tiled copy of
 *   1/sqrt(var+eps) as large as the activations for every batch-norm layer: ~8 % of a ResNet-18 step on
 *   wasm. Re-registered with the same formulas using broadcasting and shared sums. Gradients are
 *   registered per kernel name, not per backend, so this one applies to every backend (same maths).
 * - `Identity`: tfjs saves every tensor a gradient needs by cloning it (Engine.saveTensorsForBackwardMode),
 *   ~600 clones per ResNet-18 step. The wasm backend's Identity copies the data each time; the cpu and
 *   webgl backends share it with a reference count, as wasm's own Reshape does. Re-registered to share.
 * - Everything else the step touches is registered natively and matches the cpu backend: MaxPoolGrad,
 *   AvgPoolGrad, FusedBatchNorm's forward, Relu's gradient (Step, Multiply), Mean (global average
 *   pooling), Softmax / log-softmax / cross-entropy (Max, Exp, Log, Sum), ClipByValue's gradient
 *   (GreaterEqual, LessEqual, LogicalAnd, Select), BatchMatMul, PadV2, Transpose, and the optimizers'
 *   elementwise updates (sgd, momentum, adam, rmsprop).
 *
 * Both conv kernels are written with tfjs ops that wasm runs fast (Transpose, PadV2, Reshape, BatchMatMul
 * and above all Conv2D, i.e. XNNPACK), so they inherit its accuracy: results match the cpu backend to
 * float32 rounding (see test/wasm-kernels.test.ts). Avoided on purpose: wasm's Slice, Gather and Reverse
 * (JavaScript loops or whole-tensor copies per call), and zero-dilated inputs (wasted multiply-adds).
 *
 * Supported: NHWC, any padding tfjs accepts ('same', 'valid', a number, explicit per-side pads), any
 * strides, `dimRoundingMode`. Dilated convolutions have no gradient in tfjs-core on any backend (the
 * Conv2D / fused conv2D gradients assert dilation 1). NCHW throws a clear error here: the wasm forward
 * Conv2D is NHWC-only, so NCHW never reaches these kernels from a training step.
 */
import * as tf from '@tensorflow/tfjs-core';
// Side effect: registers every gradient (tfjs-core's node bundle registers none; only the union package
// does). Loading it here, before our FusedBatchNorm gradient is registered, also means a later first
// import of '@tensorflow/tfjs' cannot put the stock gradient back over ours.
import '@tensorflow/tfjs';
// Side effect: registers the 'wasm' backend and its native kernels, which must exist before ours replace one.
import '@tensorflow/tfjs-backend-wasm';

type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
type Shape4 = [number, number, number, number];
type RoundingMode = 'floor' | 'round' | 'ceil' | undefined;

const BACKEND = 'wasm';

/** Marks our kernel functions so registration can tell them from the native ones and stay idempotent. */
const OURS = Symbol('imgclass-wasm-training-kernel');

/**
 * Registers the training kernels for the 'wasm' backend. Idempotent, and safe to call before or after
 * `tf.setBackend('wasm')` (kernels are looked up per call). Kernels of other backends are untouched; the
 * FusedBatchNorm gradient is shared by all backends (tfjs registers gradients by kernel name only).
 * Registries are per thread: call it in every worker thread that trains.
 */
export function registerWasmTrainingKernels(): void {
  install({
    kernelName: tf.Conv2DBackpropFilter,
    backendName: BACKEND,
    kernelFunc: conv2dBackpropFilterKernel as unknown as tf.KernelFunc,
  });
  install({
    kernelName: tf.Conv2DBackpropInput,
    backendName: BACKEND,
    kernelFunc: conv2dBackpropInputKernel as unknown as tf.KernelFunc,
  });
  const identity = tf.getKernel(tf.Identity, BACKEND);
  if (identity && !(identity.kernelFunc as unknown as Record<symbol, boolean>)[OURS]) copyingIdentity = identity.kernelFunc;
  install({ kernelName: tf.Identity, backendName: BACKEND, kernelFunc: identityKernel as unknown as tf.KernelFunc });
  if (tf.getGradient(tf.FusedBatchNorm) !== fusedBatchNormGradConfig) tf.registerGradient(fusedBatchNormGradConfig);
}

let copyingIdentity: tf.KernelFunc | undefined;

/** A new tensor on the same memory (tensors are immutable): what cpu's Identity and wasm's Reshape do. */
function identityKernel(args: KernelArgs<Record<string, never>>): tf.TensorInfo {
  const x = args.inputs.x;
  if (x == null) throw new Error('Identity: missing input x');
  if (x.dtype === 'string') {
    if (!copyingIdentity) throw new Error('Identity: string tensors need the wasm backend\'s own kernel');
    return copyingIdentity(args as unknown as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo;
  }
  args.backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

function install(config: tf.KernelConfig): void {
  const existing = tf.getKernel(config.kernelName, config.backendName);
  if (existing && (existing.kernelFunc as unknown as Record<symbol, boolean>)[OURS]) return;
  if (existing) tf.unregisterKernel(config.kernelName, config.backendName);
  (config.kernelFunc as unknown as Record<symbol, boolean>)[OURS] = true;
  tf.registerKernel(config);
}

interface KernelArgs<A> {
  inputs: tf.NamedTensorInfoMap;
  backend: tf.KernelBackend;
  attrs: A;
}

/**
 * Gives a kernel input a Tensor face so tf ops can use it. The backend reference count is raised
 * first, so disposing the wrapper (at the end of the kernel's tidy) leaves the caller's data alive.
 */
function wrap(info: tf.TensorInfo | undefined, backend: tf.KernelBackend, kernel: string, name: string): tf.Tensor {
  if (info == null) throw new Error(`${kernel}: missing input '${name}'`);
  backend.incRef(info.dataId);
  return tf.engine().makeTensorFromTensorInfo(info, backend);
}

function requireNhwc(kernel: string, dataFormat: string | undefined): void {
  if (dataFormat != null && dataFormat !== 'NHWC') {
    throw new Error(
      `${kernel} on the wasm backend (imgclass training kernels) supports dataFormat 'NHWC' only, got ` +
        `'${dataFormat}'. The wasm backend's forward Conv2D is NHWC-only too: keep images channels-last.`,
    );
  }
}

function convInfo(xShape: Shape4, filterShape: Shape4, strides: [number, number] | number, pad: Pad,
  dimRoundingMode: RoundingMode): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(xShape, filterShape, strides, 1, pad, dimRoundingMode, false,
    'channelsLast');
}

function requireShape(kernel: string, what: string, got: number[], want: number[]): void {
  if (got.length !== want.length || got.some((v, i) => v !== want[i])) {
    throw new Error(`${kernel}: ${what} has shape [${got}] but the convolution implies [${want}]`);
  }
}

/**
 * Pads (positive amounts) or crops (negative amounts) the two spatial axes of an NHWC tensor. Crops are
 * kept off hot paths: the wasm Slice kernel is JavaScript that first copies the whole source tensor and
 * then moves one channel vector at a time.
 */
function padOrCrop(t: tf.Tensor4D, top: number, bottom: number, left: number, right: number): tf.Tensor4D {
  let r = t;
  if (top > 0 || bottom > 0 || left > 0 || right > 0) {
    r = tf.pad(r, [[0, 0], [Math.max(top, 0), Math.max(bottom, 0)], [Math.max(left, 0), Math.max(right, 0)],
      [0, 0]]);
  }
  if (top < 0 || bottom < 0 || left < 0 || right < 0) {
    const [n, h, w, c] = r.shape;
    const t0 = Math.max(-top, 0), l0 = Math.max(-left, 0);
    r = tf.slice(r, [0, t0, l0, 0], [n, h - t0 - Math.max(-bottom, 0), w - l0 - Math.max(-right, 0), c]);
  }
  return r;
}

/**
 * Filter gradient dW[a,b,ci,co] = sum_{n,i,j} xPadded[n, i*sh + a, j*sw + b, ci] * dy[n, i, j, co].
 *
 * Read with ci as the batch, n as the channel and dy as the kernel, that sum is itself a stride-1
 * convolution whose kernel is dilated by the forward stride:
 *   conv2d(xPadded^T [Ci, Hp, Wp, N], dy^T [Ho, Wo, N, Co], dilation [sh, sw]) -> [Ci, kh', kw', Co].
 * XNNPACK then does all the multiply-adds, with no im2col buffer (kh*kw times the size of x).
 * Input rows the forward conv never read ('valid' leftovers) only add output rows beyond kh, which are
 * dropped from the small result rather than cropping the large input.
 */
function conv2dBackpropFilterKernel(args: KernelArgs<tf.Conv2DBackpropFilterAttrs>): tf.TensorInfo {
  const { inputs, backend, attrs } = args;
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs;
  requireNhwc(tf.Conv2DBackpropFilter, dataFormat);
  return tf.tidy(() => {
    const x = wrap(inputs.x, backend, tf.Conv2DBackpropFilter, 'x') as tf.Tensor4D;
    const dy = wrap(inputs.dy, backend, tf.Conv2DBackpropFilter, 'dy') as tf.Tensor4D;
    const info = convInfo(x.shape, filterShape, strides, pad, dimRoundingMode as RoundingMode);
    requireShape(tf.Conv2DBackpropFilter, 'dy', dy.shape, info.outShape);
    const [kh, kw, cin, cout] = filterShape;
    const [, h, w] = x.shape;
    const [, ho, wo] = dy.shape;
    const { strideHeight: sh, strideWidth: sw, padInfo } = info;
    // The forward conv read (ho-1)*sh + kh padded rows; any beyond the padded input were implicit zeros
    // (ceil rounding), so pad to at least that.
    const needH = (ho - 1) * sh + kh, needW = (wo - 1) * sw + kw;
    const xp = padOrCrop(x, padInfo.top, Math.max(needH - h - padInfo.top, padInfo.bottom),
      padInfo.left, Math.max(needW - w - padInfo.left, padInfo.right));
    const xq = tf.transpose(xp, [3, 1, 2, 0]) as tf.Tensor4D;
    const dq = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D;
    const r = tf.transpose(tf.conv2d(xq, dq, 1, 'valid', 'NHWC', [sh, sw]), [1, 2, 0, 3]);
    return r.shape[0] === kh && r.shape[1] === kw ? r : tf.slice(r, [0, 0, 0, 0], [kh, kw, cin, cout]);
  });
}

/**
 * Input gradient as one stride-1 XNNPACK convolution of dy (the native kernel is scalar C++ loops).
 *
 * Per spatial axis (p = pad before, s = stride, k = filter size): x[i] feeds y[o] through tap t when
 * i + p = o*s + t. Split the outputs by phase a = i mod s, i = m*s + a. Phase a only meets the taps
 * t = r + s*u with r = (a + p) mod s, and reads dy[m + c - u] with c = floor((a + p) / s): for fixed a
 * that is a plain correlation of dy with a sub-filter. Placing every phase's sub-filter in one common
 * window (zeros elsewhere) and the phases side by side as output channels turns dx into a single conv
 * producing [N, H/s, W/s, s*s*Ci], then one transpose interleaves the phases into [N, H, W, Ci].
 * Compared with zero-dilating dy (the textbook transposed convolution), this skips the multiplications
 * by inserted zeros: 4x fewer multiply-adds at stride 2 for 3x3 filters (2.25x of them are real work
 * vs 9x), 3x fewer for the 7x7 stem. At stride 1 it is the usual full correlation with the filter
 * rotated by 180 degrees.
 */
function conv2dBackpropInputKernel(args: KernelArgs<tf.Conv2DBackpropInputAttrs>): tf.TensorInfo {
  const { inputs, backend, attrs } = args;
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs;
  requireNhwc(tf.Conv2DBackpropInput, dataFormat);
  return tf.tidy(() => {
    const dy = wrap(inputs.dy, backend, tf.Conv2DBackpropInput, 'dy') as tf.Tensor4D;
    const w = wrap(inputs.filter, backend, tf.Conv2DBackpropInput, 'filter') as tf.Tensor4D;
    const info = convInfo(inputShape, w.shape, strides, pad, dimRoundingMode as RoundingMode);
    requireShape(tf.Conv2DBackpropInput, 'dy', dy.shape, info.outShape);
    const [kh, kw, cin, cout] = w.shape;
    const [n, h, wd] = inputShape;
    const [, ho, wo] = dy.shape;
    const { strideHeight: sh, strideWidth: sw, padInfo } = info;

    if (kh === 1 && kw === 1 && padInfo.top === 0 && padInfo.left === 0) {
      // 1x1 (projection shortcuts): only phase 0 has a tap, so multiply dy by W^T at low resolution and
      // spread the result out with zeros, rather than convolving three all-zero phases.
      const wt = tf.reshape(tf.transpose(w, [0, 1, 3, 2]), [1, 1, cout, cin]) as tf.Tensor4D;
      let g = tf.conv2d(dy, wt, 1, 'valid');
      if (sh > 1 || sw > 1) {
        const g6 = tf.pad(tf.reshape(g, [n, ho, 1, wo, 1, cin]), [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]);
        g = tf.reshape(g6, [n, ho * sh, wo * sw, cin]) as tf.Tensor4D;
      }
      return padOrCrop(g, 0, h - g.shape[1], 0, wd - g.shape[2]);
    }

    const ph = phasePlan(kh, sh, padInfo.top, h);
    const pw = phasePlan(kw, sw, padInfo.left, wd);
    // dy is read at rows m + dMin .. m + dMax for m in [0, M): zero-extend (or trim) it to exactly that.
    const dyp = padOrCrop(dy, -ph.dMin, ph.count + ph.window - 1 + ph.dMin - ho,
      -pw.dMin, pw.count + pw.window - 1 + pw.dMin - wo);
    const out = tf.conv2d(dyp, phaseFilter(w, ph, pw), 1, 'valid');
    let dx = out;
    if (sh > 1 || sw > 1) {
      const rows = tf.reshape(out, [n * ph.count, pw.count, sh, sw * cin]);
      dx = tf.reshape(tf.transpose(rows, [0, 2, 1, 3]), [n, ph.count * sh, pw.count * sw, cin]) as tf.Tensor4D;
    }
    return padOrCrop(dx, 0, h - dx.shape[1], 0, wd - dx.shape[2]);
  });
}

/** The phase decomposition of one spatial axis of a transposed convolution (see conv2dBackpropInputKernel). */
interface PhasePlan {
  stride: number;
  /** Sub-filter per phase a: taps t = first + stride*u for u < taps, read at dy offset shift - u. */
  phases: { first: number; shift: number; taps: number }[];
  /** Outputs per phase: ceil(size / stride); the last phases may run past the input and are cropped. */
  count: number;
  /** Smallest dy offset any phase reads, and the width of the window covering all of them. */
  dMin: number;
  window: number;
}

function phasePlan(k: number, s: number, p: number, size: number): PhasePlan {
  const phases = Array.from({ length: s }, (_, a) => {
    const first = (a + p) % s;
    return { first, shift: Math.floor((a + p) / s), taps: first < k ? Math.ceil((k - first) / s) : 0 };
  });
  const used = phases.filter((q) => q.taps > 0);
  const dMin = Math.min(...used.map((q) => q.shift - q.taps + 1));
  const dMax = Math.max(...used.map((q) => q.shift));
  return { stride: s, phases, count: Math.ceil(size / s), dMin, window: dMax - dMin + 1 };
}

/**
 * Builds the [winH, winW, Co, sh*sw*Ci] filter of all phases from w [kh, kw, Ci, Co]. Placing taps is a
 * permutation with zeros of the kh*kw tap axis, done as one GEMM with a 0/1 selection matrix: exact (each
 * output is one weight times 1 plus exact zeros) and ~2 ms for 3x3x256x256, where Gather, Reverse or
 * repeated Slice take 10-35 ms on wasm.
 */
function phaseFilter(w: tf.Tensor4D, ph: PhasePlan, pw: PhasePlan): tf.Tensor4D {
  const [kh, kw, cin, cout] = w.shape;
  const rows = ph.window * pw.window * ph.stride * pw.stride;
  const select = new Float32Array(rows * kh * kw);
  let row = 0;
  for (let jh = 0; jh < ph.window; jh++) {
    for (let jw = 0; jw < pw.window; jw++) {
      for (const qh of ph.phases) {
        for (const qw of pw.phases) {
          const uh = qh.shift - (ph.dMin + jh), uw = qw.shift - (pw.dMin + jw);
          if (uh >= 0 && uh < qh.taps && uw >= 0 && uw < qw.taps) {
            const th = qh.first + ph.stride * uh, tw = qw.first + pw.stride * uw;
            select[row * kh * kw + th * kw + tw] = 1;
          }
          row++;
        }
      }
    }
  }
  const placed = tf.matMul(tf.tensor2d(select, [rows, kh * kw]), tf.reshape(w, [kh * kw, cin * cout]));
  const grouped = tf.reshape(placed, [ph.window * pw.window, ph.stride * pw.stride, cin, cout]);
  return tf.reshape(tf.transpose(grouped, [0, 3, 1, 2]),
    [ph.window, pw.window, cout, ph.stride * pw.stride * cin]) as tf.Tensor4D;
}

/**
 * Gradient of y = (x - mean) * rsqrt(variance + eps) * scale + offset, the same formulas as tfjs-core's
 * FusedBatchNorm gradient but with 1/sqrt(var+eps) broadcast instead of tiled to the size of x, and the
 * two reductions (sum dy, sum dy*(x-mean)) computed once and shared by mean/offset and variance/scale.
 */
const fusedBatchNormGradConfig: tf.GradConfig = {
  kernelName: tf.FusedBatchNorm,
  inputsToSave: ['x', 'mean', 'variance', 'scale'],
  gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
    const g = dy as tf.Tensor;
    const [x, mean, variance, scale] = saved;
    const eps = (attrs as unknown as tf.FusedBatchNormAttrs).varianceEpsilon;
    const axes = tf.backend_util.getReductionAxes(mean.shape, x.shape);
    const reduce = (t: tf.Tensor): tf.Tensor => tf.reshape(axes.length > 0 ? tf.sum(t, axes) : t, mean.shape);
    const rs = tf.rsqrt(tf.add(variance, tf.scalar(eps)));
    const rsScale = scale == null ? rs : tf.mul(rs, scale);
    // Computed up front (every caller in a training step needs both) inside tidy, so their full-size
    // temporaries are freed now rather than at the end of the whole backward pass.
    const sumDy = tf.tidy(() => reduce(g));
    const sumDyXm = tf.tidy(() => reduce(tf.mul(g, tf.sub(x, mean))));
    return {
      x: () => tf.reshape(tf.mul(g, rsScale), x.shape),
      mean: () => tf.reshape(tf.mul(tf.neg(rsScale), sumDy), mean.shape),
      variance: () => tf.reshape(tf.mul(tf.mul(tf.mul(tf.mul(rs, rs), rsScale), tf.scalar(-0.5)), sumDyXm), mean.shape),
      scale: () => tf.reshape(tf.mul(rs, sumDyXm), mean.shape),
      offset: () => tf.reshape(sumDy, mean.shape),
    };
  },
};
