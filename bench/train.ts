/**
 * Training and inference throughput of our engine beside PyTorch on the same model, like with like
 * (issues 3 and 14). Each round measures, in turn (who goes first alternates, bench/rounds.ts):
 *  - ours, compute only: train()'s step (same replicas, engine, gradient averaging and update) on
 *    batches prepared once in memory by the real input pipeline (lib/train/compute-only.ts): no
 *    JPEG decode, no metrics or TensorBoard writes. PyTorch trains on one fixed synthetic batch, so
 *    this is the figure the ratio uses;
 *  - ours, inference: makeClassifier(export).classify() on batches of --batch, the forward pass the
 *    server and evaluation use, in this process;
 *  - ours, end to end: train() on data-samples' TFRecord shards, JPEG decode and augmentation included;
 *  - PyTorch: ../shared/bench/torch_reference.py (ResNet-18) or bench/torch_resnet50.py (ResNet-50),
 *    with as many threads as our replicas have in all (os.availableParallelism()).
 * Per round ratio = ours / PyTorch; the JSON line gives the median over rounds and its min–max.
 *
 *   npm run bench:train -- [--depth 18|50] [--size 64] [--batch 32] [--rounds 3] [--steps 20] [--warmup 2]
 *                          [--workers N] [--backend onednn|wasm|...] [--bf16] [--step auto|native|tfjs] [--end_to_end 0]
 * ResNet-50 as the issue asks: --depth 50 --size 224. --bf16 trains ours with --precision bfloat16 and
 * runs PyTorch under CPU bfloat16 autocast. --step tfjs measures the op-by-op tfjs step instead of the
 * native graph.
 * Needs `apt-get install python3-torch` for the PyTorch side (else it says so and reports ours only).
 * A run of at least 3 rounds of 20 steps is appended to bench/results/train.json; shorter ones
 * (smoke runs) are only printed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { preprocess } from '../lib/preprocess';
import { train } from '../lib/train';
import { TrainInput, type Batch } from '../lib/train/input';
import { trainComputeOnly } from '../lib/train/compute-only';
import { poolLayout } from '../lib/train/replicas';
import { defaultPreprocessing, normalizeInto } from '../lib/train/preprocessing';
import { buildResNet, type ResNetDepth } from '../lib/model';
import { exportModel, loadExport } from '../lib/export';
import { chooseBackend, likelyEngine, type BackendName } from '../lib/engine/backend';
import { makeClassifier, type Classifier } from '../lib/serve/classifier';
import { UserError } from '../lib/errors';
import { numberArg, stringArg } from './args';
import { meanByKey, roundOrder, spread } from './rounds';
import type { TrainingStepChoice } from '../lib/train/protocol';

const DEPTH = numberArg('depth', 18);
const SIZE = numberArg('size', 64);
const BATCH = numberArg('batch', 32);
const ROUNDS = numberArg('rounds', 3);
const STEPS = numberArg('steps', 20);
const WARMUP = numberArg('warmup', 2);
const CORES = os.availableParallelism();
/** Replicas; default poolLayout's (one on all cores for oneDNN, one per core otherwise), as train() picks. */
const WORKERS_ARG = numberArg('workers', 0);
const WORKERS = WORKERS_ARG > 0 ? WORKERS_ARG : undefined;
/** Engine to measure; default: the one training picks (onednn when the addon is built). */
const BACKEND = stringArg('backend', '') as BackendName | '';
/** bfloat16 on both sides: ours with --precision bfloat16, PyTorch under CPU autocast. */
const BF16 = process.argv.includes('--bf16');
/** Which training step ours runs (ReplicaInit.trainingStep): native graph, tfjs ops, or auto. */
const STEP = stringArg('step', 'auto') as TrainingStepChoice;
const END_TO_END = numberArg('end_to_end', 1) !== 0;
const CLASSES = 5;
/** Distinct prepared batches the compute-only run cycles through. */
const PREPARED_BATCHES = 2;
const ROOT = path.resolve(__dirname, '../..');
const TORCH_SCRIPTS: Partial<Record<number, string>> = {
  18: path.resolve(ROOT, '../shared/bench/torch_reference.py'),
  50: path.join(ROOT, 'bench/torch_resnet50.py'),
};

