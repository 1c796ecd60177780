import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import {
  buildResNet,
  modelSummary,
  formatSummary,
  decayedWeightNames,
  BLOCKS_PER_STAGE,
  ResNetConfig,
  ResNetDepth,
} from '../lib/model';
import { UserError } from '../lib/errors';

before(async () => {
  await tf.setBackend('cpu');
});

const DEPTHS = [18, 34, 50, 101, 152, 200] as const;

function near(actual: number, expected: number, rel: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= rel * expected, `${what}: ${actual} not within ${rel * 100}% of ${expected}`);
}

function disposeModel(model: tf.LayersModel): void {
  model.dispose();
}

test('published parameter counts and multiply-adds at 224 px, 1000 classes (torchvision model docs)', () => {
  // torchvision's ResNets are the same v1.5 networks; its "GFLOPS" column counts multiply-adds.
  const published: Record<number, [number, number]> = {
    18: [11_689_512, 1.81e9],
    34: [21_797_672, 3.66e9],
    50: [25_557_032, 4.09e9],
    101: [44_549_160, 7.8e9],
    152: [60_192_808, 11.51e9],
  };
  for (const [depth, [params, macs]] of Object.entries(published)) {
    const s = modelSummary({ depth: Number(depth) as ResNetDepth, numClasses: 1000, imageSize: 224 });
    near(s.trainableParams, params, 0.02, `ResNet-${depth} trainable params`);
    near(s.macsPerImage, macs, 0.02, `ResNet-${depth} multiply-adds`);
    assert.equal(s.flopsPerImage, 2 * s.macsPerImage);
  }
  // Bottleneck nets have no extra projection, so they match exactly.
  assert.equal(modelSummary({ depth: 50, numClasses: 1000, imageSize: 224 }).trainableParams, 25_557_032);
  // BN moving mean and variance: 2 floats per BN channel on top of the trainable ones.
  const s50 = modelSummary({ depth: 50, numClasses: 1000, imageSize: 224 });
  const bnChannels = s50.layers.filter((l) => l.type === 'BatchNormalization').reduce((a, l) => a + l.params / 4, 0);
  assert.equal(s50.params - s50.trainableParams, 2 * bnChannels);
});

test('every depth has depth weighted layers on the main path, tpu block counts and projection per stage', () => {
  for (const depth of DEPTHS) {
    const s = modelSummary({ depth, numClasses: 10, imageSize: 64 });
    const weighted = s.layers.filter((l) => l.type === 'Conv2D' || l.type === 'Dense');
    const main = weighted.filter((l) => !l.name.includes('/proj_'));
    assert.equal(main.length, depth, `ResNet-${depth} main-path conv+dense layers`);
    const projections = weighted.filter((l) => l.name.includes('/proj_conv'));
    assert.deepEqual(projections.map((l) => l.name), [1, 2, 3, 4].map((i) => `stage${i}/block0/proj_conv`));
    const blocks = [1, 2, 3, 4].map((i) => new Set(s.layers.filter((l) => l.name.startsWith(`stage${i}/`)).map((l) => l.name.split('/')[1])).size);
    assert.deepEqual(blocks, [...BLOCKS_PER_STAGE[depth]]);
    const bn = s.layers.filter((l) => l.type === 'BatchNormalization').length;
    assert.equal(bn, weighted.length - 1, 'one BN after every conv');
    // 64 px -> 32 (stem conv) -> 16 (pool) -> 16, 8, 4, 2 over the stages.
    const channels = depth >= 50 ? 2048 : 512;
    assert.deepEqual(s.layers.find((l) => l.name === `stage4/block${BLOCKS_PER_STAGE[depth][3] - 1}/relu_out`)?.outputShape, [2, 2, channels]);
    assert.deepEqual(s.layers[s.layers.length - 1]?.outputShape, [10]);
  }
});

