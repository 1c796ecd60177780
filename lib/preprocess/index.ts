/**
 * Section 4 of the codelab: JPEGs listed in train/eval CSVs → TFRecord shards of tf.train.Example,
 * the input of the ResNet trainer. Local equivalent of tensorflow/tpu's jpeg_to_tf_record.py
 * (the Dataflow job of section 5), on all cores.
 *
 * Output is all-or-nothing: shards are written into a staging folder and moved into `outputDir`
 * only when every record is written, so a failed or killed run leaves the old outputs (or none).
 * Output is deterministic: the same inputs and settings give byte-identical shards.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as fsp from 'node:fs/promises';
import * as crypto from 'node:crypto';
import { Piscina } from 'piscina';
import * as storage from '../storage';
import { UserError } from '../errors';
import { lockFolder, withLock, isLockClaim } from '../folder-lock';
import { readLabeledCsv, readLabels, validateDataset, LabeledImage, readAutoMlCsv, deriveLabels, formatLabels, LABELS_FILE } from '../dataset';
import { TFRecordWriter } from '../tfrecord';
import { mulberry32, shuffled } from '../random';
import { shardName, planShards, defaultShardCount, Split, ShardSplit } from './shards';
import type { WorkerTask } from './worker';
import type { ImageRecordResult, ReencodeReason } from './image';

export interface PreprocessOptions {
  /** The codelab's train_set.csv, or (without validationCsv) an AutoML CSV, `[ML_USE,]GCS_FILE_PATH,LABEL`. */
  trainCsv: string;
  /** The codelab's eval_set.csv; leave out for an AutoML CSV, whose ML_USE column says where each row goes. */
  validationCsv?: string;
  /** Rows held out as the test split (test-*-of-* shards), never trained on; with validationCsv only. */
  testCsv?: string;
  /** labels.txt; when left out, the classes of the rows in code-point order, written beside the shards. */
  labelsFile?: string;
  outputDir: string;
  /** Shards per split (fewer when a split has fewer rows). Default: about 1,024 records a shard. */
  numShards?: number;
  /** Cap on the longest image side; 0 (default) keeps the original JPEG bytes. */
  resize?: number;
  /** Replace earlier outputs (train-*, validation-*, the report) in outputDir. */
  overwrite?: boolean;
  /** Fail on the first image that cannot be used instead of skipping it. */
  strict?: boolean;
  /** Worker threads; default: one per core. */
  workers?: number;
  /** Seed of the training-row shuffle that mixes classes across shards. */
  seed?: number;
  onProgress?: (p: PreprocessProgress) => void;
}

export interface PreprocessProgress {
  done: number;
  total: number;
  skipped: number;
  split: ShardSplit;
  imagesPerSecond: number;
}

export interface SkippedRow {
  split: ShardSplit;
  csv: string;
  line: number;
  path: string;
  reason: string;
}

export interface SplitReport {
  csv: string;
  rows: number;
  records: number;
  skipped: number;
  perClass: Record<string, number>;
  shards: string[];
}

/** What `preprocess_report.json` holds. No times or machine facts: it is as deterministic as the shards. */
export interface PreprocessReport {
  labels: string[];
  settings: { resize: number; seed: number; numShards: Record<Split, number> & { test?: number } };
  /** test only when there are test rows (an AutoML CSV's, or a --test_csv). */
  splits: Record<Split, SplitReport> & { test?: SplitReport };
  /** Where labels.txt came from; absent when --labels_file was given. */
  labelsDerived?: string;
  reencoded: Partial<Record<ReencodeReason, number>>;
  skipped: SkippedRow[];
  warnings: string[];
}

export interface PreprocessResult {
  outputDir: string;
  files: string[];
  reportFile: string;
  report: PreprocessReport;
  seconds: number;
  imagesPerSecond: number;
}

export const REPORT_NAME = 'preprocess_report.json';
const STAGING_PREFIX = '.imgclass-staging-';

