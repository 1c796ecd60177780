/**
 * The training kernels of both wasm engines (XNNPACK-based ./wasm-kernels, and oneDNN through
 * ./onednn) against the cpu backend (tfjs's reference implementation), and the backend chooser. Every
 * comparison runs the same tensors through both backends.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { chooseBackend, wasmBinaryDir } from '../lib/engine/backend';
import { registerWasmTrainingKernels } from '../lib/engine/wasm-kernels';
import { loadOneDnn, oneDnnKernelsActive } from '../lib/engine/onednn';
import { UserError } from '../lib/errors';
import { values, tensor, relMaxError } from './tensors';

/**
 * The two engines behind the wasm backend. oneDNN needs our addon: where it is not built the oneDNN
 * tests are skipped with the reason, except when IMGCLASS_REQUIRE_ONEDNN=1 (CI), where they fail.
 */
const ENGINES = ['wasm', 'onednn'] as const;
type Engine = typeof ENGINES[number];
const onednn = loadOneDnn();
const requireOneDnn = process.env.IMGCLASS_REQUIRE_ONEDNN === '1';
function skipFor(engine: Engine): string | false {
  return engine === 'onednn' && !onednn.ok && !requireOneDnn ? onednn.reason : false;
}
async function useEngine(engine: Engine): Promise<void> {
  await chooseBackend(engine);
  assert.equal(oneDnnKernelsActive(), engine === 'onednn');
}

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

async function on<T>(backend: string, fn: () => Promise<T>): Promise<T> {
  assert.ok(await tf.setBackend(backend), `backend ${backend} did not start`);
  return fn();
}

/** ||a - b|| / ||b||. */
function relL2Error(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let diff = 0, norm = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  assert.ok(norm > 0, 'reference gradient is all zeros: the comparison would prove nothing');
  return Math.sqrt(diff / norm);
}

interface ConvCase {
  k: [number, number];
  stride: [number, number];
  pad: Pad;
  rounding?: 'ceil' | 'floor' | 'round';
  batch: number;
  hw: [number, number];
  cin: number;
  cout: number;
}

/** Both backprop kernels, called directly (so explicit pads and rounding modes are reachable too). */
async function backprops(backend: string, c: ConvCase, seed: number): Promise<{ dx: Float32Array; dw: Float32Array }> {
  return on(backend, async () => {
    const xShape: [number, number, number, number] = [c.batch, c.hw[0], c.hw[1], c.cin];
    const fShape: [number, number, number, number] = [c.k[0], c.k[1], c.cin, c.cout];
    const x = tensor(xShape, seed), f = tensor(fShape, seed + 1);
    const info = tf.backend_util.computeConv2DInfo(xShape, fShape, c.stride, 1, c.pad, c.rounding);
    const dy = tensor(info.outShape, seed + 2);
    const common = { strides: c.stride, pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: c.rounding } as unknown as tf.NamedAttrMap;
    const dx = tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: f }, { ...common, inputShape: xShape }) as tf.Tensor;
    const dw = tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...common, filterShape: fShape }) as tf.Tensor;
    assert.deepEqual(dx.shape, xShape);
    assert.deepEqual(dw.shape, fShape);
    const out = { dx: (await dx.data()) as Float32Array, dw: (await dw.data()) as Float32Array };
    tf.dispose([x, f, dy, dx, dw]);
    return out;
  });
}

// Float32 sums of up to a few hundred products of O(1) values differ between backends (XNNPACK
// blocks and orders its sums differently) by ~1e-7..1e-6 relative to the largest value; a wrong tap,
// offset or phase gives errors of order 1. 1e-5 sits well between the two.
const KERNEL_TOLERANCE = 1e-5;

