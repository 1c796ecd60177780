/**
 * Section 1 of the codelab: a data set is train_set.csv + eval_set.csv (`path,label` per line,
 * pointing at JPEGs) + labels.txt (class names; line order = class id). This module checks such a
 * set, summarises it, and makes one from a folder of class folders or one all-data CSV.
 * The pieces live in dataset-*.ts; import them from here.
 */
import { UserError } from './errors';
import * as storage from './storage';
import { readLabeledCsv, where, writeCsv, WarningList, type LabeledImage } from './dataset-csv';
import { deriveLabels, writeLabels } from './dataset-labels';
import { splitStratified } from './dataset-split';
import { csvFromFolders } from './dataset-folders';
import { hasMlUseColumn, readAutoMlCsv } from './dataset-automl';

export * from './dataset-csv';
export * from './dataset-labels';
export * from './dataset-split';
export * from './dataset-folders';
export * from './dataset-automl';

export const TRAIN_CSV = 'train_set.csv';
export const EVAL_CSV = 'eval_set.csv';
export const LABELS_FILE = 'labels.txt';
/** Written only from an AutoML CSV with TEST (or UNASSIGNED) rows. */
export const TEST_CSV = 'test_set.csv';

/** Most rows listed in one error before the rest are counted. */
const MAX_LISTED = 5;

function sourcesOf(rows: LabeledImage[], fallback: string): string {
  const s = [...new Set(rows.map((r) => r.source))];
  return s.length > 0 ? s.join(', ') : fallback;
}

export interface ValidateInput {
  train: LabeledImage[];
  eval: LabeledImage[];
  labels: string[];
  /** Where `labels` came from, for messages. */
  labelsFile: string;
}

/**
 * Check that train, eval and labels.txt agree. Errors (thrown): a row whose label is not in
 * labels.txt, fewer than 2 classes, a class with no training rows (the model could never predict
 * it). Warnings (returned): a class with no eval rows (its accuracy goes unmeasured) and an image in
 * both train and eval (leakage: eval accuracy would be overstated).
 */
export function validateDataset(input: ValidateInput): { warnings: string[] } {
  const { train, eval: evalRows, labels, labelsFile } = input;
  if (labels.length < 2) {
    throw new UserError(
      `${labelsFile} lists ${labels.length} class${labels.length === 1 ? '' : 'es'}${labels.length ? ` (${labels[0]})` : ''}; a classifier needs at least 2`,
    );
  }
  const known = new Set(labels);
  const unknown = [...train, ...evalRows].filter((r) => !known.has(r.label));
  if (unknown.length > 0) {
    const listed = unknown.slice(0, MAX_LISTED).map((r) => `${where(r.source, r.line)}: label "${r.label}" is not in ${labelsFile}`);
    if (unknown.length > MAX_LISTED) listed.push(`... and ${unknown.length - MAX_LISTED} more rows`);
    throw new UserError(`${listed.join('\n')}${listed.length === 1 ? '; ' : '\n'}add it to labels.txt or fix the row`);
  }
  const trainCount = new Map<string, number>();
  for (const r of train) trainCount.set(r.label, (trainCount.get(r.label) ?? 0) + 1);
  const trainSource = sourcesOf(train, 'the training set');
  labels.forEach((label, i) => {
    if (!trainCount.has(label)) {
      throw new UserError(
        `${labelsFile}:${i + 1}: class "${label}" has no rows in ${trainSource}; add training images of it or remove it from labels.txt`,
      );
    }
  });

  const warnings = new WarningList();
  const evalSource = sourcesOf(evalRows, 'the eval set');
  if (evalRows.length === 0) {
    warnings.add('empty eval sets', `${evalSource} has no rows; nothing will measure the model's accuracy`);
  } else {
    const evalLabels = new Set(evalRows.map((r) => r.label));
    for (const label of labels) {
      if (!evalLabels.has(label)) {
        warnings.add('classes without eval rows', `class "${label}" has no rows in ${evalSource}; its accuracy will not be measured`);
      }
    }
  }
  const trainByPath = new Map(train.map((r) => [r.path, r]));
  for (const r of evalRows) {
    const t = trainByPath.get(r.path);
    if (t) {
      warnings.add(
        'images in both train and eval',
        `${where(r.source, r.line)}: ${r.path} is also in training (${where(t.source, t.line)}); eval accuracy will be overstated`,
      );
    }
  }
  return { warnings: warnings.done() };
}

