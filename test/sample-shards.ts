/** data-samples preprocessed into two shards per split: the data several training tests start from. */
import * as path from 'node:path';
import { preprocess } from '../lib/preprocess';
import { REPO_ROOT } from './helpers';

const SAMPLES = path.join(REPO_ROOT, 'data-samples');

/** Writes data-samples' train and eval CSVs as TFRecord shards (2 per split) into `outputDir`. */
export async function preprocessSamples(outputDir: string): Promise<void> {
  await preprocess({
    trainCsv: path.join(SAMPLES, 'train_set.csv'),
    validationCsv: path.join(SAMPLES, 'eval_set.csv'),
    labelsFile: path.join(SAMPLES, 'labels.txt'),
    outputDir,
    numShards: 2,
  });
}
