/** Notebook 01 (section 1, the data set): make the CSVs and labels.txt, show them and a few images. */
import { UserError } from '../errors';
import * as storage from '../storage';
import { makeDataset, formatSummary, readLabeledCsv, readLabels, MakeDatasetResult } from '../dataset';
import { imagesPerClass } from '../charts/specs';
import { showChart } from '../charts/display';
import type { Settings } from './settings';

export interface CreateDatasetOptions {
  /** A folder of class folders; '' when `csv` is used. */
  imagesDir?: string;
  /** An all-data CSV (`path,label`) to split; '' when `imagesDir` is used. Wins when both are set. */
  csv?: string;
  evalFraction?: number;
  seed?: number;
}

/**
 * The codelab's train_set.csv, eval_set.csv and labels.txt in WORK/dataset, from a folder of class
 * folders or one CSV. A notebook is run again and again, so earlier files are replaced.
 */
export async function createDataset(s: Settings, o: CreateDatasetOptions): Promise<MakeDatasetResult> {
  const csv = o.csv?.trim() || undefined;
  const imagesDir = csv ? undefined : o.imagesDir?.trim() || undefined;
  if (!csv && !imagesDir) throw new UserError('set the images_dir parameter (a folder with one sub-folder per class) or csv (a CSV of path,label rows)');
  return makeDataset({ imagesDir, csv, outputDir: s.paths.dataset, evalFraction: o.evalFraction, seed: o.seed, overwrite: true });
}

/** The per-class table, any warnings, the files written, then the images-per-class chart. */
export async function showDataset(r: MakeDatasetResult): Promise<void> {
  const warnings = r.warnings.map((w) => `warning: ${w}\n`).join('');
  process.stdout.write(`${formatSummary(r.summary)}${warnings}\nwrote ${r.trainCsv}\n      ${r.evalCsv}\n      ${r.labelsFile} (${r.summary.labels.length} classes)\n`);
  await showChart(imagesPerClass(r.summary, { title: 'Images per class (train + eval)' }));
}

export interface ImageSample {
  paths: string[];
  labels: string[];
  /** One column per class, so the grid reads as a row of examples of each. */
  columns: number;
}

/**
 * The first `perClass` images of each class in a data set CSV, ordered so that a grid with
 * `columns` columns shows one class per column (at most 8 classes, in labels.txt order when given).
 */
export async function sampleImages(csvPath: string, perClass = 2, labelsFile?: string): Promise<ImageSample> {
  if (!Number.isInteger(perClass) || perClass < 1) throw new UserError(`perClass must be a whole number ≥ 1, got ${perClass}`);
  const { rows } = await readLabeledCsv(csvPath);
  const byClass = new Map<string, string[]>();
  for (const r of rows) {
    const list = byClass.get(r.label) ?? [];
    if (list.length < perClass) list.push(r.path);
    byClass.set(r.label, list);
  }
  const order = labelsFile ? (await readLabels(labelsFile)).filter((l) => byClass.has(l)) : [...byClass.keys()];
  const classes = order.slice(0, 8);
  const paths: string[] = [];
  const labels: string[] = [];
  for (let k = 0; k < perClass; k++) {
    for (const c of classes) {
      const p = byClass.get(c)![k];
      // A class with fewer than perClass images ends early (later cells of that row shift left).
      if (p !== undefined) {
        paths.push(p);
        labels.push(c);
      }
    }
  }
  if (paths.length === 0) throw new UserError(`${csvPath} has no rows to sample`);
  return { paths, labels, columns: classes.length };
}

/** The first `n` lines of a text file (a CSV, labels.txt), to show its format. */
export async function headLines(file: string, n = 5): Promise<string> {
  const lines = (await storage.readText(file)).split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.slice(0, n).join('\n') + '\n' + (lines.length > n ? `… (${lines.length} lines in all)\n` : '');
}
