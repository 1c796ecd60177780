/**
 * One writer per folder (or per output file): `imgclass train` on one model_dir, `preprocess` on one
 * output_dir, `deploy` on one work folder, the notebook runner on one output notebook. A second
 * writer stops at once with a message naming the holder; the lock of a process that is gone is taken
 * over with a warning, so a killed run never blocks the next one.
 *
 * How it works. Every process that wants the folder writes a claim file of its own, with a unique
 * name, beside the outputs:
 *
 *   DIR/.imgclass-lock-<pid>-<random>.json          (a folder lock)
 *   DIR/.<file name>.imgclass-lock-<pid>-<random>.json  (a lock on one output file in DIR)
 *
 * holding {"pid", "host", "command", "argv", "started", "pid_start", "state"}. It then lists the
 * claims again: if any other live claim is there, it withdraws its own (and reports the holder, or
 * tries again shortly when the other is itself still claiming); if none is, it marks its claim
 * "held" and owns the folder. Two claimants can both withdraw but never both win: whichever lists
 * second sees the other's claim, because each writes before it lists. That holds for local folders
 * and for gs:// (object listings are strongly consistent), and needs no lock primitive beyond
 * creating and deleting one's own file, so take-over is race-free too: a stale claim is only ever
 * ignored and then deleted, never replaced.
 *
 * A claim is stale when its process no longer runs on this host (pid gone, or the pid now belongs
 * to a process started later), or when it comes from another host and has not been refreshed for
 * `staleAfterMs` (the holder touches its claim every `refreshMs`). Released on return, on error, on
 * the Ctrl-C paths that end in a normal return, and by a synchronous `exit` hook for process.exit.
 *
 * Written here rather than taken from a library: proper-lockfile and lockfile judge staleness by
 * mtime alone (a killed run would block for the whole timeout), know nothing of gs://, and their
 * take-over removes the lock name, which two processes taking over at once can both do
 * (moxystudio/node-proper-lockfile#121, npm/lockfile#4).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import * as storage from './storage';
import { UserError } from './errors';

export interface LockRecord {
  pid: number;
  host: string;
  /** What holds it, as the user would type it: "imgclass train". */
  command: string;
  /** The holder's command line (shortened), for whoever has to decide whether to stop it. */
  argv: string;
  /** ISO time the claim was made. */
  started: string;
  /** The pid's start time in clock ticks since boot (/proc/PID/stat field 22), so a reused pid is told apart. */
  pid_start?: number;
  state: 'claiming' | 'held';
}

export interface LockOptions {
  /** "imgclass train", "imgclass preprocess", …: shown to a second writer. */
  command: string;
  /** What the folder is, in messages: "model_dir", "output_dir", "work folder", "output notebook". */
  what: string;
  /** A claim from another host counts as abandoned when not refreshed for this long. Default 10 minutes. */
  staleAfterMs?: number;
  /** How often the holder refreshes its claim. Default: a tenth of staleAfterMs, at most a minute. */
  refreshMs?: number;
  /** Where take-over warnings go; default stderr. */
  warn?: (message: string) => void;
}

export interface FolderLock {
  /** The folder or file the lock is on. */
  readonly target: string;
  /** This process's claim file. */
  readonly claim: string;
  /** Give the folder up; safe to call more than once. */
  release(): Promise<void>;
}

const DEFAULT_STALE_MS = 10 * 60_000;
/** A claimant that meets another claimant backs off and retries this many times before giving up. */
const CONTENTION_ATTEMPTS = 20;
/** An unreadable claim (being written by a tool that does not write atomically) younger than this counts as live. */
const UNREADABLE_GRACE_MS = 60_000;

interface FoundClaim {
  path: string;
  record?: LockRecord;
  /** Last refresh: mtime locally, `updated` on gs://. */
  touchedMs: number;
}

/** Lock a whole folder (local or gs://); the folder is created when missing. */
export function lockFolder(dir: string, opts: LockOptions): Promise<FolderLock> {
  return acquire(dir, dir, '.imgclass-lock-', opts);
}

/** Lock one output file (local or gs://): the claim lives beside it, so other files in its folder stay free. */
export function lockFile(file: string, opts: LockOptions): Promise<FolderLock> {
  return acquire(file, storage.dirName(file), `.${storage.baseName(file)}.imgclass-lock-`, opts);
}

/** Run `fn` holding the lock, and release it however `fn` ends. */
export async function withLock<T>(lock: Promise<FolderLock>, fn: () => Promise<T>): Promise<T> {
  const held = await lock;
  try {
    return await fn();
  } finally {
    await held.release();
  }
}