interface Job {
  split: ShardSplit;
  row: LabeledImage;
  labelIndex: number;
}

/**
 * Run preprocessing; see PreprocessOptions. Throws UserError on bad input, leaving outputDir as it
 * was. One run per output folder: a second one stops at once (lib/folder-lock.ts).
 */
export async function preprocess(opts: PreprocessOptions): Promise<PreprocessResult> {
  return withLock(lockFolder(opts.outputDir, { command: 'imgclass preprocess', what: 'output_dir' }), () => preprocessLocked(opts));
}

async function preprocessLocked(opts: PreprocessOptions): Promise<PreprocessResult> {
  const started = Date.now();
  const seed = opts.seed ?? 42;
  const resize = opts.resize ?? 0;
  if (!Number.isInteger(resize) || resize < 0) throw new UserError(`--resize must be a whole number ≥ 0, got ${resize}`);
  if (opts.numShards !== undefined && (!Number.isInteger(opts.numShards) || opts.numShards < 1)) {
    throw new UserError(`--num_shards must be a whole number ≥ 1, got ${opts.numShards}`);
  }

  // Started first so the worker threads load (sharp, protobufjs) while the CSVs are read and checked.
  const workers = Math.max(1, opts.workers ?? os.availableParallelism());
  const pool = new Piscina({
    filename: path.join(__dirname, 'worker.js'),
    minThreads: workers,
    maxThreads: workers,
    // Most of a task waits on sharp's native threads, so a few tasks per worker keep the cores busy.
    concurrentTasksPerWorker: 4,
    idleTimeout: 1000,
  });
  let staging: Staging | undefined;
  let writer: TFRecordWriter | undefined;
  try {
  const { labels, train, validation: evalRows, test: testRows, warnings, labelsDerived } = await readLocalPreprocessInputs(opts);
  await checkOutputDir(opts.outputDir, !!opts.overwrite);

  const labelIndex = new Map(labels.map((l, i) => [l, i]));
  const splits: Record<ShardSplit, LabeledImage[]> = {
    // Shuffled so each shard mixes every class, as a trainer reading a few shards at a time expects.
    train: shuffled(train, mulberry32(seed)),
    validation: evalRows,
    test: testRows,
  };
  // The test split only when it has rows, so the codelab's two-CSV form writes exactly what it did.
  const splitNames: ShardSplit[] = testRows.length > 0 ? ['train', 'validation', 'test'] : ['train', 'validation'];
  const count = (split: ShardSplit): number => planShards(splits[split].length, opts.numShards ?? defaultShardCount(splits[split].length)).length;
  const shardCount: Record<Split, number> & { test?: number } = { train: count('train'), validation: count('validation') };
  if (testRows.length > 0) shardCount.test = count('test');

  staging = await makeStaging(opts.outputDir);
  const stagingDir = staging.dir;
  const report: PreprocessReport = {
    labels,
    settings: { resize, seed, numShards: shardCount },
    splits: {
      train: emptySplitReport(opts.trainCsv, splits.train.length, labels),
      validation: emptySplitReport(opts.validationCsv ?? opts.trainCsv, splits.validation.length, labels),
      ...(testRows.length > 0 ? { test: emptySplitReport(opts.testCsv ?? opts.trainCsv, testRows.length, labels) } : {}),
    },
    ...(labelsDerived ? { labelsDerived } : {}),
    reencoded: {},
    skipped: [],
    warnings,
  };
  const staged: string[] = [];
    const total = splitNames.reduce((n, split) => n + splits[split].length, 0);
    let done = 0;
    for (const split of splitNames) {
      const rows = splits[split];
      const sr = report.splits[split]!;
      const plan = planShards(rows.length, shardCount[split]!);
      const jobs: Job[] = rows.map((row) => ({ split, row, labelIndex: labelIndex.get(row.label) as number }));
      let shard = -1;
      await runOrdered(
        jobs,
        workers * 8,
        (job) => pool.run({ path: job.row.path, label: job.row.label, labelIndex: job.labelIndex, resize } satisfies WorkerTask) as Promise<ImageRecordResult>,
        async (result, i) => {
          while (shard < 0 || i >= (plan[shard] as { end: number }).end) {
            if (writer) await writer.close();
            shard++;
            const name = shardName(split, shard, plan.length);
            staged.push(name);
            sr.shards.push(name);
            writer = await TFRecordWriter.create(path.join(stagingDir, name));
          }
          const job = jobs[i] as Job;
          if (result.ok) {
            await (writer as TFRecordWriter).write(result.example);
            sr.records++;
            sr.perClass[job.row.label] = (sr.perClass[job.row.label] ?? 0) + 1;
            if (result.reencoded) report.reencoded[result.reencoded] = (report.reencoded[result.reencoded] ?? 0) + 1;
          } else {
            const skip: SkippedRow = { split, csv: job.row.source, line: job.row.line, path: job.row.path, reason: result.reason };
            if (opts.strict) {
              throw new UserError(`${skip.csv}:${skip.line}: ${skip.path}: ${skip.reason} (--strict: stopping; fix or remove the row, or run without --strict to skip it)`);
            }
            report.skipped.push(skip);
            sr.skipped++;
          }
          done++;
          opts.onProgress?.({ done, total, skipped: report.skipped.length, split, imagesPerSecond: done / ((Date.now() - started) / 1000) });
        },
      );
      // A split with no rows still gets its (empty) shard, so readers find both splits.
      while (sr.shards.length < plan.length) {
        if (writer) await writer.close();
        const name = shardName(split, sr.shards.length, plan.length);
        staged.push(name);
        sr.shards.push(name);
        writer = await TFRecordWriter.create(path.join(stagingDir, name));
      }
      if (writer) await writer.close();
      writer = undefined;
    }
    for (const label of labels) {
      if (!report.splits.train.perClass[label]) report.warnings.push(`class "${label}" has no training records left after skipping unreadable images`);
    }
    if (labelsDerived) {
      await fsp.writeFile(path.join(stagingDir, LABELS_FILE), formatLabels(labels)).catch((err: unknown) => {
        throw storage.writeError(err, storage.joinPath(opts.outputDir, LABELS_FILE));
      });
      staged.push(LABELS_FILE);
    }
    const reportJson = JSON.stringify(report, null, 2) + '\n';
    await fsp.writeFile(path.join(stagingDir, REPORT_NAME), reportJson).catch((err: unknown) => {
      throw storage.writeError(err, storage.joinPath(opts.outputDir, REPORT_NAME));
    });
    staged.push(REPORT_NAME);
    const files = await commitStaging(stagingDir, opts.outputDir, staged, !!opts.overwrite);
    const seconds = (Date.now() - started) / 1000;
    return {
      outputDir: opts.outputDir,
      files,
      reportFile: storage.joinPath(opts.outputDir, REPORT_NAME),
      report,
      seconds,
      imagesPerSecond: total / seconds,
    };
  } catch (err) {
    if (writer) await writer.abort();
    throw stagedAsFinal(err, staging, opts.outputDir);
  } finally {
    await pool.destroy();
    if (staging) {
      await fsp.rm(staging.dir, { recursive: true, force: true });
      if (staging.createdOutputDir) await fsp.rmdir(opts.outputDir).catch(() => undefined);
    }
  }
}

