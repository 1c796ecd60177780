/**
 * Finding, caching and indexing the TFRecord shards that `imgclass preprocess` writes, and reading
 * single training examples out of them by position. An index of every record (file, offset, length)
 * is what lets the training input shuffle the whole data set and resume at an exact position.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../errors';
import { DecodedExample, decodeExample, getBytes, getInt64 } from '../example';
import * as storage from '../storage';
import { FOOTER_BYTES, HEADER_BYTES, TFRecordError, checkData, scanRecords } from '../tfrecord';
import { SHARD_PATTERN, ShardSplit } from '../preprocess/shards';

export type { Split } from '../preprocess/shards';

/** A shard as read: `path` is a local file (a cached copy for gs://), `name` is what errors show. */
export interface ShardFile {
  path: string;
  name: string;
}

/** One record of an index. */
export interface RecordRef {
  /** Local file to read. */
  file: string;
  /** The shard as the user knows it (the gs:// URL for a cached copy). */
  name: string;
  /** 0-based record number within the file. */
  index: number;
  /** Byte offset of the record's header. */
  offset: number;
  /** Data bytes (header and footer not included). */
  length: number;
}

/** Every record of a list of shards, in file order. Typed arrays keep ImageNet-sized indexes small. */
export class RecordIndex {
  constructor(
    readonly files: readonly ShardFile[],
    private readonly fileOf: Uint32Array,
    private readonly indexInFile: Uint32Array,
    private readonly offsets: Float64Array,
    private readonly lengths: Float64Array,
  ) {}

  get size(): number {
    return this.fileOf.length;
  }

  /** Record `i` (0-based over all files). */
  get(i: number): RecordRef {
    if (!(i >= 0 && i < this.size)) throw new RangeError(`record ${i} is outside the index (${this.size} records)`);
    const f = this.files[this.fileOf[i]!]!;
    return { file: f.path, name: f.name, index: this.indexInFile[i]!, offset: this.offsets[i]!, length: this.lengths[i]! };
  }

  /** Index into `files` of record `i`'s file. */
  fileIndexOf(i: number): number {
    return this.fileOf[i]!;
  }

  /** Records per file, in file order. */
  counts(): number[] {
    const out = new Array<number>(this.files.length).fill(0);
    for (const f of this.fileOf) out[f]!++;
    return out;
  }
}

/**
 * The shards of one split in `dataDir`, sorted: `train-00000-of-00016` ... as preprocess names them.
 * None is a UserError. A set with shards missing (an interrupted copy) is refused rather than
 * silently trained on.
 */
export async function findShards(dataDir: string, split: ShardSplit): Promise<string[]> {
  const files = await listShards(dataDir, split);
  if (files.length === 0) {
    throw new UserError(
      `no ${split} shards in ${dataDir}: expected files named ${split}-00000-of-000NN, ${split}-00001-of-000NN, ... ` +
        '(TFRecord files of tf.train.Example); run imgclass preprocess first, with this folder as its output',
    );
  }
  return files;
}

/** Like findShards, but no shards at all is an empty list. */
export async function listShards(dataDir: string, split: ShardSplit): Promise<string[]> {
  const files = (await storage.glob(storage.joinPath(dataDir, `${split}-*`))).filter((f) => SHARD_PATTERN.test(storage.baseName(f)));
  if (files.length === 0) return files;
  const totals = new Set(files.map((f) => Number(SHARD_PATTERN.exec(storage.baseName(f))![3])));
  if (totals.size > 1) {
    throw new UserError(
      `${dataDir} holds ${split} shards of different sets (${[...totals].map((n) => `-of-${String(n).padStart(5, '0')}`).join(', ')}); ` +
        'remove the old ones or preprocess again into an empty folder',
    );
  }
  const total = [...totals][0]!;
  const have = new Set(files.map((f) => Number(SHARD_PATTERN.exec(storage.baseName(f))![2])));
  const missing: string[] = [];
  for (let i = 0; i < total; i++) if (!have.has(i)) missing.push(`${split}-${String(i).padStart(5, '0')}-of-${String(total).padStart(5, '0')}`);
  if (missing.length > 0 || have.size !== files.length) {
    throw new UserError(
      `${dataDir} has ${files.length} of the ${total} ${split} shards (missing: ${missing.slice(0, 5).join(', ')}` +
        `${missing.length > 5 ? ', ...' : ''}); copy the missing files or run imgclass preprocess again`,
    );
  }
  return files;
}

/** Where gs:// shards are cached when no cacheDir is given. */
export function defaultCacheDir(): string {
  return path.join(os.tmpdir(), 'imgclass-shard-cache');
}

/**
 * Local files for a list of shards: local paths as they are, gs:// objects downloaded once into
 * `cacheDir` (training reads records at random offsets, which a local file does cheaply). A copy is
 * reused when it is of the same object generation and size, so a rewritten shard is fetched again.
 */
