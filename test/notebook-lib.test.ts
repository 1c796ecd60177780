/**
 * The library glue under the notebooks: the service-account commands (run through bash against a
 * stand-in gcloud that records its arguments), image grids, the progress display, the
 * learning-rate chart, settings, the gcp stubs, stripping outputs.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { tempDir, removeDir, jpeg } from './helpers';
import { UserError } from '../lib/errors';
import { serviceAccountCommands, formatCommands, shellQuote, TPU_BUCKET_ROLE } from '../lib/cloud/service-account';
import * as cloud from '../lib/cloud';
import { imageGrid } from '../lib/image-grid';
import { notebookProgress, progressLine } from '../lib/notebook-progress';
import { learningRateCurve, compileVegaLite } from '../lib/charts';
import { learningRate, learningRatePhases } from '../lib/train/recipe';
import { learningRatePoints, trainCommand, trainOptions, classCount } from '../lib/steps/trainer';
import { notebookSettings, backendOf } from '../lib/steps/settings';
import { sampleImages, headLines } from '../lib/steps/data';
import { formatRequest } from '../lib/steps/predict';
import { preprocessAtScale } from '../lib/steps/preprocess';
import { stripOutputs } from '../lib/notebook-suite';
import { parseNotebook } from '../lib/runner/notebook-io';
import { formatConfusion } from '../lib/evaluate';
import { buildProgram, normalizeFlags } from '../lib/cli';

const dir = tempDir('imgclass-nblib-');
after(() => removeDir(dir));

test('service-account commands: run by bash against a recording gcloud, they grant the TPU agent its roles', () => {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const log = path.join(dir, 'gcloud.log');
  // A stand-in gcloud: one line per call, arguments separated by a tab; `projects describe` answers a number.
  fs.writeFileSync(
    path.join(bin, 'gcloud'),
    `#!/bin/bash\n(IFS=$'\\t'; echo "$*") >> ${shellQuote(log)}\nif [ "$1 $2" = "projects describe" ]; then echo 123456789012; fi\n`,
    { mode: 0o755 },
  );
  const steps = serviceAccountCommands({ project: 'my-proj-1', bucket: 'gs://my-bucket/', region: 'europe-west4' });
  const script = formatCommands(steps);
  const r = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const calls = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split('\t'));
  const vertex = 'serviceAccount:service-123456789012@gcp-sa-aiplatform-cc.iam.gserviceaccount.com';
  const dataflow = 'serviceAccount:123456789012-compute@developer.gserviceaccount.com';
  assert.deepEqual(calls[0]!.slice(0, 2), ['services', 'enable']);
  assert.ok(calls[0]!.includes('aiplatform.googleapis.com') && calls[0]!.includes('dataflow.googleapis.com') && calls[0]!.includes('--project=my-proj-1'));
  assert.deepEqual(calls[1], ['projects', 'describe', 'my-proj-1', '--format=value(projectNumber)']);
  assert.deepEqual(calls[2], ['beta', 'services', 'identity', 'create', '--service=aiplatform.googleapis.com', '--project=my-proj-1']);
  const bindings = calls.filter((c) => c.includes('add-iam-policy-binding'));
  assert.deepEqual(
    bindings.map((c) => [c[0], c[c.indexOf('add-iam-policy-binding') + 1], c.find((a) => a.startsWith('--member=')), c.find((a) => a.startsWith('--role='))]),
    [
      ['storage', 'gs://my-bucket', `--member=${vertex}`, `--role=${TPU_BUCKET_ROLE}`],
      ['storage', 'gs://my-bucket', `--member=${dataflow}`, `--role=${TPU_BUCKET_ROLE}`],
      ['projects', 'my-proj-1', `--member=${dataflow}`, '--role=roles/dataflow.worker'],
    ],
  );
  assert.match(script, /^# .+\n/, 'each command says why');

  // A known project number: no lookup, the member is literal.
  const known = serviceAccountCommands({ project: 'my-proj-1', bucket: 'my-bucket', projectNumber: '42424242' });
  assert.ok(!known.some((s) => s.command.includes('projects describe')));
  assert.ok(known.some((s) => s.command.includes('--member=serviceAccount:service-42424242@gcp-sa-aiplatform-cc.iam.gserviceaccount.com')));
});

test('service-account commands: bad names are UserErrors naming the field', () => {
  const bad: [object, RegExp][] = [
    [{ project: '', bucket: 'b-1' }, /project is empty/],
    [{ project: 'My Project', bucket: 'b-1' }, /project "My Project" is not a Google Cloud project id/],
    [{ project: 'my-proj-1', bucket: '' }, /bucket is empty/],
    [{ project: 'my-proj-1', bucket: 'gs://b-1/data' }, /has a path in it; give only the bucket name \(e\.g\. b-1\)/],
    [{ project: 'my-proj-1', bucket: 'Bad_Bucket' }, /not a valid bucket name/],
    [{ project: 'my-proj-1', bucket: 'b-1', region: 'mars' }, /region "mars"/],
    [{ project: 'my-proj-1', bucket: 'b-1', projectNumber: 'abc' }, /projectNumber "abc"/],
  ];
  for (const [settings, re] of bad) {
    assert.throws(() => serviceAccountCommands(settings as never), (e: unknown) => e instanceof UserError && re.test(e.message), JSON.stringify(settings));
  }
  assert.equal(shellQuote('plain-value_1.2'), 'plain-value_1.2');
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  assert.equal(spawnSync('bash', ['-c', `printf %s ${shellQuote("a b'c$HOME")}`], { encoding: 'utf8' }).stdout, "a b'c$HOME");
});

test('a gcp training run without an export folder is refused, shown without a stack trace', async () => {
  const settings = { project: 'p-123456', bucket: 'b', region: 'us-central1' };
  const s = notebookSettings({ backend: 'gcp', work_dir: dir, ...settings });
  await assert.rejects(backendOf(s).train({ dataDir: 'gs://b/d', modelDir: 'gs://b/m', trainSteps: 1 }), (e: unknown) => e instanceof UserError && /--export_dir is required with --backend gcp/.test(e.message));
  const err = new UserError('bad thing in file.csv:3');
  const shown = (await import('node:util')).inspect(err);
  assert.equal(shown, 'UserError: bad thing in file.csv:3');
  assert.match(err.stack ?? '', /\n\s+at /, 'the stack is still there for debugging');
});

test('imageGrid: cells in rows of `columns`, each image scaled into its cell, labels drawn below', async () => {
  const red = await sharp({ create: { width: 28, height: 28, channels: 3, background: '#ff0000' } }).jpeg().toBuffer();
  const blueFile = path.join(dir, 'blue.png');
  await sharp({ create: { width: 300, height: 150, channels: 3, background: '#0000ff' } }).png().toFile(blueFile);
  const png = await imageGrid([red, blueFile, red], ['red', 'blue', 'red again'], { columns: 2, cellSize: 64 });
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  // PAD 6, LABEL 18: 2 columns → 6 + 2 * 70 wide; 2 rows → 6 + 2 * (64 + 18 + 6) high.
  assert.deepEqual([info.width, info.height], [146, 182]);
  const px = (x: number, y: number): number[] => Array.from(data.subarray((y * info.width + x) * info.channels, (y * info.width + x) * info.channels + 3));
  const near = (a: number[], b: number[]): boolean => a.every((v, i) => Math.abs(v - b[i]!) < 40);
  assert.ok(near(px(6 + 32, 6 + 32), [255, 0, 0]), `cell 0 is red: ${px(38, 38)}`);
  assert.ok(near(px(76 + 32, 6 + 32), [0, 0, 255]), 'cell 1 is blue (a 2:1 image, letterboxed)');
  assert.ok(near(px(76 + 32, 6 + 4), [255, 255, 255]), 'above the letterboxed image is background');
  assert.ok(near(px(6 + 32, 94 + 32), [255, 0, 0]), 'cell 2 starts the second row');
  assert.ok(near(px(76 + 32, 94 + 32), [255, 255, 255]), 'the missing fourth cell is empty');
  let ink = 0;
  for (let y = 6 + 64; y < 6 + 64 + 18; y++) for (let x = 6; x < 70; x++) if (px(x, y)[0]! < 128) ink++;
  assert.ok(ink > 20, `the label under cell 0 is drawn (${ink} dark pixels)`);

  await assert.rejects(imageGrid([], []), /no images given/);
  await assert.rejects(imageGrid([red], ['a', 'b']), /1 images but 2 labels/);
  const junk = path.join(dir, 'junk.jpg');
  fs.writeFileSync(junk, 'not a jpeg');
  await assert.rejects(imageGrid([junk]), (e: unknown) => e instanceof UserError && e.message.startsWith(`${junk}: not an image`));
  await assert.rejects(imageGrid([path.join(dir, 'missing.jpg')]), /missing\.jpg/);
});

test('notebookProgress: a flood of updates is drawn a few times; the last state always lands', async () => {
  const drawn: string[] = [];
  const bar = notebookProgress('work', { intervalMs: 100, onDraw: (l) => drawn.push(l) });
  const t0 = Date.now();
  let i = 0;
  while (Date.now() - t0 < 350) {
    bar.update(++i, 100_000, `${i} done`);
    await new Promise((r) => setImmediate(r));
  }
  assert.ok(i > 1000, `many updates (${i})`);
  assert.ok(drawn.length >= 3 && drawn.length <= 6, `drawn ${drawn.length} times in 350 ms at 100 ms`);
  assert.equal(drawn[0], progressLine('work', { done: 1, total: 100_000, info: '1 done' }));
  const out: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((s: string) => (out.push(s), true)) as typeof process.stdout.write;
  try {
    bar.finish('all done');
  } finally {
    process.stdout.write = write;
  }
  assert.equal(drawn[drawn.length - 1], `work: ${i}/100000 (${Math.floor((100 * i) / 100_000)} %)  all done`);
  assert.deepEqual(out, [`${drawn[drawn.length - 1]}\n`], 'outside a kernel the final line goes to stdout');
  const count = drawn.length;
  bar.update(5, 10);
  bar.finish();
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(drawn.length, count, 'nothing is drawn after finish');
});

test('learning-rate points follow learningRate() step by step, keep both sides of each decay, and chart', async () => {
  const p = { train_batch_size: 16, train_steps: 80, base_learning_rate: 2.0 };
  const pts = learningRatePoints(p);
  assert.equal(pts.length, 81);
  for (const { step, lr } of pts) assert.equal(lr, learningRate(step, { batchSize: 16, trainSteps: 80, baseLr: 2.0 }));
  assert.equal(pts[0]!.lr, 0, 'warm-up starts at 0');
  assert.ok(Math.abs(Math.max(...pts.map((q) => q.lr)) - 2.0 * (16 / 256)) < 1e-12, 'peak is base x batch/256');

  const long = learningRatePoints({ train_batch_size: 256, train_steps: 100_000, base_learning_rate: 0.1 });
  assert.ok(long.length < 420, `${long.length} points for 100k steps`);
  for (const ph of learningRatePhases({ batchSize: 256, trainSteps: 100_000, baseLr: 0.1 })) {
    const at = long.find((q) => q.step === ph.startStep);
    const before = long.find((q) => q.step === ph.startStep - 1);
    assert.ok(at && before, `both sides of the boundary at ${ph.startStep}`);
  }
  const spec = learningRateCurve(pts, { title: 'LR' });
  const { warnings } = await compileVegaLite(spec);
  assert.deepEqual(warnings, []);
  assert.throws(() => learningRateCurve([]), /no points/);
  assert.throws(() => learningRateCurve([{ step: 1, lr: NaN }]), /point 0/);
});

test('settings, the training command and its options agree; the CLI parses the command it prints', async () => {
  assert.throws(() => notebookSettings({ backend: 'aws', work_dir: 'x' }), /backend "aws" is not known/);
  assert.throws(() => notebookSettings({ backend: 'local', work_dir: ' ' }), /work_dir is empty/);
  const s = notebookSettings({ backend: 'local', work_dir: path.join(dir, 'w') });
  assert.equal(s.paths.tfrecords, path.join(dir, 'w', 'tfrecords'));
  assert.match(notebookSettings({ backend: 'gcp', work_dir: dir }).notes.join(), /set work_dir to a gs:\/\/ folder/);
  const params = { resnet_depth: 34, image_size: 48, train_batch_size: 8, train_steps: 12, steps_per_eval: 6, base_learning_rate: 0.5 };
  const o = trainOptions(s, params);
  assert.deepEqual(
    { d: o.resnetDepth, i: o.imageSize, b: o.trainBatchSize, t: o.trainSteps, e: o.stepsPerEval, lr: o.baseLearningRate, w: o.workers },
    { d: 34, i: 48, b: 8, t: 12, e: 6, lr: 0.5, w: undefined },
  );
  assert.throws(() => trainOptions(s, { ...params, resnet_depth: 19 }), /resnet_depth 19 is not supported/);

  // The printed command, parsed by the real CLI, gives train() the same options.
  const cmd = trainCommand(s, params);
  const argv = cmd.replace(/\\\n\s*/g, ' ').split(/\s+/).slice(1);
  const program = buildProgram();
  let seen: Record<string, unknown> | undefined;
  const trainCmd = program.commands.find((c) => c.name() === 'train')!;
  trainCmd.action((opts: Record<string, unknown>) => {
    seen = opts;
  });
  await program.parseAsync(normalizeFlags(argv), { from: 'user' });
  assert.deepEqual(
    { dataDir: seen!.dataDir, modelDir: seen!.modelDir, exportDir: seen!.exportDir, resnetDepth: seen!.resnetDepth, imageSize: seen!.imageSize, trainBatchSize: seen!.trainBatchSize, trainSteps: seen!.trainSteps, stepsPerEval: seen!.stepsPerEval, baseLearningRate: seen!.baseLearningRate },
    { dataDir: o.dataDir, modelDir: o.modelDir, exportDir: o.exportDir, resnetDepth: 34, imageSize: 48, trainBatchSize: 8, trainSteps: 12, stepsPerEval: 6, baseLearningRate: 0.5 },
  );

  await assert.rejects(classCount(s), /labels\.txt does not exist: run 01-data first/);
  assert.equal(await classCount(s, 7), 7);
});