const CASES: ConvCase[] = [
  { k: [3, 3], stride: [1, 1], pad: 'same', batch: 1, hw: [7, 7], cin: 3, cout: 4 },
  { k: [3, 3], stride: [2, 2], pad: 'same', batch: 2, hw: [9, 9], cin: 3, cout: 5 },
  { k: [3, 3], stride: [2, 2], pad: 'same', batch: 2, hw: [8, 10], cin: 4, cout: 3 },
  { k: [3, 3], stride: [2, 2], pad: 'valid', batch: 2, hw: [9, 8], cin: 2, cout: 3 },
  { k: [3, 3], stride: [1, 1], pad: 'valid', batch: 1, hw: [6, 5], cin: 2, cout: 2 },
  { k: [1, 1], stride: [1, 1], pad: 'same', batch: 2, hw: [5, 5], cin: 4, cout: 6 },
  { k: [1, 1], stride: [2, 2], pad: 'same', batch: 2, hw: [7, 7], cin: 4, cout: 6 },
  { k: [1, 1], stride: [2, 2], pad: 'valid', batch: 1, hw: [8, 9], cin: 3, cout: 2 },
  { k: [7, 7], stride: [2, 2], pad: 'same', batch: 2, hw: [15, 16], cin: 3, cout: 4 },
  { k: [7, 7], stride: [1, 1], pad: 'valid', batch: 1, hw: [9, 9], cin: 2, cout: 3 },
  { k: [2, 2], stride: [2, 2], pad: 'same', batch: 1, hw: [7, 7], cin: 2, cout: 3 },
  { k: [5, 3], stride: [3, 1], pad: 'same', batch: 2, hw: [11, 6], cin: 2, cout: 3 },
  { k: [3, 3], stride: [2, 2], pad: [[0, 0], [1, 2], [0, 1], [0, 0]], batch: 2, hw: [9, 9], cin: 2, cout: 3 },
  { k: [1, 1], stride: [2, 2], pad: [[0, 0], [2, 1], [3, 0], [0, 0]], batch: 1, hw: [7, 6], cin: 2, cout: 2 },
  { k: [3, 3], stride: [2, 2], pad: 1, rounding: 'ceil', batch: 2, hw: [8, 8], cin: 2, cout: 3 },
  { k: [3, 3], stride: [3, 3], pad: 2, rounding: 'floor', batch: 1, hw: [10, 10], cin: 2, cout: 2 },
  { k: [2, 2], stride: [4, 4], pad: 'valid', batch: 1, hw: [11, 11], cin: 2, cout: 2 },
  // Channel counts past XNNPACK's 8/16-lane tiles, at ResNet-like geometries.
  { k: [7, 7], stride: [2, 2], pad: 'same', batch: 2, hw: [20, 19], cin: 3, cout: 16 },
  { k: [3, 3], stride: [2, 2], pad: 'same', batch: 2, hw: [13, 12], cin: 16, cout: 24 },
  { k: [3, 3], stride: [1, 1], pad: 'same', batch: 2, hw: [6, 6], cin: 32, cout: 32 },
  { k: [1, 1], stride: [2, 2], pad: 'same', batch: 2, hw: [10, 10], cin: 16, cout: 32 },
];

let initialBackend = '';

before(async () => {
  const choice = await chooseBackend();
  initialBackend = choice.name;
});

after(async () => {
  await tf.setBackend('wasm');
});

