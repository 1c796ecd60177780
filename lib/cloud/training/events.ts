/**
 * The live curves of a cloud run: Model Garden's trainer (Orbit) writes TensorBoard event files to
 * MODEL_DIR/train (training_loss, learning_rate, accuracy, …) and MODEL_DIR/validation
 * (validation_loss, accuracy, top_5_accuracy); this reads them with our TFRecord reader and Event
 * protos and turns new points into the same step/eval records the local run's chart draws.
 * Local runs (lib/train) write `loss` to MODEL_DIR and MODEL_DIR/eval; both layouts are read.
 */
import * as storage from '../../storage';
import { readRecords, TFRecordError } from '../../tfrecord';
import { decodeEvent } from '../../tensorboard-proto';
import type { MetricsLine } from '../../charts/specs';

/** Sub-folders and the tags in them: the Model Garden names first, then the local trainer's. */
const TRAIN_DIRS = ['train', ''];
const EVAL_DIRS = ['validation', 'eval'];
const TRAIN_LOSS = ['training_loss', 'loss'];
const EVAL_LOSS = ['validation_loss', 'loss'];
const TOP1 = ['accuracy', 'top_1_accuracy'];
const TOP5 = ['top_5_accuracy'];
const LR = ['learning_rate'];

type Points = Map<number, Map<string, number>>;

/** The event files directly in `dir` (not in its sub-folders: MODEL_DIR holds train/ and validation/ too). */
async function eventFiles(dir: string): Promise<string[]> {
  // glob lists one folder level, not all of MODEL_DIR's checkpoints on every poll as list() would.
  return storage.glob(storage.joinPath(dir, 'events.out.tfevents.*')).catch(() => [] as string[]);
}

/** Every scalar in the event files directly in `dir`, by step and tag (a later file wins). */
async function readScalars(dir: string): Promise<Points> {
  const out: Points = new Map();
  for (const file of await eventFiles(dir)) {
    let buf: Buffer;
    try {
      buf = await storage.readFile(file);
    } catch {
      continue; // replaced while we listed: the next poll reads it
    }
    try {
      for (const rec of readRecords(buf, file)) {
        const e = decodeEvent(rec, file);
        for (const v of e.values) {
          if (v.value === undefined) continue;
          let at = out.get(e.step);
          if (!at) out.set(e.step, (at = new Map()));
          at.set(v.tag, v.value);
        }
      }
    } catch (err) {
      // The writer may be mid-record (a local file being appended to): the whole records before count.
      if (!(err instanceof TFRecordError && err.kind === 'truncated')) throw err;
    }
  }
  return out;
}

const pick = (m: Map<string, number>, tags: string[]): number | undefined => {
  for (const t of tags) if (m.has(t)) return m.get(t);
  return undefined;
};

async function firstWithData(modelDir: string, dirs: string[]): Promise<Points> {
  for (const d of dirs) {
    const p = await readScalars(d ? storage.joinPath(modelDir, d) : modelDir);
    if (p.size > 0) return p;
  }
  return new Map();
}

/** The curves in MODEL_DIR's event files so far, as metrics lines in step order. */
export async function readTrainingCurves(modelDir: string): Promise<MetricsLine[]> {
  const lines: MetricsLine[] = [];
  const train = await firstWithData(modelDir, TRAIN_DIRS);
  for (const [step, m] of [...train].sort((a, b) => a[0] - b[0])) {
    const loss = pick(m, TRAIN_LOSS);
    if (loss === undefined) continue;
    const lr = pick(m, LR);
    lines.push({ kind: 'train', step, loss, ...(lr !== undefined ? { lr } : {}) });
  }
  const evals = await firstWithData(modelDir, EVAL_DIRS);
  for (const [step, m] of [...evals].sort((a, b) => a[0] - b[0])) {
    const top1 = pick(m, TOP1);
    if (top1 === undefined) continue;
    const top5 = pick(m, TOP5);
    const loss = pick(m, EVAL_LOSS);
    lines.push({ kind: 'eval', step, top1, ...(top5 !== undefined ? { top5 } : {}), ...(loss !== undefined ? { loss } : {}) });
  }
  return lines;
}

/** Remembers what was seen, so each poll yields only the points that are new. */
export class CurveFollower {
  private seen = new Set<string>();
  constructor(readonly modelDir: string) {}

  async poll(): Promise<MetricsLine[]> {
    const fresh: MetricsLine[] = [];
    for (const l of await readTrainingCurves(this.modelDir)) {
      const key = `${l.kind}:${String(l.step)}`;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      fresh.push(l);
    }
    return fresh;
  }
}
