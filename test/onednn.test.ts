/**
 * The oneDNN engine's kernels beyond the convolutions (those are in wasm-kernels.test.ts with the
 * XNNPACK ones): max-pool gradient and channel reductions against the cpu backend, the in-place
 * optimizer update against the tensor-op update (bit for bit), and the native helpers against plain
 * JavaScript. Skipped with the reason where the addon is not built, except under
 * IMGCLASS_REQUIRE_ONEDNN=1 (CI), where a missing addon fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { chooseBackend } from '../lib/engine/backend';
import { loadOneDnn, oneDnnKernelsActive, weightedSumNative, sumOfSquaresNative } from '../lib/engine/onednn';
import { buildResNet, decayedWeightNames, inPlaceUpdatableWeightNames, ResNetConfig } from '../lib/model';
import { copyInto } from '../lib/engine/backend';
import { withFusedTrainingBatchNorm } from '../lib/engine/batch-norm';
import { createOptimizer, crossEntropyGradients, weightDecayLoss, flatEntries, FlatEntry } from '../lib/train/recipe';
import { values, tensor, relMaxError } from './tensors';

const loaded = loadOneDnn();
const skip = !loaded.ok && process.env.IMGCLASS_REQUIRE_ONEDNN !== '1' ? loaded.reason : false;

/** Runs `fn` on cpu and on wasm with the oneDNN kernels; returns both results. */
async function both<T>(fn: () => Promise<T>): Promise<{ cpu: T; onednn: T }> {
  await chooseBackend('cpu');
  const cpu = await fn();
  await chooseBackend('onednn');
  assert.ok(oneDnnKernelsActive());
  const onednn = await fn();
  return { cpu, onednn };
}

test('oneDNN reports its version and instruction set, and the backend note names them', { skip }, async () => {
  assert.ok(loaded.ok);
  assert.match(loaded.version, /^\d+\.\d+\.\d+$/);
  assert.match(loaded.isa, /^(sse41|avx|avx2|avx512\w*)$/);
  const choice = await chooseBackend('onednn', { threads: 1 });
  assert.equal(choice.engine, 'onednn');
  assert.equal(choice.name, 'wasm');
  assert.ok(choice.note.includes(`oneDNN ${loaded.version}, ${loaded.isa}, 1 thread;`), choice.note);
});

const POOLS: { name: string; shape: [number, number, number, number]; size: number; stride: number; pad: 'same' | 'valid' | number }[] = [
  { name: 'ResNet stem: 3x3 stride 2 same', shape: [2, 16, 16, 8], size: 3, stride: 2, pad: 'same' },
  { name: '3x3 stride 1 same', shape: [2, 7, 9, 3], size: 3, stride: 1, pad: 'same' },
  { name: '2x2 stride 2 valid, odd size', shape: [1, 9, 7, 4], size: 2, stride: 2, pad: 'valid' },
  { name: '3x3 stride 2 explicit pad 1', shape: [2, 10, 10, 5], size: 3, stride: 2, pad: 1 },
];

for (const c of POOLS) {
  test(`max-pool gradient matches cpu: ${c.name}`, { skip }, async () => {
    const { cpu, onednn } = await both(async () => {
      const x = tensor(c.shape, 3);
      const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(a as tf.Tensor4D, c.size, c.stride, c.pad),
        tensor(tf.maxPool(x as tf.Tensor4D, c.size, c.stride, c.pad).shape, 4))))(x);
      return (await g.data()) as Float32Array;
    });
    // Each output's gradient goes to its window's maximum; overlapping windows add up in another order.
    const e = relMaxError(onednn, cpu);
    assert.ok(e < 1e-6, `relative error ${e}`);
  });
}

