/**
 * A data set in the fake Google server's Cloud Storage, and a stand-in for what the Dataflow job
 * writes: the fake answers the Dataflow API (launch, jobs.get walking the states the test sets,
 * messages) but runs no Beam, so at launch this fixture puts real shards into the output folder, as
 * the job would before it is done: written by lib/preprocess from the same rows, plus the rejects
 * file the pipeline writes for the broken image.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import type { dataflow_v1b3 } from 'googleapis/build/src/apis/dataflow/v1b3';
import { preprocess } from '../lib/preprocess';
import { startFakeGoogle, FakeGoogle } from './fake-google';
import { jpeg, tempDir, CLI } from './helpers';

export const BUCKET = 'imgclass-data';
export const PROJECT = 'imgclass-test';
export const REGION = 'us-central1';
export const LABELS = ['daisy', 'roses'];

export interface DataflowFixture {
  fake: FakeGoogle;
  /** gs:// paths of the data set. */
  trainCsv: string;
  validationCsv: string;
  labelsFile: string;
  /** Rows per split as the CSVs list them (the broken image included). */
  rows: { train: number; validation: number };
  /** The broken row: its CSV line and path. */
  broken: { line: number; path: string };
  /** Shard files (base name → bytes) the "job" writes, and the rejects line. */
  shards: Map<string, Buffer>;
  rejects: string;
  /** Messages the next launched job will have (jobs.messages.list answers them). */
  messages: dataflow_v1b3.Schema$JobMessage[];
  /** Whether the next launched job writes its shards (a failing job writes none). */
  writes: boolean;
  /** The output folders launched jobs wrote into, in order. */
  launched: string[];
  dir: string;
  close(): Promise<void>;
}

/**
 * `prefix` is the data set's folder in the bucket (gs://BUCKET/PREFIX/train_set.csv, …); the images
 * are under PREFIX/images/. `numShards` is what the CLI will be given.
 */
export async function dataflowFixture(prefix: string, numShards?: number): Promise<DataflowFixture> {
  const fake = await startFakeGoogle({ projectId: PROJECT, buckets: [{ name: BUCKET, location: 'US-CENTRAL1' }] });
  const dir = tempDir('imgclass-dataflow-run-');
  const local = path.join(dir, 'data');
  fs.mkdirSync(path.join(local, 'images'), { recursive: true });
  const images: [string, Buffer][] = [];
  for (let i = 0; i < 6; i++) images.push([`images/${LABELS[i % 2]}-${i}.jpg`, await jpeg(40 + i, 30, i)]);
  const good = images[0]![1];
  // Cut off after the frame header: both runs reject it ("truncated or corrupt image data").
  images.push(['images/daisy-cut.jpg', good.subarray(0, Math.floor(good.length / 2))]);
  for (const [name, bytes] of images) {
    fs.writeFileSync(path.join(local, name), bytes);
    fake.gcs.put(BUCKET, `${prefix}/${name}`, bytes, 'image/jpeg');
  }
  // Relative paths: resolved against the CSV's folder, locally and on gs:// alike.
  const train = ['images/daisy-0.jpg,daisy', 'images/roses-1.jpg,roses', 'images/daisy-2.jpg,daisy', 'images/daisy-cut.jpg,daisy', 'images/roses-3.jpg,roses'];
  const validation = ['images/daisy-4.jpg,daisy', 'images/roses-5.jpg,roses'];
  const files: [string, string][] = [
    ['train_set.csv', train.join('\n') + '\n'],
    ['eval_set.csv', validation.join('\n') + '\n'],
    ['labels.txt', LABELS.join('\n') + '\n'],
  ];
  for (const [name, text] of files) {
    fs.writeFileSync(path.join(local, name), text);
    fake.gcs.put(BUCKET, `${prefix}/${name}`, text, 'text/plain');
  }
  const gs = (name: string): string => `gs://${BUCKET}/${prefix}/${name}`;

  // What the job writes, made by the local run from the same rows (same records; the order within
  // a shard differs on Dataflow, which the report does not depend on).
  const out = path.join(dir, 'local-shards');
  await preprocess({
    trainCsv: path.join(local, 'train_set.csv'),
    validationCsv: path.join(local, 'eval_set.csv'),
    labelsFile: path.join(local, 'labels.txt'),
    outputDir: out,
    numShards,
    workers: 1,
  });
  const shards = new Map<string, Buffer>();
  for (const name of fs.readdirSync(out).filter((n) => /^(train|validation)-\d{5}-of-\d{5}$/.test(n))) shards.set(name, fs.readFileSync(path.join(out, name)));
  const broken = { line: 4, path: gs('images/daisy-cut.jpg') };
  const rejects = JSON.stringify({ split: 'train', csv: gs('train_set.csv'), line: broken.line, path: broken.path, reason: 'truncated or corrupt image data: no end-of-image marker after the scan data (the file ends early)' }) + '\n';

  const fx: DataflowFixture = {
    fake,
    trainCsv: gs('train_set.csv'),
    validationCsv: gs('eval_set.csv'),
    labelsFile: gs('labels.txt'),
    rows: { train: train.length, validation: validation.length },
    broken,
    shards,
    rejects,
    messages: [],
    writes: true,
    launched: [],
    dir,
    async close() {
      await fake.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  // The fake stores a launched job with dataflowJobs.set: the moment the job "runs".
  const jobs = fake.state.dataflowJobs;
  const set = jobs.set.bind(jobs);
  jobs.set = (id, entry) => {
    const pipeline = entry.job.name ? launchedOutput(fake, entry.job.name) : undefined;
    if (pipeline) {
      fx.launched.push(pipeline);
      if (fx.writes) {
        const { key } = splitGs(pipeline);
        for (const [name, bytes] of fx.shards) fake.gcs.put(BUCKET, `${key}/${name}`, bytes);
        fake.gcs.put(BUCKET, `${key}/_rejects/rejects-00000-of-00001.jsonl`, fx.rejects);
      }
    }
    fake.state.jobMessages.set(id, fx.messages.map((m, i) => ({ id: `${id}-${i}`, ...m })));
    return set(id, entry);
  };
  return fx;
}

function splitGs(url: string): { bucket: string; key: string } {
  const m = /^gs:\/\/([^/]+)\/(.*)$/.exec(url)!;
  return { bucket: m[1]!, key: m[2]!.replace(/\/+$/, '') };
}

/** The output folder the uploaded pipeline of job `jobName` writes into (its output_dir kwarg). */
function launchedOutput(fake: FakeGoogle, jobName: string): string | undefined {
  const bucket = fake.state.buckets.get(BUCKET);
  const key = `imgclass-staging/dataflow/${jobName}/pipeline.yaml`;
  const yaml = bucket?.objects.get(key)?.data.toString('utf8');
  return yaml ? /^\s+output_dir: "([^"]+)"$/m.exec(yaml)?.[1] : undefined;
}

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The CLI as a child process with the fake's environment (asynchronous: the fake answers from this
 * process). `onStderr` sees the stderr so far after each chunk, e.g. to send SIGINT at a moment.
 */
export function runCli(args: string[], env: Record<string, string>, onStderr?: (soFar: string, child: ReturnType<typeof spawn>) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The fake's environment, with the job polled every 20 ms instead of every few seconds. */
export function cliEnv(fx: DataflowFixture): Record<string, string> {
  return { ...fx.fake.env(), IMGCLASS_POLL_MS: '20' };
}
