/**
 * The training input pipeline: crop geometry against tensorflow/tpu's resnet_preprocessing.py,
 * image transforms on real images made with sharp, and TrainInput / evalBatches / datasetInfo over
 * real TFRecord shards (TFRecordWriter + encodeExample), including gs:// shards through the fake
 * Cloud Storage server.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { Storage } from '@google-cloud/storage';
import { mulberry32 } from '../lib/random';
import { encodeExample, FeatureValue } from '../lib/example';
import { TFRecordWriter, TFRecordError, HEADER_BYTES, FOOTER_BYTES } from '../lib/tfrecord';
import { UserError } from '../lib/errors';
import * as storage from '../lib/storage';
import {
  sampleDistortedBoundingBox,
  centerCropWindow,
  trainCropWindow,
  cropResize,
  flipHorizontal,
  trainTransform,
  evalTransform,
} from '../lib/train/augment';
import { defaultPreprocessing, checkSettings, normalizeInto, MEAN_RGB, STDDEV_RGB, CROP_PADDING } from '../lib/train/preprocessing';
import { TrainInput, evalBatches, datasetInfo, findShards, indexRecords, Batch } from '../lib/train/input';
import { FakeGcs } from './fake-gcs';
import { tempDir, removeDir, jpeg } from './helpers';

const dirs: string[] = [];
function scratch(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}
after(() => dirs.forEach(removeDir));

// ---------------------------------------------------------------- crop geometry

test('random crop: area 0.1–1 of the image, aspect 3/4–4/3, inside the image, over many seeds', () => {
  // The largest crop a 3/4–4/3 box allows: all of a near-square image, 33 × 44 of a 33 × 100 strip.
  for (const [w, h, largest] of [
    [500, 375, 1],
    [375, 500, 1],
    [64, 64, 1],
    [33, 100, 0.44],
  ] as const) {
    let found = 0;
    let minArea = 1;
    let maxArea = 0;
    const distinct = new Set<string>();
    for (let seed = 0; seed < 1000; seed++) {
      const box = sampleDistortedBoundingBox(w, h, mulberry32(seed));
      if (!box) continue;
      found++;
      const area = (box.width * box.height) / (w * h);
      // min_object_covered 0.1 with the whole image as the object overrides area_range's 0.08.
      assert.ok(area >= 0.1 - 1e-6 && area <= 1, `${w}x${h} seed ${seed}: area ${area}`);
      // width = round(height × aspect), so the aspect can be off by half a pixel over the height.
      const slack = 0.5 / box.height + 1e-6;
      const aspect = box.width / box.height;
      assert.ok(aspect >= 3 / 4 - slack && aspect <= 4 / 3 + slack, `${w}x${h} seed ${seed}: aspect ${aspect}`);
      assert.ok(box.left >= 0 && box.top >= 0 && box.left + box.width <= w && box.top + box.height <= h, `${w}x${h}: ${JSON.stringify(box)} outside`);
      minArea = Math.min(minArea, area);
      maxArea = Math.max(maxArea, area);
      distinct.add(JSON.stringify(box));
    }
    assert.ok(found > 900, `${w}x${h}: a box for only ${found} of 1000 seeds`);
    assert.ok(minArea < 0.15 && maxArea > largest - 0.1 && maxArea <= largest, `${w}x${h}: areas span ${minArea}–${maxArea}`);
    if (w > 100) assert.ok(distinct.size > 800, `${w}x${h}: only ${distinct.size} distinct crops`);
  }
});

test('random crop falls back to the eval center crop when no box fits or the box is the whole image', () => {
  const s = defaultPreprocessing(16);
  // A strip: no 3/4–4/3 box can hold 10% of it, so all 10 attempts fail.
  for (let seed = 0; seed < 50; seed++) {
    assert.equal(sampleDistortedBoundingBox(1000, 10, mulberry32(seed)), null);
    const crop = trainCropWindow(1000, 10, s, mulberry32(seed));
    assert.equal(crop.fallback, true);
    assert.deepEqual(crop.window, centerCropWindow(1000, 10, s));
  }
  // A tiny square image draws the whole image now and then; that too is replaced by the center crop.
  let fallbacks = 0;
  for (let seed = 0; seed < 300; seed++) {
    const { window, fallback } = trainCropWindow(4, 4, s, mulberry32(seed));
    if (fallback) {
      fallbacks++;
      assert.deepEqual(window, centerCropWindow(4, 4, s));
    } else {
      assert.ok(window.width < 4 || window.height < 4, `seed ${seed}: the whole image was not replaced`);
    }
  }
  assert.ok(fallbacks > 0 && fallbacks < 300, `fallbacks ${fallbacks}`);
});

test('eval center crop: image_size / (image_size + padding) of the shorter side, centered, on non-square images', () => {
  // The codelab's 32 px of padding at 224 px, and the same 0.875 fraction at smaller sizes.
  assert.equal(CROP_PADDING, 32);
  assert.equal(defaultPreprocessing(224).cropPadding, 32);
  assert.equal(defaultPreprocessing(64).cropPadding, 9);
  assert.equal(defaultPreprocessing(32).cropPadding, 5);
  // 224 / 256 × 375 = 328.125 → 328; offsets ((500 - 328) + 1) // 2 = 86 and ((375 - 328) + 1) // 2 = 24.
  assert.deepEqual(centerCropWindow(500, 375, defaultPreprocessing(224)), { left: 86, top: 24, width: 328, height: 328 });
  // With the padding fixed at 32 (an explicit setting): 64 / 96 × 375 = 250.
  const s64fixed = { ...defaultPreprocessing(64), cropPadding: 32 };
  assert.deepEqual(centerCropWindow(500, 375, s64fixed), { left: 125, top: 63, width: 250, height: 250 });
  assert.deepEqual(centerCropWindow(375, 500, s64fixed), { left: 63, top: 125, width: 250, height: 250 });
  // 64 / 73 × 375 = 328.77 → 328.
  const s64 = defaultPreprocessing(64);
  assert.deepEqual(centerCropWindow(500, 375, s64), { left: 86, top: 24, width: 328, height: 328 });
  assert.deepEqual(centerCropWindow(1, 1, s64), { left: 0, top: 0, width: 1, height: 1 });
});

// ---------------------------------------------------------------- image transforms

/** A PNG, left half red, right half blue. */
function halves(width: number, height: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      if (x < width / 2) raw[i] = 255;
      else raw[i + 2] = 255;
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

function pixel(rgb: Uint8Array, size: number, x: number, y: number): number[] {
  const i = (y * size + x) * 3;
  return [rgb[i]!, rgb[i + 1]!, rgb[i + 2]!];
}

test('flip mirrors the image left to right; the train transform flips about half the time', async () => {
  const png = await halves(40, 20);
  const s = defaultPreprocessing(16);
  const whole = { left: 0, top: 0, width: 40, height: 20 };
  const plain = await cropResize(png, whole, s);
  const flipped = await cropResize(png, whole, s, { flip: true });
  assert.deepEqual(pixel(plain, 16, 0, 8), [255, 0, 0]);
  assert.deepEqual(pixel(plain, 16, 15, 8), [0, 0, 255]);
  assert.deepEqual(pixel(flipped, 16, 0, 8), [0, 0, 255]);
  assert.deepEqual(pixel(flipped, 16, 15, 8), [255, 0, 0]);
  assert.deepEqual(flipped, flipHorizontal(Uint8Array.from(plain), 16, 16));

  let redLeft = 0;
  for (let seed = 0; seed < 40; seed++) {
    const out = await trainTransform(png, s, mulberry32(seed));
    assert.equal(out.length, 16 * 16 * 3);
    // Every crop holds some of both halves or one only; the left column says which side is which.
    const left = pixel(out, 16, 0, 8);
    const right = pixel(out, 16, 15, 8);
    if (left[0]! > left[2]! && right[2]! >= right[0]!) redLeft++;
  }
  assert.ok(redLeft > 5 && redLeft < 35, `red on the left in ${redLeft} of 40`);
});

test('train transform is a function of its seed', async () => {
  const img = await jpeg(120, 90, 3);
  const s = defaultPreprocessing(24);
  const a = await trainTransform(img, s, mulberry32(11));
  const b = await trainTransform(img, s, mulberry32(11));
  const c = await trainTransform(img, s, mulberry32(12));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('evalTransform: any format and channel count in, size × size × 3 RGB out, the center crop only', async () => {
  const s = defaultPreprocessing(32);
  const gray = await sharp({ create: { width: 50, height: 30, channels: 3, background: '#777' } }).toColourspace('b-w').jpeg().toBuffer();
  assert.equal((await sharp(gray).metadata()).channels, 1, 'the fixture should be a 1-channel JPEG');
  const g = await evalTransform(gray, s);
  assert.equal(g.length, 32 * 32 * 3);
  for (let i = 0; i < g.length; i += 3) assert.ok(g[i] === g[i + 1] && g[i] === g[i + 2], 'gray must stay gray in all 3 channels');

  const rgba = await sharp({ create: { width: 30, height: 50, channels: 4, background: { r: 10, g: 200, b: 30, alpha: 0.5 } } }).png().toBuffer();
  const a = await evalTransform(rgba, s);
  assert.equal(a.length, 32 * 32 * 3);
  assert.deepEqual(pixel(a, 32, 16, 16), [10, 200, 30]);

  const deep = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 100, g: 50, b: 25 } } }).toColourspace('rgb16').png().toBuffer();
  assert.equal((await sharp(deep).metadata()).depth, 'ushort');
  // 16-bit samples are resized before they become 8-bit: allow one level of rounding.
  pixel(await evalTransform(deep, s), 32, 3, 3).forEach((v, i) => assert.ok(Math.abs(v - ([100, 50, 25][i] as number)) <= 1, `channel ${i}: ${v}`));

  const webp = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#204080' } }).webp({ lossless: true }).toBuffer();
  assert.deepEqual(pixel(await evalTransform(webp, s), 32, 5, 5), [0x20, 0x40, 0x80]);

  // 96×64 at 32 px with a padding of 32 keeps the 32×32 square at (32, 16): green there, red around it never shows.
  const raw = Buffer.alloc(96 * 64 * 3);
  for (let y = 0; y < 64; y++) {
    for (let x = 0; x < 96; x++) {
      const inside = x >= 32 && x < 64 && y >= 16 && y < 48;
      raw[(y * 96 + x) * 3 + (inside ? 1 : 0)] = 255;
    }
  }
  const framed = await sharp(raw, { raw: { width: 96, height: 64, channels: 3 } }).png().toBuffer();
  const f = await evalTransform(framed, { ...s, cropPadding: 32 });
  for (let i = 0; i < f.length; i += 3) assert.deepEqual([f[i], f[i + 1], f[i + 2]], [0, 255, 0]);

  await assert.rejects(evalTransform(Buffer.from('not an image at all'), s));
});

