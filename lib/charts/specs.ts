/**
 * Vega-Lite specs for the notebooks' charts: pure functions from our data to a JSON spec.
 *
 * Specs declare the v5 schema although vega-lite 6 compiles them: JupyterLab's built-in renderer
 * registers `application/vnd.vegalite.v5+json`, and these specs use nothing that v6 added.
 */
import { UserError } from '../errors';

export const VEGA_LITE_SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';

/** A Vega-Lite spec as plain JSON (kept loose so callers can pass their own specs too). */
export interface VegaLiteSpec {
  $schema?: string;
  [key: string]: unknown;
}

/** One metrics.jsonl line; only `kind`, `step`, `loss`, `top1`, `top5` are read. */
export type MetricsLine = Readonly<Record<string, unknown>>;

/** Chart colours (Tableau 10, Vega's default), fixed so train/eval look the same in every chart. */
const TRAIN_COLOUR = '#4c78a8';
const EVAL_COLOUR = '#f58518';
const TOP5_COLOUR = '#54a24b';

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/**
 * Loss and accuracy against step from metrics.jsonl records, as two side-by-side panels:
 * train loss (line) with eval loss (line + points), and eval top-1 / top-5 accuracy on 0..100 %.
 * Lines of other kinds and non-finite values (a diverged loss) are left out.
 */
export function trainingCurves(records: readonly MetricsLine[], options: { title?: string } = {}): VegaLiteSpec {
  const loss: { step: number; series: string; loss: number }[] = [];
  const accuracy: { step: number; series: string; accuracy: number }[] = [];
  for (const r of records) {
    const step = num(r.step);
    if (step === undefined) continue;
    if (r.kind === 'train') {
      const l = num(r.loss);
      if (l !== undefined) loss.push({ step, series: 'train', loss: l });
    } else if (r.kind === 'eval') {
      const l = num(r.loss);
      if (l !== undefined) loss.push({ step, series: 'eval', loss: l });
      const top1 = num(r.top1);
      if (top1 !== undefined) accuracy.push({ step, series: 'top-1', accuracy: top1 });
      const top5 = num(r.top5);
      if (top5 !== undefined) accuracy.push({ step, series: 'top-5', accuracy: top5 });
    }
  }
  const hasTop5 = accuracy.some((a) => a.series === 'top-5');
  const accSeries = hasTop5 ? ['top-1', 'top-5'] : ['top-1'];
  const stepAxis = { field: 'step', type: 'quantitative', title: 'step', axis: { format: '~s' } };
  const width = 340;
  const height = 220;

  const lossPanel = {
    title: 'Loss',
    width,
    height,
    data: { values: loss },
    encoding: {
      x: stepAxis,
      y: { field: 'loss', type: 'quantitative', title: 'cross-entropy loss', scale: { zero: false } },
      color: {
        field: 'series',
        type: 'nominal',
        title: 'loss',
        scale: { domain: ['train', 'eval'], range: [TRAIN_COLOUR, EVAL_COLOUR] },
      },
      tooltip: [
        { field: 'series', type: 'nominal' },
        { field: 'step', type: 'quantitative' },
        { field: 'loss', type: 'quantitative', format: '.4f' },
      ],
    },
    layer: [
      { transform: [{ filter: "datum.series === 'train'" }], mark: { type: 'line', strokeWidth: 1.5 } },
      { transform: [{ filter: "datum.series === 'eval'" }], mark: { type: 'line', point: true, strokeWidth: 2 } },
    ],
  };

  const accuracyPanel = {
    title: accuracy.length > 0 ? 'Eval accuracy' : 'Eval accuracy (no evaluation yet)',
    width,
    height,
    data: { values: accuracy },
    mark: { type: 'line', point: true, strokeWidth: 2 },
    encoding: {
      x: stepAxis,
      y: {
        field: 'accuracy',
        type: 'quantitative',
        title: 'accuracy',
        scale: { domain: [0, 1] },
        axis: { format: '.0%' },
      },
      color: {
        field: 'series',
        type: 'nominal',
        title: 'accuracy',
        scale: { domain: accSeries, range: hasTop5 ? [EVAL_COLOUR, TOP5_COLOUR] : [EVAL_COLOUR] },
      },
      tooltip: [
        { field: 'series', type: 'nominal' },
        { field: 'step', type: 'quantitative' },
        { field: 'accuracy', type: 'quantitative', format: '.1%' },
      ],
    },
  };

  return {
    $schema: VEGA_LITE_SCHEMA,
    ...(options.title ? { title: options.title } : {}),
    hconcat: [lossPanel, accuracyPanel],
    // Each panel has its own series, so its own legend; one step axis so the panels line up.
    resolve: { scale: { color: 'independent', x: 'shared' } },
  };
}

