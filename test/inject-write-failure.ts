/**
 * Injected write failures at the lowest layer our code reaches, node:fs/promises and node:fs, for
 * the write-failure tests on machines where a small tmpfs or a read-only bind mount is not allowed
 * (and, so the behaviour is always checked, everywhere).
 *
 * In a test: `const undo = injectWriteFailure({ code: 'ENOSPC', under: dir, afterBytes: 1000 })`.
 * In a real process: `node --require dist/test/inject-write-failure.js ...` with
 * IMGCLASS_INJECT_WRITE_FAILURE='{"code":"EROFS","under":"/x/model"}'.
 *
 *   ENOSPC         writes under `under` succeed for `afterBytes` bytes in all, then write what still
 *                  fits and fail, as a filling disk does (the partial file is left for the code to clean)
 *   EROFS, EACCES  creating, opening for writing or renaming into a path under `under` fails at once
 */
// The modules themselves, not `import * as` copies: the patches must be seen by every importer.
import fs = require('node:fs');
import fsp = require('node:fs/promises');
import * as path from 'node:path';

export interface InjectedFailure {
  code: 'ENOSPC' | 'EROFS' | 'EACCES';
  /** Only paths inside this folder (or this file) fail. */
  under: string;
  /** ENOSPC: bytes written under `under` before the disk is "full". Default 0. */
  afterBytes?: number;
  /** Only paths whose base name matches fail (default: all under `under`). */
  name?: RegExp;
}

const MESSAGES = { ENOSPC: 'no space left on device', EROFS: 'read-only file system', EACCES: 'permission denied' };

function errnoError(code: InjectedFailure['code'], syscall: string, p: string): NodeJS.ErrnoException {
  const err = new Error(`${code}: ${MESSAGES[code]}, ${syscall} '${p}'`) as NodeJS.ErrnoException;
  err.code = code;
  err.syscall = syscall;
  err.path = p;
  err.errno = { ENOSPC: -28, EROFS: -30, EACCES: -13 }[code];
  return err;
}

const writesFlags = (flags: unknown): boolean => typeof flags === 'string' && /[wax+]/.test(flags);

/** Patch fs; returns the function that undoes it. */
export function injectWriteFailure(f: InjectedFailure): () => void {
  const root = path.resolve(f.under);
  const hits = (p: unknown): boolean => {
    if (typeof p !== 'string') return false;
    const abs = path.resolve(p);
    return (abs === root || abs.startsWith(root + path.sep)) && (!f.name || f.name.test(path.basename(abs)));
  };
  let budget = f.afterBytes ?? 0;
  /** How many of `n` bytes still fit; 0 means the next write fails. */
  const take = (n: number): number => {
    const k = Math.min(n, budget);
    budget -= k;
    return k;
  };
  const orig = { open: fsp.open, writeFile: fsp.writeFile, mkdir: fsp.mkdir, rename: fsp.rename, openSync: fs.openSync };
  const m = fsp as { -readonly [K in keyof typeof fsp]: (typeof fsp)[K] };

  m.open = (async (p: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
    if (hits(p) && writesFlags(flags ?? 'r') && f.code !== 'ENOSPC') throw errnoError(f.code, 'open', String(p));
    const fh = await orig.open(p, flags, mode);
    if (!hits(p) || f.code !== 'ENOSPC') return fh;
    const write = fh.write.bind(fh) as (...a: unknown[]) => Promise<{ bytesWritten: number; buffer: Uint8Array }>;
    (fh as { write: unknown }).write = async (buf: Uint8Array, offset = 0, length = buf.length - offset, position: number | null = null) => {
      const k = take(length);
      if (k === 0) throw errnoError('ENOSPC', 'write', String(p));
      return write(buf, offset, k, position);
    };
    (fh as { writeFile: unknown }).writeFile = async (data: string | Uint8Array) => {
      const buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      const k = take(buf.length);
      if (k > 0) await write(buf, 0, k, null);
      if (k < buf.length) throw errnoError('ENOSPC', 'write', String(p));
    };
    return fh;
  }) as typeof fsp.open;

  m.writeFile = (async (p: unknown, data: string | Uint8Array, o?: unknown) => {
    if (!hits(p)) return (orig.writeFile as (...a: unknown[]) => Promise<void>)(p, data, o);
    if (f.code !== 'ENOSPC') throw errnoError(f.code, 'open', String(p));
    const buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const k = take(buf.length);
    await orig.writeFile(p as string, buf.subarray(0, k));
    if (k < buf.length) throw errnoError('ENOSPC', 'write', String(p));
  }) as typeof fsp.writeFile;

  m.mkdir = (async (p: fs.PathLike, o?: fs.MakeDirectoryOptions) => {
    // A read-only file system still lets `mkdir -p` of an existing folder succeed.
    if (hits(p) && f.code !== 'ENOSPC' && !fs.existsSync(p)) throw errnoError(f.code, 'mkdir', String(p));
    return orig.mkdir(p, o);
  }) as typeof fsp.mkdir;

  m.rename = (async (a: fs.PathLike, b: fs.PathLike) => {
    if (hits(b) && f.code !== 'ENOSPC') throw errnoError(f.code, 'rename', String(b));
    return orig.rename(a, b);
  }) as typeof fsp.rename;

  (fs as { openSync: unknown }).openSync = (p: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
    if (hits(p) && writesFlags(flags ?? 'r') && f.code !== 'ENOSPC') throw errnoError(f.code, 'open', String(p));
    return orig.openSync(p, flags ?? 'r', mode);
  };

  return () => {
    Object.assign(m, { open: orig.open, writeFile: orig.writeFile, mkdir: orig.mkdir, rename: orig.rename });
    (fs as { openSync: unknown }).openSync = orig.openSync;
  };
}

const fromEnv = process.env.IMGCLASS_INJECT_WRITE_FAILURE;
if (fromEnv) {
  const spec = JSON.parse(fromEnv) as Omit<InjectedFailure, 'name'> & { name?: string };
  injectWriteFailure({ ...spec, name: spec.name === undefined ? undefined : new RegExp(spec.name) });
}
