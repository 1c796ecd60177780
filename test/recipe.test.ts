import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { buildResNet, decayedWeightNames, ResNetConfig } from '../lib/model';
import {
  learningRate,
  learningRatePhases,
  createOptimizer,
  applyGradients,
  lossAndGradients,
  evaluateBatch,
  shortRunNotice,
  metricsFromLogits,
  LrScheduleConfig,
} from '../lib/train/recipe';
import { mulberry32 } from '../lib/random';
import { UserError } from '../lib/errors';

before(async () => {
  await tf.setBackend('cpu');
});

test('a short run at tpu\'s base rate gets one line of advice: the first decay within two epochs', () => {
  // 320 images, batch 32: 10 steps an epoch. The first decay is at ceil(30/90 x steps).
  const at = (trainSteps: number, baseLr?: number) => shortRunNotice({ batchSize: 32, trainSteps, numTrainImages: 320, baseLr });
  assert.equal(
    at(60),
    "note: in this 60-step run the learning rate first decays at step 20, 2.0 epochs in; tensorflow/tpu's base rate 0.1 " +
      "trains poorly in a run this short (the project's benchmarks use --base_learning_rate 0.4)",
  );
  assert.match(at(30)!, /first decays at step 10, 1\.0 epochs in/);
  assert.equal(at(63), undefined, 'decay at step 21, 2.1 epochs in: long enough');
  assert.equal(at(60, 0.1), at(60), 'tpu\'s rate given explicitly is still tpu\'s rate');
  assert.equal(at(60, 0.4), undefined, 'a rate of the user\'s own: no advice');
  assert.equal(learningRatePhases({ batchSize: 32, trainSteps: 60 })[1]!.startStep, 20, 'the decay the notice names is the schedule\'s');
});