test('normalizeInto: (x - mean) / stddev per channel with the ImageNet statistics', () => {
  assert.deepEqual([...MEAN_RGB], [0.485 * 255, 0.456 * 255, 0.406 * 255]);
  assert.deepEqual([...STDDEV_RGB], [0.229 * 255, 0.224 * 255, 0.225 * 255]);
  const s = defaultPreprocessing(1);
  const px = Uint8Array.from([0, 0, 0, 255, 255, 255, 124, 116, 104]);
  const out = normalizeInto(px, new Float32Array(9), s);
  const expected = [-2.1179039, -2.0357143, -1.8044444, 2.2489083, 2.4285714, 2.64, 0.0055655, -0.004902, 0.0081917];
  for (let i = 0; i < 9; i++) assert.ok(Math.abs(out[i]! - expected[i]!) < 1e-5, `value ${i}: ${out[i]} vs ${expected[i]}`);
  assert.throws(() => normalizeInto(px, new Float32Array(6), s), /holds 6/);
});

// ---------------------------------------------------------------- shards

const NUM_TRAIN = 20;
const NUM_EVAL = 7;

function exampleFeatures(image: Uint8Array, label: number, filename: string): Record<string, FeatureValue> {
  return {
    'image/class/label': { int64: [label] },
    'image/class/synset': { bytes: [`class${String(label).padStart(2, '0')}`] },
    'image/filename': { bytes: [filename] },
    'image/encoded': { bytes: [image] },
  };
}

