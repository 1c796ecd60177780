/**
 * Notebook 06 after training: the exported model on the validation split (and, when the data has
 * one, the held-out test split, evaluated once here): the figures as text, then the per-class
 * table, the confusion matrix, the precision–recall curves and the gallery of confident mistakes.
 */
import sharp from 'sharp';
import { showChart } from '../charts/display';
import { confusionMatrix } from '../charts/specs';
import { perClassTable, precisionRecallCurves, mistakesGallery, GalleryItem } from '../charts/evaluation-specs';
import { evaluateModel, formatEvaluation, refuseSavedModel, Evaluation, EvalSplit, DEFAULT_THRESHOLD, DEFAULT_GALLERY } from '../evaluation/run';
import { listShards } from '../train/records';
import { UserError, errorMessage } from '../errors';
import { notebookProgress } from '../notebook-progress';
import type { Settings } from './settings';

export interface EvaluateParameters {
  split?: EvalSplit;
  confidence_threshold?: number;
  gallery_size?: number;
}

/** An evaluation, or why there is none (a dry run, a SavedModel, no test split). */
export type EvaluationOutcome = { evaluation: Evaluation } | { reason: string };

/** evaluateModel on WORK/export over WORK/tfrecords, saved beside the model as evaluation.json. */
export async function evaluateTrained(s: Settings, p: EvaluateParameters = {}): Promise<EvaluationOutcome> {
  const split = p.split ?? 'validation';
  if (s.dryRun) return { reason: 'dry run: nothing was trained, so there is nothing to evaluate' };
  if (split === 'test' && (await listShards(s.paths.tfrecords, 'test')).length === 0) {
    return { reason: `no test split in ${s.paths.tfrecords}: preprocess an AutoML CSV with TEST (or UNASSIGNED) rows to hold one out` };
  }
  try {
    await refuseSavedModel(s.paths.export);
  } catch (err) {
    if (err instanceof UserError) {
      return { reason: 'a Cloud TPU run exports a TensorFlow SavedModel, which TensorFlow.js does not run; deploy it (notebook 07) and ask the endpoint (notebook 08)' };
    }
    throw err;
  }
  const bar = notebookProgress(`evaluate (${split})`);
  let evaluation: Evaluation;
  try {
    evaluation = await evaluateModel({
      modelDir: s.paths.export,
      dataDir: s.paths.tfrecords,
      split,
      threshold: p.confidence_threshold ?? DEFAULT_THRESHOLD,
      gallerySize: p.gallery_size ?? DEFAULT_GALLERY,
      onProgress: (done, total) => bar.update(done, total),
    });
  } catch (err) {
    bar.finish(`failed: ${errorMessage(err).split('\n')[0]}`);
    throw err;
  }
  bar.finish(`${evaluation.count} images`);
  return { evaluation };
}

/** A gallery thumbnail as a data: URL: small, so the notebook (and its Vega-Lite spec) stays light. */
async function thumbnail(image: Uint8Array, size: number): Promise<string> {
  const png = await sharp(image).rotate().resize(size, size, { fit: 'inside' }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

/** The figures as text, then the four charts (Vega-Lite with PNG fallbacks). */
export async function showEvaluation(outcome: EvaluationOutcome): Promise<void> {
  if ('reason' in outcome) {
    process.stdout.write(`no evaluation: ${outcome.reason}\n`);
    return;
  }
  const e = outcome.evaluation;
  process.stdout.write(formatEvaluation(e));
  const what = `${e.split}, ${e.count} images`;
  await showChart(perClassTable(e.per_class, { macro: e.macro, weighted: e.weighted }, { title: `Per class (${what})` }));
  await showChart(confusionMatrix(e.labels, e.confusion, { title: `Confusion matrix (${what})` }));
  const curves = e.pr_curves.map((c, i) => ({ ...c, average_precision: e.per_class[i]!.average_precision }));
  await showChart(precisionRecallCurves(curves, { title: `Precision–recall per class (${what})` }));
  if (e.mistakes.length === 0) {
    process.stdout.write('no mistakes to show: every image is right\n');
    return;
  }
  const items: GalleryItem[] = await Promise.all(
    e.mistakes.map(async (m) => ({ url: await thumbnail(m.image, 96), true_label: m.true_label, predicted_label: m.predicted_label, probability: m.probability })),
  );
  await showChart(mistakesGallery(items, { title: `Most confidently wrong (${e.split}; true → predicted, probability)` }));
}