export interface DatasetSummary {
  labels: string[];
  perClass: { label: string; train: number; eval: number }[];
  totals: { train: number; eval: number };
}

/** Image counts per class (in labels.txt order) and in total. */
export function summarize(split: { train: LabeledImage[]; eval: LabeledImage[] }, labels: string[]): DatasetSummary {
  const count = (rows: LabeledImage[]): Map<string, number> => {
    const m = new Map<string, number>();
    for (const r of rows) m.set(r.label, (m.get(r.label) ?? 0) + 1);
    return m;
  };
  const t = count(split.train);
  const e = count(split.eval);
  return {
    labels: [...labels],
    perClass: labels.map((label) => ({ label, train: t.get(label) ?? 0, eval: e.get(label) ?? 0 })),
    totals: { train: split.train.length, eval: split.eval.length },
  };
}

/** The summary as an aligned plain-text table (monospace terminal or notebook output). */
export function formatSummary(summary: DatasetSummary): string {
  const rows: [string, string, string][] = [
    ['class', 'train', 'eval'],
    ...summary.perClass.map((c): [string, string, string] => [c.label, String(c.train), String(c.eval)]),
    ['total', String(summary.totals.train), String(summary.totals.eval)],
  ];
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: [string, string, string]): string =>
    `${r[0].padEnd(w[0]!)}  ${r[1].padStart(w[1]!)}  ${r[2].padStart(w[2]!)}`;
  const rule = `${'-'.repeat(w[0]!)}  ${'-'.repeat(w[1]!)}  ${'-'.repeat(w[2]!)}`;
  const body = rows.slice(1, -1).map(line);
  return [line(rows[0]!), rule, ...body, rule, line(rows[rows.length - 1]!)].join('\n') + '\n';
}

export interface MakeDatasetOptions {
  /** A folder with one sub-folder of images per class. Give this or `csv`. */
  imagesDir?: string;
  /** One CSV of all labelled images (`path,label`), to be split. Give this or `imagesDir`. */
  csv?: string;
  /** Where train_set.csv, eval_set.csv and labels.txt are written. */
  outputDir: string;
  /** Share of each class held out for eval, in (0, 1). Default 0.1. */
  evalFraction?: number;
  seed?: number;
  overwrite?: boolean;
}

export interface MakeDatasetResult {
  trainCsv: string;
  evalCsv: string;
  labelsFile: string;
  /** test_set.csv, when an AutoML CSV gave test rows. */
  testCsv?: string;
  summary: DatasetSummary;
  warnings: string[];
}

/**
 * Make the codelab's three data set files from a folder of class folders or an all-data CSV:
 * derive the classes, split each class train/eval reproducibly, check, and write. Nothing is
 * written if any output already exists (unless `overwrite`), so a hand-tuned split isn't lost.
 */
