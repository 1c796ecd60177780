/**
 * Benchmark: `imgclass preprocess` images/s on 2,000 JPEGs of about 500x375, beside the raw sharp
 * decode rate (read + full decode, all cores) measured in the same run on the same files.
 * Run: npm run bench:preprocess [-- --images 2000 --workers N --rounds 3]
 * Each rate is the best of `--rounds` interleaved rounds.
 * Prints one JSON line; the README quotes it.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { preprocess } from '../lib/preprocess';
import { mulberry32 } from '../lib/random';
import { numberArg } from './args';

const IMAGES = numberArg('images', 2000);
const CLASSES = 10;

/** Photo-like test images: smooth colour fields with some texture, JPEG quality 85. Cached across runs. */
async function makeImages(dir: string): Promise<string[]> {
  await fsp.mkdir(dir, { recursive: true });
  const rng = mulberry32(7);
  const files: string[] = [];
  for (let i = 0; i < IMAGES; i++) {
    const f = path.join(dir, `img-${String(i).padStart(5, '0')}.jpg`);
    files.push(f);
    try {
      await fsp.access(f);
      continue;
    } catch {
      /* make it */
    }
    const w = 500;
    const h = 375;
    const noise = await sharp({ create: { width: w, height: h, channels: 3, background: "#000", noise: { type: 'gaussian', mean: 128, sigma: 60 } } })
      .blur(1 + rng() * 3)
      .raw()
      .toBuffer();
    const tint = { r: Math.floor(rng() * 255), g: Math.floor(rng() * 255), b: Math.floor(rng() * 255) };
    await sharp(noise, { raw: { width: w, height: h, channels: 3 } })
      .composite([{ input: { create: { width: w, height: h, channels: 4, background: { ...tint, alpha: 0.5 } } } }])
      .jpeg({ quality: 85 })
      .toFile(f);
  }
  return files;
}

async function rawDecodeRate(files: string[]): Promise<number> {
  const concurrency = os.availableParallelism() * 2;
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < files.length) {
        const f = files[next++] as string;
        await sharp(await fsp.readFile(f)).raw().toBuffer();
      }
    }),
  );
  return files.length / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function main(): Promise<void> {
  const work = path.join(os.tmpdir(), `imgclass-bench-preprocess-${IMAGES}`);
  const files = await makeImages(path.join(work, 'images'));
  const labels = Array.from({ length: CLASSES }, (_, i) => `class_${i}`);
  const rows = files.map((f, i) => `${f},${labels[i % CLASSES]}`);
  const nVal = Math.floor(IMAGES / 10);
  await fsp.writeFile(path.join(work, 'labels.txt'), labels.join('\n') + '\n');
  await fsp.writeFile(path.join(work, 'train.csv'), rows.slice(nVal).join('\n') + '\n');
  await fsp.writeFile(path.join(work, 'eval.csv'), rows.slice(0, nVal).join('\n') + '\n');
  const bytes = (await Promise.all(files.map((f) => fsp.stat(f)))).reduce((s, st) => s + st.size, 0);

  await rawDecodeRate(files.slice(0, 200)); // warm the page cache and sharp
  // Best of three rounds of each, interleaved, so a passing load on the machine hits both alike.
  const workers = numberArg('workers', os.availableParallelism());
  const out = path.join(work, 'out');
  let rawRate = 0;
  let preRate = 0;
  for (let round = 0; round < numberArg('rounds', 3); round++) {
    rawRate = Math.max(rawRate, await rawDecodeRate(files));
    await fsp.rm(out, { recursive: true, force: true });
    const r = await preprocess({
      trainCsv: path.join(work, 'train.csv'),
      validationCsv: path.join(work, 'eval.csv'),
      labelsFile: path.join(work, 'labels.txt'),
      outputDir: out,
      workers,
      numShards: 4,
    });
    preRate = Math.max(preRate, r.imagesPerSecond);
  }
  const result = {
    bench: 'preprocess',
    images: IMAGES,
    avg_jpeg_kb: Math.round(bytes / IMAGES / 1024),
    cores: os.availableParallelism(),
    workers,
    preprocess_img_s: Number(preRate.toFixed(1)),
    raw_sharp_decode_img_s: Number(rawRate.toFixed(1)),
    ratio: Number((preRate / rawRate).toFixed(3)),
    goal: '>= 0.8',
    node: process.version,
    sharp: sharp.versions.sharp,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  await fsp.rm(out, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