async function writeShard(file: string, records: Uint8Array[]): Promise<void> {
  const w = await TFRecordWriter.create(file, { overwrite: true });
  for (const r of records) await w.write(r);
  await w.close();
}

interface Fixture {
  dir: string;
  trainImages: Buffer[];
  evalImages: Buffer[];
}

let fixture: Promise<Fixture> | undefined;

/**
 * 20 training images in 2 shards, label i + 1 for image i (so labels name records), and 7
 * validation images in 2 shards; sizes vary so crops differ.
 */
function dataset(): Promise<Fixture> {
  fixture ??= (async () => {
    const dir = scratch();
    const trainImages = await Promise.all(Array.from({ length: NUM_TRAIN }, (_, i) => jpeg(40 + i, 30 + ((i * 7) % 20), i)));
    const evalImages = await Promise.all(Array.from({ length: NUM_EVAL }, (_, i) => jpeg(36 + i * 3, 48 - i, 100 + i)));
    const train = trainImages.map((img, i) => encodeExample(exampleFeatures(img, i + 1, `t${i}.jpg`)));
    const val = evalImages.map((img, i) => encodeExample(exampleFeatures(img, (i % 5) + 1, `v${i}.jpg`)));
    await writeShard(path.join(dir, 'train-00000-of-00002'), train.slice(0, 10));
    await writeShard(path.join(dir, 'train-00001-of-00002'), train.slice(10));
    await writeShard(path.join(dir, 'validation-00000-of-00002'), val.slice(0, 4));
    await writeShard(path.join(dir, 'validation-00001-of-00002'), val.slice(4));
    return { dir, trainImages, evalImages };
  })();
  return fixture;
}

