/**
 * The exported model: what training hands to the prediction server.
 *
 *   <export_dir>/<unix seconds>/model.json            tfjs Layers format (tf.loadLayersModel reads it)
 *                              group1-shard1ofN.bin   weights, 4 MiB shards as the tfjs converter writes
 *                              labels.txt             one class name per line, in output-unit order
 *                              preprocessing.json     how to turn an image into the model's input
 *                              meta.json              what was exported, when, by what
 *
 * Version folders are numbered like TensorFlow Serving's, so the newest one wins. Locally a version is
 * written into a hidden temporary folder and renamed into place, so a half-written export is never
 * seen. On gs:// (no folder renames) files are uploaded into the version folder with model.json last,
 * and loaders only consider version folders that have a model.json.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import * as storage from './storage';
import { UserError, errorMessage } from './errors';
import { loadLayersModelWithBackbones } from './transfer/graph-backbone';

export interface ExportOptions {
  /** Class names, one per output unit, in order. */
  labels: string[];
  /** Written to preprocessing.json (image size, mean/std, resize method, ...). */
  preprocessing: object;
  /** Extra fields for meta.json (dataset, step, accuracy, ...). */
  meta?: object;
  /** Largest weight shard in bytes (default 4 MiB, as the tfjs converter). */
  shardBytes?: number;
  /** More files for the version folder, by relative path (a graph backbone's, lib/transfer). */
  extraFiles?: { name: string; data: Uint8Array | string }[];
}

export interface LoadedExport {
  model: tfl.LayersModel;
  labels: string[];
  /** preprocessing.json as written; its shape is the trainer's and the server's business. */
  preprocessing: any;
  meta: any;
  /** The version folder's name (unix seconds). */
  version: string;
  /** The version folder. */
  path: string;
}

const MODEL_JSON = 'model.json';
const LABELS = 'labels.txt';
const PREPROCESSING = 'preprocessing.json';
const META = 'meta.json';
const DEFAULT_SHARD_BYTES = 4 * 1024 * 1024;

function outputUnits(model: tfl.LayersModel): number | null {
  const out = model.outputs[0];
  const shape = out?.shape;
  return shape ? (shape[shape.length - 1] ?? null) : null;
}

function labelsText(labels: string[]): string {
  labels.forEach((l, i) => {
    if (typeof l !== 'string' || l === '' || /[\r\n]/.test(l)) {
      throw new UserError(`label ${i} (${JSON.stringify(l)}) must be a non-empty string without line breaks`);
    }
  });
  return labels.join('\n') + '\n';
}

function parseLabels(text: string): string[] {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/**
 * Model topology and weights as tfjs's save() produces them, plus the weight files, named and split
 * as the tfjs converter does. Returned rather than written, so the caller picks where.
 */
async function layersArtifacts(model: tfl.LayersModel, shardBytes: number): Promise<{ modelJson: object; shards: { name: string; data: Uint8Array }[] }> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) };
    }),
  );
  if (!artifacts || artifacts.modelTopology == null || artifacts.modelTopology instanceof ArrayBuffer) {
    throw new Error('tfjs did not produce a JSON model topology');
  }
  const weights = new Uint8Array(artifacts.weightData == null ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData));
  const count = Math.max(1, Math.ceil(weights.length / shardBytes));
  const shards = Array.from({ length: count }, (_, i) => ({
    name: `group1-shard${i + 1}of${count}.bin`,
    data: weights.subarray(i * shardBytes, Math.min(weights.length, (i + 1) * shardBytes)),
  }));
  const modelJson: Record<string, unknown> = {
    modelTopology: artifacts.modelTopology,
    format: artifacts.format,
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy,
    weightsManifest: [{ paths: shards.map((s) => s.name), weights: artifacts.weightSpecs ?? [] }],
  };
  if (artifacts.trainingConfig != null) modelJson.trainingConfig = artifacts.trainingConfig;
  if (artifacts.userDefinedMetadata != null) modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
  return { modelJson, shards };
}

/**
 * Export the model for serving into `exportDir/<unix seconds>/` (the next free second if that folder
 * exists) and return that folder. See the top of this file for its contents.
 */
