#!/usr/bin/env bash
# The main job, end to end on data-samples/ with the local backend (no account, no network):
#   section 1:    train_set.csv, eval_set.csv, labels.txt from the class folders
#   section 4/5:  JPEGs -> TFRecord shards of tf.train.Example, on all cores
#   section 6:    a short ResNet-18 training run, exported for serving
#   section 7/8:  the prediction server started in the background, one prediction, server stopped
#   then the same steps as the eight notebooks (notebooks/01-…08-*.ipynb), run headless.
# Outputs go to runs/main-<time>/ (CLI steps) and runs/main-<time>/notebooks/ (executed notebooks).
# Sets up what it needs first (npm ci, build; when missing and we are root: oneDNN for the fast training
# kernels and the fonts the charts use).
set -euo pipefail
cd "$(dirname "$0")/.."
# oneDNN makes training ~4x faster (lib/engine/onednn.ts); without it training runs on XNNPACK.
if ! dpkg -s libdnnl-dev >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libdnnl-dev g++ make) >/dev/null ||
    echo "warning: could not install libdnnl-dev; training will use the slower XNNPACK kernels" >&2
fi
if [ ! -d node_modules ]; then npm ci --no-audit --no-fund; fi
node scripts/build-native.js
if [ ! -f dist/lib/cli.js ] || [ -n "$(find lib data-samples -name '*.ts' -newer dist/lib/cli.js 2>/dev/null | head -1)" ]; then
  npm run build
fi
# Chart text is drawn with a system font; without one the charts render with blank labels.
if ! fc-list 2>/dev/null | grep -qi dejavu && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-dejavu-core) >/dev/null ||
    echo "warning: could not install fonts-dejavu-core; charts will lack text" >&2
fi
out="runs/main-$(date +%Y%m%d-%H%M%S)"
imgclass() { node dist/lib/cli.js "$@"; }
trap 'imgclass undeploy --work_dir "$out" >/dev/null 2>&1 || true' EXIT

echo "== 1. data set: CSVs and labels.txt -> $out/dataset"
imgclass make-dataset --images_dir data-samples/images --output_dir "$out/dataset"

echo "== 4. preprocess: JPEGs -> TFRecords -> $out/tfrecords"
imgclass preprocess --train_csv "$out/dataset/train_set.csv" --validation_csv "$out/dataset/eval_set.csv" \
  --labels_file "$out/dataset/labels.txt" --output_dir "$out/tfrecords"

echo "== 6. train (short): ResNet-18 at 32 px, 80 steps -> $out/model, export -> $out/export"
imgclass train --data_dir "$out/tfrecords" --model_dir "$out/model" --export_dir "$out/export" \
  --resnet_depth 18 --image_size 32 --train_batch_size 16 --train_steps 80 --steps_per_eval 40 --base_learning_rate 2.0

echo "== 7. deploy: the prediction server in the background"
imgclass deploy --export_dir "$out/export" --work_dir "$out" --port 0 --model_name imgclass
endpoint="$(node -e 'console.log(require(process.argv[1]).predictUrl)' "$PWD/$out/deployment.json")"

echo "== 8. predict: the first image of eval_set.csv"
image="$(node -e '
  const [csv] = process.argv.slice(1);
  const first = require("fs").readFileSync(csv, "utf8").split("\n")[0].split(",")[0];
  console.log(require("path").resolve(require("path").dirname(csv), first));' "$out/dataset/eval_set.csv")"
imgclass predict --endpoint "$endpoint" --image "$image"

echo "== undeploy"
imgclass undeploy --work_dir "$out"

echo "== notebooks 01-08 -> $out/notebooks"
bash scripts/run-notebooks.sh --out "$out/notebooks"

echo "== done: $out"
