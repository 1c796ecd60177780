import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-cpu';
import {
  Checkpoint,
  TensorEntry,
  saveCheckpoint,
  loadLatestCheckpoint,
  encodeCheckpoint,
  decodeCheckpoint,
  weightsFromModel,
  setModelWeights,
  optimizerWeights,
  setOptimizerWeights,
} from '../lib/train/checkpoint';
import { UserError } from '../lib/errors';
import { tempDir, removeDir } from './helpers';
import { checkpointFor } from './fixtures/checkpoint-writer';

before(async () => {
  await tf.setBackend('cpu');
});

/** conv + batch norm + dense, with explicit layer names (as a real model builder gives) or tfjs's own. */
function smallModel(opts: { named?: boolean; units?: number; filters?: number } = {}): tfl.LayersModel {
  const n = (name: string) => (opts.named === false ? {} : { name });
  return tfl.sequential({
    layers: [
      tfl.layers.conv2d({ inputShape: [8, 8, 3], filters: opts.filters ?? 4, kernelSize: 3, useBias: false, ...n('conv1') }),
      tfl.layers.batchNormalization({ ...n('bn_conv1') }),
      tfl.layers.activation({ activation: 'relu', ...n('relu1') }),
      tfl.layers.globalAveragePooling2d({ ...n('pool') }),
      tfl.layers.dense({ units: opts.units ?? 3, ...n('fc') }),
    ],
  });
}

/** Give every weight random values, so saved-and-restored differs from freshly built (moving stats too). */
function randomize(model: tfl.LayersModel, seed: number): void {
  model.setWeights(model.weights.map((w, i) => tf.randomUniform(w.shape as number[], 0.5, 1.5, 'float32', seed + i)));
}

function predict(model: tfl.LayersModel): Float32Array {
  return tf.tidy(() => (model.predict(tf.randomUniform([2, 8, 8, 3], 0, 1, 'float32', 7)) as tf.Tensor).dataSync() as Float32Array);
}

function entry(name: string, values: number[]): TensorEntry {
  return { name, shape: [values.length], dtype: 'float32', data: Float32Array.from(values) };
}

function tinyCheckpoint(step: number): Checkpoint {
  return { step, weights: [entry('w', [step, step + 0.5])], optimizer: [{ name: 'iter', shape: [], dtype: 'int32', data: Int32Array.of(step) }], state: { step } };
}

test('model and optimizer state survive save and load (batch-norm moving statistics included)', async () => {
  const dir = tempDir();
  try {
    const a = smallModel();
    randomize(a, 1);
    const optA = tf.train.momentum(0.1, 0.9, true);
    optA.minimize(() => tf.mean(tf.square(a.apply(tf.ones([2, 8, 8, 3])) as tf.Tensor)) as tf.Scalar, false, a.trainableWeights.map((w) => w.read() as tf.Variable));

    const weights = weightsFromModel(a);
    assert.deepEqual(
      weights.map((w) => w.name),
      // tfjs lists trainable weights first, then the others.
      ['conv1/kernel', 'bn_conv1/gamma', 'bn_conv1/beta', 'fc/kernel', 'fc/bias', 'bn_conv1/moving_mean', 'bn_conv1/moving_variance'],
    );
    const state = { input: { epoch: 2, file: 5, offset: 17 }, rng: [1, 2, 3], config: { resnetDepth: 50 } };
    const file = await saveCheckpoint(dir, { step: 123, weights, optimizer: await optimizerWeights(optA), state });
    assert.equal(file, path.join(dir, 'ckpt-00000123.bin'));
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint'), 'utf8')), { latest: 'ckpt-00000123.bin', all: ['ckpt-00000123.bin'] });

    const ckpt = await loadLatestCheckpoint(dir);
    assert.ok(ckpt);
    assert.equal(ckpt.step, 123);
    assert.deepEqual(ckpt.state, state);
    assert.deepEqual(ckpt.weights, weights);

    const b = smallModel(); // same names, fresh values
    assert.notDeepEqual(predict(b), predict(a));
    setModelWeights(b, ckpt.weights);
    assert.deepEqual(predict(b), predict(a));
    assert.deepEqual(weightsFromModel(b), weights);

    const optB = tf.train.momentum(0.1, 0.9, true);
    await setOptimizerWeights(optB, ckpt.optimizer, b);
    assert.deepEqual(await optimizerWeights(optB), await optimizerWeights(optA));
    assert.equal(optB.iterations, 1);
    assert.equal(ckpt.optimizer.length, 1 + a.trainableWeights.length, 'iter + one momentum slot per trainable weight');
  } finally {
    removeDir(dir);
  }
});

test('auto-named layers (numbered per process) are matched by position', () => {
  const a = smallModel({ named: false });
  const b = smallModel({ named: false });
  assert.notEqual(a.weights[0]!.originalName, b.weights[0]!.originalName);
  randomize(a, 3);
  setModelWeights(b, weightsFromModel(a));
  assert.deepEqual(predict(b), predict(a));
});

