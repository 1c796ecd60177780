/**
 * Classification metrics from (true class, class probabilities) pairs, defined as scikit-learn
 * defines them, so a figure here can be checked against sklearn on the same predictions (the tests
 * do, within 1e-6): accuracy_score, top_k_accuracy_score, precision_recall_fscore_support
 * (zero_division=0), confusion_matrix, precision_recall_curve and average_precision_score.
 *
 * Why our own code: no maintained npm package computes these with sklearn's exact definitions (tie
 * handling in top-k, the step-function average precision, one point per distinct score on the PR
 * curve), and they are a few loops each.
 */
import { UserError } from '../errors';

/** The model's answers on a labelled set: one probability row per image, in labels order. */
export interface Predictions {
  labels: readonly string[];
  /** 0-based true class of each image. */
  trueClass: readonly number[];
  /** probabilities[i][c]: the model's probability of class c for image i. */
  probabilities: readonly (readonly number[])[];
}

export interface ClassMetrics {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  /** Images of this class in the set. */
  support: number;
  /** One-vs-rest average precision (sklearn's average_precision_score); null when the class has no images. */
  average_precision: number | null;
}

export interface MeanMetrics {
  precision: number;
  recall: number;
  f1: number;
}

export interface ConfusedPair {
  true_label: string;
  predicted_label: string;
  /** Images of true_label predicted as predicted_label. */
  count: number;
}

/** One class's one-vs-rest precision–recall curve, as sklearn's precision_recall_curve returns it. */
export interface PrCurve {
  label: string;
  /** Distinct scores, ascending; precision[i] and recall[i] are at score >= thresholds[i]. */
  thresholds: number[];
  /** thresholds.length + 1 values: the last is the (precision 1, recall 0) end point. */
  precision: number[];
  recall: number[];
}

export interface ThresholdMetrics {
  threshold: number;
  /** Share of images whose top probability is at least the threshold (the ones the model answers). */
  coverage: number;
  /** Top-1 accuracy on those images; null when none reach the threshold. */
  top1: number | null;
  answered: number;
}

export interface Metrics {
  count: number;
  top1: number;
  top5: number;
  per_class: ClassMetrics[];
  macro: MeanMetrics;
  weighted: MeanMetrics;
  /** confusion[true][predicted], labels order. */
  confusion: number[][];
  /** Off-diagonal cells, most images first (ties: labels order of true, then predicted). */
  most_confused: ConfusedPair[];
  /** Mean average precision over the classes that have images. */
  mean_average_precision: number | null;
  at_threshold: ThresholdMetrics;
}

/** Index of the largest value, the first one on ties (as numpy's argmax, which sklearn's callers use). */
export function argmaxOf(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** Check shapes and values once, so every metric below can index freely. */
export function checkPredictions(p: Predictions): void {
  const n = p.labels.length;
  if (n < 2) throw new UserError(`evaluation needs at least 2 classes, got ${n}`);
  if (p.trueClass.length !== p.probabilities.length) {
    throw new UserError(`${p.trueClass.length} true classes but ${p.probabilities.length} probability rows; give one per image`);
  }
  if (p.trueClass.length === 0) throw new UserError('no images to evaluate');
  p.trueClass.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= n) throw new UserError(`image ${i}: true class ${t} is not in 0..${n - 1}`);
    const row = p.probabilities[i]!;
    if (row.length !== n) throw new UserError(`image ${i}: ${row.length} probabilities for ${n} classes`);
    if (!row.every(Number.isFinite)) throw new UserError(`image ${i}: a probability is not a finite number`);
  });
}

/**
 * Share of images whose true class is among the k highest scores. Ties as sklearn's
 * top_k_accuracy_score ranks them (a stable ascending sort, reversed): of equal scores the higher
 * class index ranks first. k >= the number of classes scores 1, as in sklearn.
 */
export function topKAccuracy(p: Predictions, k: number): number {
  let hits = 0;
  p.trueClass.forEach((t, i) => {
    const row = p.probabilities[i]!;
    const s = row[t]!;
    let ahead = 0;
    for (let j = 0; j < row.length; j++) if (row[j]! > s || (row[j] === s && j > t)) ahead++;
    if (ahead < k) hits++;
  });
  return hits / p.trueClass.length;
}

/** confusion[true][predicted] of the top-1 predictions. */
export function confusionOf(p: Predictions): number[][] {
  const n = p.labels.length;
  const m = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  p.trueClass.forEach((t, i) => m[t]![argmaxOf(p.probabilities[i]!)]!++);
  return m;
}

/** Precision, recall, F1 and support per class from a confusion matrix (zero_division=0, as sklearn's). */
export function perClassOf(labels: readonly string[], confusion: number[][]): Omit<ClassMetrics, 'average_precision'>[] {
  return labels.map((label, c) => {
    const tp = confusion[c]![c]!;
    const support = confusion[c]!.reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + row[c]!, 0);
    const precision = predicted > 0 ? tp / predicted : 0;
    const recall = support > 0 ? tp / support : 0;
    // sklearn: 2·tp / (2·tp + fp + fn), 0 when the denominator is 0.
    const denom = predicted + support;
    const f1 = denom > 0 ? (2 * tp) / denom : 0;
    return { label, precision, recall, f1, support };
  });
}