test('chooseBackend picks oneDNN when its addon loads, else wasm with our kernels, and says which and why', async () => {
  assert.equal(initialBackend, 'wasm');
  const again = await chooseBackend();
  assert.equal(again.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  if (onednn.ok) {
    assert.match(again.note, /^engine: onednn \(convolutions and their gradients on oneDNN \d+\.\d+\.\d+, \w+, \d+ threads?; the rest on wasm \(XNNPACK SIMD/);
    assert.ok(oneDnnKernelsActive());
  } else {
    assert.ok(!requireOneDnn, `IMGCLASS_REQUIRE_ONEDNN=1 but ${onednn.reason}`);
    assert.match(again.note, /^engine: wasm \(XNNPACK SIMD, \d+ threads?; training kernels from imgclass\)/);
    assert.match(again.note, /oneDNN not used: /);
  }
  assert.match(again.note, /@tensorflow\/tfjs-node not used: not installed/);
  assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm'), 'filter-gradient kernel registered');
  assert.ok(fs.existsSync(path.join(wasmBinaryDir(), 'tfjs-backend-wasm-simd.wasm')));
  const plain = await chooseBackend('wasm');
  assert.match(plain.note, /^engine: wasm \(XNNPACK SIMD/);
  assert.ok(!oneDnnKernelsActive(), 'choosing wasm after onednn puts the XNNPACK kernels back');
});

test('chooseBackend never substitutes a backend that was asked for by name', async () => {
  await assert.rejects(chooseBackend('tensorflow'), (err: unknown) =>
    err instanceof UserError && /tfjs-node/.test(err.message) && /'wasm'/.test(err.message));
  await assert.rejects(chooseBackend('gpu' as never), UserError);
  const cpu = await chooseBackend('cpu');
  assert.equal(cpu.name, 'cpu');
  assert.equal(tf.getBackend(), 'cpu');
  assert.match(cpu.note, /100x slower/);
  const wasm = await chooseBackend('wasm');
  assert.equal(wasm.name, 'wasm');
  if (!onednn.ok) {
    await assert.rejects(chooseBackend('onednn'), (err: unknown) =>
      err instanceof UserError && /libdnnl-dev|addon/.test(err.message) && /'wasm'/.test(err.message));
  }
});

test('the wasm binaries are found from another cwd (child process) and inside a worker thread', async () => {
  const backendJs = path.join(__dirname, '../lib/engine/backend.js');
  // Absolute paths: the child runs from a temp dir where bare package names would not resolve.
  const script = `
    const { chooseBackend } = require(${JSON.stringify(backendJs)});
    const tf = require(${JSON.stringify(require.resolve('@tensorflow/tfjs-core'))});
    chooseBackend().then(async (c) => {
      const x = tf.ones([1, 5, 5, 2]), f = tf.ones([3, 3, 2, 1]);
      const g = tf.grad((w) => tf.sum(tf.conv2d(x, w, 2, 'same')))(f);
      const out = c.note + ' | ' + Array.from(await g.data()).join(',');
      const { parentPort } = require('node:worker_threads');
      if (parentPort) parentPort.postMessage(out); else console.log(out);
    });`;
  // Child process: cwd is a temp dir, and module resolution starts from the compiled file, not the cwd.
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-'));
  try {
    const printed = execFileSync(process.execPath, ['-e', script], { cwd, encoding: 'utf8' });
    assert.match(printed, onednn.ok ? /engine: onednn \(/ : /engine: wasm \(XNNPACK/);
    // dW[a,b] counts the output pixels whose window puts tap (a,b) inside the all-ones 5x5 input:
    // rows 2i+a-1 for i = 0..2 stay in [0,5) for 2, 3, 2 values of i when a = 0, 1, 2.
    assert.match(printed, /\| 4,4,6,6,4,4,6,6,9,9,6,6,4,4,6,6,4,4\s*$/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
  const fromWorker = await new Promise<string>((resolve, reject) => {
    const worker = new Worker(script, { eval: true });
    worker.once('message', (m: string) => {
      resolve(m);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
  assert.match(fromWorker, onednn.ok ? /^engine: onednn \(.*\| 4,4,6,6,4,4,6,6,9,9,6,6,4,4,6,6,4,4$/
    : /^engine: wasm \(XNNPACK.*\| 4,4,6,6,4,4,6,6,9,9,6,6,4,4,6,6,4,4$/);
});

test('registerWasmTrainingKernels is idempotent and leaves the cpu kernels alone', async () => {
  await useEngine('wasm');
  const before = tf.getKernel('Conv2DBackpropInput', 'wasm')?.kernelFunc;
  const cpuBefore = tf.getKernel('Conv2DBackpropFilter', 'cpu')?.kernelFunc;
  registerWasmTrainingKernels();
  registerWasmTrainingKernels();
  assert.ok(before);
  assert.equal(tf.getKernel('Conv2DBackpropInput', 'wasm')?.kernelFunc, before);
  assert.equal(tf.getKernel('Conv2DBackpropFilter', 'cpu')?.kernelFunc, cpuBefore);
});

for (const engine of ENGINES) {
  const skip = skipFor(engine);
  for (const [i, c] of CASES.entries()) {
    const name = `k${c.k.join('x')} s${c.stride.join('x')} pad ${JSON.stringify(c.pad)}${c.rounding ? ' ' + c.rounding : ''} ` +
      `batch ${c.batch} ${c.hw.join('x')}x${c.cin}->${c.cout}`;
    test(`${engine}: backprop kernels match cpu: ${name}`, { skip }, async () => {
      await useEngine(engine);
      const cpu = await backprops('cpu', c, 100 + i);
      const wasm = await backprops('wasm', c, 100 + i);
      const ex = relMaxError(wasm.dx, cpu.dx), ew = relMaxError(wasm.dw, cpu.dw);
      assert.ok(ex < KERNEL_TOLERANCE, `dx relative error ${ex}`);
      assert.ok(ew < KERNEL_TOLERANCE, `dW relative error ${ew}`);
    });
  }

  test(`${engine}: the kernel comparison is sensitive: a 180-degree-rotated filter is caught`, { skip }, async () => {
    await useEngine(engine);
    const c: ConvCase = { k: [3, 3], stride: [2, 2], pad: 'same', batch: 1, hw: [7, 7], cin: 2, cout: 2 };
    const cpu = await backprops('cpu', c, 7);
    const wasm = await backprops('wasm', c, 7);
    // Reverse the 9 taps of the filter gradient: what a missing rotation in dx would look like in dW.
    const taps = 9, per = c.cin * c.cout;
    const flipped = new Float32Array(wasm.dw.length);
    for (let t = 0; t < taps; t++) flipped.set(wasm.dw.subarray(t * per, (t + 1) * per), (taps - 1 - t) * per);
    assert.ok(relMaxError(flipped, cpu.dw) > 100 * KERNEL_TOLERANCE);
    assert.ok(relMaxError(wasm.dw, cpu.dw) < KERNEL_TOLERANCE);
  });

  test(`${engine}: conv2d gradients through tf.grads (Conv2D and fused paths) match cpu`, { skip }, async () => {
    await useEngine(engine);
    const run = (backend: string) => on(backend, async () => {
      const x = tensor([2, 9, 9, 3], 1), f = tensor([3, 3, 3, 4], 2), r = tensor([2, 5, 5, 4], 3), b = tensor([4], 4);
      const plain = tf.grads((a: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, w as tf.Tensor4D, 2, 'same'), r)));
      const fused = tf.grads((a: tf.Tensor, w: tf.Tensor, bias: tf.Tensor) =>
        tf.sum(tf.mul(tf.fused.conv2d({ x: a as tf.Tensor4D, filter: w as tf.Tensor4D, strides: 2, pad: 'same', bias, activation: 'relu' }), r)));
      const out = [...plain([x, f]), ...fused([x, f, b])];
      return Promise.all(out.map((t) => t.data()));
    });
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    cpu.forEach((c, i) => assert.ok(relMaxError(wasm[i], c) < KERNEL_TOLERANCE, `gradient ${i}`));
  });

  test(`${engine}: forward convolutions (plain, dilated, fused with bias and relu or elu) match cpu`, { skip }, async () => {
    await useEngine(engine);
    const run = (backend: string) => on(backend, async () => {
      const x = tensor([2, 10, 9, 5], 41), f = tensor([3, 3, 5, 7], 42), b = tensor([7], 43);
      const out = [
        tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, 'same'),
        tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, [2, 1], 'valid'),
        tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, 'same', 'NHWC', 2),
        tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 2, [[0, 0], [2, 0], [1, 3], [0, 0]]),
        tf.fused.conv2d({ x: x as tf.Tensor4D, filter: f as tf.Tensor4D, strides: 2, pad: 'same', bias: b, activation: 'relu' }),
        tf.fused.conv2d({ x: x as tf.Tensor4D, filter: f as tf.Tensor4D, strides: 1, pad: 'valid', activation: 'elu' }),
        tf.fused.conv2d({ x: x as tf.Tensor4D, filter: f as tf.Tensor4D, strides: 1, pad: 'same', activation: 'relu' }),
      ];
      return Promise.all(out.map(async (t) => ({ shape: t.shape, data: (await t.data()) as Float32Array })));
    });
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    cpu.forEach((c, i) => {
      assert.deepEqual(wasm[i]?.shape, c.shape, `output ${i} shape`);
      assert.ok(relMaxError((wasm[i] as { data: Float32Array }).data, c.data) < KERNEL_TOLERANCE, `output ${i}`);
    });
  });
}
test('batch-norm gradient matches the same formula written with elementary ops, on cpu and wasm', async () => {
  for (const shape of [[2, 5, 3, 4], [6, 4]]) {
    const c = shape[shape.length - 1];
    const args = (): tf.Tensor[] => [tensor(shape, 11), tensor([c], 12), tf.add(tensor([c], 13), 0.6), tensor([c], 14), tensor([c], 15)];
    const r = (): tf.Tensor => tensor(shape, 16);
    const viaKernel = (x: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: tf.Tensor, o: tf.Tensor) =>
      tf.sum(tf.mul(tf.batchNorm(x, m as tf.Tensor1D, v as tf.Tensor1D, o as tf.Tensor1D, s as tf.Tensor1D, 1e-3), r()));
    const viaOps = (x: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: tf.Tensor, o: tf.Tensor) =>
      tf.sum(tf.mul(tf.add(tf.mul(tf.mul(tf.sub(x, m), tf.rsqrt(tf.add(v, 1e-3))), s), o), r()));
    const run = (backend: string, f: typeof viaOps) => on(backend, async () =>
      Promise.all(tf.grads(f as (...t: tf.Tensor[]) => tf.Tensor)(args()).map((g) => g.data())));
    const reference = await run('cpu', viaOps);
    for (const backend of ['cpu', 'wasm']) {
      const got = await run(backend, viaKernel);
      ['x', 'mean', 'variance', 'scale', 'offset'].forEach((name, i) =>
        assert.ok(relMaxError(got[i], reference[i]) < KERNEL_TOLERANCE, `${backend} ${shape} d${name}`));
    }
  }
});

function resnetBlock(): tf.LayersModel {
  const convBn = (x: tf.SymbolicTensor, filters: number, k: number, stride: number, name: string) => {
    const y = tf.layers.conv2d({ filters, kernelSize: k, strides: stride, padding: 'same', useBias: false, name: `${name}_conv`,
      kernelInitializer: tf.initializers.heNormal({ seed: filters * 10 + k }) }).apply(x) as tf.SymbolicTensor;
    return tf.layers.batchNormalization({ axis: -1, epsilon: 1e-3, name: `${name}_bn`,
      gammaInitializer: tf.initializers.randomUniform({ minval: 0.5, maxval: 1.5, seed: k }),
      betaInitializer: tf.initializers.randomUniform({ minval: -0.2, maxval: 0.2, seed: k + 1 }) }).apply(y) as tf.SymbolicTensor;
  };
  const input = tf.input({ shape: [11, 11, 3] });
  let x = convBn(input, 6, 7, 1, 'stem');
  x = tf.layers.reLU().apply(x) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 3, strides: 1, padding: 'same' }).apply(x) as tf.SymbolicTensor;
  let y = convBn(x, 8, 3, 2, 'a');
  y = tf.layers.reLU().apply(y) as tf.SymbolicTensor;
  y = convBn(y, 8, 3, 1, 'b');
  const shortcut = convBn(x, 8, 1, 2, 'proj');
  x = tf.layers.reLU().apply(tf.layers.add().apply([y, shortcut])) as tf.SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 3, activation: 'softmax', name: 'fc',
    kernelInitializer: tf.initializers.glorotUniform({ seed: 5 }) }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

// Training-mode batch norm divides by the batch's own standard deviation, so float32 rounding in the
// forward pass (which differs between XNNPACK and the cpu loops at ~1e-7) reaches the gradients
// amplified by roughly |activation| / std and by the cancellation in dL/dx = (dy - mean(dy) - x^ *
// mean(dy x^)) / std. With 50-242 samples per channel here, the measured worst per-variable error is
// 3.5e-6 (proj_conv), the same order as what scaling the input by (1 + 1e-6) does to cpu's own
// gradients (up to 7.8e-7). 3e-5 keeps a ~10x margin; a wrong kernel gives errors near 1.
const BLOCK_TOLERANCE = 3e-5;

for (const engine of ENGINES) {
  const skip = skipFor(engine);
  test(`${engine}: a ResNet block (conv-bn-relu-conv-bn + projection, max pool, GAP, softmax): all variable gradients match cpu`, { skip }, async () => {
    await useEngine(engine);
    const model = await on('cpu', async () => resnetBlock());
    const run = (backend: string) => on(backend, async () => {
      const x = tensor([2, 11, 11, 3], 21);
      const labels = tf.oneHot(tf.tensor1d([0, 2], 'int32'), 3);
      const { value, grads } = tf.variableGrads(() =>
        tf.losses.softmaxCrossEntropy(labels, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar);
      const out = new Map<string, Float32Array>();
      for (const [name, g] of Object.entries(grads)) out.set(name, (await g.data()) as Float32Array);
      return { loss: (await value.data())[0], grads: out };
    });
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    assert.ok(Math.abs(cpu.loss - wasm.loss) < 1e-5 * Math.abs(cpu.loss));
    assert.equal(wasm.grads.size, 4 * 3 + 2, 'conv kernel + bn gamma/beta for 4 layers, fc kernel/bias');
    for (const [name, c] of cpu.grads) {
      const e = relL2Error(wasm.grads.get(name) ?? new Float32Array(c.length), c);
      assert.ok(e < BLOCK_TOLERANCE, `${name}: relative error ${e}`);
    }
    model.dispose();
  });

  test(`${engine}: optimizer.minimize and model.trainOnBatch train the block on wasm`, { skip }, async () => {
    await useEngine(engine);
    const model = resnetBlock();
    const x = tensor([4, 11, 11, 3], 31);
    const labels = tf.oneHot(tf.tensor1d([0, 1, 2, 0], 'int32'), 3);
    const optimizer = tf.train.momentum(0.05, 0.9);
    const loss = () => tf.losses.softmaxCrossEntropy(labels, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar;
    const first = (await (optimizer.minimize(loss, true) as tf.Scalar).data())[0];
    // After the first step (which creates the optimizer's slots), steps must not leak tensors or wasm
    // buffers: the kernels wrap their inputs with extra references and must give every one back.
    const tensors = tf.memory().numTensors, buffers = tf.engine().backend.numDataIds();
    for (let i = 0; i < 4; i++) optimizer.minimize(loss);
    assert.equal(tf.memory().numTensors, tensors);
    assert.equal(tf.engine().backend.numDataIds(), buffers);
    const last = (await (optimizer.minimize(loss, true) as tf.Scalar).data())[0];
    assert.ok(last < first, `loss went from ${first} to ${last}`);
    model.compile({ optimizer: tf.train.adam(0.01), loss: 'categoricalCrossentropy' });
    const l = (await model.trainOnBatch(x, labels)) as number;
    assert.ok(Number.isFinite(l));
    model.dispose();
  });

  test(`${engine}: unsupported configurations throw clear errors instead of computing something else`, { skip }, async () => {
    await useEngine(engine);
    const dy = tensor([1, 4, 4, 2], 1), x = tensor([1, 4, 4, 3], 2), f = tensor([3, 3, 3, 2], 3);
    const nchw = { strides: 1, pad: 'same', dataFormat: 'NCHW' };
    assert.throws(() => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...nchw, filterShape: [3, 3, 3, 2] }),
      /supports dataFormat 'NHWC' only, got 'NCHW'/);
    assert.throws(() => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: f }, { ...nchw, inputShape: [1, 4, 4, 3] }),
      /supports dataFormat 'NHWC' only, got 'NCHW'/);
    assert.throws(() => tf.conv2d(tensor([1, 3, 4, 4], 5) as tf.Tensor4D, f as tf.Tensor4D, 1, 'same', 'NCHW'), /dataFormat/);
    // Dilated convolutions have no gradient in tfjs-core on any backend; wasm must not change that.
    assert.throws(() => tf.grad((w: tf.Tensor) => tf.sum(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same', 'NHWC', 2)))(f),
      /dilation/);
    // A dy that does not fit the convolution is rejected, not silently broadcast or truncated.
    assert.throws(() => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy: tensor([1, 3, 3, 2], 4) },
      { strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, 3, 2] }), /dy has shape \[1,3,3,2\]/);
  });
}
