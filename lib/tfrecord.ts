/**
 * TFRecord files, byte for byte as TensorFlow writes and reads them
 * (tensorflow/core/lib/io/record_writer.cc, record_reader.cc). Each record is
 *
 *   uint64 length (little-endian)
 *   uint32 masked_crc32c(length bytes)
 *   byte   data[length]
 *   uint32 masked_crc32c(data)
 *
 * with masked_crc = ((crc >>> 15) | (crc << 17)) + 0xa282ead8. The CRC is CRC-32C (Castagnoli),
 * computed by @node-rs/crc32 (hardware instructions where available).
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { constants as bufferConstants } from 'node:buffer';
import { crc32c as nativeCrc32c } from '@node-rs/crc32';
import { UserError } from './errors';
import * as storage from './storage';

const MASK_DELTA = 0xa282ead8;
/** Bytes before the data: length (8) and its masked CRC (4). */
export const HEADER_BYTES = 12;
/** Bytes after the data: its masked CRC. */
export const FOOTER_BYTES = 4;
/** Local writes are batched into chunks of about this size, so many small records cost few syscalls. */
const WRITE_CHUNK_BYTES = 1 << 20;
const DEFAULT_READ_CHUNK_BYTES = 1 << 20;

/** Plain CRC-32C (what RFC 3720 B.4 tabulates); TFRecord stores it masked. */
export function crc32c(data: Uint8Array): number {
  return nativeCrc32c(data) >>> 0;
}

/**
 * TensorFlow masks stored CRCs because computing the CRC of a string that itself contains
 * embedded CRCs is problematic (crc32c.h); rotating and adding a constant avoids that.
 */
export function maskCrc(crc: number): number {
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + MASK_DELTA) >>> 0;
}

export function maskedCrc32c(data: Uint8Array): number {
  return maskCrc(crc32c(data));
}

/** One record with its header and footer, ready to append to a .tfrecord file. */
export function frameRecord(data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + data.length + FOOTER_BYTES);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, HEADER_BYTES);
  out.writeUInt32LE(maskedCrc32c(data), HEADER_BYTES + data.length);
  return out;
}

export type TFRecordErrorKind = 'truncated' | 'corrupt';

/** A damaged or incomplete TFRecord file: names the file, the record (0-based) and its byte offset. */
export class TFRecordError extends UserError {
  constructor(
    readonly file: string,
    readonly recordIndex: number,
    readonly offset: number,
    readonly kind: TFRecordErrorKind,
    detail: string,
  ) {
    super(
      `${file}: record ${recordIndex} at byte offset ${offset} is ${kind}: ${detail}. ` +
        (kind === 'truncated'
          ? 'The file was not completely written (an interrupted run?); delete it and write it again.'
          : 'The file is damaged; delete it and write it again from the source images.'),
    );
    this.name = 'TFRecordError';
  }
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

function truncated(file: string, index: number, offset: number, have: number, need: number, what: string): TFRecordError {
  return new TFRecordError(file, index, offset, 'truncated', `the file ends after ${have} of the ${need} bytes of its ${what}`);
}

/**
 * Checks the 12-byte header at `header` and returns the data length. The length CRC is always
 * verified, as TensorFlow does: trusting a corrupt length would make the rest of the file garbage.
 */
function parseHeader(header: Buffer, file: string, index: number, offset: number): number {
  const stored = header.readUInt32LE(8);
  const computed = maskedCrc32c(header.subarray(0, 8));
  if (stored !== computed) {
    throw new TFRecordError(
      file,
      index,
      offset,
      'corrupt',
      `length checksum mismatch (stored ${hex(stored)}, computed ${hex(computed)})`,
    );
  }
  const length = header.readBigUInt64LE(0);
  if (length > BigInt(bufferConstants.MAX_LENGTH - FOOTER_BYTES)) {
    throw new TFRecordError(file, index, offset, 'corrupt', `its length ${length} bytes is larger than this reader can hold`);
  }
  return Number(length);
}

/** Throws a TFRecordError (file, record, offset) unless `stored` is the masked CRC32C of `data`. */
export function checkData(data: Uint8Array, stored: number, file: string, index: number, offset: number): void {
  const computed = maskedCrc32c(data);
  if (stored !== computed) {
    throw new TFRecordError(
      file,
      index,
      offset,
      'corrupt',
      `data checksum mismatch over ${data.length} bytes (stored ${hex(stored)}, computed ${hex(computed)})`,
    );
  }
}

export interface ReadOptions {
  /** Verify each record's data CRC (default true). The length CRC is always verified. */
  verify?: boolean;
}

export interface StreamReadOptions extends ReadOptions {
  /** Bytes read from disk at a time (default 1 MiB). */
  chunkSize?: number;
}

/**
 * The records of a whole file held in memory. Yielded buffers are views into `buf` (no copy).
 * `source` names the file in errors.
 */
export function* readRecords(buf: Buffer, source: string, opts: ReadOptions = {}): Generator<Buffer> {
  const verify = opts.verify ?? true;
  let offset = 0;
  for (let index = 0; offset < buf.length; index++) {
    const left = buf.length - offset;
    if (left < HEADER_BYTES) throw truncated(source, index, offset, left, HEADER_BYTES, 'header');
    const length = parseHeader(buf.subarray(offset, offset + HEADER_BYTES), source, index, offset);
    const need = length + FOOTER_BYTES;
    if (left - HEADER_BYTES < need) {
      throw truncated(source, index, offset, left - HEADER_BYTES, need, 'data and checksum');
    }
    const start = offset + HEADER_BYTES;
    const data = buf.subarray(start, start + length);
    if (verify) checkData(data, buf.readUInt32LE(start + length), source, index, offset);
    yield data;
    offset = start + need;
  }
}

/** Reads a local file forward in chunks, handing out exactly the byte ranges asked for. */
class ChunkedFile {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0; // index in buf of the next unread byte
  private fileOffset = 0; // file offset of buf[0]
  private eof = false;