/** The one-vs-rest precision–recall curve of class c, point for point as sklearn's precision_recall_curve. */
export function prCurveOf(p: Predictions, c: number): PrCurve {
  const order = p.trueClass.map((t, i) => ({ score: p.probabilities[i]![c]!, positive: t === c }));
  order.sort((a, b) => b.score - a.score);
  const totalPositive = order.filter((o) => o.positive).length;
  const tps: number[] = [];
  const fps: number[] = [];
  const thresholds: number[] = [];
  let tp = 0;
  for (let i = 0; i < order.length; i++) {
    if (order[i]!.positive) tp++;
    // One point per distinct score, at the last image holding it.
    if (i === order.length - 1 || order[i + 1]!.score !== order[i]!.score) {
      tps.push(tp);
      fps.push(i + 1 - tp);
      thresholds.push(order[i]!.score);
    }
  }
  const precision = tps.map((t, i) => (t + fps[i]! > 0 ? t / (t + fps[i]!) : 0));
  const recall = tps.map((t) => (totalPositive > 0 ? t / totalPositive : 1));
  return {
    label: p.labels[c]!,
    thresholds: thresholds.reverse(),
    precision: [...precision.reverse(), 1],
    recall: [...recall.reverse(), 0],
  };
}

/** sklearn's average_precision_score of a curve: Σ (R_n − R_{n−1}) P_n, the step function's area. */
export function averagePrecisionOf(curve: PrCurve): number {
  let ap = 0;
  for (let i = 0; i + 1 < curve.recall.length; i++) ap -= (curve.recall[i + 1]! - curve.recall[i]!) * curve.precision[i]!;
  return ap;
}

/** Top-1 accuracy among the images whose top probability reaches `threshold`, and how many do. */
export function atThreshold(p: Predictions, threshold: number): ThresholdMetrics {
  if (!(threshold >= 0 && threshold <= 1)) throw new UserError(`confidence threshold must be between 0 and 1, got ${threshold}`);
  let answered = 0;
  let right = 0;
  p.trueClass.forEach((t, i) => {
    const row = p.probabilities[i]!;
    const k = argmaxOf(row);
    if (row[k]! >= threshold) {
      answered++;
      if (k === t) right++;
    }
  });
  return { threshold, coverage: answered / p.trueClass.length, top1: answered > 0 ? right / answered : null, answered };
}

/** Off-diagonal confusion cells with at least one image, most first (fast.ai's most_confused). */
export function mostConfused(labels: readonly string[], confusion: number[][]): ConfusedPair[] {
  const out: ConfusedPair[] = [];
  confusion.forEach((row, t) =>
    row.forEach((count, q) => {
      if (t !== q && count > 0) out.push({ true_label: labels[t]!, predicted_label: labels[q]!, count });
    }),
  );
  return out.sort((a, b) => b.count - a.count); // stable: ties stay in labels order
}

function meanOf(rows: readonly { precision: number; recall: number; f1: number }[], weights: readonly number[]): MeanMetrics {
  const total = weights.reduce((a, b) => a + b, 0);
  const avg = (k: 'precision' | 'recall' | 'f1'): number => (total > 0 ? rows.reduce((s, r, i) => s + r[k] * weights[i]!, 0) / total : 0);
  return { precision: avg('precision'), recall: avg('recall'), f1: avg('f1') };
}

/** Every metric of one evaluation, plus the PR curves (kept apart: they are long). */
export function computeMetrics(p: Predictions, threshold: number): { metrics: Metrics; curves: PrCurve[] } {
  checkPredictions(p);
  const confusion = confusionOf(p);
  const base = perClassOf(p.labels, confusion);
  const curves = p.labels.map((_, c) => prCurveOf(p, c));
  const per_class: ClassMetrics[] = base.map((m, c) => ({ ...m, average_precision: m.support > 0 ? averagePrecisionOf(curves[c]!) : null }));
  const aps = per_class.map((m) => m.average_precision).filter((v): v is number => v !== null);
  const correct = confusion.reduce((s, row, i) => s + row[i]!, 0);
  return {
    metrics: {
      count: p.trueClass.length,
      top1: correct / p.trueClass.length,
      top5: topKAccuracy(p, 5),
      per_class,
      // sklearn's macro F1 is the mean of the per-class F1s (not the F1 of the mean precision and recall).
      macro: meanOf(base, base.map(() => 1)),
      weighted: meanOf(base, base.map((m) => m.support)),
      confusion,
      most_confused: mostConfused(p.labels, confusion),
      mean_average_precision: aps.length > 0 ? aps.reduce((a, b) => a + b, 0) / aps.length : null,
      at_threshold: atThreshold(p, threshold),
    },
    curves,
  };
}
