/**
 * One writer per folder (lib/folder-lock.ts): real processes hold and contend for locks, real
 * `imgclass train` runs meet on one model_dir, a holder is killed with SIGKILL, and gs:// folders
 * are locked through the fake Cloud Storage server.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Storage } from '@google-cloud/storage';
import { lockFolder, lockFile, isLockClaim, type LockRecord } from '../lib/folder-lock';
import * as storage from '../lib/storage';
import { FakeGcs } from './fake-gcs';
import { tempDir, removeDir, REPO_ROOT, CLI } from './helpers';
import { preprocessSamples } from './sample-shards';

const HOLDER = path.join(__dirname, 'lock-holder.js');
const SAMPLES = path.join(REPO_ROOT, 'data-samples');
const opts = (what = 'model_dir') => ({ command: 'imgclass train', what, warn: () => undefined });
let work: string;

before(() => {
  work = tempDir('imgclass-lock-');
});
after(() => removeDir(work));

function claims(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => isLockClaim(n)) : [];
}

function readClaim(file: string): LockRecord {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as LockRecord;
}

/** A claim file as a process elsewhere (or one since gone) would have left it. */
function plantClaim(dir: string, rec: Partial<LockRecord>, name = `.imgclass-lock-${rec.pid ?? 1}-0badc0de.json`): string {
  fs.mkdirSync(dir, { recursive: true });
  const full: LockRecord = { pid: 1, host: os.hostname(), command: 'imgclass train', argv: 'node cli.js train', started: new Date(Date.now() - 3600_000).toISOString(), state: 'held', ...rec };
  const p = path.join(dir, name);
  fs.writeFileSync(p, JSON.stringify(full));
  return p;
}

/** A pid that belonged to a process which has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

/** Start a lock-holder process and wait for its one-line verdict. */
function startHolder(args: string[]): Promise<{ child: ChildProcess; verdict: { ok: boolean; pid: number; message?: string; claim?: string } }> {
  const child = spawn(process.execPath, [HOLDER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve({ child, verdict: JSON.parse(out.slice(0, out.indexOf('\n'))) });
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      if (!out.includes('\n')) reject(new Error(`lock-holder exited ${code} without a verdict: ${err}`));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a second lock on a folder is refused, naming the holder; released, the folder is free again and no lock file is left', async () => {
  const dir = path.join(work, 'simple');
  const a = await lockFolder(dir, opts());
  const rec = readClaim(a.claim);
  assert.equal(rec.pid, process.pid);
  assert.equal(rec.host, os.hostname());
  assert.equal(rec.state, 'held');
  assert.equal(rec.command, 'imgclass train');
  await assert.rejects(lockFolder(dir, opts()), (e: Error) => {
    assert.equal(e.name, 'UserError');
    assert.match(e.message, new RegExp(`^model_dir ${dir} is in use by another imgclass train \\(pid ${process.pid} on host ${os.hostname()}, since \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC\\): wait for it to finish, or stop it`));
    return true;
  });
  // A lock on one file in the folder is a different lock.
  const f = await lockFile(path.join(dir, 'out.ipynb'), opts('output notebook'));
  await assert.rejects(lockFile(path.join(dir, 'out.ipynb'), opts('output notebook')), /output notebook .*out\.ipynb is in use/);
  await f.release();
  await a.release();
  await a.release(); // twice is harmless
  assert.equal(fs.existsSync(dir), false, 'the folder made only for the lock is gone with it');
  const b = await lockFolder(dir, opts());
  await b.release();
});

test("a dead process's lock, a reused pid's and another host's abandoned one are taken over with a warning; a live one on another host is not", async () => {
  const dir = path.join(work, 'stale');
  const warnings: string[] = [];
  const warn = (m: string) => warnings.push(m);
  const dead = plantClaim(dir, { pid: deadPid() });
  const l1 = await lockFolder(dir, { ...opts(), warn });
  assert.equal(fs.existsSync(dead), false, 'the stale lock file is removed');
  assert.match(warnings[0]!, new RegExp(`took over the lock on model_dir ${dir} from imgclass train \\(pid \\d+ on host ${os.hostname()}, since .*\\), which no longer runs`));
  await l1.release();

  // pid 1 runs, but not since this lock was written.
  plantClaim(dir, { pid: 1, pid_start: 123456789 });
  const l2 = await lockFolder(dir, { ...opts(), warn });
  assert.match(warnings[1]!, /its pid now belongs to another process/);
  await l2.release();

  const fresh = plantClaim(dir, { pid: 4242, host: 'other-host.example' });
  await assert.rejects(lockFolder(dir, opts()), /in use by another imgclass train \(pid 4242 on host other-host\.example/);
  const old = new Date(Date.now() - 3600_000);
  fs.utimesSync(fresh, old, old);
  const l3 = await lockFolder(dir, { ...opts(), warn });
  assert.match(warnings[2]!, /pid 4242 on host other-host\.example.*on another host, which has not refreshed it for 60 min/);
  await l3.release();
  assert.deepEqual(claims(dir), []);
});

/** Wait (at most 20 s) until `check` holds; false when it never does. */
async function eventually(check: () => boolean): Promise<boolean> {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 50));
  return check();
}

