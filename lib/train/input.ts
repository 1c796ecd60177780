/**
 * The training and evaluation input pipelines: TFRecord shards of tf.train.Example in, batches of
 * 8-bit RGB images and 0-based labels out, with tensorflow/tpu's ResNet preprocessing (augment.ts).
 *
 * Training input is a pure function of (seed, stream position): epoch e is a seeded permutation of
 * every indexed record (a global shuffle, which TensorFlow's shuffle buffer only approximates), and
 * each example's crop and flip come from a generator seeded by (seed, epoch, position). So results do
 * not depend on prefetching or on the order decodes finish in, and a run killed after any batch
 * resumes exactly from state().
 */
import type { FileHandle } from 'node:fs/promises';
import { UserError } from '../errors';
import { mulberry32 } from '../random';
import { evalTransform, trainTransform } from './augment';
import { checkSettings, defaultPreprocessing, PreprocessingSettings } from './preprocessing';
import {
  findShards,
  indexRecords,
  listShards,
  localShards,
  openShard,
  parseTrainingExample,
  readRecordAt,
  RecordIndex,
  RecordRef,
  recordName,
  TrainingExample,
  undecodableImage,
} from './records';

export { findShards, listShards, indexRecords, localShards, RecordIndex } from './records';
export type { RecordRef, ShardFile } from './records';

export interface Batch {
  /** size × imageSize × imageSize × 3 interleaved RGB, row-major. */
  images: Uint8Array;
  /** 0-based classes: image/class/label - 1. */
  labels: Int32Array;
  size: number;
  /** Epoch (0-based) of the batch's first example; a batch may end in the next epoch. */
  epoch: number;
  /** evalBatches with keepEncoded: each record's JPEG bytes and its name (shard#index), for showing it. */
  encoded?: Uint8Array[];
  records?: string[];
}

/** Where training input stands, to save with a checkpoint. JSON-able. */
export interface InputState {
  /** Epoch (0-based) of the next example. */
  epoch: number;
  /** Position of the next example within that epoch's permutation. */
  position: number;
  /** Recorded so a restore onto other data or another seed is caught, not silently wrong. */
  seed: number;
  numRecords: number;
}

export interface TrainInputOptions {
  dataDir: string;
  imageSize: number;
  batchSize: number;
  seed: number;
  /** Labels must lie in 1..numClasses (--num_label_classes). */
  numClasses: number;
  settings?: PreprocessingSettings;
  /** Local folder for copies of gs:// shards. */
  cacheDir?: string;
  /** Batches decoded ahead in the background (default 2; 0 decodes on demand). */
  prefetch?: number;
}

function positiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new UserError(`${name} must be a positive integer, got ${v}`);
}

function settingsFor(imageSize: number, settings: PreprocessingSettings | undefined): PreprocessingSettings {
  positiveInt('image size', imageSize);
  const s = settings ?? defaultPreprocessing(imageSize);
  checkSettings(s);
  if (s.imageSize !== imageSize) throw new UserError(`preprocessing settings are for ${s.imageSize} px images, but the image size is ${imageSize}`);
  return s;
}

/** murmur3's mixing steps: 32-bit seeds from several integers, well spread even when they differ by one. */
function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

