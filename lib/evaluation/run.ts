/**
 * `imgclass evaluate`: the exported model over one held-out split (validation, or the test split an
 * AutoML CSV gives), run as the prediction server runs it (same preprocessing read from the export,
 * same classifier). Writes the predictions (so anyone can recompute a figure, as the tests do with
 * scikit-learn) and evaluation.json into the export's version folder, beside the model it describes.
 */
import { loadExport } from '../export';
import { chooseBackend, BackendName } from '../engine/backend';
import { makeClassifier } from '../serve/classifier';
import { evalBatches } from '../train/input';
import { normalizeInto } from '../train/preprocessing';
import { UserError } from '../errors';
import * as storage from '../storage';
import { argmaxOf, computeMetrics, Metrics, PrCurve, Predictions } from './metrics';

export type EvalSplit = 'validation' | 'test';
export const EVALUATION_FILE = 'evaluation.json';
/** Default confidence threshold: a guess below it is reported as "don't know" when serving with it. */
export const DEFAULT_THRESHOLD = 0.5;
export const DEFAULT_GALLERY = 12;

export interface EvaluateOptions {
  /** Export root (newest version) or one version folder; local or gs://. */
  modelDir: string;
  /** Folder with the split's shards. */
  dataDir: string;
  split?: EvalSplit;
  /** Confidence threshold of the accuracy/coverage figure; saved with the results. Default 0.5. */
  threshold?: number;
  /** How many of the most confidently wrong images to keep. Default 12. */
  gallerySize?: number;
  batchSize?: number;
  backend?: BackendName;
  /** Write evaluation.json and the predictions file (default true). */
  save?: boolean;
  /** Images evaluated so far, of `total` in the split. */
  onProgress?: (done: number, total: number) => void;
}

/** One confidently wrong image: what it is, what the model said, and how sure it was. */
export interface Mistake {
  record: string;
  true_label: string;
  predicted_label: string;
  probability: number;
  /** The encoded image from the TFRecord (not saved in evaluation.json). */
  image: Uint8Array;
}

export interface Evaluation extends Metrics {
  split: EvalSplit;
  labels: string[];
  /** The export's version folder name, and the folder. */
  version: string;
  model_path: string;
  data_dir: string;
  pr_curves: PrCurve[];
  mistakes: Mistake[];
  /** Where evaluation.json and the predictions went (when saved). */
  files: { evaluation?: string; predictions?: string };
}

/**
 * A gcp export is a TensorFlow SavedModel, which TensorFlow.js cannot run: say so before loading
 * fails with a less helpful "model.json missing".
 */
export async function refuseSavedModel(dir: string): Promise<void> {
  let savedModel: boolean;
  if (await storage.exists(storage.joinPath(dir, 'model.json'))) savedModel = false;
  else if (await storage.exists(storage.joinPath(dir, 'saved_model.pb'))) savedModel = true;
  else {
    // An export root: the newest version decides, as loadExport takes the newest.
    const files = await storage.list(dir);
    const newest = (name: string): number =>
      Math.max(-1, ...files.map((f) => new RegExp(`/(\\d+)/${name}$`).exec(f)?.[1]).filter((v): v is string => !!v).map(Number));
    savedModel = newest('saved_model\\.pb') > newest('model\\.json');
  }
  if (savedModel) {
    throw new UserError(
      `${dir} holds a TensorFlow SavedModel (saved_model.pb, what training on gcp exports); TensorFlow.js cannot run it, so it cannot be evaluated here. ` +
        'Evaluate a model trained with --backend local, or deploy this one (imgclass deploy --backend gcp) and send it the test images with imgclass predict',
    );
  }
}

