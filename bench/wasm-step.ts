/**
 * Times one ResNet-18-shaped training step (forward, backward, momentum update) on the wasm backend
 * with imgclass's training kernels.
 *
 *   npm run build && node dist/bench/wasm-step.js [--size 64] [--batch 32] [--steps 3] [--depth 18|34]
 *       [--backend wasm|cpu] [--profile]
 *
 * The machine may be shared: results are only comparable between runs made under the same load.
 * `--profile` adds a per-kernel time table (one extra step, slower; nested kernels are counted inside
 * their parent too, so the column does not sum to the step time).
 */
import * as tf from '@tensorflow/tfjs';
import { chooseBackend, BackendName } from '../lib/engine/backend';

interface Options {
  size: number;
  batch: number;
  steps: number;
  depth: 18 | 34;
  backend: BackendName;
  profile: boolean;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = { size: 64, batch: 32, steps: 3, depth: 18, backend: 'wasm', profile: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => {
      const v = argv[++i];
      if (v == null) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--size') opts.size = Number(next());
    else if (a === '--batch') opts.batch = Number(next());
    else if (a === '--steps') opts.steps = Number(next());
    else if (a === '--depth') opts.depth = Number(next()) === 34 ? 34 : 18;
    else if (a === '--backend') opts.backend = next() as BackendName;
    else if (a === '--profile') opts.profile = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}

function convBn(x: tf.SymbolicTensor, filters: number, k: number, stride: number, name: string): tf.SymbolicTensor {
  const c = tf.layers.conv2d({ filters, kernelSize: k, strides: stride, padding: 'same', useBias: false,
    kernelInitializer: 'heNormal', name: `${name}_conv` }).apply(x) as tf.SymbolicTensor;
  return tf.layers.batchNormalization({ axis: -1, momentum: 0.9, epsilon: 1e-5, name: `${name}_bn` })
    .apply(c) as tf.SymbolicTensor;
}

function basicBlock(x: tf.SymbolicTensor, cin: number, cout: number, stride: number, name: string): tf.SymbolicTensor {
  let y = convBn(x, cout, 3, stride, `${name}_a`);
  y = tf.layers.reLU().apply(y) as tf.SymbolicTensor;
  y = convBn(y, cout, 3, 1, `${name}_b`);
  const shortcut = stride !== 1 || cin !== cout ? convBn(x, cout, 1, stride, `${name}_sc`) : x;
  const sum = tf.layers.add().apply([y, shortcut]) as tf.SymbolicTensor;
  return tf.layers.reLU().apply(sum) as tf.SymbolicTensor;
}

/** ResNet v1 (basic blocks) with the ImageNet stem: 7x7/2 conv, 3x3/2 max pool. */
function buildResNet(depth: 18 | 34, size: number, classes: number): tf.LayersModel {
  const blocks = depth === 18 ? [2, 2, 2, 2] : [3, 4, 6, 3];
  const input = tf.input({ shape: [size, size, 3] });
  let x = convBn(input, 64, 7, 2, 'stem');
  x = tf.layers.reLU().apply(x) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }).apply(x) as tf.SymbolicTensor;
  let cin = 64;
  [64, 128, 256, 512].forEach((width, stage) => {
    for (let i = 0; i < blocks[stage]; i++) {
      x = basicBlock(x, cin, width, i === 0 && stage > 0 ? 2 : 1, `s${stage}b${i}`);
      cin = width;
    }
  });
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: classes, activation: 'softmax', name: 'fc' }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const choice = await chooseBackend(opts.backend);
  console.log(choice.note);
  const classes = 5;
  const model = buildResNet(opts.depth, opts.size, classes);
  model.compile({ optimizer: tf.train.momentum(0.01, 0.9), loss: 'categoricalCrossentropy' });
  const x = tf.randomUniform([opts.batch, opts.size, opts.size, 3], -1, 1);
  const y = tf.oneHot(tf.randomUniform([opts.batch], 0, classes, 'int32') as tf.Tensor1D, classes).toFloat();

  let t0 = Date.now();
  await model.trainOnBatch(x, y);
  const firstStep = (Date.now() - t0) / 1000;
  const times: number[] = [];
  let loss: number | number[] = 0;
  for (let i = 0; i < opts.steps; i++) {
    t0 = Date.now();
    loss = await model.trainOnBatch(x, y);
    times.push((Date.now() - t0) / 1000);
  }
  const perStep = times.reduce((a, b) => a + b, 0) / Math.max(times.length, 1);
  console.log(
    `resnet${opts.depth} ${opts.size}px batch ${opts.batch}: first step ${firstStep.toFixed(2)} s, ` +
      `then ${perStep.toFixed(3)} s/step = ${(opts.batch / perStep).toFixed(1)} img/s ` +
      `(steps: ${times.map((t) => t.toFixed(2)).join(' ')}; loss ${JSON.stringify(loss)}; ` +
      `tensors ${tf.memory().numTensors})`,
  );

  if (opts.profile) {
    const info = await tf.profile(async () => {
      await model.trainOnBatch(x, y);
    });
    const byName = new Map<string, { ms: number; calls: number }>();
    for (const k of info.kernels) {
      const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += Number(k.kernelTimeMs);
      e.calls += 1;
      byName.set(k.name, e);
    }
    const rows = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25);
    for (const [name, e] of rows) console.log(`${name.padEnd(28)} ${e.ms.toFixed(0).padStart(7)} ms ${String(e.calls).padStart(5)} calls`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