/**
 * A failed write of a staged shard, told about the output it was to become: locally the staging
 * folder is inside outputDir (same disk, same permissions). For gs:// outputs the staging folder is
 * the OS temp folder, which is then what is full, so the error stays as it is.
 */
function stagedAsFinal(err: unknown, staging: Staging | undefined, outputDir: string): unknown {
  if (!(err instanceof storage.WriteError) || !staging || storage.isGcsPath(outputDir)) return err;
  if (!err.path.startsWith(staging.dir + path.sep)) return err;
  return new storage.WriteError(storage.joinPath(outputDir, path.relative(staging.dir, err.path)), err.code);
}

export interface PreprocessInputs {
  labels: string[];
  train: LabeledImage[];
  validation: LabeledImage[];
  /** The CSV checks' warnings (trimmed labels, duplicates, classes without eval rows, leakage). */
  warnings: string[];
}

/**
 * labels.txt and the two CSVs, read and checked against each other: what every backend checks
 * before it converts anything, so a bad row is reported with the same file:line wherever it runs.
 */
export async function readPreprocessInputs(opts: { trainCsv: string; validationCsv: string; labelsFile: string }): Promise<PreprocessInputs> {
  const labels = await readLabels(opts.labelsFile);
  const trainCsv = await readLabeledCsv(opts.trainCsv);
  const evalCsv = await readLabeledCsv(opts.validationCsv);
  const warnings = [
    ...trainCsv.warnings,
    ...evalCsv.warnings,
    ...validateDataset({ train: trainCsv.rows, eval: evalCsv.rows, labels, labelsFile: opts.labelsFile }).warnings,
  ];
  return { labels, train: trainCsv.rows, validation: evalCsv.rows, warnings };
}