/** /proc/PID/stat's state letter and start time (clock ticks after boot); undefined without /proc. */
function procStat(pid: number): { state: string; start: number | undefined } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "(comm)", which may itself hold spaces: state is field 3, starttime field 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = Number(fields[19]);
    return { state: fields[0] ?? '', start: Number.isFinite(start) ? start : undefined };
  } catch {
    return undefined;
  }
}

function pidStartTicks(pid: number): number | undefined {
  return procStat(pid)?.start;
}

function shortArgv(): string {
  const s = [path.basename(process.argv0 || 'node'), ...process.argv.slice(1)].join(' ');
  return s.length > 300 ? `${s.slice(0, 297)}...` : s;
}

function since(iso: string | undefined): string {
  const d = iso ? new Date(iso) : undefined;
  return d && !Number.isNaN(d.getTime()) ? `${d.toISOString().replace('T', ' ').slice(0, 19)} UTC` : 'an unknown time';
}

function describe(c: FoundClaim): string {
  const r = c.record;
  if (!r) return `a process whose lock file ${c.path} cannot be read`;
  return `${r.command} (pid ${r.pid} on host ${r.host}, since ${since(r.started)})`;
}

/** Why a claim no longer counts, or undefined when it is live. */
function staleReason(c: FoundClaim, staleAfterMs: number, now: number): string | undefined {
  const r = c.record;
  if (!r) return now - c.touchedMs > UNREADABLE_GRACE_MS ? 'its lock file is unreadable' : undefined;
  if (r.host === os.hostname()) {
    if (!storage.processAlive(r.pid)) return 'which no longer runs';
    const stat = procStat(r.pid);
    // A killed process its parent has not reaped yet still answers kill(pid, 0), but it has ended.
    if (stat?.state === 'Z') return 'which no longer runs';
    if (r.pid_start !== undefined && stat?.start !== undefined && stat.start !== r.pid_start) return 'which no longer runs (its pid now belongs to another process)';
    return undefined;
  }
  const age = now - c.touchedMs;
  if (age > staleAfterMs) return `on another host, which has not refreshed it for ${Math.round(age / 60_000)} min`;
  return undefined;
}

/** Claims in `dir` other than `own`, each read. */
async function listClaims(dir: string, prefix: string, own: string): Promise<FoundClaim[]> {
  const isClaim = (name: string): boolean => name.startsWith(prefix) && name.endsWith('.json');
  const out: FoundClaim[] = [];
  if (storage.isGcsPath(dir)) {
    const { bucket, key } = storage.parseGcsPath(dir);
    const keyPrefix = key === '' || key.endsWith('/') ? key : `${key}/`;
    const [files] = await storage.gcs().bucket(bucket).getFiles({ prefix: `${keyPrefix}${prefix}`, delimiter: '/' });
    for (const f of files) {
      if (!isClaim(path.posix.basename(f.name))) continue;
      const p = `gs://${bucket}/${f.name}`;
      if (p === own) continue;
      const touchedMs = Date.parse(String(f.metadata.updated ?? f.metadata.timeCreated ?? '')) || 0;
      out.push({ path: p, touchedMs, record: await readRecord(p) });
    }
    return out;
  }
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  for (const name of names.filter(isClaim)) {
    const p = path.join(dir, name);
    if (p === own) continue;
    let touchedMs: number;
    try {
      touchedMs = (await fsp.stat(p)).mtimeMs;
    } catch {
      continue; // released between the listing and now
    }
    out.push({ path: p, touchedMs, record: await readRecord(p) });
  }
  return out;
}

async function readRecord(p: string): Promise<LockRecord | undefined> {
  try {
    const r = JSON.parse(await storage.readText(p)) as Partial<LockRecord>;
    if (typeof r.pid !== 'number' || typeof r.host !== 'string' || typeof r.command !== 'string') return undefined;
    return r as LockRecord;
  } catch {
    return undefined;
  }
}

/** Write a claim whole: readers see all of it or nothing (storage.writeFile renames a temporary into place). */
async function writeClaim(p: string, r: LockRecord): Promise<void> {
  await storage.writeFile(p, JSON.stringify(r) + '\n', { overwrite: true });
}

async function removeClaim(p: string): Promise<void> {
  await storage.remove(p).catch(() => undefined);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Local claims this process holds, removed synchronously if it ends through process.exit. */
const heldLocal = new Set<string>();
let exitHookInstalled = false;
function trackLocal(p: string): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of heldLocal) fs.rmSync(c, { force: true });
    });
  }
  heldLocal.add(p);
}

