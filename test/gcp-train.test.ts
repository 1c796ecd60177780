/**
 * `imgclass train --backend gcp` and `train-status` end to end against the fake Google API server
 * (test/fake-google/): the real CLI in a child process, with the fake's roots in the
 * CLOUDSDK_API_ENDPOINT_OVERRIDES_* variables. Real TFRecord shards on the fake Cloud Storage are
 * counted; the trainer image is built (Cloud Build) into an Artifact Registry repository created on
 * the way, then reused; the custom job is created on the TPU machine and followed through its states,
 * its Cloud Logging lines and the curves of event files our own SummaryWriter put on the fake GCS,
 * to the export. Ctrl-C cancels (after asking), failures read as one message, and a dry run sends
 * nothing at all. Every test asserts that the fake refused no request.
 */
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { parse } from 'yaml';
import { startFakeGoogle, FakeGoogle } from './fake-google';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, REPO_ROOT, jpeg } from './helpers';
import { encodeExample } from '../lib/example';
import { frameRecord } from '../lib/tfrecord';
import * as storage from '../lib/storage';
import { makeStorage } from '../lib/cloud/auth';
import { SummaryWriter } from '../lib/train/summary-writer';
import { gcpBackend } from '../lib/cloud/backend';
import { failureMessage, lastTraceback } from '../lib/cloud/training/job';
import { tpuSpec } from '../lib/cloud/training/tpu';
import { memoryReporter } from '../lib/cloud/report';
import type { TrainEvent } from '../lib/train';
import type { aiplatform_v1 } from 'googleapis/build/src/apis/aiplatform/v1';
import { notebookSettings } from '../lib/steps/settings';
import { trainerPlan } from '../lib/steps/trainer';
import { trainWithLiveChart, evaluateExport, tensorboardHint } from '../lib/steps/train';

const BUCKET = 'imgclass-train-bucket';
const PROJECT = 'imgclass-test';
let fake: FakeGoogle;

async function shard(labels: number[]): Promise<Buffer> {
  const records: Buffer[] = [];
  for (const [i, label] of labels.entries()) {
    const ex = encodeExample({
      'image/class/label': { int64: [label] },
      'image/class/synset': { bytes: [['daisy', 'roses', 'tulips', 'sunflowers'][label - 1]!] },
      'image/filename': { bytes: [`img${i}.jpg`] },
      'image/encoded': { bytes: [await jpeg(24, 20, i)] },
    });
    records.push(frameRecord(ex));
  }
  return Buffer.concat(records);
}

/** 40 training images (2 shards) and 16 validation images in 4 classes, under gs://BUCKET/data. */
async function putData(prefix = 'data'): Promise<void> {
  const cls = (n: number, off = 0): number[] => Array.from({ length: n }, (_, i) => ((i + off) % 4) + 1);
  fake.gcs.put(BUCKET, `${prefix}/train-00000-of-00002`, await shard(cls(20)));
  fake.gcs.put(BUCKET, `${prefix}/train-00001-of-00002`, await shard(cls(20, 1)));
  fake.gcs.put(BUCKET, `${prefix}/validation-00000-of-00001`, await shard(cls(16)));
}

/** What Model Garden's trainer writes while it runs, written with our own SummaryWriter. */
async function putEventFiles(modelDir: string): Promise<void> {
  const train = await SummaryWriter.create(storage.joinPath(modelDir, 'train'));
  for (const [step, loss] of [[50, 2.5], [100, 1.75], [150, 1.25], [200, 1.0]] as const) {
    train.scalar('training_loss', loss, step);
    train.scalar('learning_rate', 0.05, step);
  }
  await train.close();
  const val = await SummaryWriter.create(storage.joinPath(modelDir, 'validation'));
  val.scalar('accuracy', 0.5, 100);
  val.scalar('validation_loss', 1.5, 100);
  val.scalar('accuracy', 0.75, 200);
  val.scalar('top_5_accuracy', 1, 200);
  val.scalar('validation_loss', 0.9, 200);
  await val.close();
}

/** The id the fake gives the next custom job (its ids count up). */
const nextJobId = (): string => String(fake.state.nextId + 1n);