test('Sum and Mean over all axes but the channels match cpu; other reductions still work', { skip }, async () => {
  const { cpu, onednn } = await both(async () => {
    const x = tensor([4, 9, 7, 24], 5);
    const r = [
      tf.sum(x, [0, 1, 2]), tf.mean(x, [0, 1, 2]), tf.sum(x, [0, 1, 2], true), tf.mean(x, [2, 0, 1], true),
      tf.sum(tf.reshape(x, [252, 24]), 0), tf.mean(x, -1), tf.sum(x, [1, 2]), tf.sum(x), tf.mean(x, [0, 3]),
    ];
    const int = tf.sum(tf.tensor2d([[1, 2], [3, 4]], [2, 2], 'int32'), 0);
    return { shapes: [...r, int].map((t) => t.shape), data: await Promise.all(r.map((t) => t.data())), int: Array.from(await int.data()) };
  });
  assert.deepEqual(onednn.shapes, cpu.shapes);
  cpu.data.forEach((c, i) => assert.ok(relMaxError(onednn.data[i]!, c) < 1e-6, `reduction ${i}`));
  assert.deepEqual(onednn.int, [4, 6]);
});

test('Identity on wasm shares memory safely: a clone outlives its source with its values', { skip }, async () => {
  await chooseBackend('onednn');
  const x = tf.tensor1d([1, 2, 3]);
  const y = x.clone();
  const before = tf.engine().backend.numDataIds();
  x.dispose();
  assert.equal(tf.engine().backend.numDataIds(), before, 'the shared buffer stays while the clone lives');
  assert.deepEqual(Array.from(await y.data()), [1, 2, 3]);
  y.dispose();
  assert.equal(tf.engine().backend.numDataIds(), before - 1);
});

test('in-place optimizer update (oneDNN engine) gives the same bits as the tensor-op update (wasm engine)', { skip }, async () => {
  const cfg: ResNetConfig = { depth: 18, imageSize: 32, numClasses: 3, seed: 7 };
  const run = async (engine: 'wasm' | 'onednn'): Promise<{ weights: Float32Array[]; paths: string[]; iterations: number }> => {
    await chooseBackend(engine, { threads: 1 });
    const model = buildResNet(cfg);
    const opt = createOptimizer();
    const { entries, length: offset } = flatEntries(model);
    const decayed = new Set(decayedWeightNames(model));
    const inPlace = new Set(model.trainableWeights.map((w) => w.name));
    const paths: string[] = [];
    for (let step = 0; step < 3; step++) {
      const flat = values(offset, 100 + step).map((v) => v * 0.01);
      opt.setLearningRate(0.1 + 0.05 * step);
      opt.applyFlat(entries, flat, 1e-4, decayed, inPlace);
      paths.push(opt.lastPath ?? '');
    }
    const weights = await Promise.all(model.trainableWeights.map(async (w) => (await w.read().data()) as Float32Array));
    const iterations = opt.iterations;
    opt.dispose();
    model.dispose();
    return { weights, paths, iterations };
  };
  const tensors = await run('wasm');
  const native = await run('onednn');
  assert.deepEqual(tensors.paths, ['tensors', 'tensors', 'tensors']);
  // The first step creates the momentum accumulators (tfjs does, lazily); the rest run in place.
  assert.deepEqual(native.paths, ['tensors', 'in-place', 'in-place']);
  assert.equal(native.iterations, 3);
  assert.equal(tensors.iterations, 3);
  native.weights.forEach((w, i) => {
    const t = tensors.weights[i]!;
    let same = w.length === t.length;
    for (let j = 0; same && j < w.length; j++) same = Object.is(w[j], t[j]);
    assert.ok(same, `weight ${i} differs between the in-place and tensor updates`);
  });
});