interface TrainFigure {
  img_s: number;
  /** Mean ms per timed step in each phase. */
  phases: Record<string, number>[];
}

interface Round {
  order: string[];
  ours_compute_img_s?: number;
  ours_end_to_end_img_s?: number;
  ours_infer_img_s?: number;
  torch_train_img_s?: number;
  torch_infer_img_s?: number;
}

function checkFlags(): void {
  if (!['auto', 'native', 'tfjs'].includes(STEP)) throw new UserError(`--step ${STEP}: use native, tfjs or auto`);
  if (!TORCH_SCRIPTS[DEPTH]) throw new UserError(`--depth ${DEPTH}: this benchmark compares ResNet-18 and ResNet-50; use --depth 18 or --depth 50`);
  for (const [name, v, min] of [['size', SIZE, 16], ['batch', BATCH, 1], ['rounds', ROUNDS, 1], ['steps', STEPS, 1], ['warmup', WARMUP, 0], ['workers', WORKERS ?? 1, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new UserError(`--${name} must be a whole number >= ${min}, got ${v}`);
  }
}

/** Images per second over the steps after the warm-up. */
function rate(stepMs: readonly number[]): number {
  const timed = stepMs.slice(WARMUP);
  return (timed.length * BATCH) / (timed.reduce((a, b) => a + b, 0) / 1000);
}

async function samplesData(): Promise<string> {
  const dataDir = path.join(os.tmpdir(), 'imgclass-bench-train-data');
  if (!fs.existsSync(path.join(dataDir, 'preprocess_report.json'))) {
    await preprocess({
      trainCsv: path.join(ROOT, 'data-samples/train_set.csv'),
      validationCsv: path.join(ROOT, 'data-samples/eval_set.csv'),
      labelsFile: path.join(ROOT, 'data-samples/labels.txt'),
      outputDir: dataDir,
      overwrite: true,
    });
  }
  return dataDir;
}

/** A few training batches decoded and augmented by the real input pipeline, kept in memory. */
async function prepareBatches(dataDir: string): Promise<Batch[]> {
  const input = await TrainInput.open({ dataDir, imageSize: SIZE, batchSize: BATCH, seed: 42, numClasses: CLASSES, settings: defaultPreprocessing(SIZE) });
  try {
    const out: Batch[] = [];
    for (let i = 0; i < PREPARED_BATCHES; i++) out.push(await input.next());
    return out;
  } finally {
    await input.close();
  }
}

async function oursComputeOnly(batches: Batch[], onEngine: (note: string) => void): Promise<TrainFigure> {
  const r = await trainComputeOnly({
    batches,
    steps: WARMUP + STEPS,
    resnetDepth: DEPTH as ResNetDepth,
    imageSize: SIZE,
    numClasses: CLASSES,
    batchSize: BATCH,
    workers: WORKERS,
    ...(BACKEND ? { backend: BACKEND } : {}),
    ...(BF16 ? { precision: 'bfloat16' as const } : {}),
    trainingStep: STEP,
    onStart: (s) => onEngine(s.backendNote),
  });
  return { img_s: rate(r.steps.map((s) => s.ms)), phases: r.steps.slice(WARMUP).map((s) => s.phaseMs) };
}

async function oursEndToEnd(dataDir: string): Promise<TrainFigure> {
  const modelDir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-bench-train-'));
  const times: number[] = [];
  const phases: Record<string, number>[] = [];
  let last = performance.now();
  try {
    await train({
      dataDir,
      modelDir,
      resnetDepth: DEPTH as ResNetDepth,
      imageSize: SIZE,
      trainBatchSize: BATCH,
      trainSteps: WARMUP + STEPS,
      stepsPerEval: 1_000_000,
      stepsPerCheckpoint: 1_000_000,
      workers: WORKERS,
      ...(BACKEND ? { backend: BACKEND } : {}),
      ...(BF16 ? { precision: 'bfloat16' as const } : {}),
      trainingStep: STEP,
      onEvent: (e) => {
        if (e.kind === 'start') last = performance.now();
        if (e.kind === 'step') {
          const now = performance.now();
          times.push(now - last);
          phases.push(e.phaseMs);
          last = now;
        }
      },
    });
    return { img_s: rate(times), phases: phases.slice(WARMUP) };
  } finally {
    fs.rmSync(modelDir, { recursive: true, force: true });
  }
}

/** An exported ResNet of the benchmark's size, loaded as the server loads it, and inputs for it. */
async function inferenceSetup(batches: Batch[], work: string): Promise<{ classifier: Classifier; inputs: Float32Array[] }> {
  const model = buildResNet({ depth: DEPTH as ResNetDepth, numClasses: CLASSES, imageSize: SIZE, seed: 1 });
  const dir = path.join(work, 'export');
  const settings = defaultPreprocessing(SIZE);
  await exportModel(model, dir, { labels: Array.from({ length: CLASSES }, (_, i) => `class_${i}`), preprocessing: settings, meta: { bench: true } });
  model.dispose();
  const classifier = makeClassifier(await loadExport(dir));
  const pixels = SIZE * SIZE * 3;
  const first = batches[0] as Batch;
  const inputs = Array.from({ length: BATCH }, (_, i) => {
    const k = i % first.size;
    return normalizeInto(first.images.subarray(k * pixels, (k + 1) * pixels), new Float32Array(pixels), settings);
  });
  return { classifier, inputs };
}

function oursInference(c: { classifier: Classifier; inputs: Float32Array[] }): number {
  for (let i = 0; i < WARMUP; i++) c.classifier.classify(c.inputs);
  const t0 = performance.now();
  for (let i = 0; i < STEPS; i++) c.classifier.classify(c.inputs);
  return (STEPS * BATCH) / ((performance.now() - t0) / 1000);
}

/** PyTorch's JSON line, or why it did not run. */
function torch(): Record<string, unknown> | string {
  const script = TORCH_SCRIPTS[DEPTH] as string;
  if (!fs.existsSync(script)) return `not found: ${script}`;
  const args = [script, '--size', String(SIZE), '--batch', String(BATCH), '--classes', String(CLASSES), '--threads', String(CORES),
    '--steps', String(STEPS), '--warmup', String(WARMUP), ...(BF16 ? ['--bf16'] : [])];
  const r = spawnSync('/usr/bin/python3', args, { encoding: 'utf8' });
  if (r.status !== 0) return `PyTorch not run (${(r.stderr || r.error?.message || '').trim().split('\n').pop()}); apt-get install python3-torch`;
  return JSON.parse(r.stdout.trim().split('\n').pop() as string) as Record<string, unknown>;
}

const round2 = (v: number): number => Number(v.toFixed(2));
const round3 = (v: number): number => Number(v.toFixed(3));

function roundedRound(r: Round): Record<string, unknown> {
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'number' ? round2(v) : v]));
}