  constructor(
    private readonly fh: fsp.FileHandle,
    private readonly chunkSize: number,
  ) {}

  /** File offset of the next unread byte. */
  get offset(): number {
    return this.fileOffset + this.pos;
  }

  /**
   * Up to `n` bytes (fewer only at end of file), consumed. The result is a view of a buffer that is
   * never written again, so it stays valid after later calls.
   */
  async take(n: number): Promise<Buffer> {
    if (this.buf.length - this.pos < n && !this.eof) await this.fill(n);
    const end = Math.min(this.pos + n, this.buf.length);
    const out = this.buf.subarray(this.pos, end);
    this.pos = end;
    return out;
  }

  private async fill(n: number): Promise<void> {
    const have = this.buf.length - this.pos;
    // One buffer big enough for the request (large records arrive whole) plus read-ahead.
    const next = Buffer.allocUnsafe(Math.max(n, this.chunkSize));
    this.buf.copy(next, 0, this.pos);
    let filled = have;
    while (filled < n) {
      const { bytesRead } = await this.fh.read(next, filled, next.length - filled, null);
      if (bytesRead === 0) {
        this.eof = true;
        break;
      }
      filled += bytesRead;
    }
    this.fileOffset += this.pos;
    this.pos = 0;
    this.buf = next.subarray(0, filled);
  }
}

async function openLocal(p: string): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(p, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`file not found: ${p}`);
    throw err;
  }
}

/**
 * The records of a TFRecord file, streamed: a local file is read in chunks so a large shard never
 * sits in memory whole; a gs:// object is downloaded first (storage.readFile).
 * Yielded buffers may share memory with up to one read chunk; copy them to keep many around.
 */
export async function* readRecordFile(p: string, opts: StreamReadOptions = {}): AsyncGenerator<Buffer> {
  if (storage.isGcsPath(p)) {
    yield* readRecords(await storage.readFile(p), p, opts);
    return;
  }
  const verify = opts.verify ?? true;
  const chunkSize = Math.max(1, opts.chunkSize ?? DEFAULT_READ_CHUNK_BYTES);
  const fh = await openLocal(p);
  try {
    const file = new ChunkedFile(fh, chunkSize);
    for (let index = 0; ; index++) {
      const offset = file.offset;
      const header = await file.take(HEADER_BYTES);
      if (header.length === 0) return;
      if (header.length < HEADER_BYTES) throw truncated(p, index, offset, header.length, HEADER_BYTES, 'header');
      const length = parseHeader(header, p, index, offset);
      const body = await file.take(length + FOOTER_BYTES);
      if (body.length < length + FOOTER_BYTES) {
        throw truncated(p, index, offset, body.length, length + FOOTER_BYTES, 'data and checksum');
      }
      const data = body.subarray(0, length);
      if (verify) checkData(data, body.readUInt32LE(length), p, index, offset);
      yield data;
    }
  } finally {
    await fh.close();
  }
}

/**
 * Number of records in a file. Locally only the headers are read (lengths are CRC-checked, data is
 * skipped), so counting a large shard is fast; a truncated last record is still reported.
 */
export async function countRecords(p: string): Promise<number> {
  if (storage.isGcsPath(p)) {
    let n = 0;
    for (const _ of readRecords(await storage.readFile(p), p, { verify: false })) n++;
    return n;
  }
  let n = 0;
  for await (const _ of scanRecords(p)) n++;
  return n;
}

/** Where one record of a local file is: its index, the byte offset of its header, its data length. */
export interface RecordLocation {
  index: number;
  offset: number;
  length: number;
}