function logEntry(jobId: string, text: string, second: number): aiplatform_v1.Schema$GoogleCloudAiplatformV1CustomJob & Record<string, unknown> {
  return {
    logName: `projects/${PROJECT}/logs/workerpool0-0`,
    resource: { type: 'ml_job', labels: { job_id: jobId, project_id: PROJECT, task_name: 'workerpool0-0' } },
    timestamp: new Date(Date.now() + second * 1000).toISOString(),
    insertId: `${jobId}-${second}`,
    textPayload: text,
  };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], o: { env?: Record<string, string>; onStderr?: (text: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...(o.env ?? fake.env()) }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      o.onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const trainArgs = (model: string, extra: string[] = []): string[] => [
  'train', '--backend', 'gcp', '--project', PROJECT, '--region', 'us-central1',
  '--data_dir', `gs://${BUCKET}/data`, '--model_dir', `gs://${BUCKET}/${model}`, '--export_dir', `gs://${BUCKET}/${model}-export`,
  '--resnet_depth', '18', '--train_batch_size', '16', '--eval_batch_size', '8', '--train_steps', '200', '--steps_per_eval', '100',
  '--poll_seconds', '0.05', ...extra,
];

const methods = (): string[] => fake.requests.map((r) => r.methodId ?? `${r.httpMethod} ${r.path}`);

function assertNoRejections(): void {
  assert.deepEqual(fake.rejected().map((r) => `${r.methodId}: ${r.rejected}`), []);
}

const savedEnv = { ...process.env };

before(async () => {
  fake = await startFakeGoogle({ projectId: PROJECT, buckets: [{ name: BUCKET, location: 'US-CENTRAL1' }] });
  // This process's own gs:// reads and writes (the test's SummaryWriter, the in-process backend) go to the fake too.
  Object.assign(process.env, fake.env());
  // Every cloud wait polls every 20 ms instead of its default (15 s for a training job).
  process.env.IMGCLASS_POLL_MS = '20';
  storage.setGcsClient(makeStorage());
  await putData();
});

after(async () => {
  storage.setGcsClient(undefined);
  for (const k of [...Object.keys(fake.env()), 'IMGCLASS_POLL_MS']) if (savedEnv[k] === undefined) delete process.env[k];
  await fake.close();
});

test('train --backend gcp: image built into a new repository, job on the TPU, states, log lines, curves, export', async () => {
  await putEventFiles(`gs://${BUCKET}/run1`);
  const id = nextJobId();
  fake.state.logEntries.push(logEntry(id, 'I1201 train_lib.py: train | step: 100 | training_loss: 1.75', 1), logEntry(id, 'I1201 train_lib.py: eval | step: 200 | accuracy: 0.75', 2));
  const version = Math.floor(Date.now() / 1000) + 5;
  fake.gcs.put(BUCKET, `run1-export/${version}/saved_model.pb`, 'pb');
  fake.gcs.put(BUCKET, `run1-export/${version}/labels.txt`, 'daisy\nroses\ntulips\nsunflowers\n');
  fake.requests.length = 0;

  const r = await runCli(trainArgs('run1'));
  assert.equal(r.code, 0, r.stderr);
  assertNoRejections();
  const m = methods();
  for (const want of [
    'artifactregistry.projects.locations.repositories.get', 'artifactregistry.projects.locations.repositories.create',
    'artifactregistry.projects.locations.repositories.dockerImages.list', 'cloudbuild.projects.locations.builds.create',
    'aiplatform.projects.locations.customJobs.create', 'aiplatform.projects.locations.customJobs.get', 'logging.entries.list',
  ]) assert.ok(m.includes(want), `${want} was called (calls: ${[...new Set(m)].join(', ')})`);
  assert.ok(m.indexOf('cloudbuild.projects.locations.builds.create') < m.indexOf('aiplatform.projects.locations.customJobs.create'), 'the image is built before the job');

  // The job as created: one pool, one replica, the v5e-4 machine, output in the bucket, the staged config.
  const create = fake.requests.find((q) => q.methodId === 'aiplatform.projects.locations.customJobs.create')!;
  const job = create.body as aiplatform_v1.Schema$GoogleCloudAiplatformV1CustomJob;
  const pools = job.jobSpec!.workerPoolSpecs!;
  assert.equal(pools.length, 1);
  assert.deepEqual(pools[0]!.machineSpec, { machineType: 'ct5lp-hightpu-4t', tpuTopology: '2x2' });
  assert.equal(pools[0]!.replicaCount, '1');
  assert.match(pools[0]!.containerSpec!.imageUri!, /^us-central1-docker\.pkg\.dev\/imgclass-test\/imgclass\/trainer:[0-9a-f]{16}$/);
  assert.equal(job.jobSpec!.baseOutputDirectory!.outputUriPrefix, `gs://${BUCKET}/run1/imgclass/vertex`);
  const configUri = /--config_file='([^']+)'/.exec(pools[0]!.containerSpec!.args!.join(' '))![1]!;
  const cfg = parse((await storage.readText(configUri))) as { task: { model: { num_classes: number }; train_data: { input_path: string } }; trainer: { train_steps: number; validation_steps: number } };
  assert.equal(cfg.task.model.num_classes, 5, '4 classes counted from the shards, + label 0');
  assert.equal(cfg.task.train_data.input_path, `gs://${BUCKET}/data/train-*`);
  assert.equal(cfg.trainer.train_steps, 200);
  assert.equal(cfg.trainer.validation_steps, 2, '16 validation images in batches of 8');
  assert.equal(await storage.readText(`gs://${BUCKET}/run1/imgclass/labels.txt`), 'daisy\nroses\ntulips\nsunflowers\n');

  // What the user saw: state changes, the job's log lines, the curves, the export.
  for (const s of ['QUEUED', 'PENDING', 'RUNNING', 'SUCCEEDED']) assert.match(r.stderr, new RegExp(`training job ${id}: ${s}`));
  assert.match(r.stderr, /train_lib\.py: train \| step: 100 \| training_loss: 1\.75/);
  assert.match(r.stderr, /step 150: loss 1\.2500, lr 0\.0500/);
  assert.match(r.stderr, /eval at step 200: top-1 75\.0 %, top-5 100\.0 %/);
  assert.equal(r.stdout.trim(), `trained: step 200; top-1 75.0 %; export: gs://${BUCKET}/run1-export/${version}`);

  // A second run with the same flags reuses the image (no build) and continues in the same model_dir.
  fake.requests.length = 0;
  const again = await runCli(trainArgs('run1', ['--no-wait']));
  assert.equal(again.code, 0, again.stderr);
  assert.ok(!methods().includes('cloudbuild.projects.locations.builds.create'), 'built once');
  assert.match(again.stderr, /trainer image: .*trainer:[0-9a-f]{16} \(built before\)/);
  assertNoRejections();
});

