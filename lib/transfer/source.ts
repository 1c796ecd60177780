/**
 * `--init_from SOURCE`: where the pretrained model is, brought to a local folder holding its
 * model.json, and what it says about itself: Layers or graph format, whether it is an imgclass
 * export (labels.txt + preprocessing.json), and how it wants its input pixels.
 *
 * SOURCE is an imgclass export (its root, whose newest version is used, or one version folder; local
 * or gs://), a local model.json or the folder holding one, or an http(s) URL of either. Remote ones
 * are copied into the local cache (./cache) once.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';
import { completeVersions } from '../export';
import { cachedModel, CacheOptions } from './cache';
import { MEAN_RGB, STDDEV_RGB, cropPaddingFor, type PreprocessingSettings } from '../train/preprocessing';

export type SourceFormat = 'layers' | 'graph';

export interface ResolvedSource {
  /** As the user gave it. */
  source: string;
  /** Local folder holding model.json (the cache for remote sources). */
  dir: string;
  format: SourceFormat;
  /** An imgclass export: it has labels.txt and preprocessing.json. */
  isExport: boolean;
  labels?: string[];
  /** preprocessing.json beside model.json, as written (ours, or one the user put there). */
  preprocessing?: Partial<PreprocessingSettings>;
  /** Teachable Machine's metadata.json, when there. */
  metadata?: { packageName?: string; imageSize?: number; labels?: string[] };
}

/** What `--init_input_range` accepts: how 0–255 pixels are scaled for a model that does not say. */
export const INPUT_RANGES = ['0,1', '-1,1', 'imagenet'] as const;
export type InputRange = (typeof INPUT_RANGES)[number];

const HINT = 'give an imgclass export folder, a TensorFlow.js model.json (or its folder), or an http(s) URL of one';

async function readJsonFile(p: string, what: string): Promise<unknown> {
  try {
    return JSON.parse(await fsp.readFile(p, 'utf8'));
  } catch (err) {
    throw new UserError(`${what}: ${p} is not JSON (${errorMessage(err)}); --init_from must name a TensorFlow.js model.json`);
  }
}

/** The local folder with model.json for `source`, downloading remote ones into the cache. */
async function localFolder(source: string, cache: CacheOptions): Promise<string> {
  if (/^https?:\/\//i.test(source)) return cachedModel(source, cache);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source) && !storage.isGcsPath(source)) {
    throw new UserError(`--init_from ${source}: only http://, https:// and gs:// addresses are supported; ${HINT}`);
  }
  if (storage.isGcsPath(source)) {
    if (source.endsWith('.json')) return cachedModel(source, cache);
    const dir = (await storage.exists(storage.joinPath(source, 'model.json'))) ? source : await newestVersion(source);
    return cachedModel(dir, cache);
  }
  const abs = path.resolve(source);
  const st = await fsp.stat(abs).catch(() => undefined);
  if (!st) throw new UserError(`--init_from ${source}: no such file or folder; ${HINT}`);
  if (st.isFile()) {
    if (!abs.endsWith('.json')) throw new UserError(`--init_from ${source} is a file but not a model.json; ${HINT}`);
    return path.dirname(abs);
  }
  if (await storage.exists(path.join(abs, 'model.json'))) return abs;
  return newestVersion(abs);
}

async function newestVersion(root: string): Promise<string> {
  const versions = await completeVersions(root);
  if (versions.length === 0) {
    throw new UserError(`--init_from ${root}: no model.json there, nor version folders holding one (an imgclass export); ${HINT}`);
  }
  return storage.joinPath(root, versions[0]!);
}

/** Layers or graph format, from model.json's format field or, for older files, its topology. */
export function modelFormat(modelJson: unknown, where: string): SourceFormat {
  const j = modelJson as { format?: string; modelTopology?: Record<string, unknown> } | null;
  const topo = j?.modelTopology;
  if (j == null || typeof j !== 'object' || topo == null || typeof topo !== 'object') {
    throw new UserError(`${where} has no modelTopology: it is not a TensorFlow.js model (Layers or graph format); ${HINT}`);
  }
  if (j.format === 'graph-model' || Array.isArray(topo.node)) return 'graph';
  if (j.format === 'layers-model' || typeof topo.class_name === 'string' || topo.model_config != null) return 'layers';
  throw new UserError(`${where}: format ${JSON.stringify(j.format)} with a topology that is neither a Keras model nor a TensorFlow graph; ${HINT}`);
}