/** Run the export over every record of the split; the predictions and the N most confident mistakes. */
async function predictSplit(o: EvaluateOptions): Promise<{ predictions: Predictions; records: string[]; mistakes: Mistake[]; version: string; modelPath: string }> {
  const batchSize = o.batchSize ?? 32;
  const gallerySize = o.gallerySize ?? DEFAULT_GALLERY;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new UserError(`batch size must be a whole number ≥ 1, got ${batchSize}`);
  if (!Number.isInteger(gallerySize) || gallerySize < 0) throw new UserError(`gallery size must be a whole number ≥ 0, got ${gallerySize}`);
  await refuseSavedModel(o.modelDir);
  await chooseBackend(o.backend);
  const classifier = makeClassifier(await loadExport(o.modelDir));
  try {
    const { settings, labels } = classifier;
    const pixels = settings.imageSize * settings.imageSize * 3;
    const trueClass: number[] = [];
    const probabilities: number[][] = [];
    const records: string[] = [];
    let mistakes: Mistake[] = [];
    let total = 0;
    for await (const b of evalBatches({ dataDir: o.dataDir, split: o.split ?? 'validation', imageSize: settings.imageSize, batchSize, settings, numClasses: labels.length, keepEncoded: true, onCount: (n) => (total = n) })) {
      const inputs = Array.from({ length: b.size }, (_, i) => normalizeInto(b.images.subarray(i * pixels, (i + 1) * pixels), new Float32Array(pixels), settings));
      classifier.classify(inputs).forEach((probs, i) => {
        const row = Array.from(probs);
        const t = b.labels[i]!;
        const k = argmaxOf(row);
        trueClass.push(t);
        probabilities.push(row);
        records.push(b.records![i]!);
        if (k !== t && gallerySize > 0) {
          mistakes.push({ record: b.records![i]!, true_label: labels[t]!, predicted_label: labels[k]!, probability: row[k]!, image: b.encoded![i]! });
          // Kept to the N most confident as we go, so a large split does not hold every wrong image's bytes.
          if (mistakes.length > 2 * gallerySize) mistakes = topMistakes(mistakes, gallerySize);
        }
      });
      o.onProgress?.(trueClass.length, total);
    }
    if (trueClass.length === 0) {
      const split = o.split ?? 'validation';
      throw new UserError(
        `${o.dataDir} has no ${split} records to evaluate; ` +
          (split === 'test' ? 'preprocess an AutoML CSV with TEST (or UNASSIGNED) rows, or a --test_csv' : 'preprocess an eval_set.csv with rows'),
      );
    }
    return { predictions: { labels, trueClass, probabilities }, records, mistakes: topMistakes(mistakes, gallerySize), version: classifier.version, modelPath: classifier.path };
  } finally {
    classifier.dispose();
  }
}

/** Most confident first; on equal probability, in record order (the sort is stable). */
function topMistakes(m: Mistake[], n: number): Mistake[] {
  return [...m].sort((a, b) => b.probability - a.probability).slice(0, n);
}

/** Evaluate the export on a split: every figure, the PR curves and the gallery; saved beside the model. */
export async function evaluateModel(o: EvaluateOptions): Promise<Evaluation> {
  const split = o.split ?? 'validation';
  if (split !== 'validation' && split !== 'test') throw new UserError(`--split "${String(split)}" is not known: use validation or test`);
  const threshold = o.threshold ?? DEFAULT_THRESHOLD;
  if (!(threshold >= 0 && threshold <= 1)) throw new UserError(`--confidence_threshold must be between 0 and 1, got ${threshold}`);
  const run = await predictSplit(o);
  const { metrics, curves } = computeMetrics(run.predictions, threshold);
  const evaluation: Evaluation = {
    split,
    labels: [...run.predictions.labels],
    version: run.version,
    model_path: run.modelPath,
    data_dir: o.dataDir,
    ...metrics,
    pr_curves: curves,
    mistakes: run.mistakes,
    files: {},
  };
  if (o.save ?? true) evaluation.files = await saveEvaluation(evaluation, run.predictions, run.records);
  return evaluation;
}

/** evaluation.json's form: the figures of each split evaluated, under its name, and the threshold. */
export interface EvaluationFile {
  version: string;
  threshold: number;
  splits: Partial<Record<EvalSplit, Omit<Evaluation, 'mistakes' | 'files' | 'model_path'> & { mistakes: Omit<Mistake, 'image'>[] }>>;
}

