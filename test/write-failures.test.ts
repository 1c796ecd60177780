/**
 * A checkpoint, export, shard or executed notebook that cannot be written (full disk, read-only
 * folder, no permission) gives one clear error naming the path, keeps the previous good file and
 * leaves no temporary behind.
 *
 * Each case runs under real failures where the machine allows it (a full 1 MiB tmpfs: ENOSPC; a
 * read-only bind mount: EROFS; both need root), and always under failures injected into node:fs
 * (test/inject-write-failure.ts), so the behaviour is checked on every machine.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import '@tensorflow/tfjs-backend-cpu';
import { saveCheckpoint, loadLatestCheckpoint, type Checkpoint } from '../lib/train/checkpoint';
import { exportModel, loadExport } from '../lib/export';
import { preprocess } from '../lib/preprocess';
import { runNotebook } from '../lib/runner';
import { writeNotebook, type Notebook } from '../lib/runner/notebook-io';
import { File as GcsFile } from '@google-cloud/storage';
import { injectWriteFailure } from './inject-write-failure';
import { useFakeGcs, uploadOrder } from './fake-gcs';
import { tempDir, removeDir, REPO_ROOT, CLI } from './helpers';

const SAMPLES = path.join(REPO_ROOT, 'data-samples');
const INJECT = path.join(__dirname, 'inject-write-failure.js');
const MESSAGE = {
  ENOSPC: 'no space left on the device; free some space',
  EROFS: 'the folder is on a read-only file system; choose a writable folder',
  EACCES: "permission denied; check the folder's permissions",
};

/** Why real mounts cannot be used here, or undefined when they can. */
function mountsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'tmpfs and bind mounts are Linux-only';
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  const probe = fs.mkdtempSync('/tmp/imgclass-mount-probe-');
  try {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { encoding: 'utf8' });
    if (r.status !== 0) return `mount -t tmpfs is not permitted here (${(r.stderr || r.error?.message || '').trim()})`;
    spawnSync('umount', [probe]);
    return undefined;
  } finally {
    fs.rmSync(probe, { recursive: true, force: true });
  }
}
const NO_MOUNTS = mountsUnavailable();
if (NO_MOUNTS) process.stderr.write(`write-failures: the real-mount variants are skipped: ${NO_MOUNTS}; the injected ones run\n`);

let work: string;
const mounts: string[] = [];

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function unmount(dir: string): void {
  sh('umount', [dir]);
  mounts.splice(mounts.indexOf(dir), 1);
}

before(async () => {
  work = tempDir('imgclass-wfail-');
  await tf.setBackend('cpu');
});

after(() => {
  for (const m of [...mounts].reverse()) spawnSync('umount', [m]);
  removeDir(work);
});

/** Every file under dir (relative name → sha256), so "nothing changed, nothing left behind" is one comparison. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) walk(full);
      else out[path.relative(dir, full)] = crypto.createHash('sha256').update(fs.readFileSync(full)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/**
 * Where writes fail: `prepare` gives an empty writable folder for the previous good outputs; `fail`
 * makes writes into it fail from then on and returns how to undo that.
 */
interface Failure {
  name: string;
  code: keyof typeof MESSAGE;
  skip?: string;
  prepare(label: string): string;
  fail(dir: string): () => void;
}

