/**
 * Training checkpoints: model weights, optimizer slots and the rest of the training state (input
 * pipeline position, RNG, config, metrics so far) in `model_dir`, so an interrupted run resumes.
 *
 * Files in model_dir:
 *   ckpt-00000123.bin   one checkpoint (format below), step zero-padded to 8 digits
 *   checkpoint          JSON pointer {"latest": "ckpt-00000123.bin", "all": [... oldest first]}
 *
 * Checkpoint file layout (all integers little-endian):
 *   8 bytes   magic "IMGCKPT1"
 *   uint32    header length H
 *   uint32    CRC-32C of the header bytes
 *   H bytes   header, UTF-8 JSON: step, state, data_bytes, data_crc32c and per tensor
 *             {group, name, shape, dtype, offset, bytes} (offset into the data section)
 *   0-7 bytes zero padding, so the data section starts 8-byte aligned
 *   data      the raw little-endian tensor values, back to back
 *
 * Kill safety: the .bin file is written under a temporary name and renamed (storage.writeFile), THEN
 * the pointer the same way, THEN old checkpoints are deleted. A SIGKILL at any moment leaves the
 * pointer naming complete files; a file that is damaged anyway (disk, copy) fails its CRC and the
 * loader falls back to the previous checkpoint.
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { crc32c as nativeCrc32c } from '@node-rs/crc32';
import { crc32c } from '../tfrecord';
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';

export type CheckpointDType = 'float32' | 'int32';

export interface TensorEntry {
  name: string;
  shape: number[];
  dtype: CheckpointDType;
  data: Float32Array | Int32Array;
}

export interface Checkpoint {
  step: number;
  /** Every model weight, trainable or not (batch-norm moving mean/variance included). */
  weights: TensorEntry[];
  /** The optimizer's own weights (`optimizer.getWeights()`: iteration count, momentum slots, ...). */
  optimizer: TensorEntry[];
  /** Anything JSON can hold: input pipeline state, RNG state, config, metrics so far. */
  state: Record<string, unknown>;
}

export interface SaveCheckpointOptions {
  /** How many checkpoints to keep (default 3); older ones are deleted after a successful save. */
  keep?: number;
}

export interface LoadCheckpointOptions {
  /** Where the fallback warning goes (default console.warn). */
  warn?: (message: string) => void;
}

export const POINTER_FILE = 'checkpoint';
const MAGIC = Buffer.from('IMGCKPT1', 'latin1');
const PREAMBLE_BYTES = MAGIC.length + 8;
const FORMAT_VERSION = 1;
const CKPT_NAME = /^ckpt-(\d{8,})\.bin$/;

if (os.endianness() !== 'LE') {
  // The data section is the typed arrays' memory as is; a big-endian host would need byte swapping.
  throw new Error('imgclass checkpoints are little-endian; this big-endian host is not supported');
}

export function checkpointFileName(step: number): string {
  return `ckpt-${String(step).padStart(8, '0')}.bin`;
}

function stepOfName(name: string): number | undefined {
  const m = CKPT_NAME.exec(name);
  return m ? Number(m[1]) : undefined;
}

interface HeaderTensor {
  group: 'weights' | 'optimizer';
  name: string;
  shape: number[];
  dtype: CheckpointDType;
  offset: number;
  bytes: number;
}

interface Header {
  format_version: number;
  step: number;
  state: Record<string, unknown>;
  data_bytes: number;
  data_crc32c: number;
  tensors: HeaderTensor[];
}