export interface LocalPreprocessInputs extends PreprocessInputs {
  test: LabeledImage[];
  /** Set when labels.txt was derived from the rows (no labelsFile): what the derivation read. */
  labelsDerived?: string;
}

/**
 * What local preprocessing reads: the codelab's two CSVs (plus an optional test CSV), or one AutoML
 * CSV whose ML_USE column places each row; labels.txt given, or derived from the rows.
 */
export async function readLocalPreprocessInputs(opts: Pick<PreprocessOptions, 'trainCsv' | 'validationCsv' | 'testCsv' | 'labelsFile' | 'seed'>): Promise<LocalPreprocessInputs> {
  // labels.txt first, as the codelab's form always read it: a missing file is the first complaint.
  const givenLabels = opts.labelsFile !== undefined ? await readLabels(opts.labelsFile) : undefined;
  let train: LabeledImage[];
  let validation: LabeledImage[];
  let test: LabeledImage[] = [];
  const warnings: string[] = [];
  if (opts.validationCsv === undefined) {
    if (opts.testCsv !== undefined) {
      throw new UserError('--test_csv goes with --validation_csv (the codelab\'s CSVs); an AutoML CSV given alone as --train_csv places its test rows with its ML_USE column');
    }
    const automl = await readAutoMlCsv(opts.trainCsv, { seed: opts.seed });
    ({ train, validation, test } = automl);
    warnings.push(...automl.warnings);
  } else {
    const read = await Promise.all([opts.trainCsv, opts.validationCsv, ...(opts.testCsv ? [opts.testCsv] : [])].map(readLabeledCsv));
    [train, validation, test = []] = read.map((r) => r.rows) as [LabeledImage[], LabeledImage[], LabeledImage[]?];
    for (const r of read) warnings.push(...r.warnings);
  }
  const labelsFile = opts.labelsFile;
  const labels = givenLabels ?? deriveLabels([...train, ...validation, ...test]);
  const labelsSource = labelsFile ?? `the classes of ${opts.validationCsv === undefined ? opts.trainCsv : 'the CSVs'}`;
  warnings.push(...validateDataset({ train, eval: validation, labels, labelsFile: labelsSource }).warnings);
  if (test.length > 0) {
    // The test split is checked for unknown labels and leakage; a class without test rows is no warning.
    const t = validateDataset({ train, eval: test, labels, labelsFile: labelsSource }).warnings;
    warnings.push(...t.filter((w) => w.includes('also in training')).map((w) => w.replace('eval accuracy', 'test accuracy')));
  }
  return { labels, train, validation, test, warnings, ...(labelsFile === undefined ? { labelsDerived: labelsSource } : {}) };
}

