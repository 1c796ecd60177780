import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { preprocess } from '../lib/preprocess';
import { imageToExample } from '../lib/preprocess/image';
import { shardName, planShards } from '../lib/preprocess/shards';
import { readJpegHeader } from '../lib/preprocess/jpeg-header';
import { readRecordFile } from '../lib/tfrecord';
import { decodeExample, getBytes, getInt64, getString, DecodedExample } from '../lib/example';
import { tempDir, removeDir, jpeg, photo, CLI } from './helpers';

interface Fixture {
  dir: string;
  trainCsv: string;
  evalCsv: string;
  labelsFile: string;
  files: Record<string, Buffer>;
}

/** A small data set of real images in three classes, plus the odd files real collections hold. */
async function fixture(extra: { train?: string[]; eval?: string[] } = {}): Promise<Fixture> {
  const dir = tempDir();
  const files: Record<string, Buffer> = {};
  const labels = ['cat', 'dog', 'fish'];
  const train: string[] = [];
  const evalRows: string[] = [];
  let seed = 0;
  for (const label of labels) {
    fs.mkdirSync(path.join(dir, label));
    for (let i = 0; i < 6; i++) {
      const rel = `${label}/${i}.jpg`;
      files[rel] = await jpeg(40 + i, 30 + seed % 7, seed++);
      fs.writeFileSync(path.join(dir, rel), files[rel] as Buffer);
      (i < 5 ? train : evalRows).push(`${rel},${label}`);
    }
  }
  fs.writeFileSync(path.join(dir, 'labels.txt'), labels.join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'train.csv'), [...train, ...(extra.train ?? [])].join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'eval.csv'), [...evalRows, ...(extra.eval ?? [])].join('\n') + '\n');
  return { dir, trainCsv: path.join(dir, 'train.csv'), evalCsv: path.join(dir, 'eval.csv'), labelsFile: path.join(dir, 'labels.txt'), files };
}

async function readShards(dir: string, split: string): Promise<DecodedExample[]> {
  const out: DecodedExample[] = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.startsWith(`${split}-`)).sort()) {
    for await (const rec of readRecordFile(path.join(dir, f))) out.push(decodeExample(rec));
  }
  return out;
}

const KEYS = [
  'image/encoded', 'image/format', 'image/class/label', 'image/class/synset', 'image/height',
  'image/width', 'image/channels', 'image/colorspace', 'image/filename',
].sort();

test('records hold the keys of jpeg_to_tf_record.py, the original JPEG bytes and 1-based labels', async () => {
  const fx = await fixture();
  try {
    const out = path.join(fx.dir, 'out');
    const r = await preprocess({ trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: fx.labelsFile, outputDir: out });
    assert.deepEqual(fs.readdirSync(out).sort(), ['preprocess_report.json', 'train-00000-of-00001', 'validation-00000-of-00001']);
    assert.equal(r.report.splits.train.records, 15);
    assert.equal(r.report.splits.validation.records, 3);
    const train = await readShards(out, 'train');
    const val = await readShards(out, 'validation');
    assert.equal(train.length, 15);
    assert.equal(val.length, 3);
    const labels = ['cat', 'dog', 'fish'];
    const seen = new Set<string>();
    for (const ex of [...train, ...val]) {
      assert.deepEqual(Object.keys(ex).sort(), KEYS);
      const synset = getString(ex, 'image/class/synset');
      assert.equal(getInt64(ex, 'image/class/label'), labels.indexOf(synset) + 1);
      assert.equal(getString(ex, 'image/format'), 'JPEG');
      assert.equal(getString(ex, 'image/colorspace'), 'RGB');
      assert.equal(getInt64(ex, 'image/channels'), 3);
      const name = getString(ex, 'image/filename');
      assert.ok(!name.includes('/'), `filename is a base name: ${name}`);
      const original = fx.files[`${synset}/${name}`];
      assert.ok(original, `record points at a fixture file: ${synset}/${name}`);
      assert.ok(getBytes(ex, 'image/encoded').equals(original), 'original JPEG bytes kept');
      const meta = await sharp(original).metadata();
      assert.equal(getInt64(ex, 'image/width'), meta.width);
      assert.equal(getInt64(ex, 'image/height'), meta.height);
      seen.add(`${synset}/${name}`);
    }
    assert.equal(seen.size, 18, 'every row once');
  } finally {
    removeDir(fx.dir);
  }
});