export async function makeDataset(opts: MakeDatasetOptions): Promise<MakeDatasetResult> {
  if ((opts.imagesDir === undefined) === (opts.csv === undefined)) {
    throw new UserError('give either an images folder (one sub-folder per class) or an all-data CSV, not both or neither');
  }
  const evalFraction = opts.evalFraction ?? 0.1;
  if (!(evalFraction > 0 && evalFraction < 1)) {
    throw new UserError(`eval fraction must be above 0 and below 1 (e.g. 0.1), got ${evalFraction}`);
  }
  const trainCsv = storage.joinPath(opts.outputDir, TRAIN_CSV);
  const evalCsv = storage.joinPath(opts.outputDir, EVAL_CSV);
  const labelsFile = storage.joinPath(opts.outputDir, LABELS_FILE);
  const testCsv = storage.joinPath(opts.outputDir, TEST_CSV);
  const autoMl = opts.csv !== undefined && (await hasMlUseColumn(opts.csv));
  if (!opts.overwrite) {
    for (const f of [trainCsv, evalCsv, labelsFile, ...(autoMl ? [testCsv] : [])]) {
      if (await storage.exists(f)) {
        throw new UserError(`${f} already exists; pass --overwrite (overwrite: true) to replace it`);
      }
    }
  }

  if (autoMl) return makeDatasetFromAutoMl(opts.csv!, { trainCsv, evalCsv, labelsFile, testCsv }, evalFraction, opts);
  const source = (opts.imagesDir ?? opts.csv)!;
  const read = opts.imagesDir !== undefined
    ? { rows: await csvFromFolders(opts.imagesDir), warnings: [] as string[] }
    : await readLabeledCsv(opts.csv!);
  const labels = deriveLabels(read.rows);
  if (labels.length < 2) {
    throw new UserError(`${source} has only one class ("${labels[0]}"); a classifier needs images of at least 2 classes`);
  }
  const split = splitStratified(read.rows, { evalFraction, seed: opts.seed });
  if (split.eval.length === 0) {
    throw new UserError(`${source}: every class has a single image, so none can be held out for eval; add images`);
  }
  const checked = validateDataset({ train: split.train, eval: split.eval, labels, labelsFile });

  await storage.makeDir(opts.outputDir);
  await writeCsv(trainCsv, split.train, { overwrite: opts.overwrite });
  await writeCsv(evalCsv, split.eval, { overwrite: opts.overwrite });
  await writeLabels(labelsFile, labels, { overwrite: opts.overwrite });
  return {
    trainCsv,
    evalCsv,
    labelsFile,
    summary: summarize(split, labels),
    warnings: [...read.warnings, ...checked.warnings],
  };
}

/**
 * make-dataset from an AutoML CSV with the ML_USE column: its TRAINING/VALIDATION/TEST rows go where
 * they say, UNASSIGNED rows are split with `evalFraction` each for validation and test (80/10/10).
 */
async function makeDatasetFromAutoMl(
  csv: string,
  out: { trainCsv: string; evalCsv: string; labelsFile: string; testCsv: string },
  evalFraction: number,
  opts: MakeDatasetOptions,
): Promise<MakeDatasetResult> {
  if (evalFraction >= 0.5) throw new UserError(`--eval_fraction ${evalFraction} is taken twice (validation and test) from UNASSIGNED rows; use less than 0.5`);
  const read = await readAutoMlCsv(csv, { heldOutFraction: evalFraction, seed: opts.seed });
  const labels = deriveLabels([...read.train, ...read.validation, ...read.test]);
  if (labels.length < 2) throw new UserError(`${csv} has only one class ("${labels[0]}"); a classifier needs images of at least 2 classes`);
  const checked = validateDataset({ train: read.train, eval: read.validation, labels, labelsFile: out.labelsFile });
  const testChecked = read.test.length > 0 ? validateDataset({ train: read.train, eval: read.test, labels, labelsFile: out.labelsFile }) : { warnings: [] };
  await storage.makeDir(opts.outputDir);
  await writeCsv(out.trainCsv, read.train, { overwrite: opts.overwrite });
  await writeCsv(out.evalCsv, read.validation, { overwrite: opts.overwrite });
  if (read.test.length > 0) await writeCsv(out.testCsv, read.test, { overwrite: opts.overwrite });
  await writeLabels(out.labelsFile, labels, { overwrite: opts.overwrite });
  return {
    trainCsv: out.trainCsv,
    evalCsv: out.evalCsv,
    labelsFile: out.labelsFile,
    ...(read.test.length > 0 ? { testCsv: out.testCsv } : {}),
    summary: summarize({ train: read.train, eval: read.validation }, labels),
    // The test split's own warnings: only leakage (its classes are not expected to be complete).
    warnings: [...read.warnings, ...checked.warnings, ...testChecked.warnings.filter((w) => w.includes('also in training'))],
  };
}
