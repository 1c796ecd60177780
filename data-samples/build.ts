/**
 * Rebuilds data-samples/: 5 Fashion-MNIST classes × 80 images (first in file order) as RGB JPEGs in
 * class folders, then train_set.csv / eval_set.csv (10 % per class held out, seed 42) and labels.txt.
 * Needs Debian's `dataset-fashion-mnist`. Run: npm run samples [-- OUT_DIR] (default: this folder).
 * Deterministic, so a test can rebuild into a temp folder and compare with what is committed.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { exportFashionMnistJpegs, FASHION_MNIST_CLASSES } from '../lib/fashion-mnist';
import { makeDataset, formatSummary } from '../lib/dataset';

// Five classes that look different at a glance, so a model trained for a minute on a laptop
// clearly beats chance (20 %), as the tests and notebooks require.
const CLASSES = ['t_shirt_top', 'trouser', 'sneaker', 'bag', 'ankle_boot'];
const PER_CLASS = 80;

export async function buildSamples(root: string): Promise<string> {
  const images = path.join(root, 'images');
  await fsp.rm(images, { recursive: true, force: true });
  const counts = await exportFashionMnistJpegs({
    split: 'train',
    outDir: images,
    classes: CLASSES.map((c) => FASHION_MNIST_CLASSES.indexOf(c as (typeof FASHION_MNIST_CLASSES)[number])),
    perClass: PER_CLASS,
  });
  const r = await makeDataset({ imagesDir: images, outputDir: root, evalFraction: 0.1, seed: 42, overwrite: true });
  return `${JSON.stringify(counts)}\n${formatSummary(r.summary)}\n`;
}

if (require.main === module) {
  buildSamples(path.resolve(process.argv[2] ?? path.join(__dirname, '../../data-samples'))).then((s) => process.stdout.write(s), (err) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  });
}