export async function exportModel(model: tfl.LayersModel, exportDir: string, opts: ExportOptions): Promise<string> {
  const units = outputUnits(model);
  if (!Array.isArray(opts.labels)) throw new UserError('exportModel: labels must be a list of class names');
  if (units != null && opts.labels.length !== units) {
    throw new UserError(`exportModel: ${opts.labels.length} labels given but the model has ${units} output units; pass one label per class`);
  }
  const shardBytes = opts.shardBytes ?? DEFAULT_SHARD_BYTES;
  if (!Number.isSafeInteger(shardBytes) || shardBytes < 4) throw new Error(`shardBytes must be an integer >= 4, got ${shardBytes}`);

  const { modelJson, shards } = await layersArtifacts(model, shardBytes);
  const inputShape = model.inputs[0]?.shape ?? null;
  let version = Math.floor(Date.now() / 1000);
  const meta = {
    format: 'imgclass-export',
    format_version: 1,
    exported_at: new Date().toISOString(),
    tfjs_version: tf.version_core,
    input_shape: inputShape,
    num_classes: opts.labels.length,
    ...(opts.meta ?? {}),
  };
  const files: [string, Uint8Array | string][] = [
    ...shards.map((s): [string, Uint8Array] => [s.name, s.data]),
    ...(opts.extraFiles ?? []).map((f): [string, Uint8Array | string] => [f.name, f.data]),
    [LABELS, labelsText(opts.labels)],
    [PREPROCESSING, JSON.stringify(opts.preprocessing ?? {}, null, 2) + '\n'],
    [META, JSON.stringify(meta, null, 2) + '\n'],
    // Last: on gs:// a version folder counts as complete once its model.json is there.
    [MODEL_JSON, JSON.stringify(modelJson)],
  ];

  if (storage.isGcsPath(exportDir)) {
    while (await storage.exists(storage.joinPath(exportDir, `${version}/`))) version++;
    const dest = storage.joinPath(exportDir, String(version));
    const written: string[] = [];
    try {
      for (const [name, data] of files) {
        const p = storage.joinPath(dest, name);
        await storage.writeFile(p, data);
        written.push(p);
      }
    } catch (err) {
      // Loaders skip a version without model.json, but its weights would stay behind unused.
      for (const p of written) await storage.remove(p).catch(() => undefined);
      throw err;
    }
    return dest;
  }

  try {
    await fsp.mkdir(exportDir, { recursive: true });
  } catch (err) {
    throw storage.writeError(err, exportDir);
  }
  const tmp = path.join(exportDir, `.tmp-export-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  try {
    await fsp.mkdir(tmp);
    for (const [name, data] of files) await storage.writeFile(path.join(tmp, name), data);
    for (;;) {
      const dest = path.join(exportDir, String(version));
      // rename() would quietly replace an existing *empty* folder, so look first.
      if (!(await storage.exists(dest))) {
        try {
          await fsp.rename(tmp, dest);
          return dest;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        }
      }
      version++;
    }
  } catch (err) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    // Named for the version folder the user will look for, not the temporary one it was written in.
    throw storage.writeError(err, path.join(exportDir, String(version)));
  }
}

/** Numeric version folders under an export root that hold a model.json, newest first. */
export async function completeVersions(root: string): Promise<string[]> {
  let names: string[];
  if (storage.isGcsPath(root)) {
    const prefix = root.endsWith('/') ? root : `${root}/`;
    names = (await storage.list(root))
      .filter((f) => f.startsWith(prefix) && f.slice(prefix.length).split('/').length === 2 && f.endsWith(`/${MODEL_JSON}`))
      .map((f) => f.slice(prefix.length).split('/')[0]!);
  } else {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fsp.readdir(root, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw err;
    }
    names = [];
    for (const e of entries) {
      if (e.isDirectory() && (await storage.exists(path.join(root, e.name, MODEL_JSON)))) names.push(e.name);
    }
  }
  return names.filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(b) - Number(a));
}

/** A weight file path from model.json, resolved inside the version folder (never outside it). */
function weightFilePath(versionDir: string, p: string, modelJsonPath: string): string {
  const norm = path.posix.normalize(p);
  if (typeof p !== 'string' || p === '' || norm.startsWith('../') || norm === '..' || path.posix.isAbsolute(norm) || /^[a-z]+:\/\//i.test(p)) {
    throw new UserError(`${modelJsonPath}: weight file path ${JSON.stringify(p)} must be relative to the model's folder`);
  }
  return storage.joinPath(versionDir, norm);
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8 };

