/**
 * Bytes in and out of local paths and gs:// URLs, behind one set of functions, so every other module
 * can take "a path" without caring where it lives. Local writes are atomic (temporary name in the
 * same folder, then rename), so a crash never leaves a half-written file under the final name.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import type { Storage as GcsStorage } from '@google-cloud/storage';
import { UserError } from './errors';

export interface GcsLocation {
  bucket: string;
  key: string;
}

export interface WriteOptions {
  /** Replace an existing file. Without it, writing over an existing file is an error. */
  overwrite?: boolean;
}

export function isGcsPath(p: string): boolean {
  return p.startsWith('gs://');
}

export function parseGcsPath(url: string): GcsLocation {
  const m = /^gs:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m || !m[1]) throw new UserError(`not a gs:// URL: "${url}" (expected gs://BUCKET/PATH)`);
  return { bucket: m[1], key: m[2] ?? '' };
}

let gcsClient: GcsStorage | undefined;

/**
 * The Cloud Storage client, created on first use so the local backend never loads or needs
 * credentials. Tests (and the cloud module) may install a client pointed elsewhere.
 */
export function gcs(): GcsStorage {
  if (!gcsClient) {
    // Loaded lazily: @google-cloud/storage is heavy and only the gcp backend needs it. The cloud
    // module's options carry GOOGLE_OAUTH_ACCESS_TOKEN and the endpoint overrides.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { makeStorage } = require('./cloud/auth') as typeof import('./cloud/auth');
    gcsClient = makeStorage();
  }
  return gcsClient;
}

export function setGcsClient(client: GcsStorage | undefined): void {
  gcsClient = client;
}

/** Join path parts; works for local paths and gs:// URLs alike. */
export function joinPath(base: string, ...parts: string[]): string {
  if (isGcsPath(base)) {
    const { bucket, key } = parseGcsPath(base);
    return `gs://${bucket}/${path.posix.join(key, ...parts)}`;
  }
  return path.join(base, ...parts);
}

/** The folder part of a local path or gs:// URL. */
export function dirName(p: string): string {
  if (isGcsPath(p)) {
    const { bucket, key } = parseGcsPath(p);
    const d = path.posix.dirname(key);
    return d === '.' ? `gs://${bucket}` : `gs://${bucket}/${d}`;
  }
  return path.dirname(p);
}

export function baseName(p: string): string {
  return isGcsPath(p) ? path.posix.basename(parseGcsPath(p).key) : path.basename(p);
}

/** Resolve `p` against folder `base` unless `p` is already absolute or a gs:// URL. */
export function resolvePath(base: string, p: string): string {
  if (isGcsPath(p) || path.isAbsolute(p)) return p;
  if (isGcsPath(base)) return joinPath(base, p);
  return path.resolve(base, p);
}

function notFound(p: string): UserError {
  return new UserError(`file not found: ${p}`);
}