function emptySplitReport(csv: string, rows: number, labels: string[]): SplitReport {
  return { csv, rows, records: 0, skipped: 0, perClass: Object.fromEntries(labels.map((l) => [l, 0])), shards: [] };
}

/**
 * Run `start` over items with at most `window` in flight, and `consume` the results strictly in
 * item order (the order records are written in, which keeps output deterministic).
 */
async function runOrdered<T, R>(
  items: T[],
  window: number,
  start: (item: T, i: number) => Promise<R>,
  consume: (result: R, i: number) => Promise<void>,
): Promise<void> {
  const pending = new Map<number, Promise<R>>();
  let next = 0;
  try {
    for (let i = 0; i < items.length; i++) {
      while (next < items.length && next < i + window) {
        const p = start(items[next] as T, next);
        p.catch(() => undefined); // awaited in order below; this only silences early rejections
        pending.set(next, p);
        next++;
      }
      const result = await (pending.get(i) as Promise<R>);
      pending.delete(i);
      await consume(result, i);
    }
  } finally {
    await Promise.allSettled(pending.values());
  }
}

/** Refuse to mix our outputs with an earlier run's unless asked (the tutorial's clobbering warning). */
export async function checkOutputDir(dir: string, overwrite: boolean): Promise<void> {
  if (overwrite) return;
  const existing = (await storage.list(dir)).filter((f) => !f.includes(`/${STAGING_PREFIX}`) && !isLockClaim(f));
  if (existing.length > 0) {
    throw new UserError(
      `output folder ${dir} is not empty (${existing.length} file${existing.length === 1 ? '' : 's'}, e.g. ${storage.baseName(existing[0] as string)}); ` +
        `choose an empty folder, or pass --overwrite to replace earlier train-*/validation-* shards`,
    );
  }
}

interface Staging {
  dir: string;
  createdOutputDir: boolean;
}

/**
 * A private folder for the shards being written: inside a local output folder (same file system,
 * so moving into place is a rename), in the OS temp folder for gs:// outputs. Staging folders left
 * by a killed earlier run (their process is gone) are removed.
 */
async function makeStaging(outputDir: string): Promise<Staging> {
  try {
    return await makeStagingIn(outputDir);
  } catch (err) {
    throw storage.writeError(err, outputDir);
  }
}

async function makeStagingIn(outputDir: string): Promise<Staging> {
  const name = `${STAGING_PREFIX}${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  if (storage.isGcsPath(outputDir)) {
    return { dir: await fsp.mkdtemp(path.join(os.tmpdir(), name)), createdOutputDir: false };
  }
  let createdOutputDir = false;
  try {
    await fsp.access(outputDir);
  } catch {
    createdOutputDir = true;
  }
  await fsp.mkdir(outputDir, { recursive: true });
  for (const entry of await fsp.readdir(outputDir)) {
    const m = new RegExp(`^${STAGING_PREFIX.replace('.', '\\.')}(\\d+)-`).exec(entry);
    if (m && !storage.processAlive(Number(m[1]))) await fsp.rm(path.join(outputDir, entry), { recursive: true, force: true });
  }
  const dir = path.join(outputDir, name);
  await fsp.mkdir(dir);
  return { dir, createdOutputDir };
}

/**
 * Move every staged file into outputDir, then (when overwriting) remove the earlier run's shards
 * that the new run did not replace. New files go in first, so a crash part-way leaves whole files
 * only, never a folder without shards.
 */
async function commitStaging(stagingDir: string, outputDir: string, names: string[], overwrite: boolean): Promise<string[]> {
  const old = overwrite
    ? (await Promise.all(['train-*', 'validation-*', 'test-*'].map((g) => storage.glob(storage.joinPath(outputDir, g))))).flat()
    : [];
  const out: string[] = [];
  for (const name of names) {
    const dest = storage.joinPath(outputDir, name);
    await storage.commitFile(path.join(stagingDir, name), dest);
    out.push(dest);
  }
  for (const f of old) if (!out.includes(f)) await storage.remove(f);
  return out;
}
