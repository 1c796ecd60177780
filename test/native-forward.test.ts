/**
 * The native whole-network forward (lib/engine/native-forward.ts, native/onednn createNetwork) against
 * tfjs's own pure-JavaScript `cpu` backend running predict on the same weights and images: ResNet-18
 * and a narrow ResNet-50 with batch-norm statistics, scales and offsets far from their initial
 * values (so folding them into the convolutions matters), a transfer-style model cut inside a ResNet
 * under a new head, and the models it must refuse (the classifier then runs tfjs). Skipped with the
 * reason where the addon is not built, except under IMGCLASS_REQUIRE_ONEDNN=1 (CI).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { chooseBackend } from '../lib/engine/backend';
import { loadOneDnn } from '../lib/engine/onednn';
import { compileNativeForward, NativeForward } from '../lib/engine/native-forward';
import { buildResNet, ResNetConfig } from '../lib/model';
import { mulberry32, Rng } from '../lib/random';
import { makeClassifier } from '../lib/serve/classifier';
import { defaultPreprocessing } from '../lib/train/preprocessing';
import { exportModel, loadExport, LoadedExport } from '../lib/export';
import { ModelThread } from '../lib/serve/model-thread';
import { buildTransferModel, disposeTransferModel } from '../lib/transfer/model';
import { tempDir, removeDir } from './helpers';

const loaded = loadOneDnn();
const skip = !loaded.ok && process.env.IMGCLASS_REQUIRE_ONEDNN !== '1' ? loaded.reason : false;

function uniform(rng: Rng, n: number, lo: number, hi: number): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * rng());
}

/** Gives every batch norm random gamma, beta, moving mean and variance, and the head a larger kernel. */
function randomizeStatistics(model: tf.LayersModel, seed: number): void {
  const rng = mulberry32(seed);
  for (const layer of model.layers) {
    const weights = layer.getWeights();
    if (layer.getClassName() === 'BatchNormalization') {
      const c = weights[0]!.shape[0]!;
      const [gamma, beta, mean, variance] = [uniform(rng, c, 0.5, 1.5), uniform(rng, c, -0.3, 0.3), uniform(rng, c, -0.3, 0.3),
        uniform(rng, c, 0.3, 2)].map((v) => tf.tensor1d(v));
      layer.setWeights([gamma!, beta!, mean!, variance!]);
      tf.dispose([gamma!, beta!, mean!, variance!]);
    } else if (layer.getClassName() === 'Dense') {
      const [k, b] = [tf.tensor(uniform(rng, weights[0]!.size, -0.3, 0.3), weights[0]!.shape), tf.tensor(uniform(rng, weights[1]!.size, -0.3, 0.3))];
      layer.setWeights([k, b]);
      tf.dispose([k, b]);
    }
  }
}

function images(n: number, size: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n * size * size * 3 }, () => 4 * rng() - 2);
}

/** Native logits against the cpu backend's predict, for each batch size. */
function assertMatchesCpu(model: tf.LayersModel, forward: NativeForward, size: number, batches: number[]): void {
  for (const n of batches) {
    const x = images(n, size, 100 + n);
    const want = tf.tidy(() => (model.predict(tf.tensor4d(x, [n, size, size, 3])) as tf.Tensor).dataSync() as Float32Array);
    const got = forward.logits(x, n);
    assert.equal(got.length, want.length, `batch ${n}: logits count`);
    const scale = Math.max(...Array.from(want, Math.abs));
    assert.ok(scale > 0.05, `batch ${n}: logits of a real scale (max |logit| ${scale})`);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    assert.ok(worst < 1e-3 * scale + 1e-4, `batch ${n}: max |native - cpu| ${worst} for max |logit| ${scale}`);
    if (n > 1) {
      // Different images give different logits: the comparison is not of a constant.
      const classes = forward.classes;
      assert.ok(want.slice(0, classes).some((v, i) => Math.abs(v - want[classes + i]!) > 1e-3), `batch ${n}: images differ`);
    }
  }
}

async function onCpu(cfg: ResNetConfig, seed: number): Promise<tf.LayersModel> {
  await chooseBackend('cpu');
  const model = buildResNet(cfg);
  randomizeStatistics(model, seed);
  return model;
}