/** The figures as saved and as `--json` prints them: everything but the image bytes. */
export function evaluationJson(e: Evaluation): Omit<Evaluation, 'mistakes' | 'files' | 'model_path'> & { mistakes: Omit<Mistake, 'image'>[] } {
  const { mistakes, files: _f, model_path: _m, ...rest } = e;
  return { ...rest, mistakes: mistakes.map(({ image: _i, ...m }) => m) };
}

/**
 * evaluation.json (merged: evaluating the test split keeps the validation figures) and
 * predictions-<split>.jsonl, one {"record", "true", "probabilities"} line per image. Both are
 * results recomputed on every run, so they are replaced, each through a temporary name.
 */
async function saveEvaluation(e: Evaluation, p: Predictions, records: string[]): Promise<{ evaluation: string; predictions: string }> {
  const evaluationPath = storage.joinPath(e.model_path, EVALUATION_FILE);
  const predictionsPath = storage.joinPath(e.model_path, `predictions-${e.split}.jsonl`);
  let previous: EvaluationFile | undefined;
  if (await storage.exists(evaluationPath)) {
    try {
      previous = JSON.parse(await storage.readText(evaluationPath)) as EvaluationFile;
    } catch {
      previous = undefined; // a damaged earlier file is replaced, not merged
    }
  }
  const file: EvaluationFile = {
    version: e.version,
    threshold: e.at_threshold.threshold,
    splits: { ...(previous?.version === e.version ? previous.splits : {}), [e.split]: evaluationJson(e) },
  };
  const lines = p.trueClass.map((t, i) => JSON.stringify({ record: records[i], true: t, probabilities: p.probabilities[i] })).join('\n') + '\n';
  await storage.writeFile(predictionsPath, lines, { overwrite: true });
  await storage.writeFile(evaluationPath, JSON.stringify(file, null, 1) + '\n', { overwrite: true });
  return { evaluation: evaluationPath, predictions: predictionsPath };
}

/** A few lines for a terminal or a notebook: the headline figures, per class, and what is confused most. */
export function formatEvaluation(e: Evaluation): string {
  const pct = (v: number | null): string => (v === null ? '   -' : `${(100 * v).toFixed(1)}`);
  const w = Math.max(5, ...e.labels.map((l) => l.length), 'weighted'.length);
  const at = e.at_threshold;
  const lines = [
    `${e.split}: ${e.count} images, export version ${e.version}`,
    `top-1 ${pct(e.top1)} %, top-5 ${pct(e.top5)} %, mean average precision ${e.mean_average_precision === null ? '-' : e.mean_average_precision.toFixed(3)}`,
    `at confidence >= ${at.threshold}: top-1 ${pct(at.top1)} % on ${pct(at.coverage)} % of the images (${at.answered} answered)`,
    '',
    `${'class'.padEnd(w)}  precision  recall     f1  support     AP`,
    ...e.per_class.map(
      (c) => `${c.label.padEnd(w)}  ${c.precision.toFixed(3).padStart(9)}  ${c.recall.toFixed(3).padStart(6)}  ${c.f1.toFixed(3).padStart(5)}  ${String(c.support).padStart(7)}  ${c.average_precision === null ? '    -' : c.average_precision.toFixed(3).padStart(5)}`,
    ),
    ...(['macro', 'weighted'] as const).map(
      (k) => `${k.padEnd(w)}  ${e[k].precision.toFixed(3).padStart(9)}  ${e[k].recall.toFixed(3).padStart(6)}  ${e[k].f1.toFixed(3).padStart(5)}  ${String(e.count).padStart(7)}`,
    ),
    '',
    e.most_confused.length > 0
      ? `most confused (true → predicted): ${e.most_confused.slice(0, 5).map((m) => `${m.true_label} → ${m.predicted_label} (${m.count})`).join(', ')}`
      : 'no confusions: every image is right',
  ];
  if (e.files.evaluation) lines.push(`saved: ${e.files.evaluation}, ${e.files.predictions}`);
  return lines.join('\n') + '\n';
}