export async function readFile(p: string): Promise<Buffer> {
  if (isGcsPath(p)) {
    const { bucket, key } = parseGcsPath(p);
    if (key === '' || key.endsWith('/')) throw new UserError(`${p} is a folder, expected a file`);
    try {
      const [buf] = await gcs().bucket(bucket).file(key).download();
      return buf;
    } catch (err) {
      if ((err as { code?: number }).code === 404) throw notFound(p);
      throw gcsError(err, `reading ${p}`);
    }
  }
  try {
    return await fsp.readFile(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(p);
    if ((err as NodeJS.ErrnoException).code === 'EISDIR') throw new UserError(`${p} is a folder, expected a file`);
    throw err;
  }
}

export async function readText(p: string): Promise<string> {
  return (await readFile(p)).toString('utf8');
}

export async function exists(p: string): Promise<boolean> {
  if (isGcsPath(p)) {
    const { bucket, key } = parseGcsPath(p);
    try {
      if (key === '' || key.endsWith('/')) return await hasObjectsUnder(bucket, key);
      const [e] = await gcs().bucket(bucket).file(key).exists();
      // gs:// has no folders, only name prefixes: `gs://b/data` exists, like a local folder, when
      // objects are named `data/...`.
      return e || (await hasObjectsUnder(bucket, `${key}/`));
    } catch (err) {
      throw gcsError(err, `looking for ${p}`);
    }
  }
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * A Cloud Storage failure as one line that says what to do (credentials, permission, API), not the
 * client's JSON dump. Loaded lazily: the cloud module is only needed once gs:// is used.
 */
function gcsError(err: unknown, what: string): Error {
  if (err instanceof UserError) return err;
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { cloudError } = require('./cloud/errors') as typeof import('./cloud/errors');
  const project = process.env.GOOGLE_CLOUD_PROJECT ?? process.env.CLOUDSDK_CORE_PROJECT ?? 'the project';
  return cloudError(err, { what, project });
}

/** Whether any object name starts with `prefix`; one short list request, not a full listing. */
async function hasObjectsUnder(bucket: string, prefix: string): Promise<boolean> {
  const [files] = await gcs().bucket(bucket).getFiles({ prefix, maxResults: 1, autoPaginate: false });
  return files.length > 0;
}

/**
 * Zero-byte objects named like `data/`, which the Cloud Console's "Create folder" makes, stand for
 * folders, not files; listings leave them out as a local walk leaves out directories.
 */
function isFolderPlaceholder(name: string): boolean {
  return name.endsWith('/');
}

/** A temporary sibling name for `p`: same folder (so rename is atomic), never listed as an output. */
export function tempSibling(p: string): string {
  return path.join(path.dirname(p), `.${path.basename(p)}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
}

/**
 * Whether a process still runs. Temporary names carry the writer's pid (see tempSibling), so a
 * leftover whose writer is gone (killed mid-write) can be told from one still being written.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What each errno of a failed write means for the user, and what to do about it. */
const WRITE_FAILURES: Record<string, string> = {
  ENOSPC: 'no space left on the device; free some space (or choose a folder on another disk) and run again',
  EDQUOT: 'the disk quota is used up; free some space (or choose a folder on another disk) and run again',
  EACCES: "permission denied; check the folder's permissions (ls -ld) or choose a folder you can write to",
  EPERM: "permission denied; check the folder's permissions (ls -ld) or choose a folder you can write to",
  EROFS: 'the folder is on a read-only file system; choose a writable folder (or remount it read-write)',
};

/** A write that failed for a reason the user can fix (full disk, permissions, read-only folder). */
export class WriteError extends UserError {
  constructor(
    readonly path: string,
    readonly code: string,
  ) {
    super(`cannot write ${path}: ${WRITE_FAILURES[code] ?? code} (${code})`);
    this.name = 'UserError';
  }
}

/**
 * `err` as a WriteError naming `p` when it is a full disk, a permission or a read-only folder (a
 * WriteError about a temporary file is renamed to the file the user asked for); anything else as is.
 */
export function writeError(err: unknown, p: string): unknown {
  if (err instanceof WriteError) return new WriteError(p, err.code);
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && code in WRITE_FAILURES ? new WriteError(p, code) : err;
}

/**
 * Write a whole file. Local: to a temporary sibling, fsync, then rename, so readers see the old
 * file or the new one, never a part; when the write fails (full disk, read-only folder) the
 * temporary goes and the old file stays. gs://: an object upload is already all-or-nothing.
 */
export async function writeFile(p: string, data: Uint8Array | string, opts: WriteOptions = {}): Promise<void> {
  const alreadyThere = (): UserError => new UserError(`${p} already exists; pass --overwrite (overwrite: true) to replace it`);
  if (isGcsPath(p)) {
    const { bucket, key } = parseGcsPath(p);
    if (key === '' || key.endsWith('/')) throw new UserError(`${p} is a folder name; give a file name to write to`);
    const file = gcs().bucket(bucket).file(key);
    let there = false;
    try {
      // Only the object itself can be replaced: objects named `key/...` live beside it untouched.
      there = !opts.overwrite && (await file.exists())[0];
      if (!there) await file.save(Buffer.from(data as Uint8Array), { resumable: false });
    } catch (err) {
      throw gcsError(err, `writing ${p}`);
    }
    if (there) throw alreadyThere();
    return;
  }
  if (!opts.overwrite && (await exists(p))) throw alreadyThere();
  try {
    await fsp.mkdir(path.dirname(p), { recursive: true });
  } catch (err) {
    throw writeError(err, p);
  }
  const tmp = tempSibling(p);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx');
    await fh.writeFile(data);
    await fh.sync();
    const closing = fh;
    fh = undefined;
    await closing.close();
    await fsp.rename(tmp, p);
  } catch (err) {
    // The write's own error is the one to report, not a second one from closing the file.
    await fh?.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw writeError(err, p);
  }
}

/**
 * Move a finished local file into place (atomic within one file system), or upload it to gs:// and
 * remove the local copy. Used by writers that stream into a temporary file; when the move fails, the
 * temporary is theirs to remove.
 */
export async function commitFile(localTmp: string, dest: string): Promise<void> {
  if (isGcsPath(dest)) {
    const { bucket, key } = parseGcsPath(dest);
    await gcs().bucket(bucket).upload(localTmp, { destination: key, resumable: false }).catch((err: unknown) => {
      throw gcsError(err, `uploading ${dest}`);
    });
    await fsp.rm(localTmp, { force: true });
    return;
  }
  try {
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    await fsp.rename(localTmp, dest);
  } catch (err) {
    throw writeError(err, dest);
  }
}

/** Every file under a folder (recursively), as full paths or gs:// URLs, sorted. */
export async function list(dir: string): Promise<string[]> {
  if (isGcsPath(dir)) {
    const { bucket, key } = parseGcsPath(dir);
    const prefix = key === '' || key.endsWith('/') ? key : `${key}/`;
    // getFiles follows nextPageToken until the listing is complete (autoPaginate defaults to on).
    const [files] = await gcs().bucket(bucket).getFiles({ prefix }).catch((err: unknown) => {
      throw gcsError(err, `listing ${dir}`);
    });
    return files.filter((f) => !isFolderPlaceholder(f.name)).map((f) => `gs://${bucket}/${f.name}`).sort();
  }
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(d, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) await walk(full);
      else out.push(full);
    }
  }
  await walk(dir);
  return out.sort();
}

