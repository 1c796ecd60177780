/**
 * metrics.jsonl: one JSON object per line, appended as training runs, e.g.
 *   {"step":10,"kind":"train","loss":2.3,"lr":0.1,"img_s":41.5,"wall_time":1700000000.1}
 *   {"step":100,"kind":"eval","top1":0.52,"top5":0.91,"loss":1.7,"wall_time":1700000060.4}
 * Notebooks plot it without TensorBoard; it is the plain-text twin of the event file.
 *
 * Crash safety: each line goes to the file in one write() of the whole line (O_APPEND), so a kill
 * leaves at most one partial last line. readMetrics() ignores such a line, and open() cuts it off
 * before appending, so the next line starts on a line of its own.
 *
 * gs:// paths: objects cannot be appended to, so the log lives in a local cache file (seeded with the
 * existing object, if any) and the whole file is uploaded after every append and on close().
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';

export type MetricsRecord = Record<string, unknown>;

export class MetricsLog {
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    /** The log: a local path or gs:// URL. */
    readonly path: string,
    private readonly localPath: string,
    private readonly fh: fsp.FileHandle,
  ) {}

  /** Open `p` for appending, creating it (and its folder) if needed. */
  static async open(p: string): Promise<MetricsLog> {
    let local = p;
    if (storage.isGcsPath(p)) {
      const key = crypto.createHash('sha1').update(p).digest('hex').slice(0, 16);
      local = path.join(os.tmpdir(), 'imgclass-metrics', key, storage.baseName(p));
      await fsp.mkdir(path.dirname(local), { recursive: true });
      if (await storage.exists(p)) await fsp.writeFile(local, await storage.readFile(p));
      else await fsp.rm(local, { force: true });
    } else {
      await fsp.mkdir(path.dirname(p), { recursive: true }).catch((err: unknown) => {
        throw storage.writeError(err, p);
      });
    }
    // 'a+': appends always go to the end; reads are needed to find a partial last line.
    const fh = await fsp.open(local, 'a+').catch((err: unknown) => {
      throw storage.writeError(err, local);
    });
    try {
      await dropPartialLastLine(fh);
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new MetricsLog(p, local, fh);
  }

  /** Append one record as one line. Resolves when the line is in the file (and uploaded, for gs://). */
  append(record: object): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`MetricsLog ${this.path} is closed`));
    if (record === null || typeof record !== 'object' || Array.isArray(record)) {
      return Promise.reject(new Error(`a metrics record must be a JSON object, got ${JSON.stringify(record)}`));
    }
    const line = Buffer.from(JSON.stringify(record) + '\n', 'utf8');
    const run = this.chain.then(async () => {
      // One write of the whole line: with O_APPEND a kill cannot interleave or split earlier lines.
      const { bytesWritten } = await this.fh.write(line, 0, line.length, null).catch((err: unknown) => {
        throw storage.writeError(err, this.localPath);
      });
      if (bytesWritten !== line.length) {
        throw new Error(`short write to ${this.localPath}: ${bytesWritten} of ${line.length} bytes`);
      }
      if (this.localPath !== this.path) await this.upload();
    });
    // A failed append must not block later ones; the caller of the failed one gets the error.
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Wait for pending appends, fsync and close. Closing twice is a no-op. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chain;
    try {
      await this.fh.sync();
    } finally {
      await this.fh.close();
    }
    if (this.localPath !== this.path) {
      await this.upload();
      await fsp.rm(this.localPath, { force: true });
    }
  }

  private async upload(): Promise<void> {
    try {
      await storage.writeFile(this.path, await fsp.readFile(this.localPath), { overwrite: true });
    } catch (err) {
      throw new Error(`could not upload metrics to ${this.path}: ${errorMessage(err)} (kept locally in ${this.localPath})`);
    }
  }
}

/** Truncate the file after its last '\n', removing a line left half-written by a kill. */
async function dropPartialLastLine(fh: fsp.FileHandle): Promise<void> {
  const { size } = await fh.stat();
  if (size === 0) return;
  const block = Buffer.alloc(64 * 1024);
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - block.length);
    const { bytesRead } = await fh.read(block, 0, end - start, start);
    const nl = block.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (nl >= 0) {
      const keep = start + nl + 1;
      if (keep < size) await fh.truncate(keep);
      return;
    }
    end = start;
  }
  await fh.truncate(0);
}

/**
 * All records of a metrics log, in order. A partial last line (a kill during a write) is ignored;
 * a bad line anywhere else is a UserError naming the file and line. A log not written yet reads as
 * empty (notebooks poll it while training starts).
 */
export async function readMetrics(p: string): Promise<MetricsRecord[]> {
  if (!(await storage.exists(p))) return [];
  const text = await storage.readText(p);
  const lines = text.split('\n');
  const out: MetricsRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const isLast = i === lines.length - 1; // the text after the final '\n': empty, or a partial line
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      if (isLast) continue;
      throw new UserError(`${p}:${i + 1}: not valid JSON (${errorMessage(err)}); fix or delete that line`);
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      if (isLast) continue;
      throw new UserError(`${p}:${i + 1}: expected a JSON object per line, got ${line.slice(0, 60)}`);
    }
    out.push(value as MetricsRecord);
  }
  return out;
}
