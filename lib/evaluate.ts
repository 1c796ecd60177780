/**
 * The exported model run over the validation shards, as the prediction server would run it (same
 * preprocessing read from the export, same classifier), counted into a confusion matrix: where
 * training's top-1 says how often the model is right, the matrix says which classes it mixes up.
 */
import { loadExport } from './export';
import { chooseBackend, BackendName } from './engine/backend';
import { argmax, makeClassifier } from './serve/classifier';
import { evalBatches } from './train/input';
import { normalizeInto } from './train/preprocessing';
import { UserError } from './errors';

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
  const batchSize = opts.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new UserError(`batch size must be a whole number ≥ 1, got ${batchSize}`);
  await chooseBackend(opts.backend);
  const classifier = makeClassifier(await loadExport(opts.exportDir));
  try {
    const n = classifier.labels.length;
    const matrix = Array.from({ length: n }, () => new Array<number>(n).fill(0));
    const settings = classifier.settings;
    const pixels = settings.imageSize * settings.imageSize * 3;
    let count = 0;
    for await (const b of evalBatches({ dataDir: opts.dataDir, imageSize: settings.imageSize, batchSize, settings, numClasses: n })) {
      const inputs = Array.from({ length: b.size }, (_, i) =>
        normalizeInto(b.images.subarray(i * pixels, (i + 1) * pixels), new Float32Array(pixels), settings),
      );
      classifier.classify(inputs).forEach((probs, i) => {
        matrix[b.labels[i]!]![argmax(probs)]!++;
      });
      count += b.size;
    }
    if (count === 0) throw new UserError(`${opts.dataDir} has no validation records to evaluate; preprocess an eval_set.csv with rows`);
    const correct = matrix.reduce((sum, row, i) => sum + row[i]!, 0);
    return { labels: classifier.labels, matrix, count, accuracy: correct / count, version: classifier.version };
  } finally {
    classifier.dispose();
  }
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