test('sampleImages takes the first images of each class in labels order; headLines shows a file\'s start', async () => {
  const csv = path.join(dir, 'all.csv');
  const rows = ['a/1.jpg,cat', 'a/2.jpg,dog', 'a/3.jpg,cat', 'a/4.jpg,cat', 'a/5.jpg,dog', 'a/6.jpg,emu'];
  fs.writeFileSync(csv, rows.join('\n') + '\n');
  const labels = path.join(dir, 'labels.txt');
  fs.writeFileSync(labels, 'cat\ndog\nemu\n');
  const s = await sampleImages(csv, 2, labels);
  assert.deepEqual(s.labels, ['cat', 'dog', 'emu', 'cat', 'dog']);
  assert.deepEqual(s.paths.map((p) => path.basename(p)), ['1.jpg', '2.jpg', '6.jpg', '3.jpg', '5.jpg']);
  assert.equal(s.columns, 3);
  assert.equal(await headLines(csv, 2), 'a/1.jpg,cat\na/2.jpg,dog\n… (6 lines in all)\n');
  assert.equal(await headLines(labels, 5), 'cat\ndog\nemu\n');
});

test('formatRequest shortens the base64 but keeps the request\'s shape; formatConfusion lines up', async () => {
  const b64 = (await jpeg(20, 20)).toString('base64');
  const text = formatRequest({ instances: [{ image_bytes: { b64 } }] }, 10);
  const shown = JSON.parse(text);
  assert.equal(shown.instances[0].image_bytes.b64, `${b64.slice(0, 10)}… (${b64.length} characters)`);
  assert.deepEqual(Object.keys(shown.instances[0]), ['image_bytes']);
  const table = formatConfusion({ labels: ['a', 'long_label'], matrix: [[3, 1], [0, 12]] });
  const lines = table.trimEnd().split('\n');
  assert.equal(lines.length, 3);
  assert.equal(new Set(lines.map((l) => l.length)).size, 1, `aligned:\n${table}`);
  assert.match(lines[2]!, /^1 long_label\s+0\s+12$/);
});