test('grayscale, CMYK, PNG and WebP content is re-encoded as RGB JPEG and counted; bad files are skipped and reported', async () => {
  const fx = await fixture({
    train: ['odd/gray.jpg,cat', 'odd/cmyk.jpg,dog', 'odd/png.jpg,fish', 'odd/webp.jpg,cat', 'odd/truncated.jpg,dog', 'odd/text.jpg,fish', 'odd/missing.jpg,cat', 'odd/empty.jpg,dog'],
  });
  try {
    const odd = path.join(fx.dir, 'odd');
    fs.mkdirSync(odd);
    const p = await photo(32, 24, 3);
    fs.writeFileSync(path.join(odd, 'gray.jpg'), await p.clone().toColourspace('b-w').jpeg().toBuffer());
    fs.writeFileSync(path.join(odd, 'cmyk.jpg'), await p.clone().toColourspace('cmyk').jpeg().toBuffer());
    fs.writeFileSync(path.join(odd, 'png.jpg'), await p.clone().ensureAlpha().png().toBuffer());
    fs.writeFileSync(path.join(odd, 'webp.jpg'), await p.clone().webp().toBuffer());
    const whole = await jpeg(200, 150, 9);
    fs.writeFileSync(path.join(odd, 'truncated.jpg'), whole.subarray(0, Math.floor(whole.length / 2)));
    fs.writeFileSync(path.join(odd, 'text.jpg'), 'this is not an image\n');
    fs.writeFileSync(path.join(odd, 'empty.jpg'), '');
    const out = path.join(fx.dir, 'out');
    const r = await preprocess({ trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: fx.labelsFile, outputDir: out });
    assert.deepEqual(r.report.reencoded, { grayscale: 1, cmyk: 1, png: 1, webp: 1 });
    const skipped = Object.fromEntries(r.report.skipped.map((s) => [path.basename(s.path), s]));
    assert.deepEqual(Object.keys(skipped).sort(), ['empty.jpg', 'missing.jpg', 'text.jpg', 'truncated.jpg']);
    assert.match(skipped['truncated.jpg']!.reason, /truncated|premature/i);
    assert.match(skipped['missing.jpg']!.reason, /not found/);
    assert.match(skipped['text.jpg']!.reason, /not a readable image/);
    assert.match(skipped['empty.jpg']!.reason, /empty/);
    assert.equal(skipped['truncated.jpg']!.line, 20, 'the CSV line number');
    assert.equal(skipped['truncated.jpg']!.csv, fx.trainCsv);
    const onDisk = JSON.parse(fs.readFileSync(path.join(out, 'preprocess_report.json'), 'utf8'));
    assert.deepEqual(onDisk, JSON.parse(JSON.stringify(r.report)));
    assert.equal(r.report.splits.train.records, 19);
    assert.equal(r.report.splits.train.skipped, 4);
    for (const ex of await readShards(out, 'train')) {
      const name = getString(ex, 'image/filename');
      if (!['gray.jpg', 'cmyk.jpg', 'png.jpg', 'webp.jpg'].includes(name)) continue;
      const meta = await sharp(getBytes(ex, 'image/encoded')).metadata();
      assert.equal(meta.format, 'jpeg', name);
      assert.equal(meta.channels, 3, name);
      assert.equal(meta.space, 'srgb', name);
      assert.equal(getInt64(ex, 'image/width'), 32);
      assert.equal(getInt64(ex, 'image/height'), 24);
    }
  } finally {
    removeDir(fx.dir);
  }
});