test('a checkpoint of another architecture is refused with a clear message, leaving the model unchanged', async () => {
  const ckptWeights = weightsFromModel(smallModel({ units: 5 }));
  const m = smallModel({ units: 3 });
  const before = weightsFromModel(m);
  assert.throws(
    () => setModelWeights(m, ckptWeights),
    (err: unknown) =>
      err instanceof UserError &&
      /"fc\/kernel" has shape \[4, 3\], the checkpoint \[4, 5\]/.test(err.message) &&
      /--resnet_depth/.test(err.message) &&
      /new --model_dir/.test(err.message),
  );
  assert.deepEqual(weightsFromModel(m), before, 'nothing was written');
  assert.throws(() => setModelWeights(m, ckptWeights.slice(1)), (err: unknown) => err instanceof UserError && /"conv1\/kernel" is not in the checkpoint/.test(err.message));

  // Partial: only the named weights change.
  const other = smallModel();
  randomize(other, 9);
  const moving = weightsFromModel(other).filter((w) => w.name.includes('moving'));
  setModelWeights(m, moving, { partial: true });
  const after = weightsFromModel(m);
  assert.deepEqual(after.filter((w) => w.name.includes('moving')), moving);
  assert.deepEqual(after.filter((w) => !w.name.includes('moving')), before.filter((w) => !w.name.includes('moving')));

  // Optimizer slots of another model.
  const wide = smallModel({ filters: 6 });
  const opt = tf.train.momentum(0.1, 0.9);
  opt.minimize(() => tf.mean(wide.apply(tf.ones([1, 8, 8, 3])) as tf.Tensor) as tf.Scalar, false, wide.trainableWeights.map((w) => w.read() as tf.Variable));
  await assert.rejects(
    setOptimizerWeights(tf.train.momentum(0.1, 0.9), await optimizerWeights(opt), m),
    (err: unknown) => err instanceof UserError && /optimizer state does not fit/.test(err.message) && /conv1\/kernel/.test(err.message),
  );
});

test('keeps the newest `keep` checkpoints; a save at an earlier step drops the abandoned later ones', async () => {
  const dir = tempDir();
  try {
    for (let step = 1; step <= 5; step++) await saveCheckpoint(dir, tinyCheckpoint(step * 10), { keep: 3 });
    const ckpts = () => fs.readdirSync(dir).filter((n) => n.startsWith('ckpt-')).sort();
    assert.deepEqual(ckpts(), ['ckpt-00000030.bin', 'ckpt-00000040.bin', 'ckpt-00000050.bin']);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint'), 'utf8')), {
      latest: 'ckpt-00000050.bin',
      all: ['ckpt-00000030.bin', 'ckpt-00000040.bin', 'ckpt-00000050.bin'],
    });
    // Resumed from step 40 (say 50 was damaged) and saved step 45.
    await saveCheckpoint(dir, tinyCheckpoint(45), { keep: 3 });
    assert.deepEqual(ckpts(), ['ckpt-00000030.bin', 'ckpt-00000040.bin', 'ckpt-00000045.bin']);
    assert.equal((await loadLatestCheckpoint(dir))!.step, 45);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.')), [], 'no temporaries left');
  } finally {
    removeDir(dir);
  }
});

test('a damaged latest checkpoint falls back to the previous one with a warning; none readable is a UserError', async () => {
  const dir = tempDir();
  try {
    assert.equal(await loadLatestCheckpoint(dir), undefined, 'empty model_dir');
    assert.equal(await loadLatestCheckpoint(path.join(dir, 'missing')), undefined, 'no model_dir');
    for (const step of [1, 2, 3]) await saveCheckpoint(dir, tinyCheckpoint(step));
    const f = (step: number) => path.join(dir, `ckpt-0000000${step}.bin`);

    // One flipped bit in the data of the latest.
    const bytes = fs.readFileSync(f(3));
    bytes[bytes.length - 3]! ^= 0x10;
    fs.writeFileSync(f(3), bytes);
    const warnings: string[] = [];
    const got = await loadLatestCheckpoint(dir, { warn: (m) => warnings.push(m) });
    assert.equal(got!.step, 2);
    assert.deepEqual(got!.weights, [entry('w', [2, 2.5])]);
    assert.equal(warnings.length, 1);
    assert.ok(warnings[0]!.includes(f(3)) && warnings[0]!.includes('checksum mismatch') && warnings[0]!.includes(f(2)), warnings[0]);

    // Truncated, and missing.
    fs.truncateSync(f(2), fs.statSync(f(2)).size - 4);
    fs.rmSync(f(1));
    warnings.length = 0;
    await assert.rejects(
      loadLatestCheckpoint(dir, { warn: (m) => warnings.push(m) }),
      (err: unknown) =>
        err instanceof UserError &&
        err.message.includes(`no readable checkpoint in ${dir}`) &&
        err.message.includes(f(3)) &&
        err.message.includes(`${f(2)} is damaged`) &&
        err.message.includes('truncated') &&
        err.message.includes(f(1)),
    );
    assert.equal(warnings.length, 2);

    // Not a checkpoint at all; and the header checked on its own.
    assert.throws(() => decodeCheckpoint(Buffer.from('hello world, not a checkpoint'), 'x.bin'), /x\.bin is not an imgclass checkpoint/);
    const good = encodeCheckpoint(tinyCheckpoint(7));
    good[20]! ^= 1;
    assert.throws(() => decodeCheckpoint(good, 'y.bin'), /y\.bin is damaged: header checksum mismatch/);
  } finally {
    removeDir(dir);
  }
});