test('the in-place update is refused while another tensor shares a variable\'s memory', { skip }, async () => {
  await chooseBackend('onednn');
  const v = tf.variable(tf.tensor1d([1, 2]), true, 'onednn-test/shared');
  const opt = createOptimizer();
  const entries: FlatEntry[] = [{ variable: v, offset: 0 }];
  const inPlace = new Set([v.name]);
  opt.setLearningRate(0.5);
  opt.applyFlat(entries, Float32Array.from([1, 1]), 0, new Set(), inPlace);
  const held = v.clone(); // shares v's memory (Identity shares on wasm)
  opt.applyFlat(entries, Float32Array.from([1, 1]), 0, new Set(), inPlace);
  assert.equal(opt.lastPath, 'tensors');
  const heldValues = Array.from(await held.data());
  assert.notDeepEqual(Array.from(await v.data()), heldValues, 'v moved on');
  held.dispose();
  opt.applyFlat(entries, Float32Array.from([1, 1]), 0, new Set(), inPlace);
  assert.equal(opt.lastPath, 'in-place');
  opt.dispose();
  v.dispose();
});

test('training steps with in-place updates follow the tensor-update run exactly (no stale weight caches)', { skip }, async () => {
  // Caught a real bug: tfjs-wasm's matrix multiply caches packed dense weights by tensor identity, so
  // updating the dense layer in place trained on stale weights. Only conv and batch-norm weights are
  // updated in place (inPlaceUpdatableWeightNames).
  await chooseBackend('onednn', { threads: 1 });
  const run = (inPlaceAll: boolean): { losses: number[]; weights: Float32Array[]; paths: string[] } => {
    const model = buildResNet({ depth: 18, imageSize: 32, numClasses: 5, seed: 3, widthMultiplier: 0.5 });
    const opt = createOptimizer();
    const { entries, length: offset } = flatEntries(model);
    const flat = new Float32Array(offset);
    const decayed = new Set(decayedWeightNames(model));
    const inPlace = new Set(inPlaceAll ? inPlaceUpdatableWeightNames(model) : []);
    const x = tensor([8, 32, 32, 3], 11) as tf.Tensor4D;
    const y = tf.tensor1d([0, 1, 2, 3, 4, 0, 1, 2], 'int32');
    const losses: number[] = [];
    const paths: string[] = [];
    for (let step = 0; step < 4; step++) {
      const r = crossEntropyGradients(model, x, y, { numClasses: 5 });
      for (const e of entries) copyInto(r.grads[e.variable.name] as tf.Tensor, flat, e.offset);
      tf.dispose(r.grads);
      opt.setLearningRate(0.05);
      opt.applyFlat(entries, flat, 1e-4, decayed, inPlace);
      losses.push(r.crossEntropy);
      paths.push(opt.lastPath ?? '');
    }
    const weights = model.trainableWeights.map((w) => w.read().dataSync() as Float32Array);
    tf.dispose([x, y]);
    opt.dispose();
    model.dispose();
    return { losses, weights, paths };
  };
  const viaTensors = run(false);
  const inPlace = run(true);
  assert.deepEqual(viaTensors.paths, ['tensors', 'tensors', 'tensors', 'tensors']);
  assert.deepEqual(inPlace.paths, ['tensors', 'mixed', 'mixed', 'mixed']);
  assert.deepEqual(inPlace.losses, viaTensors.losses);
  assert.ok(inPlace.losses[3]! < inPlace.losses[0]!, `loss ${inPlace.losses}`);
  inPlace.weights.forEach((w, i) => assert.deepEqual(Array.from(w), Array.from(viaTensors.weights[i]!), `weight ${i}`));
});

test('native weighted sum and sum of squares agree with JavaScript', { skip }, async () => {
  const n = 100_003;
  const a = values(n, 1), b = values(n, 2), out = new Float32Array(n);
  assert.ok(weightedSumNative(out, [a, b], [0.25, 0.75]));
  for (let j = 0; j < n; j += 997) assert.ok(Math.abs(out[j]! - (0.25 * a[j]! + 0.75 * b[j]!)) < 1e-7);
  assert.throws(() => weightedSumNative(out, [a, b.subarray(1)], [0.5, 0.5]), /as long as out/);
  await chooseBackend('onednn');
  const t = [tf.tensor(a), tf.tensor(b.subarray(0, 77))];
  let expected = 0;
  for (const x of [a, b.subarray(0, 77)]) for (const v of x) expected += v * v;
  const got = sumOfSquaresNative(t);
  assert.ok(got !== undefined && Math.abs(got - expected) < 1e-9 * expected);
  tf.dispose(t);
});