/** A tfjs IOHandler reading model.json and its weight files through storage (local or gs://). */
export function storageLoadHandler(versionDir: string): tf.io.IOHandler {
  return {
    load: async (): Promise<tf.io.ModelArtifacts> => {
      const jsonPath = storage.joinPath(versionDir, MODEL_JSON);
      let modelJson: tf.io.ModelJSON;
      try {
        modelJson = JSON.parse(await storage.readText(jsonPath)) as tf.io.ModelJSON;
      } catch (err) {
        if (err instanceof UserError) throw err;
        throw new UserError(`${jsonPath} is not valid JSON (${errorMessage(err)}); export the model again`);
      }
      if (modelJson.modelTopology == null) throw new UserError(`${jsonPath} has no modelTopology; it is not a tfjs Layers model`);
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const buffers: Buffer[] = [];
        const specs: tf.io.WeightsManifestEntry[] = [];
        for (const group of manifest) {
          for (const p of group.paths) buffers.push(await storage.readFile(weightFilePath(versionDir, p, jsonPath)));
          specs.push(...group.weights);
        }
        const all = Buffer.concat(buffers);
        let expected = 0;
        for (const s of specs) {
          const per = s.quantization ? (s.quantization.dtype === 'uint8' ? 1 : 2) : DTYPE_BYTES[s.dtype];
          if (per === undefined) {
            expected = -1; // a dtype this check does not know: leave it to tfjs
            break;
          }
          expected += s.shape.reduce((a, b) => a * b, 1) * per;
        }
        if (expected >= 0 && expected !== all.length) {
          throw new UserError(
            `${versionDir}: the weight files hold ${all.length} bytes but ${MODEL_JSON} describes ${expected}; the export is incomplete or damaged, export it again`,
          );
        }
        // An ArrayBuffer of exactly these bytes (Buffer.concat may return a view into a larger pool).
        const data = all.buffer.slice(all.byteOffset, all.byteOffset + all.length);
        return [specs, data];
      });
    },
  };
}

/**
 * Load an export: `dir` is one version folder (holding model.json) or the export root, in which case
 * the newest numeric version folder with a model.json is used.
 */
export async function loadExport(dir: string): Promise<LoadedExport> {
  let versionDir = dir;
  if (!(await storage.exists(storage.joinPath(dir, MODEL_JSON)))) {
    const versions = await completeVersions(dir);
    if (versions.length === 0) {
      throw new UserError(
        `no exported model found in ${dir}: expected ${storage.joinPath(dir, MODEL_JSON)} or version folders ` +
          `such as ${storage.joinPath(dir, '1700000000', MODEL_JSON)} (written by exportModel); check the path or export the model first`,
      );
    }
    versionDir = storage.joinPath(dir, versions[0]!);
  }
  const labelsPath = storage.joinPath(versionDir, LABELS);
  if (!(await storage.exists(labelsPath))) {
    throw new UserError(`${labelsPath} is missing: an export needs one class name per line there, in the order of the model's outputs`);
  }
  const labels = parseLabels(await storage.readText(labelsPath));
  // Without its preprocessing a model still runs but predicts garbage, so that file is required.
  const preprocessing = await readJson(storage.joinPath(versionDir, PREPROCESSING), true);
  const meta = (await readJson(storage.joinPath(versionDir, META), false)) ?? {};

  // Through lib/transfer: a model fine-tuned on a graph feature extractor carries it in backbone/.
  const model = await loadLayersModelWithBackbones(versionDir);
  const units = outputUnits(model);
  if (units != null && units !== labels.length) {
    model.dispose();
    throw new UserError(`${labelsPath} has ${labels.length} labels but the model has ${units} output units; they must match one to one (export again)`);
  }
  const version = storage.baseName(versionDir.replace(/\/+$/, ''));
  return { model, labels, preprocessing, meta, version, path: versionDir };
}

/** A JSON file of the export; undefined when absent and not `required`. */
async function readJson(p: string, required: boolean): Promise<unknown> {
  if (!(await storage.exists(p))) {
    if (required) throw new UserError(`${p} is missing: every export needs it (export the model again)`);
    return undefined;
  }
  try {
    return JSON.parse(await storage.readText(p));
  } catch (err) {
    throw new UserError(`${p} is not valid JSON (${errorMessage(err)}); fix it or export the model again`);
  }
}
