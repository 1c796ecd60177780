#!/usr/bin/env bash
# The main job, end to end on data-samples/ with the local backend (no account, no network):
#   section 1: train_set.csv, eval_set.csv, labels.txt from the class folders
#   section 4: JPEGs -> TFRecord shards of tf.train.Example, on all cores
# Outputs go to runs/main-<time>/. Sets up what it needs first (npm ci, build) on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
if [ ! -f dist/lib/cli.js ] || [ -n "$(find lib data-samples -name '*.ts' -newer dist/lib/cli.js 2>/dev/null | head -1)" ]; then
  npm run build
fi
out="runs/main-$(date +%Y%m%d-%H%M%S)"
imgclass() { node dist/lib/cli.js "$@"; }

echo "== 1. data set: CSVs and labels.txt -> $out/dataset"
imgclass make-dataset --images_dir data-samples/images --output_dir "$out/dataset"

echo "== 4. preprocess: JPEGs -> TFRecords -> $out/tfrecords"
imgclass preprocess --train_csv "$out/dataset/train_set.csv" --validation_csv "$out/dataset/eval_set.csv" \
  --labels_file "$out/dataset/labels.txt" --output_dir "$out/tfrecords"

echo "== done: $out"