test('the training step\'s decay term is the same natively and with tensor ops', { skip }, async () => {
  const cfg: ResNetConfig = { depth: 18, imageSize: 32, numClasses: 3, widthMultiplier: 0.25 };
  const results: number[] = [];
  for (const engine of ['wasm', 'onednn'] as const) {
    await chooseBackend(engine);
    const model = buildResNet(cfg);
    const x = tensor([2, 32, 32, 3], 9) as tf.Tensor4D;
    const y = tf.tensor1d([0, 2], 'int32');
    tf.dispose(crossEntropyGradients(model, x, y, { numClasses: 3 }).grads);
    model.setWeights(model.getWeights().map((w, i) => tf.tensor(values(w.size, i), w.shape)));
    results.push(weightDecayLoss(model, 1e-4));
    tf.dispose([x, y]);
    model.dispose();
  }
  assert.ok(results[0]! > 0);
  // Tensor ops sum 2.8M squares in float32 (relative error ~1e-5); the native sum is in double.
  assert.ok(Math.abs(results[0]! - results[1]!) < 1e-4 * results[0]!, `${results}`);
});

test('batch norm in training mode: the fused kernel matches tfjs-layers (output, moving statistics, gradients)', { skip }, async () => {
  const run = async (engine: 'cpu' | 'onednn') => {
    await chooseBackend(engine);
    const layer = withFusedTrainingBatchNorm(tf.layers.batchNormalization({ axis: -1, momentum: 0.9, epsilon: 1e-5,
      gammaInitializer: tf.initializers.randomUniform({ minval: 0.5, maxval: 1.5, seed: 1 }),
      betaInitializer: tf.initializers.randomUniform({ minval: -0.3, maxval: 0.3, seed: 2 }) }));
    const x = tf.add(tensor([3, 5, 4, 6], 21), 0.7);
    layer.apply(x, { training: false }); // builds the layer
    const r = tensor([3, 5, 4, 6], 22);
    const vars = layer.trainableWeights.map((w) => w.read() as tf.Variable);
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(layer.apply(x, { training: true }) as tf.Tensor, r)) as tf.Scalar, vars);
    const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(layer.apply(a, { training: true }) as tf.Tensor, r)))(x);
    const y = layer.apply(x, { training: true }) as tf.Tensor;
    const out = {
      fused: tf.getKernel('ImgclassBatchNormTraining', tf.getBackend()) != null,
      y: (await y.data()) as Float32Array,
      loss: (await value.data())[0]!,
      grads: await Promise.all(vars.map((v) => grads[v.name]!.data())),
      dx: (await dx.data()) as Float32Array,
      moving: await Promise.all(layer.getWeights().slice(2).map((w) => w.data())),
    };
    layer.dispose();
    return out;
  };
  const cpu = await run('cpu');
  const fused = await run('onednn');
  assert.equal(cpu.fused, false);
  assert.equal(fused.fused, true, 'the oneDNN engine registers the fused kernel');
  assert.ok(relMaxError(fused.y, cpu.y) < 1e-5, 'output');
  assert.ok(Math.abs(fused.loss - cpu.loss) < 1e-4 * Math.abs(cpu.loss));
  fused.grads.forEach((g, i) => assert.ok(relMaxError(g, cpu.grads[i]!) < 1e-4, `gradient of ${['gamma', 'beta'][i]}`));
  assert.ok(relMaxError(fused.dx, cpu.dx) < 1e-4, 'input gradient (through the batch statistics)');
  // Three training calls moved the moving mean and variance the same way.
  fused.moving.forEach((m, i) => assert.ok(relMaxError(m, cpu.moving[i]!) < 1e-5, `moving ${['mean', 'variance'][i]}`));
});