test('--strict turns a skip into a failure that names the CSV line and leaves nothing behind', async () => {
  const fx = await fixture({ eval: ['nope/missing.jpg,cat'] });
  try {
    const out = path.join(fx.dir, 'out');
    await assert.rejects(
      preprocess({ trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: fx.labelsFile, outputDir: out, strict: true }),
      (err: Error) => err.message.includes(`${fx.evalCsv}:4`) && /not found/.test(err.message) && /--strict/.test(err.message),
    );
    assert.equal(fs.existsSync(out), false, 'an output folder it created is removed again');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'README'), 'mine');
    await assert.rejects(
      preprocess({ trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: fx.labelsFile, outputDir: out, strict: true, overwrite: true }),
    );
    assert.deepEqual(fs.readdirSync(out), ['README'], 'no shard, report or staging folder left');
  } finally {
    removeDir(fx.dir);
  }
});

test('output is deterministic: same bytes with 1 or 2 workers and across runs; shards are named as Beam names them', async () => {
  const fx = await fixture();
  try {
    const a = path.join(fx.dir, 'a');
    const b = path.join(fx.dir, 'b');
    const common = { trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: fx.labelsFile, numShards: 4 };
    await preprocess({ ...common, outputDir: a, workers: 1 });
    await preprocess({ ...common, outputDir: b, workers: 2 });
    const names = fs.readdirSync(a).sort();
    assert.deepEqual(names, [
      'preprocess_report.json',
      'train-00000-of-00004', 'train-00001-of-00004', 'train-00002-of-00004', 'train-00003-of-00004',
      'validation-00000-of-00003', 'validation-00001-of-00003', 'validation-00002-of-00003',
    ]);
    for (const n of names) assert.ok(fs.readFileSync(path.join(a, n)).equals(fs.readFileSync(path.join(b, n))), n);
    // Training shards mix the classes (rows are shuffled with a fixed seed before sharding).
    const first = await readShards(a, 'train-00000');
    assert.ok(new Set(first.map((e) => getString(e, 'image/class/synset'))).size > 1);
  } finally {
    removeDir(fx.dir);
  }
});

test('refuses a non-empty output folder; --overwrite replaces earlier shards and keeps other files', async () => {
  const fx = await fixture();
  try {
    const out = path.join(fx.dir, 'out');
    const common = { trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: fx.labelsFile, outputDir: out };
    await preprocess({ ...common, numShards: 5 });
    fs.writeFileSync(path.join(out, 'notes.txt'), 'keep me');
    await assert.rejects(preprocess({ ...common, numShards: 2 }), /not empty.*--overwrite/);
    await preprocess({ ...common, numShards: 2, overwrite: true });
    assert.deepEqual(fs.readdirSync(out).sort(), [
      'notes.txt', 'preprocess_report.json', 'train-00000-of-00002', 'train-00001-of-00002',
      'validation-00000-of-00002', 'validation-00001-of-00002',
    ]);
  } finally {
    removeDir(fx.dir);
  }
});

test('bad input fails before anything is written', async () => {
  const fx = await fixture({ train: ['cat/0.jpg,bird'] });
  try {
    const out = path.join(fx.dir, 'out');
    await assert.rejects(
      preprocess({ trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: fx.labelsFile, outputDir: out }),
      (err: Error) => err.message.includes(fx.trainCsv) && err.message.includes('16') && err.message.includes('bird'),
    );
    assert.equal(fs.existsSync(out), false);
    await assert.rejects(
      preprocess({ trainCsv: fx.trainCsv, validationCsv: fx.evalCsv, labelsFile: path.join(fx.dir, 'nope.txt'), outputDir: out }),
      /nope\.txt/,
    );
  } finally {
    removeDir(fx.dir);
  }
});

