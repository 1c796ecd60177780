/**
 * Notebook 06 (section 6, training): train with a chart of loss and accuracy redrawn as the run goes
 * and a progress line, then the final curves, the confusion matrix of the exported model on the
 * validation set, and where the TensorBoard logs are.
 */
import type { TrainEvent, TrainResult } from '../train';
import { readMetrics } from '../train/metrics';
import { liveChart, showChart } from '../charts/display';
import { trainingCurves, confusionMatrix, MetricsLine } from '../charts/specs';
import { confusionMatrixOfExport, formatConfusion, ConfusionResult } from '../evaluate';
import { notebookProgress } from '../notebook-progress';
import { errorMessage } from '../errors';
import { trainOptions, TrainParameters } from './trainer';
import { backendOf, Settings } from './settings';
import * as storage from '../storage';
import { readTrainingCurves } from '../cloud/training/events';

export interface LiveTrainingOptions {
  /** Least time between two chart redraws; default 500 ms. */
  chartIntervalMs?: number;
  /** gcp: how often the job and its event files are read; default 15 s. */
  pollIntervalMs?: number;
}

/** The metrics record of a step or eval event, as metrics.jsonl holds it (what trainingCurves reads). */
export function metricsLineOf(e: TrainEvent): MetricsLine | undefined {
  if (e.kind === 'step') return { kind: 'train', step: e.step, loss: e.loss, lr: e.lr };
  if (e.kind === 'eval') return { kind: 'eval', step: e.step, top1: e.top1, top5: e.top5, loss: e.loss };
  return undefined;
}

/**
 * local: train() from WORK/tfrecords into WORK/model, exporting to WORK/export, with the live chart
 * and a progress line in the cell. gcp: a Vertex AI training job.
 */
export async function trainWithLiveChart(s: Settings, p: TrainParameters, o: LiveTrainingOptions = {}): Promise<TrainResult> {
  const opts = trainOptions(s, p);
  const records: MetricsLine[] = [];
  const chart = liveChart({ intervalMs: o.chartIntervalMs ?? 500 });
  const bar = notebookProgress('train');
  let chartFailure: unknown;
  const redraw = (): void => {
    chart.update(trainingCurves(records)).catch((err: unknown) => (chartFailure ??= err));
  };
  let download: ReturnType<typeof notebookProgress> | undefined;
  const onEvent = (e: TrainEvent): void => {
    if (e.kind === 'download') {
      download ??= notebookProgress(`download ${e.source}`);
      download.update(e.bytes, e.totalBytes, `${(e.bytes / 1e6).toFixed(1)} of ${(e.totalBytes / 1e6).toFixed(1)} MB`);
      if (e.bytes >= e.totalBytes) download.finish('downloaded');
      return;
    }
    if (e.kind === 'notice') {
      process.stdout.write(`${e.message}\n`);
      return;
    }
    if (e.kind === 'start') {
      if (e.resumed) records.push(...before.filter((r) => Number(r.step ?? 0) <= e.startStep));
      process.stdout.write(
        `${e.backendNote}; ${e.replicas} replica(s)\n` +
          (e.transfer ? `${e.transfer}\n` : '') +
          `${(e.params / 1e6).toFixed(2)} M parameters, ${(e.flopsPerImage / 1e6).toFixed(1)} MFLOPs per image; ` +
          `${e.numTrainImages} training / ${e.numEvalImages} validation images, ${e.numClasses} classes` +
          (e.resumed ? `; resuming from the checkpoint at step ${e.startStep}` : '') + '\n' +
          (e.notice ? `${e.notice}\n` : ''),
      );
      return;
    }
    if (e.kind === 'eval') {
      process.stdout.write(
        `eval at step ${e.step}: top-1 ${(100 * e.top1).toFixed(1)} %` +
          (e.top5 !== undefined ? `, top-5 ${(100 * e.top5).toFixed(1)} %` : '') +
          `, loss ${e.loss.toFixed(4)} (${e.count} images)\n`,
      );
    }
    if (e.kind === 'export') process.stdout.write(`exported to ${e.path}\n`);
    const line = metricsLineOf(e);
    if (line) {
      records.push(line);
      redraw();
    }
    if (e.kind === 'step') {
      // A cloud run's points come from its event files: no rate (and no lr when it was not logged).
      const parts = [`loss ${e.loss.toFixed(3)}`];
      if (Number.isFinite(e.lr)) parts.push(`lr ${e.lr.toPrecision(3)}`);
      if (Number.isFinite(e.imagesPerSecond)) parts.push(`${e.imagesPerSecond.toFixed(1)} images/s`);
      bar.update(e.step, opts.trainSteps, parts.join(', '));
    }
  };
  // A resumed run shows its earlier steps too (up to the checkpoint it resumes from, as train() keeps them).
  const before = s.dryRun ? [] : await readMetrics(s.paths.metrics);
  let result: TrainResult;
  try {
    result = await backendOf(s).train({ ...opts, onEvent, ...(o.pollIntervalMs ? { pollIntervalMs: o.pollIntervalMs } : {}) });
  } catch (err) {
    bar.finish(`failed: ${errorMessage(err).split('\n')[0]}`);
    await chart.close().catch(() => undefined);
    throw err;
  }
  bar.finish([`${result.interrupted ? 'stopped' : 'done'} at step ${result.step}`, rate(result), `${result.seconds.toFixed(0)} s`].filter(Boolean).join(', '));
  await chart.close().catch((err: unknown) => (chartFailure ??= err));
  if (chartFailure) process.stderr.write(`warning: the live chart could not be drawn: ${errorMessage(chartFailure)}\n`);
  return result;
}

