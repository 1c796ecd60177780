/**
 * A local copy of a TensorFlow.js model that lives elsewhere (an http(s) URL, or a gs:// export):
 * model.json, the weight files its manifest names, and the small side files that say how the model
 * wants its inputs (metadata.json of Teachable Machine, our preprocessing.json and labels.txt).
 *
 *   <cache root>/<sha256 of the source, 16 hex>/model.json, group1-shard1of2.bin, ..., cache.json
 *
 * The cache root is $IMGCLASS_CACHE_DIR, else $XDG_CACHE_HOME/imgclass/models, else
 * ~/.cache/imgclass/models. A copy is written into a hidden temporary folder and renamed into place,
 * so a download cut short is never used; a copy found there is checked before use (every file of
 * cache.json present with its recorded size, and the weight files holding the bytes the manifest
 * describes) and downloaded again when it fails.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';

/** Files next to model.json that describe the model, fetched when they exist. */
export const SIDE_FILES = ['metadata.json', 'preprocessing.json', 'labels.txt', 'meta.json'] as const;

export interface DownloadProgress {
  source: string;
  /** Bytes of weight files received so far, and in all (from the manifest). */
  bytes: number;
  totalBytes: number;
}

export interface CacheOptions {
  /** Overrides the cache root (tests, CI). */
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
  /** Told when a cached copy fails its check and is fetched again. */
  onNotice?: (message: string) => void;
  /** Per request; default 60 s. */
  timeoutMs?: number;
}

interface CacheRecord {
  source: string;
  files: Record<string, number>;
  saved_at: string;
}

const MODEL_JSON = 'model.json';
const RECORD = 'cache.json';
const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, string: -1 };

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.IMGCLASS_CACHE_DIR) return env.IMGCLASS_CACHE_DIR;
  const base = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'imgclass', 'models');
}

/** The folder a source is cached in. */
export function cacheFolder(source: string, opts: Pick<CacheOptions, 'cacheDir'> = {}): string {
  const key = crypto.createHash('sha256').update(source).digest('hex').slice(0, 16);
  return path.join(opts.cacheDir ?? cacheRoot(), key);
}

interface ManifestGroup {
  paths: string[];
  weights: { name: string; shape: number[]; dtype: string; quantization?: { dtype: string } }[];
}

/** The weight files model.json names, checked to stay inside its folder, and the bytes they must hold (-1: unknown). */
export function weightFiles(modelJson: unknown, where: string): { files: string[]; expectedBytes: number } {
  const manifest = (modelJson as { weightsManifest?: unknown })?.weightsManifest;
  if (!Array.isArray(manifest)) {
    throw new UserError(`${where} has no weightsManifest: it is not a TensorFlow.js model.json (converted models have one listing their weight files)`);
  }
  const files: string[] = [];
  let expected = 0;
  for (const g of manifest as ManifestGroup[]) {
    for (const p of g?.paths ?? []) {
      const norm = path.posix.normalize(String(p));
      if (norm === '' || norm.startsWith('../') || norm === '..' || path.posix.isAbsolute(norm) || /^[a-z]+:/i.test(norm)) {
        throw new UserError(`${where}: weight file path ${JSON.stringify(p)} must be relative to the model's folder`);
      }
      files.push(norm);
    }
    for (const w of g?.weights ?? []) {
      const per = w.quantization ? (w.quantization.dtype === 'uint8' ? 1 : 2) : (DTYPE_BYTES[w.dtype] ?? -1);
      if (per < 0 || expected < 0) expected = -1;
      else expected += (w.shape ?? []).reduce((a, b) => a * b, 1) * per;
    }
  }
  return { files, expectedBytes: expected };
}

/** Why a cached copy cannot be used, or undefined when it can. */
async function checkCopy(dir: string): Promise<string | undefined> {
  let record: CacheRecord;
  let modelJson: unknown;
  try {
    record = JSON.parse(await fsp.readFile(path.join(dir, RECORD), 'utf8')) as CacheRecord;
    modelJson = JSON.parse(await fsp.readFile(path.join(dir, MODEL_JSON), 'utf8'));
  } catch (err) {
    return `cannot read it (${errorMessage(err)})`;
  }
  for (const [name, size] of Object.entries(record.files ?? {})) {
    const st = await fsp.stat(path.join(dir, name)).catch(() => undefined);
    if (!st) return `${name} is missing`;
    if (st.size !== size) return `${name} holds ${st.size} bytes, ${size} were downloaded`;
  }
  const { files, expectedBytes } = weightFiles(modelJson, path.join(dir, MODEL_JSON));
  let total = 0;
  for (const f of files) {
    if (record.files?.[f] === undefined) return `weight file ${f} of the manifest was not downloaded`;
    total += record.files[f]!;
  }
  if (expectedBytes >= 0 && total !== expectedBytes) return `its weight files hold ${total} bytes but the manifest describes ${expectedBytes}`;
  return undefined;
}