test('the summary of a config matches the built model layer by layer', () => {
  const configs: ResNetConfig[] = [
    { depth: 18, numClasses: 7, imageSize: 32 },
    { depth: 50, numClasses: 4, imageSize: 40, widthMultiplier: 0.25 },
  ];
  for (const cfg of configs) {
    const model = buildResNet(cfg);
    try {
      const fromModel = modelSummary(model);
      const fromConfig = modelSummary(cfg);
      assert.equal(fromModel.layers.length, fromConfig.layers.length);
      // tfjs orders layers by graph depth, the plan by construction: compare by name.
      const built = new Map(fromModel.layers.map((l) => [l.name, l]));
      for (const l of fromConfig.layers) assert.deepEqual(built.get(l.name), l, l.name);
      assert.equal(fromModel.params, fromConfig.params);
      assert.equal(fromModel.trainableParams, fromConfig.trainableParams);
      assert.equal(fromModel.flopsPerImage, fromConfig.flopsPerImage);
      assert.equal(fromModel.depth, cfg.depth);
      assert.equal(model.countParams(), fromConfig.params);
      assert.equal(formatSummary(fromModel), formatSummary(fromConfig));
    } finally {
      disposeModel(model);
    }
  }
});

test('forward pass: logits of shape [batch, numClasses] in both modes, names are stable and descriptive', () => {
  const model = buildResNet({ depth: 18, numClasses: 5, imageSize: 24, widthMultiplier: 0.125, seed: 3 });
  try {
    assert.deepEqual(model.inputs[0]!.shape, [null, 24, 24, 3]);
    const x = tf.randomNormal([2, 24, 24, 3], 0, 1, 'float32', 1);
    for (const training of [false, true]) {
      const y = model.apply(x, { training }) as tf.Tensor;
      assert.deepEqual(y.shape, [2, 5]);
      assert.ok(Array.from(y.dataSync()).every(Number.isFinite));
      y.dispose();
    }
    x.dispose();
    const names = model.layers.map((l) => l.name);
    for (const n of ['images', 'stem/conv', 'stem/bn', 'stem/pool', 'stage1/block0/conv1', 'stage2/block0/proj_bn', 'stage4/block1/bn2', 'head/pool', 'head/dense']) {
      assert.ok(names.includes(n), `layer ${n}`);
    }
    // No activation on the logits: tpu applies softmax only in the loss and in predictions.
    const dense = model.getLayer('head/dense').getConfig();
    assert.equal(dense['activation'], 'linear');
    assert.equal(dense['useBias'], true);
  } finally {
    disposeModel(model);
  }
});

test('strided convolutions use tpu fixed padding: explicit pad, then VALID', () => {
  const s = modelSummary({ depth: 50, numClasses: 3, imageSize: 224 });
  const byName = new Map(s.layers.map((l) => [l.name, l]));
  assert.deepEqual(byName.get('stem/conv_pad')?.outputShape, [230, 230, 3]);
  assert.deepEqual(byName.get('stem/conv')?.outputShape, [112, 112, 64]);
  assert.deepEqual(byName.get('stem/pool')?.outputShape, [56, 56, 64]);
  // v1.5: the stride sits on the 3x3 conv of the bottleneck, padded 1 on each side.
  assert.deepEqual(byName.get('stage2/block0/conv2_pad')?.outputShape, [58, 58, 128]);
  assert.deepEqual(byName.get('stage2/block0/conv2')?.outputShape, [28, 28, 128]);
  assert.deepEqual(byName.get('stage2/block0/conv1')?.outputShape, [56, 56, 128]);
  // 1x1 projections need no padding.
  assert.equal(byName.has('stage2/block0/proj_conv_pad'), false);
  assert.deepEqual(byName.get('stage2/block0/proj_conv')?.outputShape, [28, 28, 512]);
});

test('initialisers: last BN of each block starts at gamma 0, other gammas 1; conv and dense as tpu', () => {
  const model = buildResNet({ depth: 18, numClasses: 3, imageSize: 16, seed: 11 });
  try {
    let zeroed = 0;
    for (const layer of model.layers) {
      if (layer.getClassName() !== 'BatchNormalization') continue;
      const gamma = layer.getWeights()[0]!.dataSync();
      const last = /^stage\d\/block\d+\/bn2$/.test(layer.name);
      assert.ok(gamma.every((g) => g === (last ? 0 : 1)), `${layer.name} gamma should be ${last ? 0 : 1}`);
      if (last) zeroed++;
    }
    assert.equal(zeroed, 8);
    // variance_scaling_initializer(): truncated normal, stddev sqrt(1/fan_in)/0.8796 before truncation,
    // which leaves a sample stddev of sqrt(1/fan_in).
    const kernel = model.getLayer('stage4/block1/conv1').getWeights()[0]!;
    const v = kernel.dataSync() as Float32Array;
    const fanIn = 3 * 3 * 512;
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    near(std, Math.sqrt(1 / fanIn), 0.02, 'conv kernel stddev');
    const bound = (2 / 0.87962566103423978) * Math.sqrt(1 / fanIn);
    assert.ok(v.every((x) => Math.abs(x) <= bound * 1.0001), 'truncated at 2 stddev');
    const [dk, db] = model.getLayer('head/dense').getWeights();
    const d = dk!.dataSync() as Float32Array;
    const dstd = Math.sqrt(d.reduce((a, b) => a + b * b, 0) / d.length);
    near(dstd, 0.01, 0.1, 'dense kernel stddev');
    assert.ok(db!.dataSync().every((b) => b === 0));
    const bn = model.getLayer('stem/bn').getConfig();
    assert.equal(bn['momentum'], 0.9);
    assert.equal(bn['epsilon'], 1e-5);
  } finally {
    disposeModel(model);
  }
});