test('a holder keeps its lock fresh, so a process on another host does not take it over while it runs', async () => {
  const dir = path.join(work, 'refresh');
  const l = await lockFolder(dir, { ...opts(), refreshMs: 100 });
  const old = new Date(Date.now() - 3600_000);
  fs.utimesSync(l.claim, old, old);
  assert.ok(await eventually(() => Date.now() - fs.statSync(l.claim).mtimeMs < 60_000), 'the claim was touched again');
  await l.release();
});

test('four processes taking over one stale lock at the same moment: exactly one wins', async () => {
  const dir = path.join(work, 'race');
  for (let round = 0; round < 3; round++) {
    plantClaim(dir, { pid: deadPid() }, `.imgclass-lock-1-${round}0000000.json`);
    const startAt = String(Date.now() + 1000);
    const holders = await Promise.all([0, 1, 2, 3].map(() => startHolder(['folder', dir, 'imgclass train', '1500', startAt])));
    const winners = holders.filter((h) => h.verdict.ok);
    assert.equal(winners.length, 1, `round ${round}: ${JSON.stringify(holders.map((h) => h.verdict))}`);
    for (const h of holders.filter((x) => !x.verdict.ok)) {
      assert.match(h.verdict.message!, new RegExp(`in use by another imgclass train \\(pid ${winners[0]!.verdict.pid} on host`));
    }
    await Promise.all(holders.map((h) => exited(h.child)));
    assert.deepEqual(claims(dir), [], 'the winner released its lock and removed the stale one');
  }
});

test('imgclass train: a second run on the same model_dir stops at once; after SIGKILL of the first, the next run takes over', async () => {
  const dataDir = path.join(work, 'data');
  await preprocessSamples(dataDir);
  const modelDir = path.join(work, 'model');
  const common = ['train', '--data_dir', dataDir, '--model_dir', modelDir, '--image_size', '16', '--train_batch_size', '8', '--workers', '1'];
  const first = spawn(process.execPath, [CLI, ...common, '--train_steps', '100000', '--steps_per_checkpoint', '2'], { stdio: 'ignore' });
  try {
    // Wait until it holds the folder and has trained far enough to have written a checkpoint.
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        const held = claims(modelDir).some((n) => readClaim(path.join(modelDir, n)).state === 'held');
        if (held && fs.existsSync(path.join(modelDir, 'checkpoint'))) {
          clearInterval(t);
          resolve();
        }
      }, 50);
      first.once('exit', (code) => {
        clearInterval(t);
        reject(new Error(`the first run ended early (${code})`));
      });
    });
    const second = runCli([...common, '--train_steps', '4']);
    assert.equal(second.status, 2, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(`^imgclass: model_dir ${modelDir} is in use by another imgclass train \\(pid ${first.pid} on host ${os.hostname()}, since [^)]+\\): wait for it to finish, or stop it; a lock of a process that no longer runs is taken over automatically`),
    );
    assert.equal(second.stdout, '');
    const events = fs.readdirSync(modelDir).filter((n) => n.startsWith('events.out.tfevents.'));
    assert.equal(events.length, 1, 'the second run wrote no event file');
  } finally {
    first.kill('SIGKILL');
    await exited(first);
  }
  assert.equal(claims(modelDir).length, 1, "SIGKILL leaves the first run's lock file behind");

  const third = runCli([...common, '--train_steps', '4']);
  assert.equal(third.status, 0, third.stderr);
  assert.match(third.stderr, new RegExp(`warning: took over the lock on model_dir ${modelDir} from imgclass train \\(pid ${first.pid} on host [^)]+\\), which no longer runs`));
  assert.deepEqual(claims(modelDir), [], 'the finished run removed its lock');
});