/** Why fetch failed, from the cause undici attaches ("fetch failed" alone says nothing). */
function networkCause(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? errorMessage(err);
}

type Reader = (name: string, onBytes: (n: number) => void, optional: boolean) => Promise<Buffer | undefined>;

function httpReader(source: string, timeoutMs: number): Reader {
  return async (name, onBytes, optional) => {
    const url = new URL(name, source).href;
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      if (optional) return undefined;
      const why = (err as Error)?.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : networkCause(err);
      throw new UserError(
        `cannot reach ${url} (${why}): check the address and the network, or download model.json and its weight files and pass their folder to --init_from`,
      );
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined);
      if (optional) return undefined;
      throw new UserError(
        `${url} answered HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}: check the address (--init_from must name a model.json, or the folder URL holding one)`,
      );
    }
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        chunks.push(Buffer.from(chunk));
        onBytes(chunk.length);
      }
    } catch (err) {
      throw new UserError(`the download of ${url} broke off (${networkCause(err)}); run again to retry`);
    }
    return Buffer.concat(chunks);
  };
}

function storageReader(folder: string): Reader {
  return async (name, onBytes, optional) => {
    const p = storage.joinPath(folder, name);
    if (optional && !(await storage.exists(p))) return undefined;
    const data = await storage.readFile(p);
    onBytes(data.length);
    return data;
  };
}

/**
 * The local folder holding a copy of the model at `source`: an http(s) URL of a model.json (or of
 * the folder holding one), or a gs:// folder holding a model.json. Downloaded once, then reused.
 */
export async function cachedModel(source: string, opts: CacheOptions = {}): Promise<string> {
  const isHttp = /^https?:\/\//i.test(source);
  if (!isHttp && !storage.isGcsPath(source)) throw new Error(`cachedModel: ${source} is neither an http(s) URL nor a gs:// path`);
  // The model.json's own URL; weight files are relative to it.
  const base = isHttp
    ? (source.replace(/[?#].*$/, '').endsWith('.json') ? source : source.replace(/\/?$/, '/') + MODEL_JSON)
    : storage.joinPath(source.replace(/\/model\.json$/, ''), MODEL_JSON);
  const dir = cacheFolder(base, opts);
  if (fs.existsSync(dir)) {
    const bad = await checkCopy(dir);
    if (bad === undefined) return dir;
    opts.onNotice?.(`the cached copy of ${source} in ${dir} is not usable (${bad}); downloading it again`);
    await fsp.rm(dir, { recursive: true, force: true });
  }

  const read: Reader = isHttp ? httpReader(base, opts.timeoutMs ?? 60_000) : storageReader(storage.dirName(base));
  const modelJsonName = isHttp ? new URL(base).pathname.split('/').pop()! : MODEL_JSON;
  const jsonBytes = (await read(modelJsonName, () => undefined, false))!;
  let modelJson: unknown;
  try {
    modelJson = JSON.parse(jsonBytes.toString('utf8'));
  } catch (err) {
    throw new UserError(`${base} is not JSON (${errorMessage(err)}): --init_from must name a TensorFlow.js model.json`);
  }
  const { files, expectedBytes } = weightFiles(modelJson, base);

  const root = path.dirname(dir);
  try {
    await fsp.mkdir(root, { recursive: true });
  } catch (err) {
    throw storage.writeError(err, root);
  }
  const tmp = path.join(root, `.tmp-${path.basename(dir)}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  const record: CacheRecord = { source: base, files: {}, saved_at: new Date().toISOString() };
  try {
    await fsp.mkdir(tmp);
    await fsp.writeFile(path.join(tmp, MODEL_JSON), jsonBytes);
    record.files[MODEL_JSON] = jsonBytes.length;
    let done = 0;
    const total = Math.max(expectedBytes, 0);
    opts.onProgress?.({ source, bytes: 0, totalBytes: total });
    for (const f of files) {
      const data = (await read(f, (n) => {
        done += n;
        opts.onProgress?.({ source, bytes: done, totalBytes: Math.max(total, done) });
      }, false))!;
      await fsp.mkdir(path.dirname(path.join(tmp, f)), { recursive: true });
      await fsp.writeFile(path.join(tmp, f), data);
      record.files[f] = data.length;
    }
    for (const side of SIDE_FILES) {
      const data = await read(side, () => undefined, true);
      if (data === undefined) continue;
      await fsp.writeFile(path.join(tmp, side), data);
      record.files[side] = data.length;
    }
    await fsp.writeFile(path.join(tmp, RECORD), JSON.stringify(record, null, 2) + '\n');
    const bad = await checkCopy(tmp);
    if (bad !== undefined) throw new UserError(`the model at ${source} is incomplete: ${bad}; ask its publisher, or pass another --init_from`);
    try {
      await fsp.rename(tmp, dir);
    } catch (err) {
      // Another run cached it meanwhile: use theirs.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      await fsp.rm(tmp, { recursive: true, force: true });
    }
    return dir;
  } catch (err) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}