test('the live curves: our SummaryWriter\'s event files on the fake GCS arrive as the step and eval events the chart draws', async () => {
  await putEventFiles(`gs://${BUCKET}/run2`);
  const version = Math.floor(Date.now() / 1000) + 5;
  fake.gcs.put(BUCKET, `run2-export/${version}/saved_model.pb`, 'pb');
  const events: TrainEvent[] = [];
  const reporter = memoryReporter();
  const backend = gcpBackend({ project: PROJECT, region: 'us-central1', env: fake.env() as NodeJS.ProcessEnv, reporter });
  const r = await backend.train({
    dataDir: `gs://${BUCKET}/data`, modelDir: `gs://${BUCKET}/run2`, exportDir: `gs://${BUCKET}/run2-export`,
    trainBatchSize: 16, evalBatchSize: 8, trainSteps: 200, stepsPerEval: 100, pollIntervalMs: 20, onEvent: (e) => events.push(e),
  });
  const steps = events.filter((e) => e.kind === 'step').map((e) => e.kind === 'step' && [e.step, e.loss, e.lr]);
  assert.deepEqual(steps, [[50, 2.5, 0.05000000074505806], [100, 1.75, 0.05000000074505806], [150, 1.25, 0.05000000074505806], [200, 1, 0.05000000074505806]]);
  const evals = events.filter((e) => e.kind === 'eval').map((e) => e.kind === 'eval' && [e.step, e.top1, e.top5, e.loss]);
  assert.deepEqual(evals, [[100, 0.5, undefined, 1.5], [200, 0.75, 1, 0.8999999761581421]]);
  assert.equal(events[0]!.kind, 'start');
  assert.equal(events[events.length - 1]!.kind, 'export');
  assert.equal(r.exportPath, `gs://${BUCKET}/run2-export/${version}`);
  assert.equal(r.lastEval?.top1, 0.75);
  assertNoRejections();
});

