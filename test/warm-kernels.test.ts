import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { projectTslabSpec, type JupyterMessage, type KernelClient } from '../lib/runner/kernel-client';
import { WarmKernels } from '../lib/runner/warm-kernels';
import { tempDir, removeDir } from './helpers';

/** Live kernel processes this test process started (they run detached, but stay our children). */
function childPids(): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(process.pid)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([pid, comm]) => Number(pid) > 0 && comm !== 'ps')
      .map(([pid]) => Number(pid));
  } catch {
    return []; // ps exits 1 when there are none
  }
}

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function cwdOf(k: KernelClient): Promise<string> {
  const seen: JupyterMessage[] = [];
  const r = await k.execute('console.log(process.cwd())', (m) => seen.push(m));
  assert.equal(r.kind, 'done');
  return String(seen[0]?.content.text).trim();
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > 30_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('the next kernel starts while the first is in use, is handed over unused, and close() stops a spare', async () => {
  const a = tempDir();
  const b = tempDir();
  const spec = projectTslabSpec();
  const kernels = new WarmKernels();
  const used: KernelClient[] = [];
  try {
    const k1 = await kernels.take(spec, a, { warmAnother: true });
    used.push(k1);
    // The warm kernel is a second live process before anyone asks for it.
    await until(() => childPids().filter((p) => p !== k1.pid).length >= 1, 'the warm kernel to start');
    const warmPids = childPids().filter((p) => p !== k1.pid);
    await k1.shutdown();

    const k2 = await kernels.take(spec, a, { warmAnother: true });
    used.push(k2);
    assert.ok(warmPids.includes(k2.pid!), 'the second notebook got the kernel started during the first');
    assert.equal(await cwdOf(k2), fs.realpathSync(a));
    assert.deepEqual(kernels.stats(), { started: 3, reused: 1, discarded: 0 });

    // Another folder: the warm kernel (started for `a`) is not used there.
    await until(() => childPids().filter((p) => p !== k2.pid).length >= 1, 'the next warm kernel');
    const spare = childPids().filter((p) => p !== k2.pid);
    const k3 = await kernels.take(spec, b, { warmAnother: true });
    used.push(k3);
    assert.equal(await cwdOf(k3), fs.realpathSync(b));
    assert.ok(!spare.includes(k3.pid!));
    await kernels.close();
    assert.deepEqual(kernels.stats(), { started: 5, reused: 1, discarded: 2 });
    for (const pid of spare) assert.equal(alive(pid), false, `the kernel warmed for another folder (${pid}) was shut down`);
    assert.deepEqual(childPids().filter((p) => p !== k2.pid && p !== k3.pid), [], 'no spare kernel left after close()');
  } finally {
    for (const k of used) await k.shutdown();
    await kernels.close();
    removeDir(a);
    removeDir(b);
  }
});