test('stripOutputs leaves a notebook as it is kept in git', () => {
  const executed = parseNotebook(
    JSON.stringify({
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { kernelspec: { name: 'tslab' }, papermill: { parameters: { n: 1 } } },
      cells: [
        { id: 'a', cell_type: 'markdown', metadata: { tags: ['papermill-error-cell-tag'] }, source: 'error' },
        { id: 'b', cell_type: 'code', metadata: { tags: ['parameters'], papermill: { status: 'completed' } }, execution_count: 1, outputs: [], source: 'let n = 0;' },
        { id: 'c', cell_type: 'code', metadata: { tags: ['injected-parameters'] }, execution_count: 2, outputs: [], source: 'let n = 1;' },
        { id: 'd', cell_type: 'code', metadata: { execution: { x: 1 } }, execution_count: 3, outputs: [{ output_type: 'stream', name: 'stdout', text: 'hi' }], source: 'n' },
      ],
    }),
    'x.ipynb',
  );
  assert.equal(stripOutputs(executed), true);
  assert.deepEqual(executed.metadata, { kernelspec: { name: 'tslab' } });
  assert.deepEqual(
    executed.cells.map((c) => [c.id, c.metadata, c.cell_type === 'code' ? [c.execution_count, c.outputs] : null]),
    [
      ['b', { tags: ['parameters'] }, [null, []]],
      ['d', {}, [null, []]],
    ],
  );
  assert.equal(stripOutputs(executed), false, 'stripping twice changes nothing');
});