test('--resize caps the longest side and re-encodes only the images that are larger', async () => {
  const big = await jpeg(200, 100, 1);
  const small = await jpeg(40, 30, 2);
  const r1 = await imageToExample({ bytes: big, filename: '/x/big.jpg', label: 'a', labelIndex: 0, resize: 50 });
  const r2 = await imageToExample({ bytes: small, filename: 'gs://b/small.jpg', label: 'b', labelIndex: 1, resize: 50 });
  assert.ok(r1.ok && r2.ok);
  assert.equal(r1.reencoded, 'resized');
  assert.deepEqual([r1.width, r1.height], [50, 25]);
  assert.equal(r2.reencoded, undefined);
  const ex2 = decodeExample(r2.example);
  assert.ok(getBytes(ex2, 'image/encoded').equals(small));
  assert.equal(getString(ex2, 'image/filename'), 'small.jpg');
  assert.equal(getInt64(ex2, 'image/class/label'), 2);
});

test('shard planning and names', () => {
  assert.equal(shardName('train', 3, 16), 'train-00003-of-00016');
  assert.deepEqual(planShards(10, 3), [{ start: 0, end: 3 }, { start: 3, end: 6 }, { start: 6, end: 10 }]);
  assert.deepEqual(planShards(2, 5), [{ start: 0, end: 1 }, { start: 1, end: 2 }], 'no empty shards');
  assert.deepEqual(planShards(0, 4), [{ start: 0, end: 0 }]);
});

test('CLI: snake_case and kebab-case flags, a summary on stdout, exit 2 with the message on bad input', async () => {
  const fx = await fixture();
  try {
    const ok = spawnSync(process.execPath, [CLI, 'preprocess', '--train_csv', fx.trainCsv, '--validation-csv', fx.evalCsv, `--labels_file=${fx.labelsFile}`, '--output_dir', path.join(fx.dir, 'out'), '--num_shards', '2'], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /train: 15 records in 2 shard\(s\); validation: 3 records in 2 shard\(s\); skipped 0/);
    const again = spawnSync(process.execPath, [CLI, 'preprocess', '--train_csv', fx.trainCsv, '--validation_csv', fx.evalCsv, '--labels_file', fx.labelsFile, '--output_dir', path.join(fx.dir, 'out')], { encoding: 'utf8' });
    assert.equal(again.status, 2);
    assert.match(again.stderr, /^imgclass: output folder .* is not empty/);
    assert.doesNotMatch(again.stderr, /\n\s+at /, 'no stack trace for a user error');
    const badFlag = spawnSync(process.execPath, [CLI, 'preprocess', '--train_csv', fx.trainCsv, '--validation_csv', fx.evalCsv, '--labels_file', fx.labelsFile, '--output_dir', path.join(fx.dir, 'o2'), '--num_shards', 'x'], { encoding: 'utf8' });
    assert.equal(badFlag.status, 2);
    assert.match(badFlag.stderr, /--num_shards.*whole number/);
  } finally {
    removeDir(fx.dir);
  }
});

test('the JPEG frame header parser agrees with sharp on size and components, and declines anything else', async () => {
  const p = await photo(37, 21, 5);
  const rgb = await p.clone().jpeg().toBuffer();
  const progressive = await p.clone().jpeg({ progressive: true }).toBuffer();
  const gray = await p.clone().toColourspace('b-w').jpeg().toBuffer();
  const cmyk = await p.clone().toColourspace('cmyk').jpeg().toBuffer();
  const withExif = await p.clone().withMetadata({ exif: { IFD0: { Copyright: 'imgclass' } } }).jpeg().toBuffer();
  assert.deepEqual(readJpegHeader(rgb), { width: 37, height: 21, components: 3 });
  assert.deepEqual(readJpegHeader(progressive), { width: 37, height: 21, components: 3 });
  assert.deepEqual(readJpegHeader(withExif), { width: 37, height: 21, components: 3 }, 'skips APP segments');
  assert.equal(readJpegHeader(gray)?.components, 1);
  assert.equal(readJpegHeader(cmyk)?.components, 4);
  assert.equal(readJpegHeader(await p.clone().png().toBuffer()), undefined);
  assert.equal(readJpegHeader(rgb.subarray(0, 3)), undefined);
  assert.equal(readJpegHeader(Buffer.from([0xff, 0xd8, 0xff, 0xda, 0, 2])), undefined, 'a scan before any frame');
});
