/**
 * The exported model run over the validation shards, as the prediction server would run it (same
 * preprocessing read from the export, same classifier), counted into a confusion matrix: where
 * training's top-1 says how often the model is right, the matrix says which classes it mixes up.
 */
import type { BackendName } from './engine/backend';
import { evaluateModel } from './evaluation/run';

export interface ConfusionOptions {
  /** Export root (newest version) or one version folder. */
  exportDir: string;
  /** Folder with the validation-* shards. */
  dataDir: string;
  batchSize?: number;
  backend?: BackendName;
}

export interface ConfusionResult {
  labels: string[];
  /** matrix[true][predicted] = images, in labels order. */
  matrix: number[][];
  count: number;
  /** Share of the diagonal: top-1 accuracy of the export on this data. */
  accuracy: number;
  /** The export's version folder name. */
  version: string;
}

/** Count (true class, predicted class) pairs of the export's predictions on every validation record. */
export async function confusionMatrixOfExport(opts: ConfusionOptions): Promise<ConfusionResult> {
  // The full evaluation, unsaved and without a gallery: one loop over the records for both.
  const e = await evaluateModel({ modelDir: opts.exportDir, dataDir: opts.dataDir, batchSize: opts.batchSize, backend: opts.backend, save: false, gallerySize: 0 });
  return { labels: e.labels, matrix: e.confusion, count: e.count, accuracy: e.top1, version: e.version };
}

/** The matrix as an aligned text table (rows: true class, columns: predicted), for logs and plain front ends. */
export function formatConfusion(r: Pick<ConfusionResult, 'labels' | 'matrix'>): string {
  const head0 = 'true \\ predicted';
  const w = Math.max(head0.length, ...r.labels.map((l, i) => `${i} ${l}`.length));
  const cw = Math.max(3, ...r.matrix.flat().map((v) => String(v).length));
  const head = `${head0.padEnd(w)}  ${r.labels.map((_, j) => String(j).padStart(cw)).join(' ')}`;
  const rows = r.matrix.map((row, i) => `${`${i} ${r.labels[i]}`.padEnd(w)}  ${row.map((v) => String(v).padStart(cw)).join(' ')}`);
  return [head, ...rows].join('\n') + '\n';
}