/** The run's speed, or '' for a cloud run (its points come from event files, without a rate). */
const rate = (r: TrainResult): string => (Number.isFinite(r.imagesPerSecond) && r.imagesPerSecond > 0 ? `${r.imagesPerSecond.toFixed(1)} images/s` : '');

/** One paragraph on the finished run. */
export function formatTrainResult(r: TrainResult): string {
  const acc = r.lastEval
    ? `top-1 ${(100 * r.lastEval.top1).toFixed(1)} %${r.lastEval.top5 !== undefined ? `, top-5 ${(100 * r.lastEval.top5).toFixed(1)} %` : ''} on ${r.lastEval.count} validation images`
    : 'no evaluation';
  return (
    `${r.interrupted ? 'stopped' : 'trained'} to step ${r.step} in ${r.seconds.toFixed(1)} s ` +
    `(${[rate(r), `${r.engine} x${r.replicas}`].filter(Boolean).join(', ')}); ${acc}\n` +
    `checkpoints and metrics: ${r.modelDir}\n` +
    (r.exportPath ? `export for serving: ${r.exportPath}\n` : '')
  );
}

/**
 * The final training curves: WORK/model/metrics.jsonl when the run wrote one (local), else the
 * TensorBoard event files in WORK/model (what Model Garden's trainer writes on gcp).
 */
export async function showTrainingCurves(s: Settings): Promise<void> {
  if (s.dryRun) {
    process.stdout.write('dry run: nothing was trained, so there are no curves to show\n');
    return;
  }
  const metrics = await readMetrics(s.paths.metrics);
  const records = metrics.length > 0 ? metrics : await readTrainingCurves(s.paths.model);
  await showChart(trainingCurves(records, { title: 'Training' }));
}

/**
 * The exported model (newest version in WORK/export) over every validation record. A TensorFlow
 * SavedModel (the gcp trainer's export) does not run in TensorFlow.js: undefined, and notebook 08
 * asks the endpoint instead.
 */
export async function evaluateExport(s: Settings): Promise<ConfusionResult | undefined> {
  if (s.dryRun) return undefined;
  const files = await storage.list(s.paths.export);
  const versions = (kind: string): number[] => files.map((f) => new RegExp(`/(\\d+)/${kind}$`).exec(f)?.[1]).filter((v): v is string => !!v).map(Number);
  const tfjs = Math.max(-1, ...versions('model\\.json'));
  const savedModel = Math.max(-1, ...versions('saved_model\\.pb'));
  if (savedModel > tfjs) return undefined;
  return confusionMatrixOfExport({ exportDir: s.paths.export, dataDir: s.paths.tfrecords });
}

/** The confusion matrix as text and as a chart (or why there is none). */
export async function showConfusion(cm: ConfusionResult | undefined): Promise<void> {
  if (!cm) {
    process.stdout.write(
      'no confusion matrix here: after a dry run there is no export, and a Cloud TPU run exports a TensorFlow SavedModel, ' +
        'which TensorFlow.js does not run; deploy it (notebook 07) and ask the endpoint (notebook 08)\n',
    );
    return;
  }
  process.stdout.write(
    `export version ${cm.version}: ${(100 * cm.accuracy).toFixed(1)} % of ${cm.count} validation images right\n${formatConfusion(cm)}`,
  );
  await showChart(confusionMatrix(cm.labels, cm.matrix, { title: `Confusion matrix (validation, ${cm.count} images)` }));
}

/** Where TensorBoard finds this run's event files, and the command to open them. */
export function tensorboardHint(s: Settings): string {
  const evalDir = s.backend === 'gcp' ? 'validation' : 'eval';
  const trainDir = s.backend === 'gcp' ? `${s.paths.model}/train` : s.paths.model;
  return (
    `TensorBoard event files: ${trainDir} (train) and ${s.paths.model}/${evalDir} (eval)\n` +
    `view them with:  tensorboard --logdir ${s.paths.model}\n`
  );
}