async function take(input: TrainInput, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let i = 0; i < n; i++) out.push(await input.next());
  return out;
}

async function open(dir: string, seed: number, prefetch?: number): Promise<TrainInput> {
  const opts = { dataDir: dir, imageSize: 16, batchSize: 6, seed, numClasses: NUM_TRAIN };
  return TrainInput.open(prefetch === undefined ? opts : { ...opts, prefetch });
}

test('findShards and indexRecords: every record with its offset and length', async () => {
  const { dir } = await dataset();
  const files = await findShards(dir, 'train');
  assert.deepEqual(files.map((f) => path.basename(f)), ['train-00000-of-00002', 'train-00001-of-00002']);
  const index = await indexRecords(files);
  assert.equal(index.size, NUM_TRAIN);
  assert.deepEqual(index.counts(), [10, 10]);
  const r0 = index.get(0);
  const r1 = index.get(1);
  assert.equal(r0.offset, 0);
  assert.equal(r1.offset, HEADER_BYTES + r0.length + FOOTER_BYTES);
  assert.equal(index.get(10).file, files[1]);
  assert.equal(index.get(10).index, 0);
  assert.equal(index.get(19).offset + HEADER_BYTES + index.get(19).length + FOOTER_BYTES, fs.statSync(files[1]!).size);
});

test('training batches: full batches across epochs, each epoch every record once, deterministic per seed, prefetch-independent', async () => {
  const { dir } = await dataset();
  const a = await open(dir, 7);
  const batches = await take(a, 8); // 48 examples: 2.4 epochs of 20
  await a.close();
  for (const [k, b] of batches.entries()) {
    assert.equal(b.size, 6);
    assert.equal(b.images.length, 6 * 16 * 16 * 3);
    assert.equal(b.labels.length, 6);
    assert.equal(b.epoch, Math.floor((k * 6) / NUM_TRAIN));
  }
  const labels = batches.flatMap((b) => [...b.labels]);
  const epoch0 = labels.slice(0, 20);
  const epoch1 = labels.slice(20, 40);
  const all = Array.from({ length: 20 }, (_, i) => i);
  assert.deepEqual([...epoch0].sort((x, y) => x - y), all);
  assert.deepEqual([...epoch1].sort((x, y) => x - y), all);
  assert.notDeepEqual(epoch0, epoch1, 'each epoch should have its own order');
  assert.notDeepEqual(epoch0, all, 'the order should be shuffled');
  assert.ok(batches[0]!.images.some((v) => v !== 0));

  const b = await open(dir, 7, 0);
  const again = await take(b, 8);
  await b.close();
  const c = await open(dir, 7, 5);
  const ahead = await take(c, 8);
  await c.close();
  for (let k = 0; k < 8; k++) {
    assert.deepEqual(again[k], batches[k], `batch ${k} differs without prefetch`);
    assert.deepEqual(ahead[k], batches[k], `batch ${k} differs with prefetch 5`);
  }

  // Each example's crop and flip come from (seed, epoch, position), not from its slot in a batch.
  const e = await TrainInput.open({ dataDir: dir, imageSize: 16, batchSize: 4, seed: 7, numClasses: NUM_TRAIN });
  const fours = await take(e, 6);
  await e.close();
  assert.deepEqual(Buffer.concat(fours.map((x) => x.images)), Buffer.concat(batches.slice(0, 4).map((x) => x.images)));

  const d = await open(dir, 8);
  const other = await take(d, 4);
  await d.close();
  assert.notDeepEqual(other.flatMap((x) => [...x.labels]), labels.slice(0, 24));
});