test('--dry_run sends no request at all, and prints the build, the config and the job', async () => {
  fake.requests.length = 0;
  const r = await runCli(trainArgs('dry', ['--dry_run', '--num_train_images', '40', '--num_eval_images', '16', '--num_label_classes', '4', '--tpu', 'v2-8']));
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(fake.requests, [], 'nothing reached the fake');
  assert.match(r.stderr, /dry run: building the trainer image/);
  assert.match(r.stderr, /POST http:\/\/127\.0\.0\.1:\d+\/v1\/projects\/imgclass-test\/locations\/us-central1\/customJobs/);
  assert.match(r.stderr, /"acceleratorType": "TPU_V2"/);
  assert.match(r.stderr, /num_classes: 5/);
});

test('changed model flags on an existing model_dir, and a batch that does not divide, are refused before any job', async () => {
  fake.requests.length = 0;
  const r = await runCli(trainArgs('run1', ['--resnet_depth', '34']));
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /gs:\/\/imgclass-train-bucket\/run1 holds checkpoints trained with resnet_depth=18, but this run asks for 34: use the same flags to continue training, or a new --model_dir to start over/);
  assert.ok(!methods().includes('aiplatform.projects.locations.customJobs.create'));
  const b = await runCli(trainArgs('odd', ['--train_batch_size', '18', '--tpu', 'v5e-8']));
  assert.equal(b.code, 2);
  assert.match(b.stderr, /--train_batch_size 18 does not divide across the 8 TensorCores of a TPU v5e-8: use a multiple of 8 \(16 or 24\)/);
  assertNoRejections();
});