test('same seed gives identical weights, another seed or none gives different ones', () => {
  const cfg: ResNetConfig = { depth: 18, numClasses: 3, imageSize: 16, widthMultiplier: 0.25, seed: 42 };
  const a = buildResNet(cfg);
  const b = buildResNet(cfg);
  const c = buildResNet({ ...cfg, seed: 43 });
  const d = buildResNet({ ...cfg, seed: undefined });
  try {
    const wa = a.getWeights();
    const wb = b.getWeights();
    assert.equal(wa.length, wb.length);
    wa.forEach((t, i) => assert.deepEqual(t.dataSync(), wb[i]!.dataSync(), `weight ${i}`));
    const first = (m: tf.LayersModel): Float32Array => m.getLayer('stem/conv').getWeights()[0]!.dataSync() as Float32Array;
    assert.notDeepEqual(first(a), first(c));
    assert.notDeepEqual(first(a), first(d));
    // Layers of equal shape must not share values (one seed per initialiser).
    const k1 = a.getLayer('stage1/block0/conv2').getWeights()[0]!.dataSync();
    const k2 = a.getLayer('stage1/block1/conv2').getWeights()[0]!.dataSync();
    assert.notDeepEqual(k1, k2);
  } finally {
    [a, b, c, d].forEach(disposeModel);
  }
});

test('weight decay covers conv kernels and the dense kernel and bias, never batch norm', () => {
  const model = buildResNet({ depth: 50, numClasses: 3, imageSize: 32, widthMultiplier: 0.125 });
  try {
    const decayed = new Set(decayedWeightNames(model));
    for (const layer of model.layers) {
      for (const w of layer.trainableWeights) {
        const expected = layer.getClassName() !== 'BatchNormalization';
        assert.equal(decayed.has(w.name), expected, w.name);
      }
    }
    assert.equal(decayed.size, 53 + 2);
    // Names carry a _N suffix when the process built other models with the same layer names.
    assert.ok([...decayed].some((n) => /^head\/dense\/bias(_\d+)?$/.test(n)));
  } finally {
    disposeModel(model);
  }
});

test('formatSummary prints one row per stage with totals', () => {
  const text = formatSummary(modelSummary({ depth: 50, numClasses: 1000, imageSize: 224 }));
  const lines = text.split('\n');
  assert.ok(lines.length <= 10, text);
  assert.match(lines[0]!, /ResNet-50, 224x224x3 -> 1000 classes/);
  for (const part of ['stem', 'stage1', 'stage2', 'stage3', 'stage4', 'head']) assert.ok(lines.some((l) => l.startsWith(part)), part);
  assert.match(text, /stage3\s+6\s+14x14x1024/);
  assert.match(text, /25\.56 M trainable/);
  assert.match(text, /8\.18 GFLOPs per image/);
});

test('bad configurations are user errors naming the field', () => {
  assert.throws(() => modelSummary({ depth: 20 as ResNetDepth, numClasses: 3, imageSize: 32 }), (e: unknown) => e instanceof UserError && /depth 20/.test(e.message));
  assert.throws(() => buildResNet({ depth: 18, numClasses: 1, imageSize: 32 }), (e: unknown) => e instanceof UserError && /numClasses/.test(e.message));
  assert.throws(() => buildResNet({ depth: 18, numClasses: 3, imageSize: 4 }), (e: unknown) => e instanceof UserError && /imageSize/.test(e.message));
  assert.throws(() => buildResNet({ depth: 18, numClasses: 3, imageSize: 32, widthMultiplier: 0 }), (e: unknown) => e instanceof UserError && /widthMultiplier/.test(e.message));
});