test('resume: a new instance restored from state() continues with exactly the same batches', async () => {
  const { dir } = await dataset();
  const whole = await open(dir, 3);
  const expected = await take(whole, 7);
  await whole.close();

  const first = await open(dir, 3, 3);
  await take(first, 1);
  const early = first.state();
  await take(first, 2);
  const state = first.state();
  assert.deepEqual(state, { epoch: 0, position: 18, seed: 3, numRecords: NUM_TRAIN });
  // Rewinding a running instance drops what it decoded ahead.
  first.restore(early);
  assert.deepEqual(await first.next(), expected[1]);
  await first.close();

  const resumed = await open(dir, 3, 2);
  resumed.restore(JSON.parse(JSON.stringify(state)));
  const rest = await take(resumed, 4);
  assert.deepEqual(resumed.state(), { epoch: 2, position: 2, seed: 3, numRecords: NUM_TRAIN });
  for (let k = 0; k < 4; k++) assert.deepEqual(rest[k], expected[k + 3], `batch ${k + 3} after resume`);
  assert.throws(() => resumed.restore({ ...state, seed: 4 }), (e: unknown) => e instanceof UserError && /seed 4/.test(e.message));
  assert.throws(() => resumed.restore({ ...state, numRecords: 21 }), /21 training records/);
  await resumed.close();
  await assert.rejects(resumed.next(), /closed/);
});

test('evalBatches: every validation record once, in file order, center-cropped, last batch partial', async () => {
  const { dir, evalImages } = await dataset();
  const s = defaultPreprocessing(16);
  const got: Batch[] = [];
  for await (const b of evalBatches({ dataDir: dir, imageSize: 16, batchSize: 3 })) got.push(b);
  assert.deepEqual(got.map((b) => b.size), [3, 3, 1]);
  assert.deepEqual(got.flatMap((b) => [...b.labels]), [0, 1, 2, 3, 4, 0, 1]);
  let i = 0;
  for (const b of got) {
    assert.equal(b.images.length, b.size * 16 * 16 * 3);
    for (let k = 0; k < b.size; k++, i++) {
      assert.deepEqual(b.images.subarray(k * 768, (k + 1) * 768), await evalTransform(evalImages[i]!, s), `eval image ${i}`);
    }
  }
  const one: number[] = [];
  for await (const b of evalBatches({ dataDir: dir, imageSize: 16, batchSize: 7 })) one.push(b.size);
  assert.deepEqual(one, [7]);
});

test('datasetInfo counts records and classes and reads class names from the synsets', async () => {
  const { dir } = await dataset();
  const info = await datasetInfo(dir);
  assert.equal(info.numTrainImages, NUM_TRAIN);
  assert.equal(info.numEvalImages, NUM_EVAL);
  assert.equal(info.numClasses, NUM_TRAIN);
  assert.deepEqual(info.labels, Array.from({ length: NUM_TRAIN }, (_, i) => `class${String(i + 1).padStart(2, '0')}`));
});

// ---------------------------------------------------------------- errors

async function smallSet(records: Uint8Array[]): Promise<string> {
  const dir = scratch();
  await writeShard(path.join(dir, 'train-00000-of-00001'), records);
  return dir;
}