/** `name`: median over the rounds that have it; `name_min_max`: [min, max]; nulls when none has. */
function summary(name: string, values: (number | undefined)[], digits: (v: number) => number): Record<string, unknown> {
  const have = values.filter((v): v is number => v !== undefined);
  if (have.length === 0) return { [name]: null, [`${name}_min_max`]: null };
  const s = spread(have);
  return { [name]: digits(s.median), [`${name}_min_max`]: [digits(s.min), digits(s.max)] };
}

function ratios(rounds: Round[], ours: keyof Round, theirs: keyof Round): (number | undefined)[] {
  return rounds.map((r) => {
    const a = r[ours] as number | undefined;
    const b = r[theirs] as number | undefined;
    return a !== undefined && b ? a / b : undefined;
  });
}

async function main(): Promise<void> {
  checkFlags();
  const dataDir = await samplesData();
  const batches = await prepareBatches(dataDir);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-bench-infer-'));
  // The server and evaluation choose the engine this way (all cores for oneDNN in one thread).
  const inferEngine = await chooseBackend(BACKEND || undefined);
  const layout = poolLayout(WORKERS, BATCH, CORES, likelyEngine(BACKEND || undefined));
  let trainEngine = '';
  let torchFailure: string | undefined;
  let torchLine: Record<string, unknown> | undefined;
  const rounds: Round[] = [];
  const computePhases: Record<string, number>[] = [];
  const endToEndPhases: Record<string, number>[] = [];
  try {
    const inference = await inferenceSetup(batches, work);
    for (let i = 0; i < ROUNDS; i++) {
      const round: Round = { order: roundOrder(i, ['ours', 'torch']) };
      for (const who of round.order) {
        if (who === 'ours') {
          const c = await oursComputeOnly(batches, (note) => {
            if (!trainEngine) process.stderr.write(`training ${note}\ninference ${inferEngine.note}\n`);
            trainEngine = note;
          });
          round.ours_compute_img_s = c.img_s;
          computePhases.push(...c.phases);
          round.ours_infer_img_s = oursInference(inference);
          if (END_TO_END) {
            const e = await oursEndToEnd(dataDir);
            round.ours_end_to_end_img_s = e.img_s;
            endToEndPhases.push(...e.phases);
          }
        } else if (torchFailure === undefined) {
          const t = torch();
          if (typeof t === 'string') {
            torchFailure = t;
            process.stderr.write(`${t}\n`);
          } else {
            torchLine = t;
            round.torch_train_img_s = Number(t.train_img_s);
            round.torch_infer_img_s = Number(t.infer_img_s);
          }
        }
      }
      rounds.push(round);
      process.stderr.write(`round ${i + 1}/${ROUNDS}: ${JSON.stringify(roundedRound(round))}\n`);
    }
    inference.classifier.dispose();
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const line = JSON.stringify({
    bench: 'train',
    model: `resnet${DEPTH}`,
    size: SIZE,
    batch: BATCH,
    classes: CLASSES,
    cores: CORES,
    rounds: ROUNDS,
    steps: STEPS,
    warmup: WARMUP,
    replicas: layout.replicas,
    threads_per_replica: layout.threads,
    torch_threads: CORES,
    engine: trainEngine,
    engine_inference: inferEngine.note,
    ...summary('ratio_vs_torch', ratios(rounds, 'ours_compute_img_s', 'torch_train_img_s'), round3),
    ...summary('infer_ratio_vs_torch', ratios(rounds, 'ours_infer_img_s', 'torch_infer_img_s'), round3),
    ...summary('end_to_end_ratio_vs_torch', ratios(rounds, 'ours_end_to_end_img_s', 'torch_train_img_s'), round3),
    ...summary('ours_compute_img_s', rounds.map((r) => r.ours_compute_img_s), round2),
    ...summary('ours_end_to_end_img_s', rounds.map((r) => r.ours_end_to_end_img_s), round2),
    ...summary('ours_infer_img_s', rounds.map((r) => r.ours_infer_img_s), round2),
    ...summary('torch_train_img_s', rounds.map((r) => r.torch_train_img_s), round2),
    ...summary('torch_infer_img_s', rounds.map((r) => r.torch_infer_img_s), round2),
    phase_ms_compute: meanByKey(computePhases),
    phase_ms_end_to_end: END_TO_END ? meanByKey(endToEndPhases) : null,
    torch: torchFailure ?? { version: torchLine?.version, precision: torchLine?.precision, threads: torchLine?.threads },
    per_round: rounds.map(roundedRound),
    precision: BF16 ? 'bfloat16' : 'float32',
    goal: 'ratio >= 1.0 (training and inference)',
    node: process.version,
  });
  process.stdout.write(line + '\n');
  if (ROUNDS >= 3 && STEPS >= 20) fs.appendFileSync(path.join(ROOT, 'bench', 'results', 'train.json'), line + '\n');
  else process.stderr.write('fewer than 3 rounds of 20 steps: a smoke run, not appended to bench/results/train.json\n');
}

main().catch((err) => {
  process.stderr.write(err instanceof UserError ? `error: ${err.message}\n` : `${(err as Error).stack}\n`);
  process.exit(1);
});
