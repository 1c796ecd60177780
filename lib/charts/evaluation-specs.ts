/**
 * Vega-Lite specs of an evaluation (imgclass evaluate, notebook 06): the per-class table, the
 * one-vs-rest precision–recall curves, and the gallery of the most confidently wrong images. Pure
 * functions of the figures; the gallery's images are embedded as data: URLs so the spec stands alone
 * (and renders headless to the PNG fallback the same way).
 */
import { UserError } from '../errors';
import { VEGA_LITE_SCHEMA, VegaLiteSpec } from './specs';

export interface PerClassRow {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  support: number;
  average_precision?: number | null;
}

/** Most points drawn per PR curve; a curve has one point per distinct score, far more than a chart shows. */
const MAX_CURVE_POINTS = 400;

/**
 * The per-class table as a heat-coloured grid: a row per class (labels order) and the macro and
 * weighted means, columns precision, recall, F1 (coloured 0..1), AP and support (text).
 */
export function perClassTable(
  rows: readonly PerClassRow[],
  means: { macro: Omit<PerClassRow, 'label' | 'support'>; weighted: Omit<PerClassRow, 'label' | 'support'> },
  options: { title?: string } = {},
): VegaLiteSpec {
  if (rows.length === 0) throw new UserError('perClassTable: no classes given');
  const total = rows.reduce((n, r) => n + r.support, 0);
  const all = [...rows, { label: 'macro mean', ...means.macro, support: total }, { label: 'weighted mean', ...means.weighted, support: total }];
  const metrics = ['precision', 'recall', 'F1', 'AP', 'support'];
  const values: { row: string; metric: string; value: number | null; text: string; scored: boolean }[] = [];
  for (const r of all) {
    const cells: [string, number | null | undefined][] = [['precision', r.precision], ['recall', r.recall], ['F1', r.f1], ['AP', r.average_precision], ['support', r.support]];
    for (const [metric, v] of cells) {
      const scored = metric !== 'support';
      const value = v === undefined || v === null ? null : v;
      values.push({ row: r.label, metric, value: scored ? value : null, text: value === null ? '–' : scored ? value.toFixed(3) : String(value), scored });
    }
  }
  return {
    $schema: VEGA_LITE_SCHEMA,
    title: options.title ?? 'Per class',
    width: { step: 78 },
    height: { step: 22 },
    data: { values },
    encoding: {
      x: { field: 'metric', type: 'nominal', sort: metrics, title: null, axis: { orient: 'top', labelAngle: 0 } },
      y: { field: 'row', type: 'nominal', sort: all.map((r) => r.label), title: null },
    },
    layer: [
      {
        transform: [{ filter: 'datum.value !== null' }],
        mark: { type: 'rect' },
        encoding: {
          color: { field: 'value', type: 'quantitative', title: 'score', scale: { domain: [0, 1], scheme: 'redyellowgreen' } },
          tooltip: [{ field: 'row', title: 'class' }, { field: 'metric' }, { field: 'text', title: 'value' }],
        },
      },
      { mark: { type: 'text', fontSize: 11 }, encoding: { text: { field: 'text', type: 'nominal' } } },
    ],
  };
}

export interface CurveInput {
  label: string;
  precision: readonly number[];
  recall: readonly number[];
  average_precision?: number | null;
}

/** At most `max` points of a curve, evenly spread, its two ends kept. */
function thin<T>(points: T[], max: number): T[] {
  if (points.length <= max) return points;
  const out: T[] = [];
  for (let i = 0; i < max; i++) out.push(points[Math.round((i * (points.length - 1)) / (max - 1))]!);
  return out;
}

/**
 * One-vs-rest precision–recall curve per class (recall on x, precision on y, as a step line), the
 * legend giving each class's average precision. Classes with no images (no curve) are left out.
 */