/**
 * The records of a local TFRecord file, from their 12-byte headers only (length CRC checked, data
 * seeked past), so even large files are scanned in moments; a truncated last record is reported.
 * `name` is what errors call the file (e.g. the gs:// URL of a cached copy).
 */
export async function* scanRecords(p: string, name = p): AsyncGenerator<RecordLocation> {
  const fh = await openLocal(p);
  try {
    const { size } = await fh.stat();
    const header = Buffer.alloc(HEADER_BYTES);
    let offset = 0;
    for (let index = 0; offset < size; index++) {
      const { bytesRead } = await fh.read(header, 0, HEADER_BYTES, offset);
      if (bytesRead < HEADER_BYTES) throw truncated(name, index, offset, bytesRead, HEADER_BYTES, 'header');
      const length = parseHeader(header, name, index, offset);
      const have = size - offset - HEADER_BYTES;
      if (have < length + FOOTER_BYTES) throw truncated(name, index, offset, have, length + FOOTER_BYTES, 'data and checksum');
      yield { index, offset, length };
      offset += HEADER_BYTES + length + FOOTER_BYTES;
    }
  } finally {
    await fh.close();
  }
}

export interface WriterOptions {
  /** Replace an existing file at `path`. Without it, creating a writer over an existing file is an error. */
  overwrite?: boolean;
}

/**
 * Streams records into a TFRecord file. Records go to a temporary file; close() fsyncs it and moves
 * it into place (or uploads it, for gs://), so a crash never leaves a half-written file under the
 * final name. Always finish with close() or abort().
 */
export class TFRecordWriter {
  /** Records written so far. */
  records = 0;
  /** Bytes written so far, headers and footers included (the final file size). */
  bytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private writing: Promise<void> = Promise.resolve();
  private state: 'open' | 'closed' | 'aborted' = 'open';

  private constructor(
    readonly path: string,
    private readonly tmpPath: string,
    private readonly fh: fsp.FileHandle,
  ) {}

  static async create(dest: string, opts: WriterOptions = {}): Promise<TFRecordWriter> {
    if (!opts.overwrite && (await storage.exists(dest))) {
      throw new UserError(`${dest} already exists; pass --overwrite (overwrite: true) to replace it`);
    }
    let tmp: string;
    try {
      if (storage.isGcsPath(dest)) {
        // Uploaded by commitFile on close; the local temporary lives in the OS temp folder.
        tmp = path.join(os.tmpdir(), `.imgclass-${storage.baseName(dest)}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
      } else {
        await fsp.mkdir(path.dirname(dest), { recursive: true });
        tmp = storage.tempSibling(dest);
      }
      const fh = await fsp.open(tmp, 'wx');
      return new TFRecordWriter(dest, tmp, fh);
    } catch (err) {
      throw storage.writeError(err, storage.isGcsPath(dest) ? os.tmpdir() : dest);
    }
  }

  /**
   * Append one record. The data is copied, so the caller may reuse its buffer at once. The promise
   * resolves when the record is buffered or, once a chunk is full, written: awaiting each call keeps
   * memory bounded however fast records are produced.
   */
  async write(data: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new Error(`TFRecordWriter for ${this.path} is already ${this.state}`);
    const framed = frameRecord(data);
    this.pending.push(framed);
    this.pendingBytes += framed.length;
    this.records++;
    this.bytes += framed.length;
    if (this.pendingBytes >= WRITE_CHUNK_BYTES) await this.flush();
  }

  /** Queue the buffered records for writing; writes run one after another, in order. */
  private flush(): Promise<void> {
    if (this.pending.length > 0) {
      const chunk = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
      this.writing = this.writing.then(() => writeAll(this.fh, chunk)).catch((err: unknown) => {
        throw this.failure(err);
      });
    }
    return this.writing;
  }

  /** Finish the file: write what is buffered, fsync, and move it to its final path. */
  async close(): Promise<void> {
    if (this.state !== 'open') throw new Error(`TFRecordWriter for ${this.path} is already ${this.state}`);
    this.state = 'closed';
    try {
      await this.flush();
      await this.fh.sync();
      await this.fh.close();
      await storage.commitFile(this.tmpPath, this.path);
    } catch (err) {
      await this.discard();
      throw this.failure(err);
    }
  }

  /** Give up: nothing appears at the final path and the temporary file is removed. */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.pending = [];
    await this.writing.catch(() => undefined);
    await this.discard();
  }

  /** A failed write, about the file the user named; for gs:// the local temporary is what did not fit. */
  private failure(err: unknown): unknown {
    return storage.writeError(err, storage.isGcsPath(this.path) ? this.tmpPath : this.path);
  }

  private async discard(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await fsp.rm(this.tmpPath, { force: true });
  }
}

async function writeAll(fh: fsp.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, null);
    off += bytesWritten;
  }
}