test('no shards, or a partial set: UserErrors naming the folder and the expected names', async () => {
  const empty = scratch();
  await assert.rejects(
    TrainInput.open({ dataDir: empty, imageSize: 16, batchSize: 2, seed: 1, numClasses: 2 }),
    (e: unknown) => e instanceof UserError && e.message.includes(empty) && /train-00000-of-000NN/.test(e.message) && /imgclass preprocess/.test(e.message),
  );
  const partial = scratch();
  await writeShard(path.join(partial, 'train-00000-of-00002'), [encodeExample(exampleFeatures(await jpeg(20, 20), 1, 'a.jpg'))]);
  await assert.rejects(findShards(partial, 'train'), /missing: train-00001-of-00002/);
  await assert.rejects(evalBatches({ dataDir: partial, imageSize: 8, batchSize: 2 }).next(), /no validation shards/);
});

test('corrupt or truncated shards: TFRecordErrors naming the file and byte offset', async () => {
  const img = await jpeg(24, 24);
  const records = [0, 1, 2].map((i) => encodeExample(exampleFeatures(img, 1, `${i}.jpg`)));
  const dir = await smallSet(records);
  const file = path.join(dir, 'train-00000-of-00001');
  const good = fs.readFileSync(file);
  const second = HEADER_BYTES + records[0]!.length + FOOTER_BYTES;
  const open1 = () => TrainInput.open({ dataDir: dir, imageSize: 8, batchSize: 3, seed: 1, numClasses: 1 });

  const badLength = Buffer.from(good);
  badLength[second + 1]! ^= 0x40;
  fs.writeFileSync(file, badLength);
  await assert.rejects(open1(), (e: unknown) => e instanceof TFRecordError && e.file === file && e.offset === second && e.message.includes(`byte offset ${second}`));

  fs.writeFileSync(file, good.subarray(0, good.length - 3));
  await assert.rejects(open1(), (e: unknown) => e instanceof TFRecordError && e.kind === 'truncated' && e.recordIndex === 2 && e.message.includes(file));

  const badData = Buffer.from(good);
  badData[second + HEADER_BYTES + 5]! ^= 0x01;
  fs.writeFileSync(file, badData);
  const input = await open1(); // only headers are read when indexing
  await assert.rejects(input.next(), (e: unknown) => e instanceof TFRecordError && e.kind === 'corrupt' && e.recordIndex === 1 && /data checksum/.test(e.message) && e.message.includes(file));
  await input.close();
});

test('bad records: label out of range, no image/encoded, undecodable image — errors name file and record', async () => {
  const img = await jpeg(24, 24);
  const high = await smallSet([encodeExample(exampleFeatures(img, 7, 'a.jpg'))]);
  const highFile = path.join(high, 'train-00000-of-00001');
  const input = await TrainInput.open({ dataDir: high, imageSize: 8, batchSize: 1, seed: 1, numClasses: 5 });
  await assert.rejects(input.next(), (e: unknown) =>
    e instanceof UserError && e.message.startsWith(`labels out of range: record 0 of ${highFile} has image/class/label 7 but --num_label_classes is 5`),
  );
  await input.close();
  await assert.rejects(
    (async () => {
      for await (const _ of evalBatches({ dataDir: await renameToValidation(high), imageSize: 8, batchSize: 1, numClasses: 5 })) void _;
    })(),
    /labels out of range: record 0 of .*validation-00000-of-00001 has image\/class\/label 7/,
  );

  const mixed = await smallSet([encodeExample(exampleFeatures(img, 1, 'a.jpg')), encodeExample({ ...exampleFeatures(img, 1, 'b.jpg'), 'image/class/synset': { bytes: ['dog'] } })]);
  await assert.rejects(datasetInfo(mixed), /record 1 of .*train-00000-of-00001 has image\/class\/label 1 with synset "dog", but record 0 of .* has the same label with synset "class01"/);
  // No validation split is not an error here: it counts as 0 images.
  assert.deepEqual(await datasetInfo(high), { numTrainImages: 1, numEvalImages: 0, numClasses: 7 });

  const zero = await smallSet([encodeExample(exampleFeatures(img, 1, 'a.jpg')), encodeExample(exampleFeatures(img, 0, 'b.jpg'))]);
  await assert.rejects(datasetInfo(zero), /record 1 of .*train-00000-of-00001 has image\/class\/label 0, but labels start at 1/);

  const noImage = await smallSet([encodeExample({ 'image/class/label': { int64: [1] } })]);
  const noImageInput = await TrainInput.open({ dataDir: noImage, imageSize: 8, batchSize: 1, seed: 1, numClasses: 1 });
  await assert.rejects(noImageInput.next(), (e: unknown) => e instanceof UserError && /record 0 of .*train-00000-of-00001 has no feature "image\/encoded"/.test(e.message));
  await noImageInput.close();

  const broken = await smallSet([
    encodeExample(exampleFeatures(img, 1, 'fine.jpg')),
    encodeExample(exampleFeatures(img.subarray(0, 100), 1, 'cut-short.jpg')),
  ]);
  const brokenInput = await TrainInput.open({ dataDir: broken, imageSize: 8, batchSize: 2, seed: 1, numClasses: 1 });
  await assert.rejects(brokenInput.next(), (e: unknown) =>
    e instanceof UserError && /^record 1 of .*train-00000-of-00001 \(image\/filename "cut-short\.jpg"\): image\/encoded could not be decoded/.test(e.message),
  );
  await brokenInput.close();
});