function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkEntry(e: TensorEntry, group: string): void {
  const where = `checkpoint ${group} entry "${e.name}"`;
  if (typeof e.name !== 'string' || e.name === '') throw new Error(`${where}: name must be a non-empty string`);
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${where}: shape must be a list of integers >= 0, got ${JSON.stringify(e.shape)}`);
  }
  const want = e.dtype === 'float32' ? Float32Array : e.dtype === 'int32' ? Int32Array : undefined;
  if (!want) throw new Error(`${where}: dtype must be float32 or int32, got ${String(e.dtype)}`);
  if (!(e.data instanceof want)) throw new Error(`${where}: data must be a ${want.name} for dtype ${e.dtype}`);
  if (e.data.length !== elementCount(e.shape)) {
    throw new Error(`${where}: shape [${e.shape}] holds ${elementCount(e.shape)} values but data has ${e.data.length}`);
  }
}

/** The checkpoint as one file's bytes (see the layout at the top). */
export function encodeCheckpoint(ckpt: Checkpoint): Buffer {
  if (!Number.isSafeInteger(ckpt.step) || ckpt.step < 0) throw new Error(`checkpoint step must be an integer >= 0, got ${ckpt.step}`);
  const tensors: HeaderTensor[] = [];
  const parts: { entry: TensorEntry; offset: number }[] = [];
  let offset = 0;
  for (const [group, list] of [['weights', ckpt.weights], ['optimizer', ckpt.optimizer]] as const) {
    const seen = new Set<string>();
    for (const e of list) {
      checkEntry(e, group);
      if (seen.has(e.name)) throw new Error(`checkpoint ${group} has two entries named "${e.name}"`);
      seen.add(e.name);
      tensors.push({ group, name: e.name, shape: [...e.shape], dtype: e.dtype, offset, bytes: e.data.byteLength });
      parts.push({ entry: e, offset });
      offset += e.data.byteLength;
    }
  }
  // The data CRC is computed piece by piece, so the tensors are copied once, straight into the file
  // buffer (a ResNet-50 checkpoint with momentum is ~200 MB).
  let dataCrc = 0;
  for (const { entry } of parts) dataCrc = nativeCrc32c(bytesOf(entry.data), dataCrc);
  let stateJson: string;
  try {
    stateJson = JSON.stringify(ckpt.state ?? {});
  } catch (err) {
    throw new Error(`checkpoint state must be JSON-serializable: ${errorMessage(err)}`);
  }
  const header: Header = {
    format_version: FORMAT_VERSION,
    step: ckpt.step,
    state: JSON.parse(stateJson) as Record<string, unknown>,
    data_bytes: offset,
    data_crc32c: dataCrc >>> 0,
    tensors,
  };
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const dataStart = alignedDataStart(headerBytes.length);
  const out = Buffer.alloc(dataStart + offset);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(headerBytes.length, MAGIC.length);
  out.writeUInt32LE(crc32c(headerBytes), MAGIC.length + 4);
  headerBytes.copy(out, PREAMBLE_BYTES);
  for (const { entry, offset: at } of parts) out.set(bytesOf(entry.data), dataStart + at);
  return out;
}

/** The typed array's bytes, without a copy. */
function bytesOf(a: Float32Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** The data section starts 8-byte aligned after the header. */
function alignedDataStart(headerLen: number): number {
  return Math.ceil((PREAMBLE_BYTES + headerLen) / 8) * 8;
}

/** Parse and verify checkpoint bytes; `source` names the file in errors (UserError when damaged). */
export function decodeCheckpoint(buf: Buffer, source: string): Checkpoint {
  const bad = (what: string): UserError => new UserError(`checkpoint ${source} is damaged: ${what}`);
  if (buf.length < PREAMBLE_BYTES) throw bad(`the file has only ${buf.length} bytes (truncated)`);
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new UserError(`${source} is not an imgclass checkpoint (it does not start with "IMGCKPT1")`);
  }
  const headerLen = buf.readUInt32LE(MAGIC.length);
  if (PREAMBLE_BYTES + headerLen > buf.length) throw bad(`the header needs ${headerLen} bytes but the file ends before (truncated)`);
  const headerBytes = buf.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLen);
  if (crc32c(headerBytes) !== buf.readUInt32LE(MAGIC.length + 4)) throw bad('header checksum mismatch');
  let header: Header;
  try {
    header = JSON.parse(headerBytes.toString('utf8')) as Header;
  } catch (err) {
    throw bad(`header is not JSON (${errorMessage(err)})`);
  }
  if (header.format_version !== FORMAT_VERSION) {
    throw new UserError(`checkpoint ${source} has format version ${header.format_version}; this imgclass reads version ${FORMAT_VERSION}`);
  }
  const dataStart = alignedDataStart(headerLen);
  const have = buf.length - dataStart;
  if (have < header.data_bytes) throw bad(`${have} of ${header.data_bytes} data bytes present (truncated)`);
  if (have > header.data_bytes) throw bad(`${have - header.data_bytes} unexpected bytes after the data`);
  const data = buf.subarray(dataStart);
  const crc = crc32c(data);
  if (crc !== header.data_crc32c) {
    throw bad(`data checksum mismatch (stored 0x${header.data_crc32c.toString(16)}, computed 0x${crc.toString(16)})`);
  }
  const ckpt: Checkpoint = { step: header.step, weights: [], optimizer: [], state: header.state ?? {} };
  for (const t of header.tensors) {
    if (t.offset + t.bytes > data.length || t.bytes !== elementCount(t.shape) * 4) throw bad(`tensor "${t.name}" has an impossible size`);
    // Copied out of the file buffer: typed arrays need aligned offsets, and the entries outlive it.
    const bytes = data.buffer.slice(data.byteOffset + t.offset, data.byteOffset + t.offset + t.bytes);
    const values = t.dtype === 'int32' ? new Int32Array(bytes) : new Float32Array(bytes);
    ckpt[t.group === 'optimizer' ? 'optimizer' : 'weights'].push({ name: t.name, shape: t.shape, dtype: t.dtype, data: values });
  }
  return ckpt;
}

interface Pointer {
  latest: string;
  all: string[];
}

async function readPointer(modelDir: string): Promise<Pointer | undefined> {
  const p = storage.joinPath(modelDir, POINTER_FILE);
  if (!(await storage.exists(p))) return undefined;
  const parsed = JSON.parse(await storage.readText(p)) as Partial<Pointer>;
  // Names only (never paths), so the pointer cannot lead outside model_dir.
  const isName = (n: unknown): n is string => typeof n === 'string' && CKPT_NAME.test(n);
  if (!isName(parsed.latest) || !Array.isArray(parsed.all) || !parsed.all.every(isName)) {
    throw new Error('expected {"latest": "ckpt-<step>.bin", "all": ["ckpt-<step>.bin", ...]}');
  }
  return { latest: parsed.latest, all: parsed.all };
}

/** Checkpoint files present in model_dir, newest step first (used when the pointer is missing or unreadable). */
async function scanCheckpoints(modelDir: string): Promise<string[]> {
  const names = (await storage.glob(storage.joinPath(modelDir, 'ckpt-*.bin'))).map((p) => storage.baseName(p));
  return names.filter((n) => stepOfName(n) !== undefined).sort((a, b) => stepOfName(b)! - stepOfName(a)!);
}

/**
 * Save `ckpt` as model_dir/ckpt-<step>.bin, point model_dir/checkpoint at it, then delete checkpoints
 * beyond the newest `keep`. Returns the checkpoint's path. Checkpoints of a later step than this one
 * (left by an abandoned run that this one resumed before) are dropped from the list.
 */
export async function saveCheckpoint(modelDir: string, ckpt: Checkpoint, opts: SaveCheckpointOptions = {}): Promise<string> {
  const keep = opts.keep ?? 3;
  if (!Number.isSafeInteger(keep) || keep < 1) throw new UserError(`keep must be an integer >= 1, got ${keep}`);
  const bytes = encodeCheckpoint(ckpt);
  const name = checkpointFileName(ckpt.step);
  const file = storage.joinPath(modelDir, name);
  await storage.writeFile(file, bytes, { overwrite: true });

  let previous: string[] = [];
  try {
    previous = (await readPointer(modelDir))?.all ?? [];
  } catch {
    // An unreadable pointer is replaced by this save; the files it listed are found by the scan below.
  }
  const all = [...previous.filter((n) => (stepOfName(n) ?? Infinity) < ckpt.step), name]
    .sort((a, b) => stepOfName(a)! - stepOfName(b)!)
    .slice(-keep);
  const pointer: Pointer = { latest: name, all };
  try {
    await storage.writeFile(storage.joinPath(modelDir, POINTER_FILE), JSON.stringify(pointer, null, 1) + '\n', { overwrite: true });
  } catch (err) {
    // The old pointer still names the previous checkpoints; a file it does not name is only in the
    // way (on a full disk, the largest thing in the way).
    if (!previous.includes(name)) await storage.remove(file).catch(() => undefined);
    throw err;
  }

  const kept = new Set(all);
  for (const old of await scanCheckpoints(modelDir)) {
    if (!kept.has(old)) await storage.remove(storage.joinPath(modelDir, old));
  }
  await removeStaleTemporaries(modelDir);
  return file;
}

/**
 * Temporary files left by a process killed mid-write (storage.tempSibling names them
 * ".<name>.tmp-<pid>-<random>"). Only those of processes that are gone are removed.
 */
async function removeStaleTemporaries(modelDir: string): Promise<void> {
  if (storage.isGcsPath(modelDir)) return;
  const temps = [
    ...(await storage.glob(storage.joinPath(modelDir, '.ckpt-*.bin.tmp-*'))),
    ...(await storage.glob(storage.joinPath(modelDir, `.${POINTER_FILE}.tmp-*`))),
  ];
  for (const t of temps) {
    const pid = Number(/\.tmp-(\d+)-[0-9a-f]+$/.exec(t)?.[1]);
    if (Number.isSafeInteger(pid) && pid !== process.pid && !storage.processAlive(pid)) await storage.remove(t);
  }
}

/**
 * The newest readable checkpoint in model_dir, or undefined when there is none. A damaged file (CRC
 * mismatch, truncated, missing) is skipped with a warning in favour of the previous one; when none is
 * readable, a UserError names each file and what is wrong with it.
 */
export async function loadLatestCheckpoint(modelDir: string, opts: LoadCheckpointOptions = {}): Promise<Checkpoint | undefined> {
  const warn = opts.warn ?? ((m: string) => console.warn(m));
  let candidates: string[];
  let pointer: Pointer | undefined;
  try {
    pointer = await readPointer(modelDir);
  } catch (err) {
    warn(`warning: ${storage.joinPath(modelDir, POINTER_FILE)} is unreadable (${errorMessage(err)}); looking for ckpt-*.bin files instead`);
  }
  if (pointer) {
    const newestFirst = [...pointer.all].sort((a, b) => (stepOfName(b) ?? -1) - (stepOfName(a) ?? -1));
    candidates = [pointer.latest, ...newestFirst.filter((n) => n !== pointer!.latest)];
  } else {
    candidates = await scanCheckpoints(modelDir);
  }
  if (candidates.length === 0) return undefined;

  const failures: string[] = [];
  for (let i = 0; i < candidates.length; i++) {
    const file = storage.joinPath(modelDir, candidates[i]!);
    try {
      return decodeCheckpoint(await storage.readFile(file), file);
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      failures.push(err.message);
      const next = candidates[i + 1];
      if (next) warn(`warning: ${err.message}; resuming from the previous checkpoint, ${storage.joinPath(modelDir, next)}, instead`);
    }
  }
  throw new UserError(
    `no readable checkpoint in ${modelDir}: ${failures.join('; ')}. ` +
      `Delete these files (or use a new --model_dir) to train from scratch.`,
  );
}

// ---------------------------------------------------------------------------------------------
// Between tfjs models/optimizers and checkpoint entries.

function entryDType(dtype: string, name: string): CheckpointDType {
  if (dtype === 'float32' || dtype === 'int32') return dtype;
  throw new Error(`weight "${name}" has dtype ${dtype}; checkpoints hold float32 and int32 only`);
}

function entryOf(name: string, t: tf.Tensor): TensorEntry {
  const dtype = entryDType(t.dtype, name);
  // A copy: the cpu backend hands out its own storage, and the checkpoint must be a snapshot.
  const values = t.dataSync().slice() as Float32Array | Int32Array;
  return { name, shape: [...t.shape], dtype, data: values };
}

/**
 * Every weight of the model (trainable and not: batch-norm moving mean/variance too), named by the
 * layer-scoped variable name ("conv1/kernel", "bn_conv1/moving_mean"), in the model's order.
 */
export function weightsFromModel(model: LayersModel): TensorEntry[] {
  const out: TensorEntry[] = [];
  const seen = new Set<string>();
  for (const v of model.weights) {
    if (seen.has(v.originalName)) throw new Error(`model has two weights named "${v.originalName}"; give its layers unique names`);
    seen.add(v.originalName);
    out.push(entryOf(v.originalName, v.read()));
  }
  return out;
}

const FLAGS_HINT =
  'The checkpoint was written for a different model (another --resnet_depth, --num_label_classes or image size?): ' +
  'use a new --model_dir, or the same flags as the run that wrote it.';

function shapeText(shape: readonly (number | null)[]): string {
  return `[${shape.join(', ')}]`;
}

/** Layer names made up by tfjs end in a per-process counter ("conv2d_Conv2D3/kernel"); drop it to compare. */
function withoutCounters(name: string): string {
  return name.replace(/\d+(?=\/|$)/g, '');
}

export interface SetWeightsOptions {
  /**
   * Set only the weights in the list (each must exist in the model), leaving the others as they
   * are: e.g. batch-norm moving statistics averaged across replicas.
   */
  partial?: boolean;
}

type ModelVariable = LayersModel['weights'][number];

/**
 * Load checkpoint weights into the model. Weights are matched by name; when the model's layers carry
 * tfjs's auto-numbered names (which differ between two builds in one process), by position instead,
 * provided the names agree apart from the numbers. Nothing is changed unless every weight fits.
 */
export function setModelWeights(model: LayersModel, list: TensorEntry[], opts: SetWeightsOptions = {}): void {
  const vars = model.weights;
  const byName = new Map(list.map((e) => [e.name, e]));
  const modelNames = new Map(vars.map((v) => [v.originalName, v]));
  let pairs: [ModelVariable, TensorEntry][];
  if (opts.partial) {
    const extra = list.find((e) => !modelNames.has(e.name));
    if (extra) throw new UserError(`checkpoint does not fit this model: it has weight "${extra.name}", the model does not. ${FLAGS_HINT}`);
    pairs = list.map((e) => [modelNames.get(e.name)!, e]);
  } else if (vars.length === list.length && vars.every((v) => byName.has(v.originalName))) {
    pairs = vars.map((v) => [v, byName.get(v.originalName)!]);
  } else if (vars.length === list.length && vars.every((v, i) => withoutCounters(v.originalName) === withoutCounters(list[i]!.name))) {
    pairs = vars.map((v, i) => [v, list[i]!]);
  } else {
    const missing = vars.find((v) => !byName.has(v.originalName))?.originalName;
    const extra = list.find((e) => !modelNames.has(e.name))?.name;
    throw new UserError(
      `checkpoint does not fit this model: the model has ${vars.length} weights, the checkpoint ${list.length}` +
        (missing ? `; model weight "${missing}" is not in the checkpoint` : '') +
        (extra ? `; checkpoint weight "${extra}" is not in the model` : '') +
        `. ${FLAGS_HINT}`,
    );
  }
  for (const [v, e] of pairs) {
    if (v.shape.length !== e.shape.length || v.shape.some((d, i) => d !== e.shape[i])) {
      throw new UserError(
        `checkpoint does not fit this model: layer weight "${v.originalName}" has shape ${shapeText(v.shape)}, ` +
          `the checkpoint ${shapeText(e.shape)}. ${FLAGS_HINT}`,
      );
    }
    if (v.dtype !== e.dtype) {
      throw new UserError(`checkpoint does not fit this model: weight "${v.originalName}" is ${v.dtype}, the checkpoint's ${e.dtype}. ${FLAGS_HINT}`);
    }
  }
  tf.tidy(() => {
    // write() keeps its own reference to the new values; tidy disposes ours.
    for (const [v, e] of pairs) v.write(tf.tensor(e.data, e.shape, e.dtype));
  });
}