/** Input of imagesPerClass: what lib/dataset's summarize() returns (only perClass is read). */
export interface PerClassCounts {
  perClass: readonly { label: string; train: number; eval: number }[];
}

/**
 * Images per class, one horizontal stacked bar (train + eval) per class in labels.txt order.
 * Stacked rather than grouped because eval is usually ~10 % of train: stacking shows each class's
 * total and the split at once, where grouped eval bars would be slivers.
 */
export function imagesPerClass(summary: PerClassCounts, options: { title?: string } = {}): VegaLiteSpec {
  const values = summary.perClass.flatMap((c) => [
    { label: c.label, split: 'train', images: c.train },
    { label: c.label, split: 'eval', images: c.eval },
  ]);
  const n = summary.perClass.length;
  return {
    $schema: VEGA_LITE_SCHEMA,
    title: options.title ?? 'Images per class',
    width: 360,
    height: { step: n > 40 ? 10 : 20 },
    data: { values },
    mark: { type: 'bar' },
    encoding: {
      y: { field: 'label', type: 'nominal', title: 'class', sort: summary.perClass.map((c) => c.label) },
      x: { field: 'images', type: 'quantitative', title: 'images', stack: 'zero' },
      color: {
        field: 'split',
        type: 'nominal',
        title: 'split',
        scale: { domain: ['train', 'eval'], range: [TRAIN_COLOUR, EVAL_COLOUR] },
      },
      // Train first (left), eval stacked after it.
      order: { field: 'splitOrder', type: 'quantitative' },
      tooltip: [
        { field: 'label', type: 'nominal', title: 'class' },
        { field: 'split', type: 'nominal' },
        { field: 'images', type: 'quantitative' },
      ],
    },
    transform: [{ calculate: "datum.split === 'train' ? 0 : 1", as: 'splitOrder' }],
  };
}

/**
 * Confusion matrix heatmap: rows are the true class, columns the predicted class, both in label
 * order; each cell shows its count (for up to 30 classes, beyond which text would not fit).
 */
export function confusionMatrix(
  labels: readonly string[],
  matrix: readonly (readonly number[])[],
  options: { title?: string } = {},
): VegaLiteSpec {
  const n = labels.length;
  if (matrix.length !== n) {
    throw new UserError(`confusionMatrix: ${n} labels but the matrix has ${matrix.length} rows; pass one row per label (row = true class).`);
  }
  const values: { actual: string; predicted: string; count: number; share: number }[] = [];
  let max = 0;
  matrix.forEach((row, i) => {
    if (row.length !== n) {
      throw new UserError(`confusionMatrix: row ${i} (${labels[i]}) has ${row.length} columns; expected ${n}, one per label (column = predicted class).`);
    }
    const total = row.reduce((a, b) => a + b, 0);
    row.forEach((count, j) => {
      if (!Number.isFinite(count) || count < 0) {
        throw new UserError(`confusionMatrix: cell [${i}][${j}] is ${count}; counts must be finite and >= 0.`);
      }
      max = Math.max(max, count);
      values.push({ actual: labels[i]!, predicted: labels[j]!, count, share: total > 0 ? count / total : 0 });
    });
  });
  const step = n <= 12 ? 36 : n <= 30 ? 22 : 10;
  const order = [...labels];
  const rect = {
    mark: { type: 'rect' },
    encoding: {
      color: { field: 'count', type: 'quantitative', title: 'images', scale: { scheme: 'blues' } },
      tooltip: [
        { field: 'actual', type: 'nominal', title: 'true' },
        { field: 'predicted', type: 'nominal' },
        { field: 'count', type: 'quantitative' },
        { field: 'share', type: 'quantitative', title: 'share of true class', format: '.1%' },
      ],
    },
  };
  const text = {
    mark: { type: 'text', fontSize: n <= 12 ? 12 : 9 },
    encoding: {
      text: { field: 'count', type: 'quantitative' },
      // White text on the dark half of the colour scale.
      color: { condition: { test: `datum.count > ${max / 2}`, value: 'white' }, value: 'black' },
    },
  };
  return {
    $schema: VEGA_LITE_SCHEMA,
    title: options.title ?? 'Confusion matrix',
    width: { step },
    height: { step },
    data: { values },
    encoding: {
      x: { field: 'predicted', type: 'nominal', title: 'predicted class', sort: order, axis: { labelAngle: -45 } },
      y: { field: 'actual', type: 'nominal', title: 'true class', sort: order },
    },
    layer: n <= 30 ? [rect, text] : [rect],
  };
}