test('without the pointer file the newest ckpt-*.bin is used', async () => {
  const dir = tempDir();
  try {
    for (const step of [5, 100, 20]) await saveCheckpoint(dir, tinyCheckpoint(step), { keep: 5 });
    assert.equal((await loadLatestCheckpoint(dir))!.step, 20, 'the pointer names the last save');
    fs.rmSync(path.join(dir, 'checkpoint'));
    assert.equal((await loadLatestCheckpoint(dir))!.step, 20, 'the step-100 file was dropped by the step-20 save');
    fs.writeFileSync(path.join(dir, 'checkpoint'), 'model_checkpoint_path: "model.ckpt-1"\n');
    const warnings: string[] = [];
    assert.equal((await loadLatestCheckpoint(dir, { warn: (m) => warnings.push(m) }))!.step, 20);
    assert.match(warnings[0]!, /checkpoint is unreadable/);
  } finally {
    removeDir(dir);
  }
});

test('invalid checkpoints are refused before anything is written', async () => {
  const dir = tempDir();
  try {
    const bad = tinyCheckpoint(1);
    bad.weights[0]!.shape = [3];
    await assert.rejects(saveCheckpoint(dir, bad), /shape \[3\] holds 3 values but data has 2/);
    await assert.rejects(saveCheckpoint(dir, { ...tinyCheckpoint(1), step: -1 }), /step must be an integer >= 0/);
    await assert.rejects(saveCheckpoint(dir, tinyCheckpoint(1), { keep: 0 }), UserError);
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    removeDir(dir);
  }
});

function verifyFixtureCheckpoint(ckpt: Checkpoint): void {
  const want = checkpointFor(ckpt.step);
  assert.deepEqual(ckpt.state, want.state);
  assert.equal(ckpt.weights.length, 2);
  for (const [got, exp] of [...ckpt.weights.map((w, i) => [w, want.weights[i]!]), ...ckpt.optimizer.map((w, i) => [w, want.optimizer[i]!])]) {
    assert.equal(got!.name, exp!.name);
    assert.deepEqual(got!.shape, exp!.shape);
    assert.ok(Buffer.from(got!.data.buffer, got!.data.byteOffset, got!.data.byteLength).equals(Buffer.from(exp!.data.buffer)), `${got!.name} of step ${ckpt.step}`);
  }
}

test('SIGKILL at random moments while saving always leaves a complete, valid checkpoint', async () => {
  const dir = tempDir();
  const fixture = path.join(__dirname, 'fixtures', 'checkpoint-writer.js');
  try {
    let durable = 0;
    for (let round = 0; round < 12; round++) {
      const child = spawn(process.execPath, [fixture, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      let saved = 0;
      const firstSave = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          for (const m of d.toString().matchAll(/saved (\d+)/g)) saved = Math.max(saved, Number(m[1]));
          if (saved > 0) resolve();
        });
        child.on('exit', () => reject(new Error(`writer exited early: ${stderr}`)));
      });
      await firstSave;
      await new Promise((r) => setTimeout(r, Math.random() * 60));
      child.kill('SIGKILL');
      await once(child, 'exit');
      assert.equal(stderr, '', 'the writer never saw a damaged checkpoint');

      const warnings: string[] = [];
      const ckpt = await loadLatestCheckpoint(dir, { warn: (m) => warnings.push(m) });
      assert.deepEqual(warnings, []);
      assert.ok(ckpt, `round ${round}: no checkpoint`);
      // A save that returned is durable; one in flight may or may not have landed.
      assert.ok(ckpt.step >= saved && ckpt.step >= durable, `round ${round}: step ${ckpt.step} < last saved ${saved}`);
      assert.ok(ckpt.step <= saved + 1);
      verifyFixtureCheckpoint(ckpt);
      durable = ckpt.step;
    }
    const temps = fs.readdirSync(dir).filter((n) => n.startsWith('.'));
    assert.ok(temps.length <= 2, `temporaries of killed writers are cleaned up: ${temps.join(', ')}`);
  } finally {
    removeDir(dir);
  }
});