/**
 * What the optimizer helpers need: tfjs optimizers have these, and so do wrappers around them.
 * Tensors from getWeights that are not tf.Variables are taken to be copies made for the caller.
 */
export interface OptimizerLike {
  getWeights(): Promise<{ name: string; tensor: tf.Tensor }[]>;
  setWeights(weights: { name: string; tensor: tf.Tensor }[]): Promise<void>;
}

/** The optimizer's state (`getWeights()`: "iter" and its slots), copied out. */
export async function optimizerWeights(optimizer: OptimizerLike): Promise<TensorEntry[]> {
  const named = await optimizer.getWeights();
  const out: TensorEntry[] = [];
  for (const { name, tensor } of named) {
    out.push(entryOf(name, tensor));
    // Variables belong to the optimizer; plain tensors (the iteration count) were made for us.
    if (!(tensor instanceof tf.Variable)) tensor.dispose();
  }
  return out;
}

/**
 * Restore optimizer state saved by optimizerWeights. tfjs optimizers match slots to variables by
 * position, so with `model` given the slots are checked against its trainable weights: tfjs lists
 * them as blocks of one slot per trainable weight, in the model's order ("iter" first).
 */
export async function setOptimizerWeights(optimizer: OptimizerLike, list: TensorEntry[], model?: LayersModel): Promise<void> {
  if (model) {
    const trainable = model.trainableWeights;
    const slots = list.filter((e) => e.name !== 'iter');
    if (slots.length > 0) {
      if (trainable.length === 0 || slots.length % trainable.length !== 0) {
        throw new UserError(
          `checkpoint optimizer state does not fit this model: ${slots.length} slots for ${trainable.length} trainable weights. ${FLAGS_HINT}`,
        );
      }
      slots.forEach((e, i) => {
        const v = trainable[i % trainable.length]!;
        if (v.shape.length !== e.shape.length || v.shape.some((d, k) => d !== e.shape[k])) {
          throw new UserError(
            `checkpoint optimizer state does not fit this model: slot "${e.name}" has shape ${shapeText(e.shape)} but ` +
              `layer weight "${v.originalName}" has shape ${shapeText(v.shape)}. ${FLAGS_HINT}`,
          );
        }
      });
    }
  }
  const named = list.map((e) => ({ name: e.name, tensor: tf.tensor(e.data, e.shape, e.dtype) }));
  try {
    await optimizer.setWeights(named);
  } finally {
    // The optimizer made its own variables from these.
    for (const n of named) n.tensor.dispose();
  }
}
