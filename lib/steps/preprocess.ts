/**
 * Notebooks 04 and 05 (sections 4 and 5, preprocessing): a small sample first, to see the format,
 * then the whole data set on every core (local) or on Dataflow (gcp), with a progress display.
 */
import * as storage from '../storage';
import { UserError } from '../errors';
import { readLabeledCsv, writeCsv, readLabels, writeLabels, TRAIN_CSV, EVAL_CSV, LABELS_FILE, LabeledImage } from '../dataset';
import { preprocess, PreprocessOptions, PreprocessResult, PreprocessReport } from '../preprocess';
import { readRecordFile } from '../tfrecord';
import { decodeExample, DecodedFeature } from '../example';
import { imageGrid } from '../image-grid';
import { notebookProgress } from '../notebook-progress';
import type { PerClassCounts } from '../charts/specs';
import { backendOf, Settings } from './settings';
import { isPreprocessed } from '../backend';
import type { Backend, PreprocessRequest, PreprocessOutcome } from '../backend';
import { interruptSignal } from '../cloud/dataflow/interrupt';
import { showChart } from '../charts/display';
import { imagesPerClass } from '../charts/specs';

/**
 * preprocess() with a progress bar in the cell, redrawn a few times a second. The bar appears with
 * the first progress report: a Dataflow job reports through its own lines and status instead.
 */
export async function preprocessWithProgress(opts: PreprocessRequest & { backend: Backend }, label?: string): Promise<PreprocessOutcome>;
export async function preprocessWithProgress(opts: PreprocessOptions, label?: string): Promise<PreprocessResult>;
export async function preprocessWithProgress(opts: PreprocessRequest & { backend?: Backend }, label = 'preprocess'): Promise<PreprocessOutcome> {
  let bar: ReturnType<typeof notebookProgress> | undefined;
  const { backend, ...rest } = opts;
  const run = backend ? backend.preprocess.bind(backend) : preprocess;
  try {
    const r = await run({
      ...rest,
      onProgress: (p) => {
        bar ??= notebookProgress(label);
        bar.update(p.done, p.total, `${p.imagesPerSecond.toFixed(0)} images/s, ${p.skipped} skipped`);
      },
    });
    if (isPreprocessed(r)) bar?.finish(`${r.imagesPerSecond.toFixed(0)} images/s, ${r.report.skipped.length} skipped, ${r.seconds.toFixed(1)} s`);
    return r;
  } catch (err) {
    bar?.finish('failed');
    throw err;
  }
}

export interface SampleDataset {
  trainCsv: string;
  evalCsv: string;
  labelsFile: string;
  trainRows: number;
  evalRows: number;
}

function firstPerClass(rows: LabeledImage[], perClass: number): LabeledImage[] {
  const seen = new Map<string, number>();
  return rows.filter((r) => {
    const n = seen.get(r.label) ?? 0;
    seen.set(r.label, n + 1);
    return n < perClass;
  });
}

/**
 * A small copy of WORK/dataset in WORK/dataset-sample: the first `perClass` training and eval rows of
 * each class (as the codelab tries its preprocessing on the first rows of train_set.csv).
 */
export async function writeSampleDataset(s: Settings, perClass: number): Promise<SampleDataset> {
  if (!Number.isInteger(perClass) || perClass < 1) throw new UserError(`sample_per_class must be a whole number ≥ 1, got ${perClass}`);
  if (!(await storage.exists(s.paths.trainCsv))) {
    throw new UserError(`${s.paths.trainCsv} does not exist: run 01-data first (it writes the data set into the work folder)`);
  }
  const train = firstPerClass((await readLabeledCsv(s.paths.trainCsv)).rows, perClass);
  const evalRows = firstPerClass((await readLabeledCsv(s.paths.evalCsv)).rows, perClass);
  const out = {
    trainCsv: storage.joinPath(s.paths.datasetSample, TRAIN_CSV),
    evalCsv: storage.joinPath(s.paths.datasetSample, EVAL_CSV),
    labelsFile: storage.joinPath(s.paths.datasetSample, LABELS_FILE),
  };
  await storage.makeDir(s.paths.datasetSample);
  await writeCsv(out.trainCsv, train, { overwrite: true });
  await writeCsv(out.evalCsv, evalRows, { overwrite: true });
  await writeLabels(out.labelsFile, await readLabels(s.paths.labels), { overwrite: true });
  return { ...out, trainRows: train.length, evalRows: evalRows.length };
}

