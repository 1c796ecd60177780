/**
 * TensorBoard event files (`events.out.tfevents.*`) with scalar curves, written while training runs.
 *
 * The file is the one TensorFlow's summary writer makes: TFRecords (length, masked CRC-32C, data,
 * masked CRC-32C), the first holding the `brain.Event:2` file_version Event, then one Event per
 * scalar. Records are APPENDED to the final file, with no temporary name: TensorBoard reads event
 * files while they grow and stops quietly at a trailing partial record, so a crash costs at most the
 * last unflushed points. Points are buffered and written every ~2 s and on flush()/close().
 *
 * gs:// logdirs: Cloud Storage objects cannot be appended to, so the file is written in a local cache
 * (os.tmpdir()/imgclass-tfevents/...) and the whole file is uploaded, replacing the object, at every
 * flush that has new points. Event files of scalar curves stay small (tens of bytes a point), so the
 * repeated upload is cheap; the local copy is removed after the upload done by close().
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { encodeFileVersionEvent, encodeScalarEvent } from '../tensorboard-proto';
import { frameRecord } from '../tfrecord';
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';

export interface SummaryWriterOptions {
  /** Appended to the file name, as TensorBoard's `filename_suffix` (e.g. ".v2"). No '/'. */
  filenameSuffix?: string;
  /** How often buffered points are written without an explicit flush(), in ms (default 2000). */
  flushIntervalMs?: number;
}

const DEFAULT_FLUSH_INTERVAL_MS = 2000;

/** Distinguishes writers created by one process in the same second, as TensorBoard's global uid does. */
let writersCreated = 0;

/**
 * The name TensorBoard's own EventFileWriter uses: "events.out.tfevents.%010d.%s.%s.%s" of (seconds,
 * hostname, pid, uid) plus the suffix. TensorBoard only requires "tfevents" in the name; the
 * zero-padded seconds make the files of successive runs sort by time.
 */
export function eventFileName(unixSeconds: number, uid: number, suffix = ''): string {
  const secs = String(Math.floor(unixSeconds)).padStart(10, '0');
  return `events.out.tfevents.${secs}.${os.hostname()}.${process.pid}.${uid}${suffix}`;
}

export class SummaryWriter {
  private pending: Buffer[] = [];
  /** Writes and uploads run one after another, in order. */
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Bytes appended locally but not yet uploaded (gs:// only). */
  private uploadDue = false;
  /** A background flush failure, reported by the next flush() or close(). */
  private backgroundError: unknown;

  private constructor(
    /** The event file: a local path or gs:// URL. */
    readonly path: string,
    /** Where bytes are appended: `path` itself, or the local cache copy for gs://. */
    private readonly localPath: string,
    private readonly fh: fsp.FileHandle,
  ) {}

  static async create(logdir: string, opts: SummaryWriterOptions = {}): Promise<SummaryWriter> {
    const suffix = opts.filenameSuffix ?? '';
    if (suffix.includes('/')) throw new UserError(`filenameSuffix "${suffix}" must not contain '/'`);
    const interval = opts.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS;
    if (!(interval > 0)) throw new Error(`flushIntervalMs must be positive, got ${interval}`);

    const wallTime = Date.now() / 1000;
    const name = eventFileName(wallTime, ++writersCreated, suffix);
    const dest = storage.joinPath(logdir, name);
    let local = dest;
    if (storage.isGcsPath(logdir)) {
      const key = crypto.createHash('sha1').update(logdir).digest('hex').slice(0, 16);
      local = path.join(os.tmpdir(), 'imgclass-tfevents', key, name);
    }
    let fh: fsp.FileHandle;
    try {
      await fsp.mkdir(path.dirname(local), { recursive: true });
      // 'ax': a new file, every write appended at its end.
      fh = await fsp.open(local, 'ax');
    } catch (err) {
      throw storage.writeError(err, local);
    }
    const writer = new SummaryWriter(dest, local, fh);
    writer.pending.push(frameRecord(encodeFileVersionEvent(wallTime)));
    // The version record is on disk at once, as TensorFlow's EventsWriter does, so TensorBoard
    // recognises the file even before the first point.
    await writer.flush();
    writer.timer = setInterval(() => {
      if (writer.pending.length === 0) return;
      writer.flush().catch((err: unknown) => {
        writer.backgroundError ??= err;
      });
    }, interval);
    // Never keep the process alive just to flush summaries.
    writer.timer.unref();
    return writer;
  }

  /**
   * Record `value` for curve `tag` at training step `step`. `wallTime` is seconds since the epoch
   * (default: now). Buffered; written within ~2 s or by flush().
   */
  scalar(tag: string, value: number, step: number, wallTime: number = Date.now() / 1000): void {
    if (this.closed) throw new Error(`SummaryWriter for ${this.path} is closed`);
    if (typeof tag !== 'string' || tag === '') throw new Error(`TensorBoard tag must be a non-empty string, got ${String(tag)}`);
    if (typeof value !== 'number') throw new Error(`TensorBoard value for "${tag}" must be a number, got ${typeof value}`);
    if (!Number.isSafeInteger(step) || step < 0) throw new Error(`TensorBoard step for "${tag}" must be an integer >= 0, got ${step}`);
    this.pending.push(frameRecord(encodeScalarEvent(wallTime, step, tag, value)));
  }

  /** Write buffered points to the file (fsynced) and, for gs://, upload it. */
  flush(): Promise<void> {
    if (this.backgroundError !== undefined) {
      const err = this.backgroundError;
      this.backgroundError = undefined;
      return Promise.reject(err);
    }
    const chunk = this.pending.length > 0 ? Buffer.concat(this.pending) : undefined;
    this.pending = [];
    this.chain = this.chain.then(async () => {
      if (chunk) {
        try {
          await writeAll(this.fh, chunk);
          await this.fh.datasync();
        } catch (err) {
          throw storage.writeError(err, this.localPath);
        }
        this.uploadDue = storage.isGcsPath(this.path);
      }
      if (this.uploadDue) {
        await this.upload();
        this.uploadDue = false;
      }
    });
    return this.chain;
  }

  /** Flush and close the file. Later scalar() calls throw; closing twice is a no-op. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    try {
      await this.flush();
    } finally {
      await this.fh.close();
    }
    if (this.localPath !== this.path) await fsp.rm(this.localPath, { force: true });
  }

  private async upload(): Promise<void> {
    try {
      await storage.writeFile(this.path, await fsp.readFile(this.localPath), { overwrite: true });
    } catch (err) {
      throw new Error(`could not upload TensorBoard events to ${this.path}: ${errorMessage(err)} (kept locally in ${this.localPath})`);
    }
  }
}

async function writeAll(fh: fsp.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, null);
    off += bytesWritten;
  }
}