async function renameToValidation(dir: string): Promise<string> {
  const out = scratch();
  fs.copyFileSync(path.join(dir, 'train-00000-of-00001'), path.join(out, 'validation-00000-of-00001'));
  return out;
}

// ---------------------------------------------------------------- gs://

test('gs:// shards are copied to the cache folder once and read from there; errors name the gs:// URL', async () => {
  const { dir } = await dataset();
  const fake = new FakeGcs();
  await fake.start();
  try {
    fake.createBucket('bkt');
    for (const name of fs.readdirSync(dir)) fake.put('bkt', `data/${name}`, fs.readFileSync(path.join(dir, name)));
    storage.setGcsClient(new Storage({ apiEndpoint: fake.endpoint, projectId: 'imgclass-test' }));
    const cacheDir = scratch();
    const info = await datasetInfo('gs://bkt/data', { cacheDir });
    assert.equal(info.numTrainImages, NUM_TRAIN);
    assert.equal(info.numEvalImages, NUM_EVAL);
    const downloads = fake.requests.filter((r) => r.op === 'media').length;
    assert.equal(downloads, 4);

    const remote = await TrainInput.open({ dataDir: 'gs://bkt/data', imageSize: 16, batchSize: 6, seed: 7, numClasses: NUM_TRAIN, cacheDir });
    assert.equal(fake.requests.filter((r) => r.op === 'media').length, downloads, 'cached shards were downloaded again');
    const local = await open(dir, 7);
    assert.deepEqual(await take(remote, 4), await take(local, 4));
    await remote.close();
    await local.close();

    const img = await jpeg(20, 20);
    const w = path.join(scratch(), 'train-00000-of-00001');
    await writeShard(w, [encodeExample(exampleFeatures(img, 9, 'x.jpg'))]);
    fake.put('bkt', 'bad/train-00000-of-00001', fs.readFileSync(w));
    const bad = await TrainInput.open({ dataDir: 'gs://bkt/bad', imageSize: 8, batchSize: 1, seed: 1, numClasses: 3, cacheDir });
    await assert.rejects(bad.next(), /record 0 of gs:\/\/bkt\/bad\/train-00000-of-00001 has image\/class\/label 9/);
    await bad.close();
  } finally {
    storage.setGcsClient(undefined);
    await fake.stop();
  }
});

test('--min_crop_area raises the smallest random crop; the default keeps tensorflow/tpu\'s 0.08 range', () => {
  const settings = defaultPreprocessing(32);
  const areas = (s: typeof settings): number[] => {
    const rng = mulberry32(5);
    return Array.from({ length: 400 }, () => {
      const { window: w } = trainCropWindow(280, 280, s, rng);
      return (w.width * w.height) / (280 * 280);
    });
  };
  const tpu = areas(settings);
  const gentle = areas({ ...settings, minCropArea: 0.5 });
  assert.ok(Math.min(...tpu) < 0.2, `default crops reach down to ~0.1 of the image (min ${Math.min(...tpu)})`);
  assert.ok(Math.min(...gentle) >= 0.5 - 0.01, `min crop area 0.5 respected (min ${Math.min(...gentle)})`);
  assert.throws(() => checkSettings({ ...settings, minCropArea: 0 }), /min crop area/);
  assert.throws(() => checkSettings({ ...settings, minCropArea: 1.5 }), /min crop area/);
});