export async function localShards(files: readonly string[], cacheDir = defaultCacheDir()): Promise<ShardFile[]> {
  const out: ShardFile[] = [];
  for (const f of files) {
    if (!storage.isGcsPath(f)) {
      out.push({ path: f, name: f });
      continue;
    }
    const { bucket, key } = storage.parseGcsPath(f);
    const object = storage.gcs().bucket(bucket).file(key);
    const [meta] = await object.getMetadata();
    const size = Number(meta.size);
    const generation = String(meta.generation ?? 'unknown');
    const local = path.join(cacheDir, bucket, path.posix.dirname(key), `generation-${generation}`, path.posix.basename(key));
    const stat = await fsp.stat(local).catch(() => undefined);
    if (!stat || stat.size !== size) {
      await fsp.mkdir(path.dirname(local), { recursive: true });
      const tmp = storage.tempSibling(local);
      try {
        await object.download({ destination: tmp });
        const got = (await fsp.stat(tmp)).size;
        if (got !== size) throw new Error(`downloading ${f} gave ${got} bytes, expected ${size}`);
        await fsp.rename(tmp, local);
      } catch (err) {
        await fsp.rm(tmp, { force: true });
        throw err;
      }
    }
    out.push({ path: local, name: f });
  }
  return out;
}

function asShardFile(f: string | ShardFile): ShardFile {
  return typeof f === 'string' ? { path: f, name: f } : f;
}

/**
 * Index every record of local TFRecord files by reading only their 12-byte headers (length and its
 * CRC, checked) and seeking past the data, so even large shards index in moments. Data CRCs are
 * checked later, when a record is read. Errors are TFRecordErrors naming the file and offset.
 */
export async function indexRecords(files: readonly (string | ShardFile)[]): Promise<RecordIndex> {
  const shards = files.map(asShardFile);
  const fileOf: number[] = [];
  const indexInFile: number[] = [];
  const offsets: number[] = [];
  const lengths: number[] = [];
  for (let fi = 0; fi < shards.length; fi++) {
    const { path: p, name } = shards[fi]!;
    if (storage.isGcsPath(p)) throw new Error(`indexRecords reads local files; copy ${p} first (localShards)`);
    await (await openShard(p, name)).close(); // a clear error for a shard removed since it was listed
    for await (const r of scanRecords(p, name)) {
      fileOf.push(fi);
      indexInFile.push(r.index);
      offsets.push(r.offset);
      lengths.push(r.length);
    }
  }
  return new RecordIndex(shards, Uint32Array.from(fileOf), Uint32Array.from(indexInFile), Float64Array.from(offsets), Float64Array.from(lengths));
}

export async function openShard(p: string, name = p): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(p, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`shard not found: ${name} (was it removed while training?)`);
    throw err;
  }
}

/** The data of one indexed record, its CRC checked. `fh` is an open handle on `ref.file`. */
export async function readRecordAt(fh: fsp.FileHandle, ref: RecordRef): Promise<Buffer> {
  const need = ref.length + FOOTER_BYTES;
  const buf = Buffer.allocUnsafe(need);
  let got = 0;
  while (got < need) {
    const { bytesRead } = await fh.read(buf, got, need - got, ref.offset + HEADER_BYTES + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  if (got < need) {
    throw new TFRecordError(ref.name, ref.index, ref.offset, 'truncated', `the file ends after ${got} of the ${need} bytes of its data and checksum (it changed after indexing?)`);
  }
  const data = buf.subarray(0, ref.length);
  checkData(data, buf.readUInt32LE(ref.length), ref.name, ref.index, ref.offset);
  return data;
}

/** The fields of a preprocessed record the trainer uses. */
export interface TrainingExample {
  encoded: Buffer;
  /** image/class/label: 1-based index into labels.txt. */
  label: number;
  filename?: string;
  synset?: string;
}

function optionalString(ex: DecodedExample, key: string): string | undefined {
  const f = ex[key];
  return f && 'bytes' in f && f.bytes.length === 1 ? f.bytes[0]!.toString('utf8') : undefined;
}

/** `record 12 of /data/train-00000-of-00004`, how errors name a record. */
export function recordName(index: number, file: string): string {
  return `record ${index} of ${file}`;
}

/**
 * Parse a record as a training example; missing or mistyped image/encoded or image/class/label
 * give a UserError naming the record. Labels are checked against `numClasses` when given.
 */
export function parseTrainingExample(data: Uint8Array, where: string, numClasses?: number): TrainingExample {
  const ex = decodeExample(data, where);
  const label = getInt64(ex, 'image/class/label', where);
  checkLabel(label, where, numClasses);
  const encoded = getBytes(ex, 'image/encoded', where);
  const out: TrainingExample = { encoded, label };
  const filename = optionalString(ex, 'image/filename');
  if (filename !== undefined) out.filename = filename;
  const synset = optionalString(ex, 'image/class/synset');
  if (synset !== undefined) out.synset = synset;
  return out;
}

export function checkLabel(label: number, where: string, numClasses?: number): void {
  if (label < 1) {
    throw new UserError(
      `labels out of range: ${where} has image/class/label ${label}, but labels start at 1 ` +
        '(the line number in labels.txt); were these files written by imgclass preprocess?',
    );
  }
  if (numClasses !== undefined && label > numClasses) {
    throw new UserError(
      `labels out of range: ${where} has image/class/label ${label} but --num_label_classes is ${numClasses}; ` +
        'pass the number of lines of the labels.txt the data was preprocessed with (or leave it out to count it from the data)',
    );
  }
}

/** A UserError for image bytes inside a record that do not decode. */
export function undecodableImage(where: string, ex: TrainingExample, err: unknown): UserError {
  const what = ex.filename !== undefined ? ` (image/filename "${ex.filename}")` : '';
  return new UserError(
    `${where}${what}: image/encoded could not be decoded as an image: ${err instanceof Error ? err.message : String(err)}. ` +
      'Remove or replace that image and run imgclass preprocess again (it checks every image).',
  );
}