const FAILURES: Failure[] = [
  {
    name: 'a full tmpfs',
    code: 'ENOSPC',
    skip: NO_MOUNTS,
    prepare(label) {
      const mnt = path.join(work, `tmpfs-${label}`);
      fs.mkdirSync(mnt);
      sh('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
      mounts.push(mnt);
      const dir = path.join(mnt, 'out');
      fs.mkdirSync(dir);
      return dir;
    },
    fail(dir) {
      // Fill the disk but for 16 KiB: room for a lock file, not for the outputs.
      const st = fs.statfsSync(dir);
      const filler = path.join(path.dirname(dir), 'filler');
      fs.writeFileSync(filler, Buffer.alloc(Math.max(0, st.bavail * st.bsize - 16 * 1024)));
      return () => fs.rmSync(filler);
    },
  },
  {
    name: 'a read-only bind mount',
    code: 'EROFS',
    skip: NO_MOUNTS,
    prepare(label) {
      const dir = path.join(work, `ro-${label}`);
      fs.mkdirSync(dir);
      return dir;
    },
    fail(dir) {
      sh('mount', ['--bind', dir, dir]);
      mounts.push(dir);
      sh('mount', ['-o', 'remount,ro,bind', dir]);
      return () => unmount(dir);
    },
  },
  ...(['ENOSPC', 'EROFS', 'EACCES'] as const).map((code): Failure => ({
    name: `an injected ${code}`,
    code,
    prepare(label) {
      const dir = path.join(work, `inject-${code}-${label}`);
      fs.mkdirSync(dir);
      return dir;
    },
    fail(dir) {
      return injectWriteFailure({ code, under: dir, afterBytes: 4096 });
    },
  })),
];

/** The one line a failed write must give: the path, then what to do. */
function writeFailure(code: keyof typeof MESSAGE, pathPattern: string): (e: Error) => boolean {
  return (e) => {
    assert.equal(e.name, 'UserError', e.stack);
    assert.match(e.message, new RegExp(`^cannot write ${pathPattern}: ${MESSAGE[code].replace(/[()]/g, '\\$&')}.* \\(${code}\\)$`));
    return true;
  };
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function checkpointOf(step: number, floats: number): Checkpoint {
  const data = new Float32Array(floats).map((_, i) => Math.sin(step * 1000 + i));
  return { step, weights: [{ name: 'conv1/kernel', shape: [floats], dtype: 'float32', data }], optimizer: [], state: { note: `step ${step}` } };
}

function denseModel(inputs: number, units: number, seed: number): tfl.LayersModel {
  const model = tfl.sequential({ layers: [tfl.layers.dense({ inputShape: [inputs], units, activation: 'softmax', name: 'fc' })] });
  model.setWeights(model.weights.map((w, i) => tf.randomUniform(w.shape as number[], -1, 1, 'float32', seed * 10 + i)));
  return model;
}

function notebookOf(outputBytes: number): Notebook {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {},
    cells: [{ cell_type: 'code', id: 'c1', metadata: {}, source: 'console.log("x")', execution_count: 1, outputs: [{ output_type: 'stream', name: 'stdout', text: 'x'.repeat(outputBytes) + '\n' }] }],
  };
}

/** One row per class from data-samples, with absolute paths, so the CSVs work from any folder. */
function smallCsv(file: string, from: string): string {
  const seen = new Set<string>();
  const rows = fs.readFileSync(path.join(SAMPLES, from), 'utf8').trim().split('\n').filter((l) => {
    const label = l.split(',')[1]!;
    if (seen.has(label)) return false;
    seen.add(label);
    return true;
  });
  fs.writeFileSync(file, rows.map((l) => path.join(SAMPLES, l)).join('\n') + '\n');
  return file;
}

for (const f of FAILURES) {
  test(`${f.name}: a checkpoint that cannot be written leaves the previous one, named in the error`, { skip: f.skip }, async () => {
    const dir = f.prepare('ckpt');
    await saveCheckpoint(dir, checkpointOf(1, 256));
    const before = snapshot(dir);
    const undo = f.fail(dir);
    try {
      await assert.rejects(saveCheckpoint(dir, checkpointOf(2, 64 * 1024)), writeFailure(f.code, esc(path.join(dir, 'ckpt-00000002.bin'))));
    } finally {
      undo();
    }
    assert.deepEqual(snapshot(dir), before, 'the previous checkpoint and pointer are untouched; no temporary file is left');
    const back = await loadLatestCheckpoint(dir);
    assert.equal(back?.step, 1);
    assert.deepEqual(back!.weights[0]!.data, checkpointOf(1, 256).weights[0]!.data);
  });

  test(`${f.name}: an export that cannot be written leaves no temporary folder and the previous version serves`, { skip: f.skip }, async () => {
    const dir = f.prepare('export');
    const small = denseModel(4, 3, 1);
    const first = await exportModel(small, dir, { labels: ['a', 'b', 'c'], preprocessing: { image_size: 2 } });
    const before = snapshot(dir);
    const big = denseModel(4096, 16, 2); // 256 KiB of weights
    const undo = f.fail(dir);
    try {
      await assert.rejects(
        exportModel(big, dir, { labels: Array.from({ length: 16 }, (_, i) => `c${i}`), preprocessing: { image_size: 32 } }),
        writeFailure(f.code, `${esc(dir)}/\\d+`),
      );
    } finally {
      undo();
    }
    assert.deepEqual(snapshot(dir), before);
    const loaded = await loadExport(dir);
    assert.equal(loaded.path, first);
    assert.deepEqual(loaded.labels, ['a', 'b', 'c']);
    loaded.model.dispose();
    small.dispose();
    big.dispose();
  });

  test(`${f.name}: shards that cannot be written leave the earlier shards and no staging folder`, { skip: f.skip }, async () => {
    const dir = f.prepare('shards');
    const common = { labelsFile: path.join(SAMPLES, 'labels.txt'), outputDir: dir, workers: 2 };
    await preprocess({ ...common, trainCsv: smallCsv(path.join(work, `small-train-${f.code}-${f.name.length}.csv`), 'train_set.csv'), validationCsv: smallCsv(path.join(work, `small-eval-${f.code}-${f.name.length}.csv`), 'eval_set.csv') });
    const before = snapshot(dir);
    assert.ok(Object.keys(before).includes('train-00000-of-00001'));
    const undo = f.fail(dir);
    try {
      await assert.rejects(
        preprocess({ ...common, trainCsv: path.join(SAMPLES, 'train_set.csv'), validationCsv: path.join(SAMPLES, 'eval_set.csv'), overwrite: true }),
        // A read-only folder fails at once (its lock file cannot be made); a full one at the shard that does not fit.
        writeFailure(f.code, `${esc(dir)}(/(train|validation)-\\d{5}-of-\\d{5})?`),
      );
    } finally {
      undo();
    }
    assert.deepEqual(snapshot(dir), before);
  });

  test(`${f.name}: an executed notebook that cannot be written keeps the earlier one`, { skip: f.skip }, async () => {
    const dir = f.prepare('notebook');
    const out = path.join(dir, 'out.ipynb');
    await writeNotebook(out, notebookOf(100));
    const input = path.join(work, `big-${f.code}-${f.name.length}.ipynb`);
    fs.writeFileSync(input, JSON.stringify(notebookOf(256 * 1024)));
    const before = snapshot(dir);
    const undo = f.fail(dir);
    try {
      await assert.rejects(runNotebook({ input, output: out, prepareOnly: true }), writeFailure(f.code, esc(out)));
    } finally {
      undo();
    }
    assert.deepEqual(snapshot(dir), before);
  });
}

test('injected: when only the checkpoint pointer cannot be written, the new checkpoint file goes too', async () => {
  const dir = path.join(work, 'pointer');
  await saveCheckpoint(dir, checkpointOf(1, 256));
  const before = snapshot(dir);
  const undo = injectWriteFailure({ code: 'EROFS', under: dir, name: /^\.?checkpoint($|\.tmp-)/ });
  try {
    await assert.rejects(saveCheckpoint(dir, checkpointOf(2, 256)), writeFailure('EROFS', esc(path.join(dir, 'checkpoint'))));
  } finally {
    undo();
  }
  assert.deepEqual(snapshot(dir), before);
  assert.equal((await loadLatestCheckpoint(dir))?.step, 1);
});

/** Run the real CLI, optionally with a write failure injected into its node:fs. */
function runCli(args: string[], inject?: object): { status: number | null; stdout: string; stderr: string } {
  const pre = inject ? ['--require', INJECT] : [];
  const env = { ...process.env, ...(inject ? { IMGCLASS_INJECT_WRITE_FAILURE: JSON.stringify(inject) } : {}) };
  const r = spawnSync(process.execPath, [...pre, CLI, ...args], { encoding: 'utf8', env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('imgclass run-notebook on a full disk (injected): exit 2, one line naming OUT, the earlier OUT kept', async () => {
  const dir = path.join(work, 'cli-nb');
  const out = path.join(dir, 'out.ipynb');
  await writeNotebook(out, notebookOf(100));
  const input = path.join(work, 'cli-big.ipynb');
  fs.writeFileSync(input, JSON.stringify(notebookOf(64 * 1024)));
  const before = snapshot(dir);
  const r = runCli(['run-notebook', input, out, '--prepare-only'], { code: 'ENOSPC', under: dir, afterBytes: 4096 });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr, `imgclass: cannot write ${out}: ${MESSAGE.ENOSPC} (or choose a folder on another disk) and run again (ENOSPC)\n`);
  assert.deepEqual(snapshot(dir), before);
});

/** Train twice on one model_dir: to step 2, then to step 4 with writes failing; the step-2 checkpoint must survive. */
async function trainThenFail(modelDir: string, failWith: () => { inject?: object; undo: () => void }): Promise<{ status: number | null; stderr: string }> {
  const dataDir = path.join(work, 'train-data');
  if (!fs.existsSync(dataDir)) {
    await preprocess({ trainCsv: path.join(SAMPLES, 'train_set.csv'), validationCsv: path.join(SAMPLES, 'eval_set.csv'), labelsFile: path.join(SAMPLES, 'labels.txt'), outputDir: dataDir });
  }
  const common = ['train', '--data_dir', dataDir, '--model_dir', modelDir, '--image_size', '16', '--train_batch_size', '4', '--steps_per_checkpoint', '2', '--workers', '1'];
  const first = runCli([...common, '--train_steps', '2']);
  assert.equal(first.status, 0, first.stderr);
  const before = snapshot(modelDir);
  const { inject, undo } = failWith();
  let r: ReturnType<typeof runCli>;
  try {
    r = runCli([...common, '--train_steps', '4'], inject);
  } finally {
    undo();
  }
  const after = snapshot(modelDir);
  for (const name of ['checkpoint', 'ckpt-00000002.bin']) assert.equal(after[name], before[name], `${name} is the previous good one`);
  assert.deepEqual(Object.keys(after).filter((n) => n.startsWith('.') || n.includes('/.')), [], 'no temporary or lock file left');
  assert.equal((await loadLatestCheckpoint(modelDir))?.step, 2);
  return r;
}

test('imgclass train whose next checkpoint does not fit on a real full disk: exit 2 naming the checkpoint, the previous one kept', { skip: NO_MOUNTS }, async () => {
  const mnt = path.join(work, 'train-tmpfs');
  fs.mkdirSync(mnt);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=400m', 'tmpfs', mnt]);
  mounts.push(mnt);
  const modelDir = path.join(mnt, 'model');
  const r = await trainThenFail(modelDir, () => {
    // Room for the logs, not for a second checkpoint.
    const ckptBytes = fs.statSync(path.join(modelDir, 'ckpt-00000002.bin')).size;
    const st = fs.statfsSync(mnt);
    const filler = path.join(mnt, 'filler');
    fs.writeFileSync(filler, Buffer.alloc(Math.max(0, st.bavail * st.bsize - Math.floor(ckptBytes / 2))));
    return { undo: () => fs.rmSync(filler) };
  });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, new RegExp(`^imgclass: cannot write ${esc(path.join(modelDir, 'ckpt-00000004.bin'))}: ${MESSAGE.ENOSPC}`, 'm'));
  assert.doesNotMatch(r.stderr, /internal error/);
});

test('imgclass train whose checkpoint write fails (injected ENOSPC): exit 2 naming the checkpoint, the previous one kept', async () => {
  const modelDir = path.join(work, 'train-inject');
  const r = await trainThenFail(modelDir, () => ({ inject: { code: 'ENOSPC', under: modelDir, name: '^\\.ckpt-' }, undo: () => undefined }));
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, new RegExp(`^imgclass: cannot write ${esc(path.join(modelDir, 'ckpt-00000004.bin'))}: ${MESSAGE.ENOSPC}`, 'm'));
  assert.doesNotMatch(r.stderr, /internal error/);
});

test('gs://: an export whose upload fails part-way leaves no objects of that version behind', async () => {
  const gcs = await useFakeGcs('wf-bucket');
  // The upload of meta.json fails as a quota or permission error would; the objects before it went up.
  const save = GcsFile.prototype.save;
  GcsFile.prototype.save = function (this: GcsFile, ...args: Parameters<GcsFile['save']>) {
    if (this.name.endsWith('/meta.json')) return Promise.reject(Object.assign(new Error('Quota exceeded for uploads'), { code: 429 }));
    return save.apply(this, args);
  } as GcsFile['save'];
  const model = denseModel(4, 3, 3);
  try {
    await assert.rejects(exportModel(model, 'gs://wf-bucket/export', { labels: ['a', 'b', 'c'], preprocessing: {} }), /Quota exceeded/);
    assert.ok(uploadOrder(gcs).some((n) => n.endsWith('/labels.txt')), 'some files were uploaded before the failure');
    assert.deepEqual(gcs.keys('wf-bucket'), []);
  } finally {
    GcsFile.prototype.save = save;
    model.dispose();
    await gcs.done();
  }
});
