import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../lib/errors';
import {
  readLabeledCsv,
  deriveLabels,
  formatLabels,
  readLabels,
  writeLabels,
  validateDataset,
  splitStratified,
  evalCount,
  csvFromFolders,
  formatCsv,
  writeCsv,
  summarize,
  formatSummary,
  makeDataset,
  type LabeledImage,
} from '../lib/dataset';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let counter = 0;

/** A fresh folder under the test's temp root. */
function freshDir(): string {
  const d = path.join(root, `t${counter++}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function writeTemp(name: string, content: string | Buffer): string {
  const p = path.join(freshDir(), name);
  fs.writeFileSync(p, content);
  return p;
}

/** Assert that `fn` rejects with a UserError whose message matches every pattern. */
async function rejectsUser(fn: () => Promise<unknown> | unknown, ...patterns: (RegExp | string)[]): Promise<string> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof UserError, `expected a UserError, got ${String(caught)}`);
  for (const p of patterns) {
    if (typeof p === 'string') assert.ok(caught.message.includes(p), `"${caught.message}" should include "${p}"`);
    else assert.match(caught.message, p);
  }
  return caught.message;
}

function row(p: string, label: string, line = 0): LabeledImage {
  return { path: p, label, source: 'mem.csv', line };
}

// ---------- readLabeledCsv ----------

test('reads the codelab format and resolves relative paths against the CSV folder', async () => {
  const csv = writeTemp(
    'train_set.csv',
    'gs://cloud-ml-data/img/flower_photos/daisy/100080576_f52e8ee070_n.jpg,daisy\n' +
      'roses/1.jpg,roses\n' +
      '../elsewhere/2.jpg,tulips\n' +
      '/abs/3.jpg,daisy\n',
  );
  const { rows, warnings } = await readLabeledCsv(csv);
  const dir = path.dirname(csv);
  assert.deepEqual(rows, [
    { path: 'gs://cloud-ml-data/img/flower_photos/daisy/100080576_f52e8ee070_n.jpg', label: 'daisy', source: csv, line: 1 },
    { path: path.join(dir, 'roses/1.jpg'), label: 'roses', source: csv, line: 2 },
    { path: path.resolve(dir, '../elsewhere/2.jpg'), label: 'tulips', source: csv, line: 3 },
    { path: '/abs/3.jpg', label: 'daisy', source: csv, line: 4 },
  ]);
  assert.deepEqual(warnings, []);
});

test('skips a filename,label / path,label / image,label header in any case, but not other first lines', async () => {
  for (const header of ['filename,label', 'Path,Label', 'IMAGE , label']) {
    const csv = writeTemp('h.csv', `${header}\na.jpg,cat\n`);
    const { rows } = await readLabeledCsv(csv);
    assert.equal(rows.length, 1, header);
    assert.equal(rows[0]!.label, 'cat');
    assert.equal(rows[0]!.line, 2);
  }
  const csv = writeTemp('h.csv', 'file,class\na.jpg,cat\n');
  const { rows } = await readLabeledCsv(csv);
  assert.deepEqual(rows.map((r) => r.label), ['class', 'cat']);
  const onlyHeader = writeTemp('only.csv', 'filename,label\n');
  await rejectsUser(() => readLabeledCsv(onlyHeader), onlyHeader, 'no rows');
});

test('strips a BOM, accepts CRLF and mixed line endings, skips blank lines, keeps physical line numbers', async () => {
  const csv = writeTemp('bom.csv', '\uFEFFa.jpg,cat\r\n\r\n   \r\nb.jpg,dog\nc.jpg,cat\r\n\n');
  const { rows } = await readLabeledCsv(csv);
  assert.deepEqual(
    rows.map((r) => [path.basename(r.path), r.label, r.line]),
    [['a.jpg', 'cat', 1], ['b.jpg', 'dog', 4], ['c.jpg', 'cat', 5]],
  );
});

test('bad CSV rows are errors naming the file and line', async () => {
  const cases: [string, string, (string | RegExp)[]][] = [
    ['a.jpg,cat\nb.jpg\n', ':2:', ['expected 2 fields', 'got 1']],
    ['a.jpg,cat\n\nb.jpg,dog,x\n', ':3:', ['expected 2 fields', 'got 3', 'comma']],
    ['a.jpg,cat\n,dog\n', ':2:', ['empty path']],
    ['a.jpg,cat\nb.jpg,\n', ':2:', ['empty label']],
    ['a.jpg,cat\nb.jpg,  \n', ':2:', ['empty label']],
    ['a.jpg,cat\nb.jpg,"big, cat"\n', ':2:', ['label "big, cat" contains a comma', 'rename the class']],
    ['"a,b.jpg",cat\n', ':1:', ['contains a comma', 'rename the file']],
    ['a.jpg,cat\nb.jpg,"dog\n', ':2:', ['cannot parse CSV']],
    ['a.jpg,cat\n"b\nc.jpg",dog\n', ':2:', ['spans several lines']],
  ];
  for (const [content, line, patterns] of cases) {
    const csv = writeTemp('bad.csv', content);
    await rejectsUser(() => readLabeledCsv(csv), `${csv}${line}`, ...patterns);
  }
});

test('an empty CSV is an error naming the file', async () => {
  for (const content of ['', '\n\n  \n', '\uFEFF']) {
    const csv = writeTemp('empty.csv', content);
    await rejectsUser(() => readLabeledCsv(csv), csv, 'no rows');
  }
});

test('a CSV that is not UTF-8 is an error naming the line', async () => {
  const csv = writeTemp('latin1.csv', Buffer.concat([Buffer.from('a.jpg,cat\ncaf'), Buffer.from([0xe9]), Buffer.from('.jpg,cat\n')]));
  await rejectsUser(() => readLabeledCsv(csv), `${csv}:2:`, 'UTF-8');
});

test('spaces around a label are trimmed with a warning naming the line', async () => {
  const csv = writeTemp('sp.csv', 'a.jpg,cat\nb.jpg, dog \n');
  const { rows, warnings } = await readLabeledCsv(csv);
  assert.deepEqual(rows.map((r) => r.label), ['cat', 'dog']);
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0]!.includes(`${csv}:2:`), warnings[0]);
});

test('duplicate rows warn naming both lines and are kept once; one path with two labels is an error', async () => {
  const csv = writeTemp('dup.csv', 'a.jpg,cat\nb.jpg,dog\n./a.jpg,cat\n');
  const { rows, warnings } = await readLabeledCsv(csv);
  assert.deepEqual(rows.map((r) => r.line), [1, 2]);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, new RegExp(`${csv.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: duplicate of line 1`));

  const conflict = writeTemp('conflict.csv', 'a.jpg,cat\nb.jpg,dog\na.jpg,dog\n');
  await rejectsUser(() => readLabeledCsv(conflict), `${conflict}:3:`, 'line 1', '"cat"', '"dog"');
});

test('many duplicate rows fold into a summary warning', async () => {
  const lines = ['a.jpg,cat', ...Array.from({ length: 25 }, () => 'a.jpg,cat')];
  const csv = writeTemp('many.csv', lines.join('\n'));
  const { rows, warnings } = await readLabeledCsv(csv);
  assert.equal(rows.length, 1);
  assert.equal(warnings.length, 11);
  assert.match(warnings[10]!, /and 15 more duplicate rows/);
});

// ---------- labels ----------

test('deriveLabels sorts unique labels by code point, as Python sorted() does', () => {
  const rows = ['tulips', 'daisy', 'Roses', 'daisy', '\uFF21', '\u{1F33C}', 'é'].map((l) => row('x', l));
  // U+FF21 < U+1F33C by code point, though JavaScript's default sort (UTF-16 units) says otherwise.
  assert.deepEqual(deriveLabels(rows), ['Roses', 'daisy', 'tulips', 'é', '\uFF21', '\u{1F33C}']);
});

test('labels.txt round trip, and refusing to overwrite', async () => {
  const p = path.join(freshDir(), 'labels.txt');
  const labels = ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips'];
  assert.equal(formatLabels(labels), 'daisy\ndandelion\nroses\nsunflowers\ntulips\n');
  await writeLabels(p, labels);
  assert.deepEqual(await readLabels(p), labels);
  await rejectsUser(() => writeLabels(p, ['a', 'b']), p, 'already exists');
  await writeLabels(p, ['a', 'b'], { overwrite: true });
  assert.deepEqual(await readLabels(p), ['a', 'b']);
  assert.throws(() => formatLabels(['a', 'b,c']), UserError);
  assert.throws(() => formatLabels(['a', 'a']), UserError);
});

test('readLabels accepts BOM, CRLF and trailing blank lines', async () => {
  const p = writeTemp('labels.txt', '\uFEFFcat\r\ndog\r\n\r\n\n');
  assert.deepEqual(await readLabels(p), ['cat', 'dog']);
});

test('bad labels.txt files are errors naming the file and line', async () => {
  const cases: [string, string, string[]][] = [
    ['', '', ['is empty']],
    ['\n\n', '', ['is empty']],
    ['cat\n\ndog\n', ':2:', ['blank line']],
    ['cat\ndog\ncat\n', ':3:', ['listed twice', 'labels.txt:1']],
    ['cat\nbig,dog\n', ':2:', ['comma']],
    ['cat\n dog\n', ':2:', ['spaces']],
  ];
  for (const [content, line, patterns] of cases) {
    const p = writeTemp('labels.txt', content);
    await rejectsUser(() => readLabels(p), `${p}${line}`, ...patterns);
  }
});

// ---------- validateDataset ----------

test('validateDataset: errors for unknown labels, fewer than 2 classes, a class with no training rows', () => {
  const train = [row('/a', 'cat', 1), row('/b', 'dog', 2)];
  const ev = [row('/c', 'cat', 1), row('/d', 'cow', 7)];
  ev[1]!.source = 'eval.csv';
  assert.throws(
    () => validateDataset({ train, eval: ev, labels: ['cat', 'dog'], labelsFile: 'labels.txt' }),
    (e: Error) => e instanceof UserError && /eval\.csv:7: label "cow" is not in labels\.txt/.test(e.message) && /add it to labels\.txt or fix the row/.test(e.message),
  );
  assert.throws(
    () => validateDataset({ train, eval: [], labels: ['cat'], labelsFile: 'labels.txt' }),
    (e: Error) => e instanceof UserError && /labels\.txt lists 1 class .*at least 2/.test(e.message),
  );
  assert.throws(
    () => validateDataset({ train, eval: [], labels: ['cat', 'dog', 'eel'], labelsFile: 'labels.txt' }),
    (e: Error) => e instanceof UserError && /labels\.txt:3: class "eel" has no rows in mem\.csv/.test(e.message),
  );
});

test('validateDataset: warns for a class with no eval rows and for an image in both train and eval', () => {
  const train = [row('/a', 'cat', 1), row('/b', 'dog', 2), row('/c', 'eel', 3)];
  const ev = [{ ...row('/a', 'cat', 4), source: 'eval.csv' }];
  const { warnings } = validateDataset({ train, eval: ev, labels: ['cat', 'dog', 'eel'], labelsFile: 'labels.txt' });
  assert.equal(warnings.length, 3);
  assert.ok(warnings.some((w) => w.includes('"dog" has no rows in eval.csv')));
  assert.ok(warnings.some((w) => w.includes('"eel" has no rows in eval.csv')));
  assert.ok(warnings.some((w) => w.includes('eval.csv:4') && w.includes('mem.csv:1') && w.includes('overstated')));
  const clean = validateDataset({
    train,
    eval: [row('/x', 'cat'), row('/y', 'dog'), row('/z', 'eel')],
    labels: ['cat', 'dog', 'eel'],
    labelsFile: 'labels.txt',
  });
  assert.deepEqual(clean.warnings, []);
});

// ---------- splitStratified ----------

function classRows(sizes: Record<string, number>): LabeledImage[] {
  const rows: LabeledImage[] = [];
  // Interleave classes, as a real all-data CSV would be ordered.
  const max = Math.max(...Object.values(sizes));
  for (let i = 0; i < max; i++) {
    for (const [label, n] of Object.entries(sizes)) if (i < n) rows.push(row(`/img/${label}/${i}.jpg`, label, rows.length + 1));
  }
  return rows;
}

function countBy(rows: LabeledImage[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of rows) out[r.label] = (out[r.label] ?? 0) + 1;
  return out;
}

test('splitStratified: per-class eval counts, small classes keep at least one training image', () => {
  const rows = classRows({ big: 50, mid: 25, small: 3, pair: 2, single: 1 });
  const { train, eval: ev } = splitStratified(rows, { evalFraction: 0.1, seed: 42 });
  assert.deepEqual(countBy(ev), { big: 5, mid: 3, small: 1, pair: 1 });
  assert.deepEqual(countBy(train), { big: 45, mid: 22, small: 2, pair: 1, single: 1 });
  assert.equal(evalCount(10, 0.95), 9);
  assert.equal(evalCount(10, 0), 0);
  assert.deepEqual(splitStratified(rows, { evalFraction: 0 }).eval, []);
});

test('splitStratified: deterministic, in input order, partitions the rows, and depends on the seed', () => {
  const rows = classRows({ a: 40, b: 30, c: 20 });
  const s1 = splitStratified(rows, { seed: 7, evalFraction: 0.2 });
  const s2 = splitStratified(rows, { seed: 7, evalFraction: 0.2 });
  assert.deepEqual(s1, s2);
  const idx = (r: LabeledImage): number => rows.indexOf(r);
  for (const part of [s1.train, s1.eval]) {
    const order = part.map(idx);
    assert.deepEqual(order, [...order].sort((x, y) => x - y));
  }
  assert.deepEqual(new Set([...s1.train, ...s1.eval]), new Set(rows));
  assert.equal(s1.train.length + s1.eval.length, rows.length);
  const s3 = splitStratified(rows, { seed: 8, evalFraction: 0.2 });
  assert.notDeepEqual(s3.eval.map((r) => r.path), s1.eval.map((r) => r.path));
  assert.deepEqual(countBy(s3.eval), countBy(s1.eval));
});

test('splitStratified: a class split ignores row order and other classes', () => {
  const rows = classRows({ a: 40, b: 30 });
  const evalA = (rs: LabeledImage[]): string[] =>
    splitStratified(rs, { seed: 3 }).eval.filter((r) => r.label === 'a').map((r) => r.path).sort();
  const base = evalA(rows);
  assert.deepEqual(evalA([...rows].reverse()), base);
  assert.deepEqual(evalA(rows.filter((r) => r.label === 'a')), base);
  assert.deepEqual(evalA([...rows, ...classRows({ z: 9 })]), base);
});

test('splitStratified rejects a bad fraction or seed', async () => {
  await rejectsUser(() => splitStratified([], { evalFraction: 1 }), 'eval fraction');
  await rejectsUser(() => splitStratified([], { evalFraction: -0.1 }), 'eval fraction');
  await rejectsUser(() => splitStratified([], { seed: 1.5 }), 'seed');
});

// ---------- csvFromFolders / formatCsv ----------

function touch(p: string, content: string | Buffer = 'x'): void {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

test('csvFromFolders: one class per sub-folder, images found recursively, others ignored', async () => {
  const d = freshDir();
  touch(path.join(d, 'daisy', '1.jpg'));
  touch(path.join(d, 'daisy', 'more', '2.JPEG'));
  touch(path.join(d, 'roses', '3.png'));
  touch(path.join(d, 'roses', '4.WebP'));
  touch(path.join(d, 'roses', 'notes.txt'));
  touch(path.join(d, 'roses', '.hidden.jpg'));
  touch(path.join(d, 'roses', '.ipynb_checkpoints', '5.jpg'));
  touch(path.join(d, '.git', 'x.jpg'));
  touch(path.join(d, 'top.jpg'));
  touch(path.join(d, 'README.md'));
  const rows = await csvFromFolders(d);
  assert.deepEqual(
    rows.map((r) => [path.relative(d, r.path), r.label]),
    [
      [path.join('daisy', '1.jpg'), 'daisy'],
      [path.join('daisy', 'more', '2.JPEG'), 'daisy'],
      [path.join('roses', '3.png'), 'roses'],
      [path.join('roses', '4.WebP'), 'roses'],
    ],
  );
  assert.ok(rows.every((r) => path.isAbsolute(r.path) && r.source === d));
});

test('csvFromFolders errors: missing folder, no class folders, no images, comma in a class name', async () => {
  const missing = path.join(root, 'does-not-exist');
  await rejectsUser(() => csvFromFolders(missing), missing, 'not found');
  const flat = freshDir();
  touch(path.join(flat, 'a.jpg'));
  await rejectsUser(() => csvFromFolders(flat), flat, 'no class folders');
  const noImages = freshDir();
  touch(path.join(noImages, 'cat', 'a.txt'));
  await rejectsUser(() => csvFromFolders(noImages), noImages, 'no images');
  const comma = freshDir();
  touch(path.join(comma, 'cat,dog', 'a.jpg'));
  await rejectsUser(() => csvFromFolders(comma), 'cat,dog', 'comma', 'rename');
});

test('formatCsv: relative inside a local folder, absolute outside, gs:// untouched, commas refused', () => {
  const rows = [row('/data/set/images/a.jpg', 'cat'), row('/other/b.jpg', 'dog'), row('gs://b/c.jpg', 'cat')];
  assert.equal(formatCsv(rows), '/data/set/images/a.jpg,cat\n/other/b.jpg,dog\ngs://b/c.jpg,cat\n');
  assert.equal(formatCsv(rows, { relativeTo: '/data/set' }), 'images/a.jpg,cat\n/other/b.jpg,dog\ngs://b/c.jpg,cat\n');
  assert.throws(() => formatCsv([row('/x/a,b.jpg', 'cat', 4)]), (e: Error) => e instanceof UserError && /mem\.csv:4/.test(e.message) && /a,b\.jpg/.test(e.message));
});

test('writeCsv then readLabeledCsv gives back the same rows, and refuses to overwrite', async () => {
  const d = freshDir();
  const rows = [row(path.join(d, 'img', 'a.jpg'), 'cat'), row('/elsewhere/b.jpg', 'dog'), row('gs://bkt/c.jpg', 'cat')];
  const csv = path.join(d, 'out.csv');
  await writeCsv(csv, rows);
  assert.equal(fs.readFileSync(csv, 'utf8'), 'img/a.jpg,cat\n/elsewhere/b.jpg,dog\ngs://bkt/c.jpg,cat\n');
  const back = await readLabeledCsv(csv);
  assert.deepEqual(back.rows.map((r) => [r.path, r.label]), rows.map((r) => [r.path, r.label]));
  await rejectsUser(() => writeCsv(csv, rows), csv, 'already exists');
});

// ---------- summary ----------

test('summarize counts per class in labels order; formatSummary aligns the columns', () => {
  const s = summarize({ train: [row('/1', 'b'), row('/2', 'b'), row('/3', 'a')], eval: [row('/4', 'a')] }, ['a', 'b', 'sunflowers']);
  assert.deepEqual(s, {
    labels: ['a', 'b', 'sunflowers'],
    perClass: [
      { label: 'a', train: 1, eval: 1 },
      { label: 'b', train: 2, eval: 0 },
      { label: 'sunflowers', train: 0, eval: 0 },
    ],
    totals: { train: 3, eval: 1 },
  });
  const lines = formatSummary(s).trimEnd().split('\n');
  assert.equal(lines.length, 7);
  assert.equal(new Set(lines.map((l) => l.length)).size, 1, formatSummary(s));
  assert.match(lines[0]!, /^class\s+train\s+eval$/);
  assert.match(lines[6]!, /^total\s+3\s+1$/);
});

// ---------- makeDataset ----------

async function makeImageFolder(sizes: Record<string, number>): Promise<string> {
  const d = path.join(freshDir(), 'images');
  const jpeg = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#f00' } }).jpeg().toBuffer();
  for (const [label, n] of Object.entries(sizes)) {
    for (let i = 0; i < n; i++) touch(path.join(d, label, `${label}_${i}.jpg`), jpeg);
  }
  return d;
}

test('makeDataset end to end from class folders of real JPEGs', async () => {
  const images = await makeImageFolder({ daisy: 20, roses: 10, tulips: 3 });
  const out = path.dirname(images);
  const r = await makeDataset({ imagesDir: images, outputDir: out, evalFraction: 0.2, seed: 1 });
  assert.equal(r.trainCsv, path.join(out, 'train_set.csv'));
  assert.deepEqual(await readLabels(r.labelsFile), ['daisy', 'roses', 'tulips']);
  const train = await readLabeledCsv(r.trainCsv);
  const ev = await readLabeledCsv(r.evalCsv);
  assert.deepEqual(countBy(ev.rows), { daisy: 4, roses: 2, tulips: 1 });
  assert.deepEqual(countBy(train.rows), { daisy: 16, roses: 8, tulips: 2 });
  // Relative paths, so the folder can move; every path names a real JPEG.
  assert.match(fs.readFileSync(r.trainCsv, 'utf8').split('\n')[0]!, /^images\/daisy\/daisy_\d+\.jpg,daisy$/);
  for (const x of [...train.rows, ...ev.rows]) assert.deepEqual([...fs.readFileSync(x.path).subarray(0, 2)], [0xff, 0xd8]);
  const all = new Set([...train.rows, ...ev.rows].map((x) => x.path));
  assert.equal(all.size, 33);
  assert.deepEqual(r.summary.totals, { train: 26, eval: 7 });
  assert.deepEqual(r.warnings, []);

  // Refuses to overwrite, naming the file, and leaves the outputs as they were.
  const before = fs.readFileSync(r.evalCsv, 'utf8');
  await rejectsUser(() => makeDataset({ imagesDir: images, outputDir: out, seed: 2 }), r.trainCsv, 'already exists');
  fs.rmSync(r.trainCsv);
  await rejectsUser(() => makeDataset({ imagesDir: images, outputDir: out, seed: 2 }), r.evalCsv, 'already exists');
  assert.equal(fs.readFileSync(r.evalCsv, 'utf8'), before);
  assert.ok(!fs.existsSync(r.trainCsv));

  // With overwrite and the same seed, the same split comes back.
  const again = await makeDataset({ imagesDir: images, outputDir: out, evalFraction: 0.2, seed: 1, overwrite: true });
  assert.equal(fs.readFileSync(again.evalCsv, 'utf8'), before);
});

test('makeDataset from one all-data CSV, into another folder', async () => {
  const images = await makeImageFolder({ cat: 5, dog: 5 });
  const allData = path.join(path.dirname(images), 'all_data.csv');
  const lines = fs.readdirSync(path.join(images, 'cat')).map((f) => `images/cat/${f},cat`);
  lines.push(...fs.readdirSync(path.join(images, 'dog')).map((f) => `images/dog/${f},dog`));
  fs.writeFileSync(allData, `filename,label\n${lines.join('\n')}\n${lines[0]}\n`);
  const out = path.join(freshDir(), 'out');
  const r = await makeDataset({ csv: allData, outputDir: out });
  assert.deepEqual(r.summary.perClass, [
    { label: 'cat', train: 4, eval: 1 },
    { label: 'dog', train: 4, eval: 1 },
  ]);
  assert.equal(r.warnings.length, 1); // the duplicated last line
  assert.match(r.warnings[0]!, /duplicate of line 2/);
  // Images are outside `out`, so the paths are absolute.
  const first = fs.readFileSync(r.trainCsv, 'utf8').split('\n')[0]!;
  assert.ok(first.startsWith(`${images}${path.sep}`), first);
  assert.equal((await readLabeledCsv(r.trainCsv)).rows.length, 8);
});

test('makeDataset errors: both or neither input, one class, nothing to hold out, bad fraction', async () => {
  const out = freshDir();
  await rejectsUser(() => makeDataset({ outputDir: out }), 'either');
  await rejectsUser(() => makeDataset({ imagesDir: 'a', csv: 'b', outputDir: out }), 'either');
  await rejectsUser(() => makeDataset({ imagesDir: 'a', outputDir: out, evalFraction: 0 }), 'eval fraction');
  const one = await makeImageFolder({ cat: 4 });
  await rejectsUser(() => makeDataset({ imagesDir: one, outputDir: out }), one, 'only one class');
  const singles = await makeImageFolder({ cat: 1, dog: 1 });
  await rejectsUser(() => makeDataset({ imagesDir: singles, outputDir: out }), 'single image');
  assert.deepEqual(fs.readdirSync(out), []);
});
