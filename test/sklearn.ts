/** scikit-learn's figures for our predictions files: test/fixtures/sklearn/metrics.py under Debian's python3. */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { REPO_ROOT } from './helpers';

export const SKLEARN_SCRIPT = path.join(REPO_ROOT, 'test/fixtures/sklearn/metrics.py');

export interface SklearnFigures {
  count: number;
  top1: number;
  top5: number;
  per_class: { precision: number; recall: number; f1: number; support: number }[];
  confusion: number[][];
  macro: { precision: number; recall: number; f1: number };
  weighted: { precision: number; recall: number; f1: number };
  pr_curves: { precision: number[]; recall: number[]; thresholds: number[] }[];
  average_precision: (number | null)[];
  at_threshold: { coverage: number; top1: number | null; answered: number };
}

/** sklearn's figures for a predictions-<split>.jsonl file. */
export function sklearnFigures(predictionsFile: string, numClasses: number, threshold: number): SklearnFigures {
  const r = spawnSync('/usr/bin/python3', [SKLEARN_SCRIPT, predictionsFile, String(numClasses), String(threshold)], { encoding: 'utf8' });
  assert.equal(r.status, 0, `sklearn check failed (is python3-sklearn installed? scripts/setup.sh installs it): ${r.stderr}`);
  return JSON.parse(r.stdout) as SklearnFigures;
}

