/**
 * The held-out test split, evaluated once at the end of training: never read while training or
 * choosing a checkpoint (training reads train-* and validation-* only), so its figures are the
 * unbiased ones. Only when the data folder has test-* shards (an AutoML CSV's TEST rows).
 */
import { listShards } from '../train/records';
import { evaluateModel, Evaluation, EvaluateOptions } from './run';

/** The export on the test split, or undefined when the data has none. */
export async function evaluateTestSplit(o: Omit<EvaluateOptions, 'split'>): Promise<Evaluation | undefined> {
  if ((await listShards(o.dataDir, 'test')).length === 0) return undefined;
  return evaluateModel({ ...o, split: 'test' });
}