function close(actual: number, expected: number, what: string, tol = 1e-6): void {
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: ${actual} != ${expected}`);
}

// Width 1/16 (4..32 filters): tfjs's cpu backend computes filter gradients with a scalar loop, so
// a full-width ResNet-18 step takes ~15 s even on 16-px images; the code path is the same.
const TINY: ResNetConfig = { depth: 18, numClasses: 3, imageSize: 16, widthMultiplier: 1 / 16, seed: 7 };

function batch(n: number, numClasses: number, seed: number): { x: tf.Tensor4D; y: tf.Tensor1D } {
  const x = tf.randomNormal([n, 16, 16, 3], 0, 1, 'float32', seed) as tf.Tensor4D;
  const y = tf.tensor1d(Array.from({ length: n }, (_, i) => i % numClasses), 'int32');
  return { x, y };
}

test('learning rate: linear scaling, warm-up over 5/90 of the run, then x0.1 at 30/90, 60/90, 80/90', () => {
  const cfg: LrScheduleConfig = { batchSize: 512, trainSteps: 900 };
  // 0.1 x 512/256 = 0.2; one "epoch" of the reference schedule is 10 steps here.
  const expected: Array<[number, number]> = [
    [0, 0],
    [25, 0.1],
    [49, 0.196],
    [50, 0.2],
    [299, 0.2],
    [300, 0.02],
    [599, 0.02],
    [600, 0.002],
    [799, 0.002],
    [800, 0.0002],
    [899, 0.0002],
  ];
  for (const [step, lr] of expected) close(learningRate(step, cfg), lr, `step ${step}`);
  assert.deepEqual(learningRatePhases(cfg), [
    { startStep: 50, multiplier: 1 },
    { startStep: 300, multiplier: 0.1 },
    { startStep: 600, multiplier: 0.01 },
    { startStep: 800, multiplier: 0.001 },
  ]);
  close(learningRate(200, { batchSize: 256, trainSteps: 900, baseLr: 0.4 }), 0.4, 'baseLr');
  close(learningRate(10, { ...cfg, warmupEpochs: 2 }), 0.1, 'half-way through a 2-epoch warm-up');
  close(learningRate(20, { ...cfg, warmupEpochs: 2 }), 0.2, 'after a 2-epoch warm-up');
});

test('learning rate with numTrainImages follows tpu get_lr_schedule exactly (whole-epoch boundaries)', () => {
  // tpu defaults: ImageNet, batch 1024, 112590 steps = 90 epochs of floor(1281167/1024) = 1251 steps.
  const imagenet: LrScheduleConfig = { batchSize: 1024, trainSteps: 112590, numTrainImages: 1281167 };
  // current_epoch = step / (1281167 / 1024), so 5 epochs are reached at step 6255.7.
  assert.deepEqual(learningRatePhases(imagenet).map((p) => p.startStep), [6256, 37535, 75069, 100092]);
  close(learningRate(6255, imagenet), (0.4 * 6255) / (5 * (1281167 / 1024)), 'end of warm-up');
  close(learningRate(6256, imagenet), 0.4, 'after warm-up');
  close(learningRate(37534, imagenet), 0.4, 'before 30 epochs');
  close(learningRate(37535, imagenet), 0.04, 'after 30 epochs');
  close(learningRate(100092, imagenet), 0.0004, 'after 80 epochs');

  // 20 epochs of 10 steps: boundaries floor(20 x 5/90) = 1, 6, 13, 17 epochs.
  const short: LrScheduleConfig = { batchSize: 100, trainSteps: 200, numTrainImages: 1000 };
  assert.deepEqual(learningRatePhases(short).map((p) => p.startStep), [10, 60, 130, 170]);
  close(learningRate(5, short), 0.1 * (100 / 256) * 0.5, 'mid warm-up');
  // Under 18 epochs tpu's floor leaves no warm-up at all; the rate starts at its full value.
  const tiny: LrScheduleConfig = { batchSize: 100, trainSteps: 50, numTrainImages: 1000 };
  close(learningRate(0, tiny), 0.1 * (100 / 256), 'no warm-up when it floors to 0 epochs');
  assert.throws(() => learningRate(0, { batchSize: 64, trainSteps: 10, numTrainImages: 10 }), UserError);
  assert.throws(() => learningRate(0, { batchSize: 0, trainSteps: 10 }), UserError);
});

test('Nesterov momentum matches TF MomentumOptimizer(use_nesterov=True) by hand, with a changing rate', () => {
  // f(w) = 0.5 x (3 w0^2 + 0.5 w1^2): grad = (3 w0, 0.5 w1).
  const c = [3, 0.5];
  const w = tf.variable(tf.tensor1d([1, -2]), true, 'nesterov-test/w');
  const opt = createOptimizer();
  const ref = [1, -2];
  const acc = [0, 0];
  for (const lr of [0.1, 0.05, 0.2]) {
    const { grads, value } = tf.variableGrads(() => tf.mul(0.5, tf.sum(tf.mul(tf.tensor1d(c), tf.square(w)))) as tf.Scalar, [w]);
    applyGradients(opt, grads, lr);
    tf.dispose([value, grads]);
    for (let i = 0; i < 2; i++) {
      const g = c[i]! * ref[i]!;
      acc[i] = 0.9 * acc[i]! + g;
      ref[i] = ref[i]! - lr * (g + 0.9 * acc[i]!);
    }
    const got = Array.from(w.dataSync());
    got.forEach((v, i) => close(v, ref[i]!, `w${i} at lr ${lr}`, 1e-5));
  }
  assert.equal(opt.iterations, 3);
  assert.equal(opt.learningRate, 0.2);
  opt.dispose();
  w.dispose();
});

test('optimizer state exports and imports: a restored optimizer continues identically', async () => {
  const make = (name: string): tf.Variable => tf.variable(tf.tensor2d([[0.5, -1], [2, 0.25]]), true, name);
  const a = make('state-test/a');
  const b = make('state-test/b');
  const g1 = tf.tensor2d([[0.1, 0.2], [-0.3, 0.4]]);
  const g2 = tf.tensor2d([[-0.5, 0.1], [0.2, 0.05]]);
  const optA = createOptimizer();
  applyGradients(optA, { 'state-test/a': g1 }, 0.1);
  // b takes the same first step with another optimizer, then continues from optA's exported state.
  const warm = createOptimizer();
  applyGradients(warm, { 'state-test/b': g1 }, 0.1);
  warm.dispose();
  const state = await optA.getWeights();
  assert.equal(state.length, 2);
  assert.equal(state[1]!.name, 'state-test/a/momentum');
  const restored = createOptimizer();
  await restored.setWeights(state);
  tf.dispose(state.map((s) => s.tensor)); // copies: disposing them must not touch optA
  assert.equal(restored.iterations, 1);
  applyGradients(optA, { 'state-test/a': g2 }, 0.05);
  applyGradients(restored, { 'state-test/b': g2 }, 0.05);
  assert.deepEqual(Array.from(a.dataSync()), Array.from(b.dataSync()));
  assert.throws(() => applyGradients(optA, { other: g2, 'state-test/a': g2 }, 0.05), /same order/);
  tf.dispose([a, b, g1, g2]);
  optA.dispose();
  restored.dispose();
});

test('30 steps of lossAndGradients + applyGradients overfit 12 images; no tensors leak', () => {
  const model = buildResNet(TINY);
  const { x, y } = batch(12, 3, 1);
  const opt = createOptimizer();
  const start = tf.memory().numTensors;
  const losses: number[] = [];
  const ces: number[] = [];
  let afterFirst = 0;
  for (let step = 0; step < 30; step++) {
    const { loss, crossEntropy, grads } = lossAndGradients(model, x, y, { numClasses: 3 });
    assert.deepEqual(Object.keys(grads), model.trainableWeights.map((w) => w.name));
    applyGradients(opt, grads, 0.05);
    tf.dispose(grads);
    losses.push(loss);
    ces.push(crossEntropy);
    if (step === 0) afterFirst = tf.memory().numTensors;
    else assert.equal(tf.memory().numTensors, afterFirst, `tensor count after step ${step}`);
  }
  // The only new tensors are the optimizer's momentum slots, one per trainable weight.
  assert.equal(afterFirst - start, model.trainableWeights.length);
  assert.ok(ces[0]! > 0.8, `initial cross-entropy ${ces[0]} should be near ln 3`);
  assert.ok(ces[29]! < 0.25 * ces[0]!, `cross-entropy ${ces[0]} -> ${ces[29]}`);
  assert.ok(losses[29]! < losses[0]!, 'total loss decreases');
  // The moving averages followed the batch statistics, so inference mode agrees.
  const m = evaluateBatch(model, x, y, 3);
  assert.ok(m.top1 >= 0.75, `top-1 after overfitting: ${m.top1}`);
  assert.ok(Number.isNaN(m.top5));
  assert.equal(m.count, 12);
  opt.dispose();
  tf.dispose([x, y]);
  model.dispose();
});

test('weight decay adds weightDecay x sum(w^2)/2 over conv and dense weights, and weightDecay x w to their gradients', () => {
  const model = buildResNet(TINY);
  const { x, y } = batch(6, 3, 2);
  const before = tf.memory().numTensors;
  const plain = lossAndGradients(model, x, y, { numClasses: 3, weightDecay: 0 });
  const decayed = lossAndGradients(model, x, y, { numClasses: 3, weightDecay: 0.01 });
  const names = new Set(decayedWeightNames(model));
  let sumSquares = 0;
  for (const w of model.trainableWeights) {
    if (names.has(w.name)) for (const v of w.read().dataSync()) sumSquares += v * v;
  }
  close(plain.crossEntropy, decayed.crossEntropy, 'cross-entropy does not depend on the decay', 1e-6);
  close(plain.loss, plain.crossEntropy, 'no decay term at 0', 1e-7);
  close(decayed.loss - decayed.crossEntropy, 0.01 * (sumSquares / 2), 'decay term', 1e-4);
  for (const w of model.trainableWeights) {
    const err = tf.tidy(() => {
      const diff = tf.sub(decayed.grads[w.name]!, plain.grads[w.name]!);
      const expected = names.has(w.name) ? tf.mul(w.read(), 0.01) : tf.zerosLike(w.read());
      return tf.max(tf.abs(tf.sub(diff, expected))).dataSync()[0]!;
    });
    assert.ok(err < 1e-5, `${w.name}: gradient difference off by ${err}`);
  }
  tf.dispose([plain.grads, decayed.grads]);
  assert.equal(tf.memory().numTensors, before, 'lossAndGradients leaks no tensors');
  tf.dispose([x, y]);
  model.dispose();
});

test('label smoothing follows tf.losses.softmax_cross_entropy: targets (1-s) onehot + s/K', () => {
  const model = buildResNet(TINY);
  const { x, y } = batch(6, 3, 3);
  // Training-mode logits depend only on the weights and this batch (batch statistics).
  const logits = tf.tidy(() => (model.apply(x, { training: true }) as tf.Tensor).arraySync() as number[][]);
  const labels = y.arraySync();
  const expectedCe = (s: number): number => {
    let total = 0;
    logits.forEach((row, i) => {
      const max = Math.max(...row);
      const logSum = Math.log(row.reduce((a, z) => a + Math.exp(z - max), 0)) + max;
      row.forEach((z, k) => {
        const target = (1 - s) * (k === labels[i] ? 1 : 0) + s / row.length;
        total -= target * (z - logSum);
      });
    });
    return total / logits.length;
  };
  const r0 = lossAndGradients(model, x, y, { numClasses: 3, labelSmoothing: 0, weightDecay: 0 });
  const r1 = lossAndGradients(model, x, y, { numClasses: 3, labelSmoothing: 0.3, weightDecay: 0 });
  close(r0.crossEntropy, expectedCe(0), 'no smoothing', 1e-5);
  close(r1.crossEntropy, expectedCe(0.3), 'smoothing 0.3', 1e-5);
  assert.notEqual(r0.crossEntropy, r1.crossEntropy);
  tf.dispose([r0.grads, r1.grads, x, y]);
  model.dispose();
});

test('training mode updates batch-norm moving statistics; evaluateBatch uses them and leaves them alone', () => {
  const model = buildResNet({ ...TINY, numClasses: 6 });
  const { x, y } = batch(12, 6, 4);
  const movingMean = (): number[] => Array.from(model.getLayer('stem/bn').getWeights()[2]!.dataSync());
  const initial = movingMean();
  assert.ok(initial.every((v) => v === 0));
  const r = lossAndGradients(model, x, y, { numClasses: 6 });
  tf.dispose(r.grads);
  const afterTrain = movingMean();
  assert.ok(afterTrain.some((v) => v !== 0), 'moving mean moved');
  const before = tf.memory().numTensors;
  const m = evaluateBatch(model, x, y, 6);
  assert.equal(tf.memory().numTensors, before, 'evaluateBatch leaks no tensors');
  assert.deepEqual(movingMean(), afterTrain);
  // Check the metrics against the logits computed here.
  const logits = (model.predict(x) as tf.Tensor).arraySync() as number[][];
  const labels = y.arraySync();
  let top1 = 0;
  let top5 = 0;
  let ce = 0;
  logits.forEach((row, i) => {
    const label = labels[i]!;
    const rank = row.filter((z) => z > row[label]!).length;
    if (rank === 0) top1++;
    if (rank < 5) top5++;
    const max = Math.max(...row);
    ce -= row[label]! - max - Math.log(row.reduce((a, z) => a + Math.exp(z - max), 0));
  });
  close(m.top1, top1 / 12, 'top-1');
  close(m.top5, top5 / 12, 'top-5');
  close(m.loss, ce / 12, 'loss', 1e-5);
  assert.ok(m.top5 >= m.top1);
  assert.equal(m.count, 12);
  tf.dispose([x, y]);
  model.dispose();
});

test('labels must be int32 and match the batch', () => {
  const model = buildResNet(TINY);
  const { x } = batch(4, 3, 5);
  const floats = tf.tensor1d([0, 1, 2, 0], 'float32');
  const short = tf.tensor1d([0, 1], 'int32');
  assert.throws(() => lossAndGradients(model, x, floats, { numClasses: 3 }), /int32/);
  assert.throws(() => evaluateBatch(model, x, short, 3), /4 images but 2 labels/);
  tf.dispose([x, floats, short]);
  model.dispose();
});

test('metricsFromLogits (evaluation on the native forward) gives evaluateBatch\'s loss, top-1 and top-5, ties included', async () => {
  const rng = mulberry32(5);
  for (const classes of [3, 7]) {
    const n = 40;
    // Logits rounded to quarters so that ties happen, in the label's row too.
    const logits = Float32Array.from({ length: n * classes }, () => Math.round(8 * rng()) / 4);
    const labels = Int32Array.from({ length: n }, () => Math.floor(rng() * classes));
    const got = metricsFromLogits(logits, labels, classes);
    const want = tf.tidy(() => {
      const z = tf.tensor2d(logits, [n, classes]);
      const y = tf.tensor1d(labels, 'int32');
      const ce = tf.losses.softmaxCrossEntropy(tf.oneHot(y, classes), z).dataSync()[0] as number;
      const top1 = tf.mean(tf.cast(tf.equal(tf.argMax(z, 1), y), 'float32')).dataSync()[0] as number;
      const top5 = classes >= 5 ? tf.mean(tf.cast(tf.any(tf.equal(tf.topk(z, 5).indices, tf.expandDims(y, 1)), 1), 'float32')).dataSync()[0] as number : NaN;
      return { ce, top1, top5 };
    });
    assert.ok(Math.abs(got.loss - want.ce) < 1e-5 * want.ce, `${classes} classes: loss ${got.loss} vs ${want.ce}`);
    // tfjs's means are float32: 0.45 comes back as 0.45000001788.
    assert.ok(Math.abs(got.top1 - want.top1) < 1e-6, `${classes} classes: top-1 ${got.top1} vs ${want.top1}`);
    if (classes >= 5) assert.ok(Math.abs(got.top5 - want.top5) < 1e-6, `top-5 ${got.top5} vs ${want.top5}`);
    else assert.ok(Number.isNaN(got.top5));
    assert.equal(got.count, n);
  }
});