test('ResNet-18: native logits match the cpu backend for batches of 1, 3 and 8', { skip }, async () => {
  const model = await onCpu({ depth: 18, numClasses: 5, imageSize: 32, seed: 3 }, 11);
  const compiled = compileNativeForward(model);
  assert.ok(compiled.ok, compiled.ok ? '' : compiled.reason);
  // 21 convolutions (one projection per stage) with their batch norms, max pool, global pool, dense.
  assert.equal(compiled.forward.ops, 24);
  assertMatchesCpu(model, compiled.forward, 32, [1, 3, 8, 3]);
  compiled.forward.dispose();
  assert.throws(() => compiled.forward.logits(images(1, 32, 1), 1), /disposed/);
  model.dispose();
});

test('ResNet-50 (bottleneck blocks, quarter width): native logits match the cpu backend', { skip }, async () => {
  const model = await onCpu({ depth: 50, numClasses: 4, imageSize: 32, seed: 5, widthMultiplier: 0.25 }, 12);
  const compiled = compileNativeForward(model);
  assert.ok(compiled.ok, compiled.ok ? '' : compiled.reason);
  assertMatchesCpu(model, compiled.forward, 32, [1, 5]);
  compiled.forward.dispose();
  model.dispose();
});

test('a transfer-style model (ResNet cut at stage 3, max pool to 1x1 + flatten + dropout + relu dense + dense head) compiles and matches', { skip }, async () => {
  const base = await onCpu({ depth: 18, numClasses: 5, imageSize: 32, seed: 4, widthMultiplier: 0.5 }, 13);
  const features = base.getLayer('stage3/block1/relu_out').output as tf.SymbolicTensor;
  // stage 3 gives 2x2 maps at 32 px: a 2x2 max pool leaves 1x1, which Flatten turns into the vector.
  let x = tf.layers.maxPooling2d({ poolSize: 2, strides: 2, name: 'head/pool' }).apply(features) as tf.SymbolicTensor;
  x = tf.layers.flatten({ name: 'head/flatten' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.dropout({ rate: 0.5, name: 'head/dropout' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.dense({ units: 16, activation: 'relu', name: 'head/hidden' }).apply(x) as tf.SymbolicTensor;
  const logits = tf.layers.dense({ units: 3, name: 'head/dense' }).apply(x) as tf.SymbolicTensor;
  const model = tf.model({ inputs: base.inputs, outputs: logits });
  randomizeStatistics(model, 14);
  const compiled = compileNativeForward(model);
  assert.ok(compiled.ok, compiled.ok ? '' : compiled.reason);
  assertMatchesCpu(model, compiled.forward, 32, [1, 4]);
  compiled.forward.dispose();
  base.dispose();
});

test('models built by lib/transfer from a Layers source (frozen backbone, new head; cut inside) compile and match', { skip }, async () => {
  const source = await onCpu({ depth: 18, numClasses: 5, imageSize: 32, seed: 6, widthMultiplier: 0.5 }, 17);
  const dir = tempDir();
  try {
    const versionDir = await exportModel(source, dir, { labels: ['a', 'b', 'c', 'd', 'e'], preprocessing: defaultPreprocessing(32), meta: {} });
    for (const cutAt of [undefined, 'stage3/block1/relu_out']) {
      const built = await buildTransferModel({ source: 'test', dir: versionDir, format: 'layers', keepHead: false, trainable: 'head',
        numClasses: 3, imageSize: 32, seed: 2, ...(cutAt ? { cutAt } : {}) });
      randomizeStatistics(built.model, 18);
      const compiled = compileNativeForward(built.model);
      assert.ok(compiled.ok, compiled.ok ? '' : compiled.reason);
      assertMatchesCpu(built.model, compiled.forward, 32, [2, 3]);
      compiled.forward.dispose();
      disposeTransferModel(built);
    }
  } finally {
    source.dispose();
    removeDir(dir);
  }
});

/** A small conv net with one layer the native forward does not run. */
function unsupportedModel(): tf.LayersModel {
  const input = tf.input({ shape: [16, 16, 3] });
  let x = tf.layers.conv2d({ filters: 8, kernelSize: 3, padding: 'same', name: 'conv' }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.activation({ activation: 'sigmoid', name: 'squash' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: tf.layers.dense({ units: 2 }).apply(x) as tf.SymbolicTensor });
}

function exportOf(model: tf.LayersModel, labels: string[]): LoadedExport {
  const size = model.inputs[0]!.shape[1] as number;
  return { model, labels, preprocessing: defaultPreprocessing(size), meta: {}, version: '1', path: '/nowhere/1' };
}

test('a dense layer on feature maps is refused (tfjs applies it at every pixel)', { skip }, async () => {
  const input = tf.input({ shape: [8, 8, 3] });
  const x = tf.layers.conv2d({ filters: 4, kernelSize: 3, name: 'conv' }).apply(input) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 2, name: 'perpixel' }).apply(x) as tf.SymbolicTensor });
  const compiled = compileNativeForward(model);
  assert.equal(compiled.ok, false);
  assert.match(compiled.ok ? '' : compiled.reason, /layer "perpixel" \(Dense\): reads feature maps/);
  model.dispose();
});

test('a model with a layer it cannot run is refused with the layer named, and the classifier runs tfjs', { skip }, async () => {
  await chooseBackend('onednn');
  const model = unsupportedModel();
  const compiled = compileNativeForward(model);
  assert.equal(compiled.ok, false);
  assert.match(compiled.ok ? '' : compiled.reason, /layer "squash" \(Activation\)/);
  const classifier = makeClassifier(exportOf(model, ['a', 'b']));
  assert.match(classifier.forwardNote, /^forward: tfjs \(not compiled natively: layer "squash"/);
  const probs = classifier.classify([images(1, 16, 2)]);
  assert.equal(probs[0]!.length, 2);
  assert.ok(Math.abs(probs[0]![0]! + probs[0]![1]! - 1) < 1e-6);
  classifier.dispose();
});

test('on the oneDNN engine the classifier runs the native forward, with the probabilities tfjs gives', { skip }, async () => {
  await chooseBackend('onednn');
  const model = buildResNet({ depth: 18, numClasses: 3, imageSize: 32, seed: 9 });
  randomizeStatistics(model, 15);
  const labels = ['a', 'b', 'c'];
  const native = makeClassifier(exportOf(model, labels));
  const viaTfjs = makeClassifier(exportOf(model, labels), { forward: 'tfjs' });
  assert.match(native.forwardNote, /^forward: native oneDNN \(24 fused ops\)/);
  assert.equal(viaTfjs.forwardNote, 'forward: tfjs (asked for)');
  const pixels = 32 * 32 * 3;
  const batch = images(5, 32, 21);
  const inputs = Array.from({ length: 5 }, (_, i) => batch.subarray(i * pixels, (i + 1) * pixels));
  const got = native.classify(inputs);
  const want = viaTfjs.classify(inputs);
  got.forEach((p, i) => p.forEach((v, c) => assert.ok(Math.abs(v - want[i]![c]!) < 1e-5, `image ${i} class ${c}: ${v} vs ${want[i]![c]}`)));
  assert.deepEqual(native.classify([]), []);
  // On another engine the user asked for its kernels: tfjs runs.
  await chooseBackend('wasm');
  const onWasm = makeClassifier(exportOf(model, labels));
  assert.match(onWasm.forwardNote, /^forward: tfjs \(the oneDNN engine is not the active backend\)/);
  native.dispose(); // disposes the model too; the others share it
});

test("the server's model thread runs the native forward and says so on its engine line", { skip }, async () => {
  await chooseBackend('onednn');
  const dir = tempDir();
  const model = buildResNet({ depth: 18, numClasses: 3, imageSize: 32, seed: 10 });
  randomizeStatistics(model, 16);
  let thread: ModelThread | undefined;
  try {
    const versionDir = await exportModel(model, dir, { labels: ['a', 'b', 'c'], preprocessing: defaultPreprocessing(32), meta: {} });
    thread = await ModelThread.start(versionDir, 'onednn');
    assert.match(thread.backendNote, /^engine: onednn .*; forward: native oneDNN \(24 fused ops\)$/);
    const viaTfjs = makeClassifier(await loadExport(versionDir), { forward: 'tfjs' });
    const pixels = 32 * 32 * 3;
    const batch = images(3, 32, 22);
    const inputs = Array.from({ length: 3 }, (_, i) => batch.slice(i * pixels, (i + 1) * pixels));
    const want = viaTfjs.classify(inputs);
    const got = await thread.classify(inputs);
    got.forEach((p, i) => p.forEach((v, c) => assert.ok(Math.abs(v - want[i]![c]!) < 1e-5, `image ${i} class ${c}: ${v} vs ${want[i]![c]}`)));
    viaTfjs.dispose();
  } finally {
    await thread?.dispose();
    model.dispose();
    removeDir(dir);
  }
});
