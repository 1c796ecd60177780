import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as storage from '../lib/storage';
import { tempDir, removeDir } from './helpers';

test('local write is atomic, refuses to overwrite unless asked, and leaves no temporary file', async () => {
  const dir = tempDir();
  try {
    const f = path.join(dir, 'sub', 'a.txt');
    await storage.writeFile(f, 'one');
    assert.equal(await storage.readText(f), 'one');
    await assert.rejects(storage.writeFile(f, 'two'), /already exists.*--overwrite/);
    assert.equal(await storage.readText(f), 'one');
    await storage.writeFile(f, 'two', { overwrite: true });
    assert.equal(await storage.readText(f), 'two');
    assert.deepEqual(fs.readdirSync(path.join(dir, 'sub')), ['a.txt']);
    // A write that fails part-way (the target is a folder) leaves neither a temp file nor a change.
    fs.mkdirSync(path.join(dir, 'sub', 'b.txt'));
    await assert.rejects(storage.writeFile(path.join(dir, 'sub', 'b.txt'), 'x', { overwrite: true }));
    assert.deepEqual(fs.readdirSync(path.join(dir, 'sub')).sort(), ['a.txt', 'b.txt']);
  } finally {
    removeDir(dir);
  }
});

test('read errors name the path; exists, list, glob and remove on local folders', async () => {
  const dir = tempDir();
  try {
    await assert.rejects(storage.readFile(path.join(dir, 'nope.csv')), (e: Error) => e.message === `file not found: ${path.join(dir, 'nope.csv')}`);
    await assert.rejects(storage.readFile(dir), /is a folder/);
    for (const n of ['train-00001-of-00002', 'train-00000-of-00002', 'validation-00000-of-00001', 'other.txt']) {
      fs.writeFileSync(path.join(dir, n), n);
    }
    fs.mkdirSync(path.join(dir, 'train-folder'));
    fs.writeFileSync(path.join(dir, 'train-folder', 'train-x'), '');
    assert.deepEqual(
      (await storage.glob(path.join(dir, 'train-*'))).map((f) => path.basename(f)),
      ['train-00000-of-00002', 'train-00001-of-00002'],
      'sorted, files only, last component only',
    );
    const rel = path.relative(process.cwd(), dir);
    assert.equal((await storage.glob(`./${rel}/validation-*`)).length, 1, 'a ./ prefix still matches');
    assert.deepEqual(await storage.glob(path.join(dir, 'missing', 'train-*')), []);
    assert.equal((await storage.list(dir)).length, 5, 'list is recursive');
    assert.equal(await storage.exists(path.join(dir, 'other.txt')), true);
    await storage.remove(path.join(dir, 'other.txt'));
    await storage.remove(path.join(dir, 'other.txt'));
    assert.equal(await storage.exists(path.join(dir, 'other.txt')), false);
  } finally {
    removeDir(dir);
  }
});

test('path helpers treat gs:// URLs and local paths alike', () => {
  assert.deepEqual(storage.parseGcsPath('gs://bucket/a/b.jpg'), { bucket: 'bucket', key: 'a/b.jpg' });
  assert.throws(() => storage.parseGcsPath('gs://'), /expected gs:\/\/BUCKET\/PATH/);
  assert.equal(storage.joinPath('gs://b/data', 'train-*'), 'gs://b/data/train-*');
  assert.equal(storage.joinPath('gs://b', 'x'), 'gs://b/x');
  assert.equal(storage.dirName('gs://b/data/x.csv'), 'gs://b/data');
  assert.equal(storage.dirName('gs://b/x.csv'), 'gs://b');
  assert.equal(storage.baseName('gs://b/data/x.csv'), 'x.csv');
  assert.equal(storage.resolvePath('gs://b/data', 'img/1.jpg'), 'gs://b/data/img/1.jpg');
  assert.equal(storage.resolvePath('/data', 'gs://c/1.jpg'), 'gs://c/1.jpg');
  assert.equal(storage.resolvePath('/data', 'img/1.jpg'), '/data/img/1.jpg');
  assert.equal(storage.resolvePath('/data', '/abs/1.jpg'), '/abs/1.jpg');
});