export async function resolveSource(source: string, cache: CacheOptions = {}): Promise<ResolvedSource> {
  if (typeof source !== 'string' || source.trim() === '') throw new UserError(`--init_from is empty; ${HINT}`);
  const dir = await localFolder(source, cache);
  const modelJsonPath = path.join(dir, 'model.json');
  const format = modelFormat(await readJsonFile(modelJsonPath, `--init_from ${source}`), `--init_from ${source} (${modelJsonPath})`);
  const out: ResolvedSource = { source, dir, format, isExport: false };
  const labelsPath = path.join(dir, 'labels.txt');
  const prepPath = path.join(dir, 'preprocessing.json');
  if (await storage.exists(prepPath)) out.preprocessing = (await readJsonFile(prepPath, `--init_from ${source}`)) as Partial<PreprocessingSettings>;
  if (await storage.exists(labelsPath)) {
    out.labels = (await fsp.readFile(labelsPath, 'utf8')).split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l !== '');
  }
  out.isExport = out.labels !== undefined && out.preprocessing !== undefined && format === 'layers';
  const metaPath = path.join(dir, 'metadata.json');
  if (await storage.exists(metaPath)) out.metadata = (await readJsonFile(metaPath, `--init_from ${source}`)) as ResolvedSource['metadata'];
  return out;
}

export interface InputPreprocessing {
  settings: PreprocessingSettings;
  /** Where the normalisation came from, for the user. */
  why: string;
}

function rangeSettings(range: InputRange): Pick<PreprocessingSettings, 'meanRgb' | 'stddevRgb'> {
  if (range === '0,1') return { meanRgb: [0, 0, 0], stddevRgb: [255, 255, 255] };
  if (range === '-1,1') return { meanRgb: [127.5, 127.5, 127.5], stddevRgb: [127.5, 127.5, 127.5] };
  return { meanRgb: MEAN_RGB, stddevRgb: STDDEV_RGB };
}

/**
 * The preprocessing the source model expects, at `imageSize`: its own preprocessing.json when it has
 * one (an imgclass export, or one written beside a downloaded model), else `range` when given, else
 * what the kind of model implies: Teachable Machine's image models take [-1, 1], TensorFlow Hub's and
 * Kaggle's image models [0, 1] (their published convention), Keras applications' MobileNets [-1, 1].
 */
export function sourcePreprocessing(src: ResolvedSource, imageSize: number, range?: InputRange): InputPreprocessing {
  const base: PreprocessingSettings = {
    imageSize,
    cropPadding: cropPaddingFor(imageSize),
    meanRgb: MEAN_RGB,
    stddevRgb: STDDEV_RGB,
    resize: 'bicubic',
  };
  if (range !== undefined) {
    if (!INPUT_RANGES.includes(range)) throw new UserError(`--init_input_range must be one of ${INPUT_RANGES.join(', ')}, got ${String(range)}`);
    return { settings: { ...base, ...rangeSettings(range) }, why: `--init_input_range ${range}` };
  }
  const p = src.preprocessing;
  if (p) {
    const s: PreprocessingSettings = {
      ...base,
      ...(Array.isArray(p.meanRgb) ? { meanRgb: p.meanRgb } : {}),
      ...(Array.isArray(p.stddevRgb) ? { stddevRgb: p.stddevRgb } : {}),
      ...(p.resize ? { resize: p.resize } : {}),
      ...(p.channelOrder ? { channelOrder: p.channelOrder } : {}),
      // The source's crop fraction, carried to this size.
      ...(typeof p.cropPadding === 'number' && typeof p.imageSize === 'number' && p.imageSize === imageSize ? { cropPadding: p.cropPadding } : {}),
    };
    return { settings: s, why: `the preprocessing.json of ${src.source}` };
  }
  if (src.metadata?.packageName?.includes('teachablemachine')) {
    return { settings: { ...base, ...rangeSettings('-1,1') }, why: 'Teachable Machine image model: [-1, 1]' };
  }
  if (src.format === 'graph') {
    return { settings: { ...base, ...rangeSettings('0,1') }, why: 'graph model (TensorFlow Hub / Kaggle convention for image models): [0, 1]; --init_input_range changes it' };
  }
  return { settings: { ...base, ...rangeSettings('-1,1') }, why: 'Layers model without preprocessing.json (Keras MobileNet convention): [-1, 1]; --init_input_range changes it' };
}