test('Ctrl-C asks whether to cancel; yes cancels the job', async () => {
  fake.state.customJobPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', ...Array<string>(10_000).fill('JOB_STATE_RUNNING'), 'JOB_STATE_SUCCEEDED'];
  let sent = false;
  try {
    const r = await runCli(trainArgs('cancelled'), {
      onStderr: (text, child) => {
        if (!sent && /: RUNNING/.test(text)) {
          sent = true;
          child.kill('SIGINT');
        }
        if (/cancel the training job\?/.test(text) && child.stdin?.writable) child.stdin.end('y\n');
      },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /cancel requested/);
    assert.match(r.stderr, /: CANCELLED/);
    assert.match(r.stdout, /^not finished/);
    assert.ok(methods().includes('aiplatform.projects.locations.customJobs.cancel'));
    assertNoRejections();
  } finally {
    fake.state.customJobPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', 'JOB_STATE_RUNNING', 'JOB_STATE_SUCCEEDED'];
  }
});

test('Ctrl-C answered no leaves the job running and says how to follow it', async () => {
  fake.state.customJobPlan = ['JOB_STATE_QUEUED', ...Array<string>(10_000).fill('JOB_STATE_RUNNING'), 'JOB_STATE_SUCCEEDED'];
  let sent = false;
  fake.requests.length = 0;
  try {
    const id = nextJobId();
    const r = await runCli(trainArgs('detached'), {
      onStderr: (text, child) => {
        if (!sent && /: RUNNING/.test(text)) {
          sent = true;
          child.kill('SIGINT');
        }
        if (/cancel the training job\?/.test(text) && child.stdin?.writable) child.stdin.end('n\n');
      },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`training job ${id} goes on in the cloud; follow it with: imgclass train-status --backend gcp --project ${PROJECT} --region us-central1 --job ${id}`));
    assert.match(r.stdout, /^not finished/);
    const job = [...fake.state.customJobs.values()].find((j) => j.name?.endsWith(`/customJobs/${id}`));
    assert.equal(job?.state, 'JOB_STATE_RUNNING', 'still running in the cloud');
    assert.ok(!methods().includes('aiplatform.projects.locations.customJobs.cancel'));
    assertNoRejections();
  } finally {
    fake.state.customJobPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', 'JOB_STATE_RUNNING', 'JOB_STATE_SUCCEEDED'];
  }
});

test('failure messages: no TPU capacity names the regions; the last traceback is cut at its exception', () => {
  const job = { name: 'projects/p/locations/us-west1/customJobs/42', error: { code: 8, message: 'Resources are insufficient in region: us-west1. Please try a different region.' } };
  assert.equal(failureMessage(job, [], { tpu: tpuSpec('v5e-8') }),
    'training job 42 could not get its TPU: Resources are insufficient in region: us-west1. Please try a different region.; ' +
    'TPU v5e-8 is offered in us-central1, us-south1, us-west1, us-west4, europe-west4, asia-southeast1 (Cloud TPU regions; pass one with --region), or try again later');
  const lines = ['I starting', 'Traceback (most recent call last):', '  File "a.py", line 1, in <module>', 'ValueError: first', 'I retrying',
    'Traceback (most recent call last):', '  File "b.py", line 2, in main', '    raise RuntimeError("x")', 'RuntimeError: x', 'I0000 after the error'];
  assert.equal(lastTraceback(lines), 'Traceback (most recent call last):\n  File "b.py", line 2, in main\n    raise RuntimeError("x")\nRuntimeError: x');
  assert.equal(lastTraceback(['no traceback here']), undefined);
});

test('a failed job reads as the trainer\'s traceback; a config Model Garden rejects says so', async () => {
  fake.state.customJobPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_RUNNING', 'JOB_STATE_FAILED'];
  try {
    let id = nextJobId();
    fake.state.logEntries.push(
      logEntry(id, 'Traceback (most recent call last):', 1),
      logEntry(id, '  File "/usr/local/lib/python3.10/site-packages/official/vision/dataloaders/classification_input.py", line 92, in _parse_train_image', 2),
      logEntry(id, 'tensorflow.python.framework.errors_impl.InvalidArgumentError: Expected image (JPEG, PNG, or GIF), got unknown format', 3),
    );
    const r = await runCli(trainArgs('failed'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`training job ${id} failed: tensorflow\\.python\\.framework\\.errors_impl\\.InvalidArgumentError: Expected image \\(JPEG, PNG, or GIF\\), got unknown format\\nthe trainer's traceback:\\nTraceback`));

    id = nextJobId();
    fake.state.logEntries.push(
      logEntry(id, 'Traceback (most recent call last):', 1),
      logEntry(id, '  File "/usr/local/lib/python3.10/site-packages/official/modeling/hyperparams/params_dict.py", line 225, in override', 2),
      logEntry(id, "KeyError: 'The key `trainer.steps_per_loops` does not exist in <class 'official.core.config_definitions.TrainerConfig'>. To extend the existing keys, use `override` with `is_strict` = False.'", 3),
    );
    const c = await runCli(trainArgs('rejected'));
    assert.equal(c.code, 2);
    assert.match(c.stderr, new RegExp(`training job ${id}: Model Garden rejected the config gs://${BUCKET}/rejected/imgclass/config-\\d+\\.yaml: KeyError: 'The key \`trainer\\.steps_per_loops\` does not exist`));
    assertNoRejections();
  } finally {
    fake.state.customJobPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', 'JOB_STATE_RUNNING', 'JOB_STATE_SUCCEEDED'];
  }
});

test('no TPU quota: the message names the regions that have the TPU', async () => {
  fake.failNext({ method: 'aiplatform.projects.locations.customJobs.create' }, 'QUOTA');
  const r = await runCli(trainArgs('quota', ['--tpu', 'v3-8', '--train_batch_size', '16', '--eval_batch_size', '8']));
  assert.equal(r.code, 2);
  assert.match(r.stderr, /quota exceeded in project imgclass-test.*TPU v3-8 is offered in us-central1, europe-west4/);
  assertNoRejections();
});

test('--no-wait returns after submitting; train-status follows the job to its export', async () => {
  const version = Math.floor(Date.now() / 1000) + 5;
  fake.gcs.put(BUCKET, `later-export/${version}/saved_model.pb`, 'pb');
  const id = nextJobId();
  const r = await runCli(trainArgs('later', ['--no-wait']));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`imgclass train-status --backend gcp --project ${PROJECT} --region us-central1 --job ${id}`));
  assert.match(r.stdout, /^not finished: step 0/);
  const s = await runCli(['train-status', '--backend', 'gcp', '--project', PROJECT, '--region', 'us-central1', '--job', id, '--poll_seconds', '0.05']);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stderr, new RegExp(`training job ${id}: SUCCEEDED`));
  assert.match(s.stdout, new RegExp(`export: gs://${BUCKET}/later-export/${version}`));
  assertNoRejections();
});

