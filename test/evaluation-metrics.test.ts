/**
 * The evaluation figures against scikit-learn (Debian's python3-sklearn, run as /usr/bin/python3) on
 * the same predictions, within 1e-6: random probabilities over 7 classes, rounded so that scores tie
 * (ties are where top-k and PR-curve definitions differ), with one class that has no images.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { computeMetrics, Predictions } from '../lib/evaluation/metrics';
import { mulberry32 } from '../lib/random';
import { tempDir, removeDir } from './helpers';
import { sklearnFigures, SklearnFigures } from './sklearn';

function close(actual: number | null, expected: number | null, what: string): void {
  if (expected === null || actual === null) return assert.equal(actual, expected, what);
  assert.ok(Math.abs(actual - expected) <= 1e-6, `${what}: ours ${actual}, sklearn ${expected}`);
}

function closeAll(actual: readonly number[], expected: readonly number[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  actual.forEach((v, i) => close(v, expected[i]!, `${what}[${i}]`));
}

/** Every figure of our metrics against sklearn's. */
export function assertAgreesWithSklearn(ours: ReturnType<typeof computeMetrics>, sk: SklearnFigures): void {
  const m = ours.metrics;
  assert.equal(m.count, sk.count);
  close(m.top1, sk.top1, 'top1');
  close(m.top5, sk.top5, 'top5');
  assert.deepEqual(m.confusion, sk.confusion);
  m.per_class.forEach((c, i) => {
    for (const k of ['precision', 'recall', 'f1'] as const) close(c[k], sk.per_class[i]![k], `${c.label} ${k}`);
    assert.equal(c.support, sk.per_class[i]!.support, `${c.label} support`);
    close(c.average_precision, sk.average_precision[i]!, `${c.label} average precision`);
  });
  for (const avg of ['macro', 'weighted'] as const) {
    for (const k of ['precision', 'recall', 'f1'] as const) close(m[avg][k], sk[avg][k], `${avg} ${k}`);
  }
  ours.curves.forEach((c, i) => {
    closeAll(c.precision, sk.pr_curves[i]!.precision, `${c.label} PR precision`);
    closeAll(c.recall, sk.pr_curves[i]!.recall, `${c.label} PR recall`);
    closeAll(c.thresholds, sk.pr_curves[i]!.thresholds, `${c.label} PR thresholds`);
  });
  close(m.at_threshold.coverage, sk.at_threshold.coverage, 'coverage');
  close(m.at_threshold.top1, sk.at_threshold.top1, 'top1 at threshold');
  assert.equal(m.at_threshold.answered, sk.at_threshold.answered);
  // most_confused is the confusion matrix's off-diagonal, largest first.
  const off = sk.confusion.flatMap((row, t) => row.map((n, q) => ({ t, q, n }))).filter((c) => c.t !== c.q && c.n > 0);
  assert.deepEqual(m.most_confused.map((p) => p.count), off.map((c) => c.n).sort((a, b) => b - a));
}

function randomPredictions(seed: number, n: number, classes: number, emptyClass: number, digits: number): Predictions {
  const rand = mulberry32(seed);
  const labels = Array.from({ length: classes }, (_, i) => `class-${i}`);
  const trueClass: number[] = [];
  const probabilities: number[][] = [];
  for (let i = 0; i < n; i++) {
    let t = Math.floor(rand() * classes);
    if (t === emptyClass) t = (t + 1) % classes;
    // Logits leaning to the true class, so the figures are neither 0 nor 1; rounded for ties.
    const logits = labels.map((_, c) => rand() * 3 + (c === t ? 1.5 : 0));
    const e = logits.map(Math.exp);
    const sum = e.reduce((a, b) => a + b, 0);
    probabilities.push(e.map((v) => Math.round((10 ** digits * v) / sum) / 10 ** digits));
    trueClass.push(t);
  }
  return { labels, trueClass, probabilities };
}

test('metrics: every figure agrees with scikit-learn within 1e-6 (ties, a class without images, k < classes)', () => {
  const dir = tempDir('imgclass-metrics-');
  try {
    for (const [seed, n, classes, threshold, digits] of [[1, 300, 7, 0.5, 2], [2, 40, 3, 0.9, 2], [3, 25, 6, 0, 2], [4, 200, 8, 0.3, 1]] as const) {
      const p = randomPredictions(seed, n, classes, classes - 1, digits);
      const file = path.join(dir, `p${seed}.jsonl`);
      fs.writeFileSync(file, p.trueClass.map((t, i) => JSON.stringify({ true: t, probabilities: p.probabilities[i] })).join('\n') + '\n');
      const ours = computeMetrics(p, threshold);
      assert.ok(ours.metrics.top1 > 0 && ours.metrics.top1 < 1, `seed ${seed}: a top-1 between 0 and 1 (${ours.metrics.top1})`);
      assert.equal(ours.metrics.per_class[classes - 1]!.support, 0);
      assert.equal(ours.metrics.per_class[classes - 1]!.average_precision, null);
      assertAgreesWithSklearn(ours, sklearnFigures(file, classes, threshold));
    }
  } finally {
    removeDir(dir);
  }
});

test('metrics: bad predictions are refused with what is wrong', () => {
  assert.throws(() => computeMetrics({ labels: ['a', 'b'], trueClass: [0, 2], probabilities: [[1, 0], [0, 1]] }, 0.5), /image 1: true class 2 is not in 0\.\.1/);
  assert.throws(() => computeMetrics({ labels: ['a', 'b'], trueClass: [0], probabilities: [[1, 0, 0]] }, 0.5), /image 0: 3 probabilities for 2 classes/);
  assert.throws(() => computeMetrics({ labels: ['a', 'b'], trueClass: [], probabilities: [] }, 0.5), /no images/);
  assert.throws(() => computeMetrics({ labels: ['a', 'b'], trueClass: [0], probabilities: [[1, 0]] }, 1.5), /threshold must be between 0 and 1/);
});