/** Turn a shell-style name pattern (`*`, `?`) into a RegExp for the last path component. */
function patternToRegExp(pattern: string): RegExp {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  return new RegExp(`^${re}$`);
}

/**
 * Files matching a pattern whose last component may hold `*` and `?`, such as `data/train-*` or
 * `gs://b/data/validation-*`, sorted. Only the last component is a pattern (as TensorFlow's shard
 * globs are used); folders are matched literally.
 */
export async function glob(pattern: string): Promise<string[]> {
  const dir = dirName(pattern);
  const re = patternToRegExp(baseName(pattern));
  if (isGcsPath(dir)) {
    const { bucket, key } = parseGcsPath(dir);
    const prefix = key === '' ? '' : `${key}/`;
    // With a delimiter, deeper names come back as `prefixes` (ignored here), so only direct children remain.
    const [files] = await gcs().bucket(bucket).getFiles({ prefix, delimiter: '/' });
    return files
      .filter((f) => !isFolderPlaceholder(f.name))
      .map((f) => `gs://${bucket}/${f.name}`)
      .filter((f) => re.test(baseName(f)))
      .sort();
  }
  let entries: fs.Dirent[];
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries
    .filter((e) => e.isFile() && re.test(e.name))
    .map((e) => path.join(dir, e.name))
    .sort();
}

/** Delete a file; deleting something that is not there is not an error. */
export async function remove(p: string): Promise<void> {
  if (isGcsPath(p)) {
    const { bucket, key } = parseGcsPath(p);
    await gcs().bucket(bucket).file(key).delete({ ignoreNotFound: true });
    return;
  }
  await fsp.rm(p, { force: true });
}

/** Make a local folder (and parents); gs:// has no folders, so it is a no-op there. */
export async function makeDir(p: string): Promise<void> {
  if (isGcsPath(p)) return;
  try {
    await fsp.mkdir(p, { recursive: true });
  } catch (err) {
    throw writeError(err, p);
  }
}