test('imgclass preprocess, deploy and run-notebook refuse a folder or output notebook in use, and take over after SIGKILL', async () => {
  const out = path.join(work, 'shards');
  const pre = ['preprocess', '--train_csv', path.join(SAMPLES, 'train_set.csv'), '--validation_csv', path.join(SAMPLES, 'eval_set.csv'), '--labels_file', path.join(SAMPLES, 'labels.txt'), '--output_dir', out];
  const workDir = path.join(work, 'deploy-work');
  const nbIn = path.join(work, 'in.ipynb');
  fs.writeFileSync(nbIn, JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [{ cell_type: 'code', id: 'a1', metadata: {}, source: '1 + 1', outputs: [], execution_count: null }] }));
  const nbOut = path.join(work, 'notebooks-out', 'out.ipynb');
  const cases = [
    { kind: 'folder', target: out, command: 'imgclass preprocess', what: 'output_dir', args: pre },
    { kind: 'folder', target: workDir, command: 'imgclass deploy', what: 'work folder', args: ['deploy', '--export_dir', path.join(work, 'no-export'), '--work_dir', workDir] },
    { kind: 'file', target: nbOut, command: 'imgclass run-notebook', what: 'output notebook', args: ['run-notebook', nbIn, nbOut, '--prepare-only'] },
  ];
  for (const c of cases) {
    const { child, verdict } = await startHolder([c.kind, c.target, c.command, '600000']);
    assert.ok(verdict.ok);
    const busy = runCli(c.args);
    assert.equal(busy.status, 2, busy.stderr);
    assert.match(busy.stderr, new RegExp(`^imgclass: ${c.what} ${c.target} is in use by another ${c.command} \\(pid ${child.pid} on host`), c.command);
    // Not reaped yet while spawnSync blocks this process: a zombie, which must count as gone.
    child.kill('SIGKILL');
    const after = runCli(c.args);
    await exited(child);
    assert.match(after.stderr, new RegExp(`warning: took over the lock on ${c.what} ${c.target} from ${c.command} \\(pid ${child.pid}`), after.stderr);
    assert.deepEqual(claims(path.dirname(verdict.claim!)), [], `${c.command} released its lock`);
    if (c.what === 'work folder') {
      assert.equal(after.status, 2); // there is no export to deploy; the lock is what this checks
      assert.match(after.stderr, /export folder .* does not exist/);
    } else {
      assert.equal(after.status, 0, after.stderr);
    }
  }
  assert.ok(fs.existsSync(path.join(out, 'train-00000-of-00001')));
  assert.ok(fs.existsSync(nbOut));
});

test('gs:// folders: claims are objects beside the outputs; refused while held, taken over when abandoned', async () => {
  const fake = new FakeGcs();
  await fake.start();
  fake.createBucket('lockb');
  storage.setGcsClient(new Storage({ apiEndpoint: fake.endpoint, projectId: 'imgclass-test-project' }));
  try {
    const dir = 'gs://lockb/runs/model';
    const a = await lockFolder(dir, opts());
    const keys = fake.keys('lockb');
    assert.equal(keys.length, 1);
    assert.match(keys[0]!, /^runs\/model\/\.imgclass-lock-\d+-[0-9a-f]{8}\.json$/);
    await assert.rejects(lockFolder(dir, opts()), new RegExp(`model_dir ${dir} is in use by another imgclass train \\(pid ${process.pid}`));
    await a.release();

    // The holder refreshes its claim by writing it again (which renews the object's `updated`).
    const r = await lockFolder(dir, { ...opts(), refreshMs: 100 });
    const key = r.claim.slice('gs://lockb/'.length);
    assert.ok(await eventually(() => fake.requests.filter((q) => q.op === 'insert' && q.object === key).length >= 3), 'claim, held, then a refresh');
    await r.release();
    assert.deepEqual(fake.keys('lockb'), []);

    const rec = (r: Partial<LockRecord>): string => JSON.stringify({ host: os.hostname(), command: 'imgclass train', argv: 'x', started: new Date().toISOString(), state: 'held', ...r });
    fake.put('lockb', 'runs/model/.imgclass-lock-1-00000001.json', rec({ pid: deadPid() }));
    const warnings: string[] = [];
    const b = await lockFolder(dir, { ...opts(), warn: (m) => warnings.push(m) });
    assert.match(warnings[0]!, /which no longer runs/);
    await b.release();

    fake.put('lockb', 'runs/model/.imgclass-lock-7-00000002.json', rec({ pid: 7, host: 'tpu-vm-1' }));
    await assert.rejects(lockFolder(dir, { ...opts(), staleAfterMs: 60_000 }), /pid 7 on host tpu-vm-1/);
    await new Promise((r) => setTimeout(r, 300));
    const c = await lockFolder(dir, { ...opts(), staleAfterMs: 200, warn: (m) => warnings.push(m) });
    assert.match(warnings[1]!, /pid 7 on host tpu-vm-1.*on another host, which has not refreshed it/);
    await c.release();
    assert.deepEqual(fake.keys('lockb'), []);
    assert.deepEqual(fake.requests.filter((r) => r.op === 'rejected' || r.status === 400), [], 'every request is one the JSON API defines');
  } finally {
    storage.setGcsClient(undefined);
    await fake.stop();
  }
});