export function precisionRecallCurves(curves: readonly CurveInput[], options: { title?: string } = {}): VegaLiteSpec {
  const values: { series: string; recall: number; precision: number; order: number }[] = [];
  const series: string[] = [];
  for (const c of curves) {
    if (c.precision.length !== c.recall.length) throw new UserError(`precisionRecallCurves: class ${c.label} has ${c.precision.length} precisions but ${c.recall.length} recalls`);
    if (c.average_precision === null) continue;
    const name = c.average_precision === undefined ? c.label : `${c.label} (AP ${c.average_precision.toFixed(3)})`;
    series.push(name);
    // sklearn's order is by decreasing recall; drawn by increasing recall.
    const pts = c.recall.map((r, i) => ({ recall: r, precision: c.precision[i]! })).reverse();
    thin(pts, MAX_CURVE_POINTS).forEach((p, order) => values.push({ series: name, ...p, order }));
  }
  if (series.length === 0) throw new UserError('precisionRecallCurves: no class has images, so there is no curve to draw');
  return {
    $schema: VEGA_LITE_SCHEMA,
    title: options.title ?? 'Precision–recall, one class against the rest',
    width: 360,
    height: 280,
    data: { values },
    mark: { type: 'line', interpolate: 'step-before', strokeWidth: 2, clip: true },
    encoding: {
      x: { field: 'recall', type: 'quantitative', scale: { domain: [0, 1] } },
      y: { field: 'precision', type: 'quantitative', scale: { domain: [0, 1.02] } },
      color: { field: 'series', type: 'nominal', title: 'class', sort: series },
      order: { field: 'order', type: 'quantitative' },
      tooltip: [{ field: 'series', title: 'class' }, { field: 'recall', format: '.3f' }, { field: 'precision', format: '.3f' }],
    },
  };
}

export interface GalleryItem {
  /** A data: URL (or any URL the viewer can load) of the image, e.g. a small PNG thumbnail. */
  url: string;
  true_label: string;
  predicted_label: string;
  probability: number;
}

/**
 * The most confidently wrong images, a grid of thumbnails, each captioned "true → predicted (p)".
 * Drawn as Vega-Lite image and text marks on a cell grid, so the gallery is one chart like the others.
 */
export function mistakesGallery(items: readonly GalleryItem[], options: { title?: string; columns?: number; cellSize?: number } = {}): VegaLiteSpec {
  if (items.length === 0) throw new UserError('mistakesGallery: no images given (no mistakes to show)');
  const columns = options.columns ?? Math.min(items.length, 6);
  const size = options.cellSize ?? 96;
  const rows = Math.ceil(items.length / columns);
  const values = items.map((it, i) => ({
    ...it,
    col: i % columns,
    row: Math.floor(i / columns),
    caption: `${it.true_label} → ${it.predicted_label}`,
    confidence: `${(100 * it.probability).toFixed(1)} %`,
  }));
  const cellW = size + 24;
  const cellH = size + 34;
  const scale = (n: number, step: number) => ({ domain: [-0.5, n - 0.5], range: [0, n * step] });
  const x = { field: 'col', type: 'quantitative', scale: scale(columns, cellW), axis: null };
  return {
    $schema: VEGA_LITE_SCHEMA,
    title: options.title ?? 'Most confidently wrong (true → predicted, probability)',
    width: columns * cellW,
    height: rows * cellH,
    data: { values },
    layer: [
      {
        mark: { type: 'image', width: size, height: size, baseline: 'bottom' },
        encoding: { x, y: { field: 'row', type: 'quantitative', scale: scale(rows, cellH), axis: null }, url: { field: 'url', type: 'nominal' } },
      },
      {
        mark: { type: 'text', baseline: 'top', dy: 2, fontSize: 10 },
        encoding: { x, y: { field: 'row', type: 'quantitative', scale: scale(rows, cellH), axis: null }, text: { field: 'caption', type: 'nominal' } },
      },
      {
        mark: { type: 'text', baseline: 'top', dy: 15, fontSize: 10, color: '#b0302a' },
        encoding: { x, y: { field: 'row', type: 'quantitative', scale: scale(rows, cellH), axis: null }, text: { field: 'confidence', type: 'nominal' } },
      },
    ],
    config: { view: { stroke: null } },
  };
}