test('notebooks 03 and 06 with backend gcp (the library calls their cells make): the job and config shown, then trained with the live curves to the export', async () => {
  const work = `gs://${BUCKET}/work`;
  const s = notebookSettings({ backend: 'gcp', work_dir: work, project: PROJECT, bucket: BUCKET, region: 'us-central1' });
  const p = { resnet_depth: 18, image_size: 32, train_batch_size: 16, train_steps: 200, steps_per_eval: 100, base_learning_rate: 0.1, tpu: 'v5e-4' };
  fake.requests.length = 0;

  // Notebook 03, before the data exists (the codelab's order): the job and the config, nothing sent to an API.
  const plan = await trainerPlan(s, { ...p, num_classes: 4 });
  assert.match(plan.job, /^Vertex AI custom job on TPU v5e-4 \(4 cores/);
  assert.match(plan.job, new RegExp(`no shards in ${work}/tfrecords yet`));
  assert.match(plan.job, /num_classes: 5/);
  assert.match(plan.command, /--backend=gcp \\\n  --project=imgclass-test \\\n  --region=us-central1 \\\n  --tpu=v5e-4 \\/);
  assert.deepEqual(fake.requests.filter((r) => r.api !== 'storage'), [], 'notebook 03 only reads Cloud Storage');

  // Notebook 06: the shards of notebook 04/05, the trainer's event files and its export appear in WORK.
  await putData('work/tfrecords');
  await putEventFiles(`${work}/model`);
  const version = Math.floor(Date.now() / 1000) + 5;
  fake.gcs.put(BUCKET, `work/export/${version}/saved_model.pb`, 'pb');
  const result = await trainWithLiveChart(s, p, { pollIntervalMs: 20, chartIntervalMs: 10 });
  assert.equal(result.exportPath, `${work}/export/${version}`, 'recorded where notebook 07 deploys from');
  assert.equal(result.lastEval?.top1, 0.75);
  assert.equal(await evaluateExport(s), undefined, 'a SavedModel is not evaluated with TensorFlow.js');
  assert.match(tensorboardHint(s), new RegExp(`tensorboard --logdir ${work}/model`));
  assertNoRejections();
});

const NOTEBOOKS = `${REPO_ROOT}/notebooks`;

/** The executed notebook's stdout text and error outputs. */
function notebookOutputs(file: string): { text: string; errors: number } {
  const nb = JSON.parse(fs.readFileSync(file, 'utf8')) as { cells: Array<{ outputs?: Array<{ output_type: string; text?: string | string[] }> }> };
  const outs = nb.cells.flatMap((c) => c.outputs ?? []);
  return {
    text: outs.map((o) => (o.output_type === 'stream' ? ([] as string[]).concat(o.text ?? []).join('') : '')).join(''),
    errors: outs.filter((o) => o.output_type === 'error').length,
  };
}

const gcpParams = (work: string, extra: string[] = []): string[] => [
  '-p', 'backend', 'gcp', '-p', 'work_dir', work, '-p', 'project', PROJECT, '-p', 'bucket', BUCKET, '-p', 'region', 'us-central1',
  '-p', 'train_batch_size', '16', '-p', 'train_steps', '200', '-p', 'steps_per_eval', '100', ...extra,
];

test('notebook 03 runs headless with backend gcp against the fake: it shows the job and the config', { timeout: 300_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-nb-'));
  fake.requests.length = 0;
  const out = path.join(dir, '03.ipynb');
  const r = await runCli(['run-notebook', path.join(NOTEBOOKS, '03-trainer.ipynb'), out, ...gcpParams(`gs://${BUCKET}/nb03`, ['-p', 'num_classes', '4'])]);
  assert.equal(r.code, 0, r.stderr);
  const o = notebookOutputs(out);
  assert.equal(o.errors, 0);
  assert.match(o.text, /Vertex AI custom job on TPU v5e-4/);
  assert.match(o.text, /the Model Garden config it stages \(gs:\/\/imgclass-train-bucket\/nb03\/model\/imgclass\/config-\d+\.yaml\)/);
  assert.match(o.text, /distribution_strategy: tpu/);
  assert.deepEqual(fake.requests.filter((q) => q.api !== 'storage'), [], 'notebook 03 calls no API');
  assertNoRejections();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('notebook 06 runs headless with backend gcp in dry run: the build and the job printed, no request sent', { timeout: 300_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-nb-'));
  fake.requests.length = 0;
  const out = path.join(dir, '06.ipynb');
  const r = await runCli(['run-notebook', path.join(NOTEBOOKS, '06-train.ipynb'), out, ...gcpParams(`gs://${BUCKET}/nb06`, ['-p', 'dry_run', 'true'])]);
  assert.equal(r.code, 0, r.stderr);
  const o = notebookOutputs(out);
  assert.equal(o.errors, 0);
  assert.match(o.text, /dry run: building the trainer image/);
  assert.match(o.text, /dry run: creating the training job on TPU v5e-4 in us-central1\n  POST http:\/\/127\.0\.0\.1:\d+\/v1\/projects\/imgclass-test\/locations\/us-central1\/customJobs/);
  assert.match(o.text, /dry run: nothing was trained/);
  assert.deepEqual(fake.requests, [], 'nothing reached the fake, Cloud Storage included');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('notebook 06 runs headless with backend gcp against the fake: job, live curves, export for notebook 07', { timeout: 300_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-nb-'));
  const work = `gs://${BUCKET}/nb06live`;
  await putData('nb06live/tfrecords');
  await putEventFiles(`${work}/model`);
  const version = Math.floor(Date.now() / 1000) + 5;
  fake.gcs.put(BUCKET, `nb06live/export/${version}/saved_model.pb`, 'pb');
  fake.requests.length = 0;
  const out = path.join(dir, '06.ipynb');
  // The fake's job takes three polls to succeed (IMGCLASS_POLL_MS makes them quick).
  const r = await runCli(['run-notebook', path.join(NOTEBOOKS, '06-train.ipynb'), out, ...gcpParams(work, ['-p', 'trainer_image', 'us-central1-docker.pkg.dev/imgclass-test/imgclass/trainer:given'])]);
  assert.equal(r.code, 0, r.stderr);
  const o = notebookOutputs(out);
  assert.equal(o.errors, 0);
  assert.match(o.text, /trainer image: us-central1-docker\.pkg\.dev\/imgclass-test\/imgclass\/trainer:given \(--trainer_image; not built\)/);
  assert.match(o.text, /training job \d+: SUCCEEDED/);
  assert.match(o.text, new RegExp(`export for serving: ${work}/export/${version}`));
  assert.match(o.text, /no evaluation: a Cloud TPU run exports a TensorFlow SavedModel, which TensorFlow\.js does not run/);
  assert.match(o.text, /no evaluation: no test split in /);
  const nb = JSON.parse(fs.readFileSync(out, 'utf8')) as { cells: Array<{ outputs?: Array<{ output_type: string; data?: Record<string, unknown> }> }> };
  const charts = nb.cells.flatMap((c) => c.outputs ?? []).filter((x) => x.data && 'application/vnd.vegalite.v5+json' in x.data);
  assert.ok(charts.length >= 1, 'the training curves were drawn');
  assert.ok(!methods().includes('cloudbuild.projects.locations.builds.create'), '--trainer_image: no build');
  assertNoRejections();
  fs.rmSync(dir, { recursive: true, force: true });
});