/** Notebook 04: preprocess the sample into WORK/tfrecords-sample (replacing an earlier one). */
export async function preprocessSample(s: Settings, sample: SampleDataset): Promise<PreprocessResult> {
  return preprocessWithProgress(
    { trainCsv: sample.trainCsv, validationCsv: sample.evalCsv, labelsFile: sample.labelsFile, outputDir: s.paths.tfrecordsSample, overwrite: true },
    'preprocess sample',
  );
}

export interface AtScaleOptions {
  /** local: worker threads; 0: one per core. */
  workers?: number;
  /** Shards per split; 0: about 1,024 images a shard. */
  numShards?: number;
  /** gcp: most Dataflow workers; 0: Dataflow's own cap. */
  maxWorkers?: number;
  /** gcp: the service account the workers run as; empty: Compute Engine's default one. */
  serviceAccount?: string;
  /** gcp: false returns once the job is launched; default true. */
  wait?: boolean;
  /** gcp: a notebook interrupt (the stop button) cancels the job; otherwise it is left running. */
  cancelOnInterrupt?: boolean;
}

/**
 * Notebook 05: the whole data set into WORK/tfrecords, replacing earlier shards. local: every core;
 * gcp: a Dataflow job, followed in the cell (a dry run shows it and sends nothing).
 */
export async function preprocessAtScale(s: Settings, o: AtScaleOptions = {}): Promise<PreprocessOutcome> {
  // A dry run reads nothing (a read is a request too); the backend says what it did not check.
  if (!s.dryRun && !(await storage.exists(s.paths.trainCsv))) {
    throw new UserError(`${s.paths.trainCsv} does not exist: run 01-data first (it writes the data set into the work folder)`);
  }
  // The kernel gets SIGINT from the stop button; tslab stops the cell, and this stops the wait.
  const interrupt = interruptSignal(false);
  try {
    return await preprocessWithProgress({
      backend: backendOf(s),
      trainCsv: s.paths.trainCsv,
      validationCsv: s.paths.evalCsv,
      labelsFile: s.paths.labels,
      outputDir: s.paths.tfrecords,
      overwrite: true,
      workers: o.workers || undefined,
      numShards: o.numShards || undefined,
      maxWorkers: o.maxWorkers || undefined,
      serviceAccount: o.serviceAccount?.trim() || undefined,
      wait: o.wait,
      signal: interrupt.signal,
      confirmCancel: async () => o.cancelOnInterrupt === true,
    });
  } finally {
    interrupt.dispose();
  }
}

/** Records per class and split from a preprocess report, in the shape the images-per-class chart takes. */
export function recordsPerClass(report: PreprocessReport): PerClassCounts {
  return {
    perClass: report.labels.map((label) => ({
      label,
      train: report.splits.train.perClass[label] ?? 0,
      eval: report.splits.validation.perClass[label] ?? 0,
    })),
  };
}

/** The records-per-class chart of a finished run; a launched job (not waited for, or a dry run) has none yet. */
export function recordsChart(r: PreprocessOutcome, title = 'Records per class (train + validation)'): Promise<void> {
  if (!isPreprocessed(r)) {
    process.stdout.write('no records to chart yet: the job was not waited for\n');
    return Promise.resolve();
  }
  return showChart(imagesPerClass(recordsPerClass(r.report), { title }));
}