export function hashSeed(...values: number[]): number {
  let h = values.length;
  for (const v of values) {
    h = mixWord(h, v >>> 0);
    h = mixWord(h, Math.floor(v / 4294967296) >>> 0);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// Separate streams for the epoch shuffle and the per-example augmentation.
const SHUFFLE_STREAM = 1;
const AUGMENT_STREAM = 2;

/** The order of epoch `epoch`: a permutation of 0..n-1 (Fisher–Yates). */
export function epochPermutation(seed: number, epoch: number, n: number): Uint32Array {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const rng = mulberry32(hashSeed(seed, epoch, SHUFFLE_STREAM));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  return perm;
}

/** Settle all, then throw the error of the lowest-numbered failure, so errors are deterministic too. */
async function allInOrder(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

async function decodeOrExplain(where: string, ex: TrainingExample, run: () => Promise<Uint8Array>): Promise<Uint8Array> {
  try {
    return await run();
  } catch (err) {
    throw undecodableImage(where, ex, err);
  }
}

export class TrainInput {
  private readonly perms = new Map<number, Uint32Array>();
  private queue: { start: number; batch: Promise<Batch> }[] = [];
  /** Stream position (epoch × records + position) of the next batch to schedule. */
  private cursor = 0;
  /** Stream position after the last batch next() delivered. */
  private delivered = 0;
  /** Settles when the last scheduled batch has; batches decode one after another. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Bumped by restore() so batches scheduled before it cannot move `delivered`. */
  private generation = 0;
  private closed = false;
  readonly prefetch: number;

  private constructor(
    readonly index: RecordIndex,
    readonly settings: PreprocessingSettings,
    readonly batchSize: number,
    readonly seed: number,
    readonly numClasses: number,
    prefetch: number,
  ) {
    this.prefetch = prefetch;
  }

  static async open(opts: TrainInputOptions): Promise<TrainInput> {
    const settings = settingsFor(opts.imageSize, opts.settings);
    positiveInt('batch size', opts.batchSize);
    positiveInt('number of classes', opts.numClasses);
    if (!Number.isSafeInteger(opts.seed)) throw new UserError(`seed must be an integer, got ${opts.seed}`);
    const prefetch = opts.prefetch ?? 2;
    if (!Number.isInteger(prefetch) || prefetch < 0) throw new UserError(`prefetch must be an integer >= 0, got ${prefetch}`);
    const files = await localShards(await findShards(opts.dataDir, 'train'), opts.cacheDir);
    const index = await indexRecords(files);
    if (index.size === 0) throw new UserError(`the train shards in ${opts.dataDir} hold no records; run imgclass preprocess again`);
    return new TrainInput(index, settings, opts.batchSize, opts.seed, opts.numClasses, prefetch);
  }

  get numRecords(): number {
    return this.index.size;
  }

  /** The next full batch. Batches run on across epoch boundaries. */
  async next(): Promise<Batch> {
    if (this.closed) throw new Error('TrainInput is closed');
    if (this.queue.length === 0) this.schedule();
    const { start, batch } = this.queue.shift()!;
    while (this.queue.length < this.prefetch) this.schedule();
    const generation = this.generation;
    const out = await batch;
    if (generation === this.generation) this.delivered = Math.max(this.delivered, start + this.batchSize);
    return out;
  }

  state(): InputState {
    const n = this.index.size;
    const epoch = Math.floor(this.delivered / n);
    return { epoch, position: this.delivered - epoch * n, seed: this.seed, numRecords: n };
  }

  /** Continue from a state() of an earlier run; batches decoded ahead are dropped. */
  restore(state: InputState): void {
    const n = this.index.size;
    if (state.seed !== this.seed || state.numRecords !== n) {
      throw new UserError(
        `the saved input state is for seed ${state.seed} and ${state.numRecords} training records, but this run has seed ` +
          `${this.seed} and ${n} records: the data or the seed changed since the checkpoint; train from scratch or restore the old data`,
      );
    }
    if (!Number.isSafeInteger(state.epoch) || state.epoch < 0 || !Number.isSafeInteger(state.position) || state.position < 0 || state.position >= n) {
      throw new UserError(`the saved input state is not valid: epoch ${state.epoch}, position ${state.position} of ${n} records`);
    }
    this.generation++;
    this.queue = [];
    this.cursor = this.delivered = state.epoch * n + state.position;
  }

  /** Stops prefetching and waits for decodes in flight. */
  async close(): Promise<void> {
    this.closed = true;
    this.queue = [];
    await this.tail;
  }

  private schedule(): void {
    const start = this.cursor;
    this.cursor += this.batchSize;
    const batch = this.tail.then(() => this.makeBatch(start));
    this.tail = batch.catch(() => undefined);
    // The error is the caller's when next() reaches this batch; never an unhandled rejection.
    batch.catch(() => undefined);
    this.queue.push({ start, batch });
  }

  private permutation(epoch: number): Uint32Array {
    let perm = this.perms.get(epoch);
    if (!perm) {
      perm = epochPermutation(this.seed, epoch, this.index.size);
      this.perms.set(epoch, perm);
      // A batch spans at most a few epochs; keep the recent ones only.
      for (const e of this.perms.keys()) if (this.perms.size > 3 && e !== epoch) this.perms.delete(e);
    }
    return perm;
  }

  private async makeBatch(start: number): Promise<Batch> {
    const n = this.index.size;
    const size = this.settings.imageSize;
    const pixels = size * size * 3;
    const images = new Uint8Array(this.batchSize * pixels);
    const labels = new Int32Array(this.batchSize);
    const handles = new Map<number, Promise<FileHandle>>();
    const handle = (i: number): Promise<FileHandle> => {
      const f = this.index.fileIndexOf(i);
      let h = handles.get(f);
      if (!h) {
        const shard = this.index.files[f]!;
        h = openShard(shard.path, shard.name);
        handles.set(f, h);
      }
      return h;
    };
    const tasks: Promise<void>[] = [];
    for (let k = 0; k < this.batchSize; k++) {
      const g = start + k;
      const epoch = Math.floor(g / n);
      const position = g - epoch * n;
      const record = this.permutation(epoch)[position]!;
      tasks.push(
        (async () => {
          const ref = this.index.get(record);
          const where = recordName(ref.index, ref.name);
          const data = await readRecordAt(await handle(record), ref);
          const ex = parseTrainingExample(data, where, this.numClasses);
          const rng = mulberry32(hashSeed(this.seed, epoch, position, AUGMENT_STREAM));
          images.set(await decodeOrExplain(where, ex, () => trainTransform(ex.encoded, this.settings, rng)), k * pixels);
          labels[k] = ex.label - 1;
        })(),
      );
    }
    try {
      await allInOrder(tasks);
    } finally {
      const opened = await Promise.allSettled(handles.values());
      await Promise.all(opened.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
    }
    return { images, labels, size: this.batchSize, epoch: Math.floor(start / n) };
  }
}

export interface EvalBatchesOptions {
  dataDir: string;
  imageSize: number;
  batchSize: number;
  settings?: PreprocessingSettings;
  /** When given, labels above it are an error (as in training). */
  numClasses?: number;
  cacheDir?: string;
  /** Which held-out split: validation (default, what training evaluates on) or test (only ever evaluated). */
  split?: 'validation' | 'test';
  /** Also hand back each record's encoded image and name (evaluation's gallery of mistakes). */
  keepEncoded?: boolean;
  /** Told the split's record count once the shards are indexed, before the first batch. */
  onCount?: (records: number) => void;
}

interface PendingRecord {
  data: Buffer;
  where: string;
}

/**
 * Every validation record exactly once, in file order, center-cropped; the last batch holds what
 * is left. The next batch decodes while the caller evaluates the current one.
 */
export async function* evalBatches(opts: EvalBatchesOptions): AsyncGenerator<Batch> {
  const settings = settingsFor(opts.imageSize, opts.settings);
  positiveInt('batch size', opts.batchSize);
  const index = await indexRecords(await localShards(await findShards(opts.dataDir, opts.split ?? 'validation'), opts.cacheDir));
  opts.onCount?.(index.size);
  const pixels = settings.imageSize * settings.imageSize * 3;

  const decode = async (group: PendingRecord[]): Promise<Batch> => {
    const images = new Uint8Array(group.length * pixels);
    const labels = new Int32Array(group.length);
    const encoded: Uint8Array[] = [];
    await allInOrder(
      group.map(async ({ data, where }, k) => {
        const ex = parseTrainingExample(data, where, opts.numClasses);
        images.set(await decodeOrExplain(where, ex, () => evalTransform(ex.encoded, settings)), k * pixels);
        labels[k] = ex.label - 1;
        if (opts.keepEncoded) encoded[k] = ex.encoded;
      }),
    );
    const batch: Batch = { images, labels, size: group.length, epoch: 0 };
    return opts.keepEncoded ? { ...batch, encoded, records: group.map((g) => g.where) } : batch;
  };

  let pending: Promise<Batch> | undefined;
  let group: PendingRecord[] = [];
  const launch = (): Promise<Batch> => {
    const p = decode(group);
    p.catch(() => undefined); // reported when awaited
    group = [];
    return p;
  };
  for await (const { ref, data } of recordsInOrder(index)) {
    group.push({ data, where: recordName(ref.index, ref.name) });
    if (group.length === opts.batchSize) {
      const next = launch();
      if (pending) yield await pending;
      pending = next;
    }
  }
  if (group.length > 0) {
    const next = launch();
    if (pending) yield await pending;
    pending = next;
  }
  if (pending) yield await pending;
}

/** Every record of an index in order, each file opened once. */
async function* recordsInOrder(index: RecordIndex): AsyncGenerator<{ ref: RecordRef; data: Buffer }> {
  let fh: FileHandle | undefined;
  let openFile = -1;
  try {
    for (let i = 0; i < index.size; i++) {
      const ref = index.get(i);
      if (index.fileIndexOf(i) !== openFile) {
        await fh?.close();
        fh = undefined;
        fh = await openShard(ref.file, ref.name);
        openFile = index.fileIndexOf(i);
      }
      yield { ref, data: await readRecordAt(fh!, ref) };
    }
  } finally {
    await fh?.close();
  }
}

export interface DatasetInfo {
  numTrainImages: number;
  numEvalImages: number;
  /** The largest image/class/label seen (labels are 1-based, so this is the class count). */
  numClasses: number;
  /** Class names (image/class/synset) by 0-based label, when every label up to numClasses has one. */
  labels?: string[];
}

/**
 * Count the records and classes of a preprocessed data set, reading every record's label (not its
 * image). Train shards are required; a missing validation split counts as 0 records. Conflicting
 * synsets for one label (shards of different preprocess runs mixed) are an error.
 */
export async function datasetInfo(dataDir: string, opts: { cacheDir?: string } = {}): Promise<DatasetInfo> {
  const train = await findShards(dataDir, 'train');
  const validation = await listShards(dataDir, 'validation');
  let numClasses = 0;
  const synsets: (string | undefined)[] = [];
  const firstSeen: string[] = [];
  const count = async (files: string[]): Promise<number> => {
    const index = await indexRecords(await localShards(files, opts.cacheDir));
    for await (const { ref, data } of recordsInOrder(index)) {
      const where = recordName(ref.index, ref.name);
      const ex = parseTrainingExample(data, where);
      numClasses = Math.max(numClasses, ex.label);
      if (ex.synset !== undefined) {
        const known = synsets[ex.label - 1];
        if (known === undefined) {
          synsets[ex.label - 1] = ex.synset;
          firstSeen[ex.label - 1] = where;
        } else if (known !== ex.synset) {
          throw new UserError(
            `${where} has image/class/label ${ex.label} with synset "${ex.synset}", but ${firstSeen[ex.label - 1]} ` +
              `has the same label with synset "${known}": ${dataDir} mixes shards of different preprocess runs; preprocess again into an empty folder`,
          );
        }
      }
    }
    return index.size;
  };
  const numTrainImages = await count(train);
  const numEvalImages = await count(validation);
  const info: DatasetInfo = { numTrainImages, numEvalImages, numClasses };
  const labels = Array.from({ length: numClasses }, (_, i) => synsets[i]);
  if (numClasses > 0 && labels.every((l): l is string => l !== undefined)) info.labels = labels;
  return info;
}
