/**
 * What the local backend needs from this machine, checked: the local counterpart of the codelab's
 * section 2, where the cloud needs a service account and the local run needs none, only a recent
 * Node.js, cores, memory, disk for the work folder and a TensorFlow.js engine that trains.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { chooseBackend } from './engine/backend';
import { errorMessage } from './errors';

export interface Check {
  name: string;
  /** What was found. */
  value: string;
  ok: boolean;
  /** What to do when not ok, or a remark. */
  note?: string;
}

const MIN_NODE: readonly [number, number] = [20, 9];
/** A short local run writes ~100 MB (shards, checkpoints, exports); this leaves room for more. */
const MIN_FREE_BYTES = 1024 ** 3;
const MIN_MEMORY_BYTES = 4 * 1024 ** 3;

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

/** Free bytes on the file system that holds `dir` (or its nearest existing parent). */
export function freeDiskBytes(dir: string): number {
  let p = path.resolve(dir);
  while (!fs.existsSync(p) && path.dirname(p) !== p) p = path.dirname(p);
  const s = fs.statfsSync(p);
  return Number(s.bavail) * Number(s.bsize);
}

/** Check Node.js, cores, memory, free disk under `workDir` and the tfjs backend. Never throws. */
export async function checkLocalPrerequisites(workDir: string): Promise<Check[]> {
  const checks: Check[] = [];
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  const nodeOk = major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
  checks.push({
    name: 'Node.js',
    value: process.versions.node,
    ok: nodeOk,
    note: nodeOk ? undefined : `needs ${MIN_NODE.join('.')} or later; install a newer Node.js`,
  });
  const cores = os.availableParallelism();
  checks.push({
    name: 'cores',
    value: String(cores),
    ok: cores >= 1,
    note: 'preprocessing and training use one worker per core',
  });
  const mem = os.totalmem();
  checks.push({
    name: 'memory',
    value: `${gib(mem)} (${gib(os.freemem())} free)`,
    ok: mem >= MIN_MEMORY_BYTES,
    note: mem >= MIN_MEMORY_BYTES ? undefined : `under ${gib(MIN_MEMORY_BYTES)}: train with fewer --workers or a smaller --image_size`,
  });
  try {
    const free = freeDiskBytes(workDir);
    checks.push({
      name: 'free disk',
      value: `${gib(free)} under ${path.resolve(workDir)}`,
      ok: free >= MIN_FREE_BYTES,
      note: free >= MIN_FREE_BYTES ? undefined : `under ${gib(MIN_FREE_BYTES)}: free some space or choose another work_dir`,
    });
  } catch (err) {
    checks.push({ name: 'free disk', value: 'unknown', ok: false, note: `could not check ${workDir}: ${errorMessage(err)}` });
  }
  try {
    const b = await chooseBackend();
    checks.push({ name: 'TensorFlow.js engine', value: b.engine, ok: true, note: b.note.replace(/^engine: /, '') });
  } catch (err) {
    checks.push({ name: 'TensorFlow.js engine', value: 'none', ok: false, note: errorMessage(err) });
  }
  checks.push({ name: 'image decoding', value: `sharp ${sharp.versions.sharp ?? '?'} (libvips ${sharp.versions.vips})`, ok: true });
  return checks;
}

/** The checks as an aligned text table. */
export function formatChecks(checks: readonly Check[]): string {
  const w = Math.max(...checks.map((c) => c.name.length));
  const v = Math.max(...checks.map((c) => c.value.length));
  return (
    checks
      .map((c) => `${c.ok ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(w)}  ${c.value.padEnd(v)}${c.note ? `  ${c.note}` : ''}`.trimEnd())
      .join('\n') + '\n'
  );
}
