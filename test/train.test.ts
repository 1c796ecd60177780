/**
 * The training engine end to end: real shards from data-samples/, real worker-thread replicas on the
 * wasm backend, checkpoints, TensorBoard events, export. Sizes are small so the file runs in ~2 min.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { train, TrainEvent } from '../lib/train';
import { readMetrics } from '../lib/train/metrics';
import { loadLatestCheckpoint } from '../lib/train/checkpoint';
import { evalBatches } from '../lib/train/input';
import { normalizeInto, PreprocessingSettings } from '../lib/train/preprocessing';
import { loadExport } from '../lib/export';
import { chooseBackend } from '../lib/engine/backend';
import { readRecordFile } from '../lib/tfrecord';
import { decodeEvent } from '../lib/tensorboard-proto';
import { tempDir, removeDir, REPO_ROOT, CLI } from './helpers';
import { preprocessSamples } from './sample-shards';
import { protocDecodeEventFile, protocSkip } from './tensorboard-protoc';

const SAMPLES = path.join(REPO_ROOT, 'data-samples');
let work: string;
let dataDir: string;

before(async () => {
  work = tempDir('imgclass-train-');
  dataDir = path.join(work, 'data');
  await preprocessSamples(dataDir);
});

after(() => removeDir(work));

async function eventScalars(dir: string): Promise<Map<string, { step: number; value: number }[]>> {
  const out = new Map<string, { step: number; value: number }[]>();
  for (const f of fs.readdirSync(dir).filter((n) => n.startsWith('events.out.tfevents.'))) {
    let first = true;
    for await (const rec of readRecordFile(path.join(dir, f))) {
      const e = decodeEvent(rec);
      if (first) assert.equal(e.fileVersion, 'brain.Event:2', 'an event file starts with its version');
      first = false;
      for (const v of e.values) {
        if (!out.has(v.tag)) out.set(v.tag, []);
        out.get(v.tag)!.push({ step: e.step, value: v.value as number });
      }
    }
  }
  return out;
}

test('trains a ResNet-18 on data-samples to well above chance, with metrics, TensorBoard events and an export that predicts the same', async () => {
  const modelDir = path.join(work, 'model');
  const exportDir = path.join(work, 'export');
  const events: TrainEvent[] = [];
  const runStarted = Date.now() / 1000;
  // 90 steps of 32 images, 8 epochs of the 360 training images: ~25 s with oneDNN, ~85 s on XNNPACK.
  const STEPS = 90;
  const r = await train({
    dataDir,
    modelDir,
    exportDir,
    imageSize: 32,
    trainSteps: STEPS,
    stepsPerEval: STEPS,
    baseLearningRate: 0.4,
    onEvent: (e) => events.push(e),
  });
  const start = events.find((e) => e.kind === 'start') as Extract<TrainEvent, { kind: 'start' }>;
  assert.equal(start.backend, 'wasm', 'never the slow cpu backend silently');
  // CI builds oneDNN and requires it: then the engine must be it, not XNNPACK quietly in its place.
  if (process.env.IMGCLASS_REQUIRE_ONEDNN === '1') assert.equal(start.engine, 'onednn', start.backendNote);
  assert.equal(r.engine, start.engine, 'the result names the engine the run started on');
  assert.equal(start.notice, undefined, 'base rate 0.4: no advice on it');
  assert.equal(start.numTrainImages, 360);
  assert.equal(start.numEvalImages, 40);
  assert.equal(start.numClasses, 5);
  assert.equal(r.step, STEPS);
  assert.ok(r.lastEval, 'evaluated at the end');
  // 5 classes: chance is 20 %.
  assert.ok(r.lastEval.top1 >= 0.6, `top-1 ${r.lastEval.top1} should clearly beat chance (0.2)`);
  assert.equal(r.lastEval.count, 40, 'the whole validation set');
  assert.equal(r.lastEval.top5, undefined, 'top-5 of 5 classes is always 100 %: not reported');

  const metrics = await readMetrics(path.join(modelDir, 'metrics.jsonl'));
  const trainSteps = metrics.filter((m) => m.kind === 'train').map((m) => m.step);
  assert.deepEqual(trainSteps, Array.from({ length: STEPS }, (_, i) => i + 1));
  assert.equal(metrics.filter((m) => m.kind === 'eval').length, 1);

  const tb = await eventScalars(modelDir);
  assert.equal(tb.get('loss')?.length, STEPS);
  assert.equal(tb.get('learning_rate')?.length, STEPS);
  const tbEval = await eventScalars(path.join(modelDir, 'eval'));
  assert.deepEqual(tbEval.get('top_1_accuracy')?.map((s) => s.step), [STEPS]);
  assert.ok(Math.abs((tbEval.get('top_1_accuracy')![0]!.value) - r.lastEval.top1) < 1e-6);

  // The same files read by protoc with TensorFlow's event.proto (not our schema or reader).
  if (protocSkip) console.log(`# protoc check of the event files skipped: ${protocSkip}`);
  else {
    const trainLines = metrics.filter((m) => m.kind === 'train') as unknown as { step: number; loss: number; lr: number; img_s: number; wall_time: number }[];
    const eventFile = (dir: string): string => {
      const files = fs.readdirSync(dir).filter((n) => n.startsWith('events.out.tfevents.'));
      assert.equal(files.length, 1, `one event file in ${dir}`);
      return path.join(dir, files[0]!);
    };
    const [version, ...points] = protocDecodeEventFile(eventFile(modelDir));
    assert.equal(version!.file_version, 'brain.Event:2');
    assert.ok(version!.wall_time >= runStarted && version!.wall_time <= Date.now() / 1000);
    // One event per scalar: loss, learning_rate, images_per_sec of every step, equal (as float32) to metrics.jsonl.
    assert.equal(points.length, 3 * STEPS);
    points.forEach((e, i) => {
      const m = trainLines[Math.floor(i / 3)]!;
      const [tag, value] = ([['loss', m.loss], ['learning_rate', m.lr], ['images_per_sec', m.img_s]] as [string, number][])[i % 3]!;
      assert.deepEqual([e.step, e.values.map((v) => v.tag)], [m.step, [tag]], `event ${i + 1}`);
      assert.equal(Math.fround(e.values[0]!.simple_value), Math.fround(value), `${tag} at step ${m.step}`);
      assert.ok(e.wall_time >= version!.wall_time && e.wall_time <= Date.now() / 1000, `wall_time of step ${m.step}`);
      if (i > 0) assert.ok(e.wall_time >= points[i - 1]!.wall_time, 'wall_time never goes back');
    });
    const evalEvents = protocDecodeEventFile(eventFile(path.join(modelDir, 'eval'))).slice(1);
    assert.deepEqual(
      evalEvents.map((e) => [e.step, e.values[0]!.tag, Math.fround(e.values[0]!.simple_value)]),
      [[STEPS, 'top_1_accuracy', Math.fround(r.lastEval.top1)], [STEPS, 'loss', Math.fround(r.lastEval.loss)]],
    );
  }

  // The export, loaded back in this process, scores the validation set as the trainer did.
  assert.ok(r.exportPath && fs.existsSync(path.join(r.exportPath, 'model.json')));
  await chooseBackend('wasm');
  const loaded = await loadExport(exportDir);
  assert.deepEqual(loaded.labels, fs.readFileSync(path.join(SAMPLES, 'labels.txt'), 'utf8').trim().split('\n'));
  const settings = loaded.preprocessing as PreprocessingSettings;
  let correct = 0;
  let lossSum = 0;
  let n = 0;
  for await (const b of evalBatches({ dataDir, imageSize: 32, batchSize: 16, settings })) {
    const x = new Float32Array(b.size * 32 * 32 * 3);
    normalizeInto(b.images.subarray(0, x.length), x, settings);
    const probs = tf.tidy(() => tf.softmax(loaded.model.predict(tf.tensor4d(x, [b.size, 32, 32, 3])) as tf.Tensor2D).arraySync() as number[][]);
    probs.forEach((p, i) => {
      const label = b.labels[i] as number;
      if (p.indexOf(Math.max(...p)) === label) correct++;
      lossSum += -Math.log(p[label] as number);
      n++;
    });
  }
  assert.equal(n, 40);
  assert.equal(correct / n, r.lastEval.top1, 'same top-1 as the trainer measured');
  assert.ok(Math.abs(lossSum / n - r.lastEval.loss) < 1e-3 * Math.max(1, r.lastEval.loss), `loss ${lossSum / n} vs ${r.lastEval.loss}`);
  loaded.model.dispose();
});

function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('killed with SIGKILL mid-run, training resumes from the last checkpoint and ends exactly where an uninterrupted run ends', async () => {
  const common = ['train', '--data_dir', dataDir, '--image_size', '16', '--train_batch_size', '8', '--train_steps', '24', '--steps_per_checkpoint', '2', '--steps_per_eval', '24', '--workers', '2'];
  const straight = path.join(work, 'straight');
  const a = runCli([...common, '--model_dir', straight]);
  assert.equal(a.status, 0, a.stderr);
  // 24 steps of 8 images at tpu's base rate: the first decay comes at step 8, 0.2 epochs in.
  assert.match(a.stderr, process.env.IMGCLASS_REQUIRE_ONEDNN === '1' ? /^engine: onednn \(/m : /^engine: (onednn|wasm) \(/m);
  assert.match(a.stdout, process.env.IMGCLASS_REQUIRE_ONEDNN === '1' ? /img\/s, onednn x2\)/ : /img\/s, (onednn|wasm) x2\)/);
  assert.match(a.stderr, /^note: in this 24-step run the learning rate first decays at step 8, 0\.2 epochs in; .* --base_learning_rate 0\.4\)$/m);

  const killed = path.join(work, 'killed');
  const child = spawn(process.execPath, [CLI, ...common, '--model_dir', killed], { stdio: 'ignore' });
  // Kill it once a checkpoint past step 4 exists and before it finishes.
  await new Promise<void>((resolve, reject) => {
    const t = setInterval(() => {
      const ckpts = fs.existsSync(killed) ? fs.readdirSync(killed).filter((f) => /^ckpt-\d+\.bin$/.test(f)) : [];
      const steps = ckpts.map((f) => Number(f.slice(5, 13)));
      if (steps.some((s) => s >= 6)) {
        clearInterval(t);
        child.kill('SIGKILL');
        resolve();
      }
    }, 20);
    child.on('exit', () => {
      clearInterval(t);
      if (child.signalCode !== 'SIGKILL') reject(new Error('training finished before it could be killed'));
    });
  });
  const mid = await loadLatestCheckpoint(killed);
  assert.ok(mid && mid.step >= 4 && mid.step < 24, `a whole checkpoint survives the kill (step ${mid?.step})`);

  const b = runCli([...common, '--model_dir', killed]);
  assert.equal(b.status, 0, b.stderr);
  assert.match(b.stderr, /resuming at step \d+/);
  const m = await readMetrics(path.join(killed, 'metrics.jsonl'));
  assert.deepEqual(m.filter((x) => x.kind === 'train').map((x) => x.step), Array.from({ length: 24 }, (_, i) => i + 1), 'one record per step, no repeats');

  const s = (await loadLatestCheckpoint(straight))!;
  const k = (await loadLatestCheckpoint(killed))!;
  assert.equal(s.step, 24);
  assert.equal(k.step, 24);
  for (let i = 0; i < s.weights.length; i++) {
    const ws = s.weights[i]!;
    const wk = k.weights[i]!;
    assert.equal(wk.name, ws.name);
    assert.deepEqual(Array.from(wk.data), Array.from(ws.data), `weight ${ws.name} equals the uninterrupted run's`);
  }

  // Asked for a different model on the same model_dir: a clear error, nothing overwritten.
  const c = runCli([...common.map((x) => (x === '16' ? '24' : x)), '--model_dir', killed]);
  assert.equal(c.status, 2);
  assert.match(c.stderr, /imageSize=16, but this run asks for 24/);
});

test('bad data_dir: no shards, a corrupt shard, labels out of range', async () => {
  const empty = path.join(work, 'empty');
  fs.mkdirSync(empty);
  await assert.rejects(train({ dataDir: empty, modelDir: path.join(work, 'm1'), trainSteps: 1 }), (e: Error) => e.message.includes(empty) && /preprocess/.test(e.message));

  const corrupt = path.join(work, 'corrupt');
  fs.cpSync(dataDir, corrupt, { recursive: true });
  const shard = path.join(corrupt, 'train-00001-of-00002');
  const bytes = fs.readFileSync(shard);
  bytes[bytes.length - 100] ^= 0xff;
  fs.writeFileSync(shard, bytes);
  await assert.rejects(train({ dataDir: corrupt, modelDir: path.join(work, 'm2'), trainSteps: 1 }), (e: Error) => e.message.includes(shard) && /corrupt/.test(e.message) && /offset/.test(e.message));

  await assert.rejects(
    train({ dataDir, modelDir: path.join(work, 'm3'), trainSteps: 1, numLabelClasses: 3 }),
    (e: Error) => /num_label_classes is 3/.test(e.message),
  );
  await assert.rejects(
    train({ dataDir, modelDir: path.join(work, 'm4'), trainSteps: 1, numTrainImages: 100 }),
    (e: Error) => /--num_train_images is 100 but .* holds 360/.test(e.message),
  );
  assert.equal(fs.existsSync(path.join(work, 'm2')), false, 'nothing written for a failed start');
});
