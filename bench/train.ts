/**
 * Benchmark 1 of issue 3: training throughput of ResNet-18 at 64 px, batch 32, our engine on one
 * worker and on every core, beside PyTorch (Debian python3-torch) on the same model, in one run.
 *   npm run build && node dist/bench/train.js [--size 64] [--batch 32] [--steps 8]
 * Needs `apt-get install python3-torch` for the PyTorch side (else it says so and reports ours only).
 * img/s excludes the first two steps of each run (wasm compilation, first-touch allocations).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { preprocess } from '../lib/preprocess';
import { train } from '../lib/train';
import { numberArg, stringArg } from './args';
import type { BackendName } from '../lib/engine/backend';

const SIZE = numberArg('size', 64);
const BATCH = numberArg('batch', 32);
const STEPS = numberArg('steps', 8);
/** Engine to measure; default: the one training picks (onednn when the addon is built). */
const BACKEND = stringArg('backend', '') as BackendName | '';
const ROOT = path.resolve(__dirname, '../..');

interface Ours {
  img_s: number;
  backend: string;
  note: string;
  /** Mean ms per timed step in each phase (input wait, gradients, averaging, update). */
  phase_ms: Record<string, number>;
}

async function ours(dataDir: string, workers: number): Promise<Ours> {
  const modelDir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-bench-train-'));
  const times: number[] = [];
  const phases: Record<string, number>[] = [];
  let note = '';
  let last = Date.now();
  try {
    const r = await train({
      dataDir,
      modelDir,
      imageSize: SIZE,
      trainBatchSize: BATCH,
      trainSteps: STEPS + 2,
      stepsPerEval: 1_000_000,
      stepsPerCheckpoint: 1_000_000,
      workers,
      ...(BACKEND ? { backend: BACKEND } : {}),
      onEvent: (e) => {
        if (e.kind === 'start') {
          last = Date.now();
          note = e.backendNote;
        }
        if (e.kind === 'step') {
          phases.push(e.phaseMs);
          const now = Date.now();
          times.push((now - last) / 1000);
          last = now;
        }
      },
    });
    const timed = times.slice(2);
    const phase_ms: Record<string, number> = {};
    for (const key of Object.keys(phases[0] ?? {})) {
      const vals = phases.slice(2).map((p) => p[key] as number);
      phase_ms[key] = Math.round(vals.reduce((a, b) => a + b, 0) / vals.length);
    }
    return { img_s: (timed.length * BATCH) / timed.reduce((a, b) => a + b, 0), backend: r.engine, note, phase_ms };
  } finally {
    fs.rmSync(modelDir, { recursive: true, force: true });
  }
}

function torch(): Record<string, unknown> | string {
  const script = path.resolve(ROOT, '../shared/bench/torch_reference.py');
  if (!fs.existsSync(script)) return `not found: ${script}`;
  const r = spawnSync('/usr/bin/python3', [script, '--size', String(SIZE), '--batch', String(BATCH), '--classes', '5', '--threads', String(os.availableParallelism()), '--steps', '5'], { encoding: 'utf8' });
  if (r.status !== 0) return `PyTorch not run (${(r.stderr || '').trim().split('\n').pop()}); apt-get install python3-torch`;
  return JSON.parse(r.stdout.trim().split('\n').pop() as string) as Record<string, unknown>;
}

async function main(): Promise<void> {
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
  const cores = os.availableParallelism();
  const one = await ours(dataDir, 1);
  const all = await ours(dataDir, cores);
  const t = torch();
  const torchRate = typeof t === 'string' ? undefined : Number(t.train_img_s);
  process.stdout.write(
    JSON.stringify({
      bench: 'train',
      model: 'resnet18',
      size: SIZE,
      batch: BATCH,
      cores,
      backend: all.backend,
      engine: all.note,
      engine_1_worker: one.note,
      ours_1_worker_img_s: Number(one.img_s.toFixed(2)),
      ours_all_workers_img_s: Number(all.img_s.toFixed(2)),
      scaling: Number((all.img_s / one.img_s).toFixed(2)),
      phase_ms_1_worker: one.phase_ms,
      phase_ms_all_workers: all.phase_ms,
      torch: t,
      ratio_vs_torch: torchRate ? Number((all.img_s / torchRate).toFixed(3)) : null,
      goal: 'ratio >= 0.5',
    }) + '\n',
  );
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