/** The report as text: records per class and split, shards, skipped rows, speed; or the job launched. */
export function formatPreprocessResult(r: PreprocessOutcome): string {
  if (!isPreprocessed(r)) {
    const head = r.dryRun
      ? `dry run: nothing was sent; the job would be ${r.launched.name}, writing into ${r.outputDir}`
      : `Dataflow job ${r.launched.name} (${r.launched.id}) is running, not waited for; it writes into ${r.outputDir}\nconsole: ${r.launched.consoleUrl}`;
    // The gcloud lines in r.next were shown with the job's other lines above.
    return `${head}\n`;
  }
  const rep = r.report;
  const per = recordsPerClass(rep).perClass;
  const w = Math.max(5, ...per.map((c) => c.label.length));
  const lines = [
    `${'class'.padEnd(w)}  train  validation`,
    ...per.map((c) => `${c.label.padEnd(w)}  ${String(c.train).padStart(5)}  ${String(c.eval).padStart(10)}`),
    `${'total'.padEnd(w)}  ${String(rep.splits.train.records).padStart(5)}  ${String(rep.splits.validation.records).padStart(10)}`,
    '',
    `shards: ${[...rep.splits.train.shards, ...rep.splits.validation.shards].join(', ')}`,
    `skipped: ${rep.skipped.length}${rep.skipped.map((k) => `\n  ${k.csv}:${k.line} ${k.path}: ${k.reason}`).join('')}`,
  ];
  const re = Object.entries(rep.reencoded).map(([k, v]) => `${v} ${k}`).join(', ');
  if (re) lines.push(`re-encoded as RGB JPEG: ${re}`);
  for (const warning of rep.warnings) lines.push(`warning: ${warning}`);
  lines.push(`${r.imagesPerSecond.toFixed(1)} images/s (${r.seconds.toFixed(1)} s); report: ${r.reportFile}`);
  return lines.join('\n') + '\n';
}

export interface RecordView {
  file: string;
  index: number;
  /** Feature keys, sorted. */
  keys: string[];
  label: number;
  synset: string;
  filename: string;
  width: number;
  height: number;
  /** Size of the serialized tf.train.Example. */
  bytes: number;
  /** image/encoded: the JPEG. */
  image: Buffer;
}

function first(f: DecodedFeature | undefined): Buffer | number | undefined {
  if (!f) return undefined;
  if ('bytes' in f) return f.bytes[0];
  if ('int64' in f) return f.int64[0];
  return f.float[0];
}

/** The first `count` records of the first train shard in `dir`, decoded: proof of the format. */
export async function readBackRecords(dir: string, count = 3): Promise<RecordView[]> {
  const shards = (await storage.glob(storage.joinPath(dir, 'train-*'))).sort();
  if (shards.length === 0) throw new UserError(`no train-* shards in ${dir}: run the preprocessing cell first`);
  const out: RecordView[] = [];
  for await (const rec of readRecordFile(shards[0]!)) {
    const where = `record ${out.length} of ${shards[0]}`;
    const ex = decodeExample(rec, where);
    const str = (k: string): string => String(first(ex[k]) ?? '');
    const num = (k: string): number => Number(first(ex[k]) ?? NaN);
    out.push({
      file: shards[0]!,
      index: out.length,
      keys: Object.keys(ex).sort(),
      label: num('image/class/label'),
      synset: str('image/class/synset'),
      filename: str('image/filename'),
      width: num('image/width'),
      height: num('image/height'),
      bytes: rec.length,
      image: Buffer.from(first(ex['image/encoded']) as Buffer),
    });
    if (out.length >= count) break;
  }
  return out;
}

/** The records as text: where each is, its keys, label and sizes. */
export function formatRecords(recs: readonly RecordView[]): string {
  if (recs.length === 0) return 'no records\n';
  const keys = recs[0]!.keys;
  return (
    `${recs[0]!.file}\nfeature keys: ${keys.join(', ')}\n` +
    recs
      .map((r) => `record ${r.index}: label ${r.label} (${r.synset}), ${r.filename}, ${r.width}x${r.height}, ${r.image.length}-byte JPEG, ${r.bytes}-byte Example`)
      .join('\n') +
    '\n'
  );
}

/** The records' images, decoded from image/encoded, as a PNG grid labelled "label: synset". */
export function recordsGrid(recs: readonly RecordView[]): Promise<Buffer> {
  return imageGrid(recs.map((r) => r.image), recs.map((r) => `${r.label}: ${r.synset}`), { title: 'decoded from the TFRecords' });
}
