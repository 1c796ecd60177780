/** Train/eval split that keeps every class's proportion and comes out the same on every run. */
import { UserError } from './errors';
import type { LabeledImage } from './dataset-csv';
import { compareCodePoints } from './dataset-labels';
// mulberry32 because Math.random cannot be seeded and a split must come out the same every run.
import { mulberry32 } from './random';

/** FNV-1a hash of a string mixed with the seed, to give each class its own random stream. */
function classSeed(seed: number, label: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export interface SplitOptions {
  /** Share of each class that goes to eval, in [0, 1). Default 0.1. */
  evalFraction?: number;
  /** Integer seed of the shuffle. Default 42. */
  seed?: number;
}

export interface Split {
  train: LabeledImage[];
  eval: LabeledImage[];
}

/** How many of a class's `n` images go to eval. */
export function evalCount(n: number, evalFraction: number): number {
  if (evalFraction <= 0 || n < 2) return 0;
  return Math.min(n - 1, Math.max(1, Math.round(n * evalFraction)));
}

/**
 * Split rows per class: round(n × evalFraction) images of each class go to eval (at least 1 when the
 * class has 2 or more, never all of them, so every class is both trained and evaluated).
 *
 * Each class is shuffled by its own PRNG seeded from (seed, label), after sorting its rows by path:
 * a class's split then depends only on its own images and the seed, not on the CSV's row order or
 * on which other classes exist. Both outputs keep the input order, so re-running gives a stable diff.
 */
export function splitStratified(rows: LabeledImage[], opts: SplitOptions = {}): Split {
  const evalFraction = opts.evalFraction ?? 0.1;
  const seed = opts.seed ?? 42;
  if (!(evalFraction >= 0 && evalFraction < 1)) {
    throw new UserError(`eval fraction must be at least 0 and below 1 (e.g. 0.1), got ${evalFraction}`);
  }
  if (!Number.isSafeInteger(seed)) throw new UserError(`seed must be an integer, got ${seed}`);

  const byClass = new Map<string, number[]>();
  rows.forEach((r, i) => {
    const list = byClass.get(r.label);
    if (list) list.push(i);
    else byClass.set(r.label, [i]);
  });

  const isEval = new Array<boolean>(rows.length).fill(false);
  for (const [label, indices] of byClass) {
    const order = [...indices].sort((a, b) => compareCodePoints(rows[a]!.path, rows[b]!.path) || a - b);
    const rand = mulberry32(classSeed(seed, label));
    // Fisher–Yates, drawn only as far as needed: the first k positions are a uniform sample, and a
    // larger evalFraction with the same seed only adds eval images (the old ones stay eval).
    const k = evalCount(order.length, evalFraction);
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(rand() * (order.length - i));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (let i = 0; i < k; i++) isEval[order[i]!] = true;
  }
  const train: LabeledImage[] = [];
  const evalRows: LabeledImage[] = [];
  rows.forEach((r, i) => (isEval[i] ? evalRows : train).push(r));
  return { train, eval: evalRows };
}

export interface ThreeWaySplit {
  train: LabeledImage[];
  validation: LabeledImage[];
  test: LabeledImage[];
}

/**
 * Train / validation / test per class, each held-out share `fraction` of the class (0.1 each: the
 * usual 80/10/10). The test share is drawn first with `seed`, validation from the rest with seed + 1,
 * each as splitStratified draws (so every class with 3 images or more is in all three).
 */
export function splitThreeWay(rows: LabeledImage[], opts: { fraction?: number; seed?: number } = {}): ThreeWaySplit {
  const fraction = opts.fraction ?? 0.1;
  const seed = opts.seed ?? 42;
  if (!(fraction >= 0 && fraction < 0.5)) throw new UserError(`held-out fraction must be at least 0 and below 0.5 (e.g. 0.1), got ${fraction}`);
  const first = splitStratified(rows, { evalFraction: fraction, seed });
  // fraction of the whole is fraction / (1 - fraction) of what is left.
  const second = splitStratified(first.train, { evalFraction: fraction / (1 - fraction), seed: seed + 1 });
  return { train: second.train, validation: second.eval, test: first.eval };
}