/**
 * Class probabilities of one prediction as horizontal bars, highest first, the predicted (most
 * probable) class highlighted. `top` limits the bars (default: all classes, at most 10).
 */
export function predictionProbabilities(
  labels: readonly string[],
  probabilities: ArrayLike<number>,
  top?: number,
  options: { title?: string } = {},
): VegaLiteSpec {
  if (probabilities.length !== labels.length) {
    throw new UserError(`predictionProbabilities: ${labels.length} labels but ${probabilities.length} probabilities; pass one per label, in labels.txt order.`);
  }
  if (labels.length === 0) throw new UserError('predictionProbabilities: no labels given.');
  const rows = labels.map((label, i) => {
    const p = Number(probabilities[i]);
    if (!Number.isFinite(p)) throw new UserError(`predictionProbabilities: probability ${i} (${label}) is ${p}; expected a finite number.`);
    return { label, probability: p, index: i };
  });
  // Stable: ties keep label order, so the highlighted class is the first argmax, as argmax() picks.
  rows.sort((a, b) => b.probability - a.probability || a.index - b.index);
  const k = Math.max(1, Math.min(rows.length, top ?? 10));
  const best = rows[0]!;
  const values = rows.slice(0, k).map((r, rank) => ({
    label: r.label,
    probability: r.probability,
    role: rank === 0 ? 'predicted' : 'other',
  }));
  const maxP = Math.max(1, ...values.map((v) => v.probability));
  return {
    $schema: VEGA_LITE_SCHEMA,
    title: options.title ?? `Prediction: ${best.label} (${(100 * best.probability).toFixed(1)} %)`,
    width: 320,
    height: { step: 22 },
    data: { values },
    encoding: {
      y: { field: 'label', type: 'nominal', title: 'class', sort: values.map((v) => v.label) },
      x: {
        field: 'probability',
        type: 'quantitative',
        title: 'probability',
        scale: { domain: [0, maxP] },
        axis: { format: '.0%' },
      },
    },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          color: {
            field: 'role',
            type: 'nominal',
            scale: { domain: ['predicted', 'other'], range: [EVAL_COLOUR, '#9ecae9'] },
            legend: null,
          },
          tooltip: [
            { field: 'label', type: 'nominal', title: 'class' },
            { field: 'probability', type: 'quantitative', format: '.2%' },
          ],
        },
      },
      {
        mark: { type: 'text', align: 'left', dx: 3, fontSize: 11 },
        encoding: { text: { field: 'probability', type: 'quantitative', format: '.1%' } },
      },
    ],
  };
}

/**
 * The learning rate against the step, as a line (the recipe's warm-up and step decays), e.g. from
 * lib/train/recipe's learningRate() sampled over the run. A log scale would hide the warm-up's start
 * at 0, so the y axis is linear; the decays to 1 % and 0.1 % still show as steps near zero.
 */
export function learningRateCurve(
  points: readonly { step: number; lr: number }[],
  options: { title?: string } = {},
): VegaLiteSpec {
  if (points.length === 0) throw new UserError('learningRateCurve: no points given; pass at least one { step, lr }.');
  for (const [i, p] of points.entries()) {
    if (!Number.isFinite(p.step) || !Number.isFinite(p.lr)) {
      throw new UserError(`learningRateCurve: point ${i} is { step: ${p.step}, lr: ${p.lr} }; both must be finite numbers.`);
    }
  }
  return {
    $schema: VEGA_LITE_SCHEMA,
    title: options.title ?? 'Learning rate',
    width: 420,
    height: 200,
    data: { values: points.map((p) => ({ step: p.step, lr: p.lr })) },
    mark: { type: 'line', strokeWidth: 2, color: TRAIN_COLOUR },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step', axis: { format: '~s' } },
      y: { field: 'lr', type: 'quantitative', title: 'learning rate', axis: { format: '.2~e' } },
      tooltip: [
        { field: 'step', type: 'quantitative' },
        { field: 'lr', type: 'quantitative', title: 'learning rate', format: '.3~e' },
      ],
    },
  };
}