function busy(target: string, opts: LockOptions, holder: FoundClaim): UserError {
  return new UserError(
    `${opts.what} ${target} is in use by another ${describe(holder)}: wait for it to finish, or stop it; ` +
      `a lock of a process that no longer runs is taken over automatically (lock file ${holder.path})`,
  );
}

async function acquire(target: string, dir: string, prefix: string, opts: LockOptions): Promise<FolderLock> {
  const staleAfterMs = opts.staleAfterMs ?? DEFAULT_STALE_MS;
  const refreshMs = opts.refreshMs ?? Math.min(60_000, Math.max(1000, Math.floor(staleAfterMs / 10)));
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const local = !storage.isGcsPath(dir);
  let createdDir = false;
  if (local) {
    createdDir = !fs.existsSync(dir);
    await fsp.mkdir(dir, { recursive: true }).catch((err: unknown) => {
      throw storage.writeError(err, target);
    });
  }
  const claim = storage.joinPath(dir, `${prefix}${process.pid}-${crypto.randomBytes(4).toString('hex')}.json`);
  const record: LockRecord = {
    pid: process.pid,
    host: os.hostname(),
    command: opts.command,
    argv: shortArgv(),
    started: new Date().toISOString(),
    pid_start: pidStartTicks(process.pid),
    state: 'claiming',
  };

  /** Other claims, split into live ones and stale ones (with why). */
  const survey = async (): Promise<{ live: FoundClaim[]; stale: [FoundClaim, string][] }> => {
    const now = Date.now();
    const live: FoundClaim[] = [];
    const stale: [FoundClaim, string][] = [];
    for (const c of await listClaims(dir, prefix, claim)) {
      const why = staleReason(c, staleAfterMs, now);
      if (why) stale.push([c, why]);
      else live.push(c);
    }
    return { live, stale };
  };
  const held = (cs: FoundClaim[]): FoundClaim | undefined => cs.find((c) => c.record?.state === 'held');
  const giveUp = async (): Promise<void> => {
    if (createdDir) await fsp.rmdir(dir).catch(() => undefined);
  };

  for (let attempt = 0; ; attempt++) {
    const before = await survey();
    const holder = held(before.live);
    if (holder || (before.live.length > 0 && attempt >= CONTENTION_ATTEMPTS)) {
      await giveUp();
      throw busy(target, opts, holder ?? before.live[0]!);
    }
    if (before.live.length === 0) {
      try {
        await writeClaim(claim, record);
      } catch (err) {
        await giveUp();
        // A folder that cannot take a small lock file cannot take the outputs either: say so about them.
        throw storage.writeError(err, target);
      }
      let after: Awaited<ReturnType<typeof survey>>;
      try {
        after = await survey();
        if (after.live.length === 0) {
          record.state = 'held';
          await writeClaim(claim, record);
        }
      } catch (err) {
        await removeClaim(claim);
        await giveUp();
        throw storage.writeError(err, target);
      }
      if (after.live.length === 0) {
        for (const [c, why] of after.stale) {
          warn(`took over the lock on ${opts.what} ${target} from ${describe(c)}, ${why}`);
          await removeClaim(c.path);
        }
        return holdLock(target, claim, record, local, createdDir, refreshMs);
      }
      await removeClaim(claim);
      const winner = held(after.live);
      if (winner) {
        await giveUp();
        throw busy(target, opts, winner);
      }
    }
    // Another process is claiming at this very moment: let one of us go first.
    await sleep(20 + Math.floor(Math.random() * 80 * Math.min(attempt + 1, 5)));
  }
}

function holdLock(target: string, claim: string, record: LockRecord, local: boolean, createdDir: boolean, refreshMs: number): FolderLock {
  if (local) trackLocal(claim);
  // Only a holder on another host needs this, but which host will look is not known here.
  const timer = setInterval(() => {
    const now = new Date();
    const touch = local ? fsp.utimes(claim, now, now) : writeClaim(claim, record);
    touch.catch(() => undefined); // a missed refresh is retried at the next tick
  }, refreshMs);
  timer.unref();
  let released = false;
  return {
    target,
    claim,
    async release(): Promise<void> {
      if (released) return;
      released = true;
      clearInterval(timer);
      await removeClaim(claim);
      heldLocal.delete(claim);
      // A folder made only to hold the lock (the run failed before writing anything) goes too.
      if (local && createdDir) await fsp.rmdir(path.dirname(claim)).catch(() => undefined);
    },
  };
}

/** Whether a file name is a lock claim (for code that lists a folder's outputs). */
export function isLockClaim(name: string): boolean {
  return /(^|\/)\.(?:[^/]*\.)?imgclass-lock-\d+-[0-9a-f]+\.json$/.test(name);
}
