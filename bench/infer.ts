/**
 * Benchmark: in-process inference images/s of the classifier the server and `imgclass evaluate` use
 * (makeClassifier(...).classify: forward pass + softmax, no preprocessing), on the native oneDNN
 * forward and on tfjs's predict, same model, same inputs. Compare with PyTorch's inference figure from
 * ../shared/bench/torch_reference.py --size 64 --batch 32 --classes 5.
 *
 * Default model: an untrained ResNet-18 at 64 px with 5 classes, exported here (speed does not depend
 * on the weights); or --model_dir EXPORT_DIR.
 *
 * Run: npm run bench:infer -- [--forward both|native|tfjs] [--batch 32] [--warmup 2] [--steps 20]
 *   [--depth 18] [--image_size 64] [--threads N] [--model_dir DIR]
 * Prints one JSON line per forward path: {"bench":"infer","path":"native"|"tfjs","img_s":...}.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildResNet, isResNetDepth } from '../lib/model';
import { exportModel, loadExport } from '../lib/export';
import { chooseBackend } from '../lib/engine/backend';
import { defaultPreprocessing } from '../lib/train/preprocessing';
import { makeClassifier } from '../lib/serve/classifier';
import { mulberry32 } from '../lib/random';
import { numberArg, stringArg } from './args';

const FORWARD = stringArg('forward', 'both');
const BATCH = numberArg('batch', 32);
const WARMUP = numberArg('warmup', 2);
const STEPS = numberArg('steps', 20);
const DEPTH = numberArg('depth', 18);
const IMAGE_SIZE = numberArg('image_size', 64);
const THREADS = numberArg('threads', 0);
const MODEL_DIR = stringArg('model_dir', '');

async function exportDefault(dir: string): Promise<string> {
  if (!isResNetDepth(DEPTH)) throw new Error(`--depth ${DEPTH} is not a ResNet depth`);
  const model = buildResNet({ depth: DEPTH, numClasses: 5, imageSize: IMAGE_SIZE, seed: 1 });
  const labels = ['a', 'b', 'c', 'd', 'e'];
  const versionDir = await exportModel(model, dir, { labels, preprocessing: defaultPreprocessing(IMAGE_SIZE), meta: { bench: 'infer' } });
  model.dispose();
  return versionDir;
}

async function measure(versionDir: string, forward: 'auto' | 'tfjs', engineNote: string): Promise<void> {
  const classifier = makeClassifier(await loadExport(versionDir), { forward });
  const pixels = classifier.settings.imageSize ** 2 * 3;
  const rng = mulberry32(1);
  const inputs = Array.from({ length: BATCH }, () => Float32Array.from({ length: pixels }, () => 2 * rng() - 1));
  for (let i = 0; i < WARMUP; i++) classifier.classify(inputs);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < STEPS; i++) classifier.classify(inputs);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const native = classifier.forwardNote.startsWith('forward: native');
  console.log(JSON.stringify({
    bench: 'infer',
    path: native ? 'native' : 'tfjs',
    img_s: Math.round((BATCH * STEPS) / seconds * 10) / 10,
    batch: BATCH,
    steps: STEPS,
    image_size: classifier.settings.imageSize,
    classes: classifier.labels.length,
    forward_note: classifier.forwardNote,
    engine: engineNote,
    cpus: os.cpus().length,
    loadavg_1m: Math.round(os.loadavg()[0]! * 100) / 100,
  }));
  classifier.dispose();
}

async function main(): Promise<void> {
  if (!['both', 'native', 'tfjs'].includes(FORWARD)) throw new Error(`--forward must be both, native or tfjs, got ${FORWARD}`);
  const choice = await chooseBackend(undefined, THREADS > 0 ? { threads: THREADS } : {});
  const tmp = MODEL_DIR ? '' : await fsp.mkdtemp(path.join(os.tmpdir(), 'imgclass-bench-infer-'));
  try {
    const versionDir = MODEL_DIR ? (await loadExport(MODEL_DIR)).path : await exportDefault(tmp);
    if (FORWARD !== 'tfjs') await measure(versionDir, 'auto', choice.note);
    if (FORWARD !== 'native') await measure(versionDir, 'tfjs', choice.note);
  } finally {
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
