import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { MetricsLog, readMetrics } from '../lib/train/metrics';
import { UserError } from '../lib/errors';
import * as storage from '../lib/storage';
import { tempDir, removeDir } from './helpers';
import { useFakeGcs } from './fake-gcs';

const train = (step: number) => ({ step, kind: 'train', loss: 2 - step / 100, lr: 0.1, img_s: 40.5, wall_time: 1700000000 + step });

test('records append as one JSON object per line and read back', async () => {
  const dir = tempDir();
  try {
    const p = path.join(dir, 'sub', 'metrics.jsonl');
    assert.deepEqual(await readMetrics(p), [], 'a log not written yet reads as empty');
    const log = await MetricsLog.open(p);
    await Promise.all([log.append(train(10)), log.append(train(20))]);
    await log.append({ step: 20, kind: 'eval', top1: 0.5, top5: 0.9, loss: 1.2 });
    await log.close();
    const lines = fs.readFileSync(p, 'utf8').split('\n');
    assert.equal(lines.length, 4);
    assert.equal(lines[3], '');
    assert.deepEqual(JSON.parse(lines[0]!), train(10));
    assert.deepEqual(await readMetrics(p), [train(10), train(20), { step: 20, kind: 'eval', top1: 0.5, top5: 0.9, loss: 1.2 }]);
    await assert.rejects(log.append(train(30)), /closed/);

    // Reopening appends after what is there.
    const again = await MetricsLog.open(p);
    await again.append(train(30));
    await again.close();
    assert.equal((await readMetrics(p)).length, 4);
  } finally {
    removeDir(dir);
  }
});

test('a partial last line left by a kill is ignored, and cut off before the next append', async () => {
  const dir = tempDir();
  try {
    const p = path.join(dir, 'metrics.jsonl');
    fs.writeFileSync(p, JSON.stringify(train(1)) + '\n' + JSON.stringify(train(2)) + '\n{"step":3,"kind":"tr');
    assert.deepEqual(await readMetrics(p), [train(1), train(2)]);
    const log = await MetricsLog.open(p);
    await log.append(train(3));
    await log.close();
    assert.deepEqual(await readMetrics(p), [train(1), train(2), train(3)]);
    assert.ok(!fs.readFileSync(p, 'utf8').includes('"tr\n'), 'the fragment is gone');

    // A file that is only a fragment.
    fs.writeFileSync(p, '{"st');
    const log2 = await MetricsLog.open(p);
    await log2.append(train(9));
    await log2.close();
    assert.deepEqual(await readMetrics(p), [train(9)]);
  } finally {
    removeDir(dir);
  }
});

test('a bad line before the end is a UserError naming file and line', async () => {
  const dir = tempDir();
  try {
    const p = path.join(dir, 'metrics.jsonl');
    fs.writeFileSync(p, JSON.stringify(train(1)) + '\nnot json\n' + JSON.stringify(train(2)) + '\n');
    await assert.rejects(readMetrics(p), (err: unknown) => err instanceof UserError && err.message.includes(`${p}:2:`));
    fs.writeFileSync(p, '[1,2]\n{}\n');
    await assert.rejects(readMetrics(p), (err: unknown) => err instanceof UserError && err.message.includes(`${p}:1:`));
  } finally {
    removeDir(dir);
  }
});

test('appended lines survive a SIGKILL of the writing process (no close)', async () => {
  const dir = tempDir();
  try {
    const p = path.join(dir, 'metrics.jsonl');
    const mod = path.resolve(__dirname, '../lib/train/metrics.js');
    const script = `
      const { MetricsLog } = require(${JSON.stringify(mod)});
      (async () => {
        const log = await MetricsLog.open(${JSON.stringify(p)});
        for (let step = 1; step <= 50; step++) await log.append({ step, kind: 'train', loss: 1 / step });
        process.kill(process.pid, 'SIGKILL');
      })();`;
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 10000 });
    assert.equal(r.signal, 'SIGKILL', String(r.stderr));
    const got = await readMetrics(p);
    assert.equal(got.length, 50);
    assert.deepEqual(got[49], { step: 50, kind: 'train', loss: 1 / 50 });
  } finally {
    removeDir(dir);
  }
});

test('gs:// log: the object holds every appended line', async () => {
  const gcs = await useFakeGcs('b');
  try {
    gcs.put('b', 'run/metrics.jsonl', JSON.stringify(train(1)) + '\n{"partial');
    const log = await MetricsLog.open('gs://b/run/metrics.jsonl');
    await log.append(train(2));
    assert.deepEqual(await readMetrics('gs://b/run/metrics.jsonl'), [train(1), train(2)], 'uploaded after append');
    await log.append(train(3));
    await log.close();
    assert.deepEqual(await readMetrics('gs://b/run/metrics.jsonl'), [train(1), train(2), train(3)]);
  } finally {
    await gcs.done();
  }
});
