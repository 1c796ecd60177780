/**
 * Fashion-MNIST (Zalando, MIT licence) as labelled JPEG folders, from Debian's
 * `dataset-fashion-mnist` package: the real data set this machine can reach, used for
 * data-samples/ and for the accuracy benchmark. The IDX format is four lines of code, so no library.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import { UserError } from './errors';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** Class names in label order, spelled as folder names (no spaces or slashes). */
export const FASHION_MNIST_CLASSES = [
  't_shirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot',
] as const;

export interface IdxImages {
  count: number;
  rows: number;
  cols: number;
  pixels: Uint8Array;
}

async function readGz(file: string): Promise<Buffer> {
  try {
    return zlib.gunzipSync(await fsp.readFile(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new UserError(`${file} not found: install Debian's data set with "apt-get install dataset-fashion-mnist"`);
    }
    throw err;
  }
}

/** Parse an IDX3 (images) file: magic 0x00000803, count, rows, cols, then bytes. */
export async function readIdxImages(file: string): Promise<IdxImages> {
  const b = await readGz(file);
  if (b.readUInt32BE(0) !== 0x803) throw new UserError(`${file}: not an IDX image file (bad magic number)`);
  const count = b.readUInt32BE(4);
  const rows = b.readUInt32BE(8);
  const cols = b.readUInt32BE(12);
  return { count, rows, cols, pixels: b.subarray(16, 16 + count * rows * cols) };
}

/** Parse an IDX1 (labels) file: magic 0x00000801, count, then one byte per label. */
export async function readIdxLabels(file: string): Promise<Uint8Array> {
  const b = await readGz(file);
  if (b.readUInt32BE(0) !== 0x801) throw new UserError(`${file}: not an IDX label file (bad magic number)`);
  return b.subarray(8, 8 + b.readUInt32BE(4));
}

export interface ExportOptions {
  split: 'train' | 't10k';
  outDir: string;
  /** Class indices to keep (default all ten). */
  classes?: number[];
  /** At most this many images per class, the first ones in file order (default all). */
  perClass?: number;
  /** Only the first this many images of the file (default all). */
  first?: number;
  /** Scale factor for the 28x28 images (1 keeps them native). */
  scale?: number;
  quality?: number;
  sourceDir?: string;
}

/**
 * Write images as RGB JPEGs into `outDir/<class>/<split>-<index>.jpg`. Deterministic: the same
 * options give the same files. Returns how many were written per class.
 */
export async function exportFashionMnistJpegs(opts: ExportOptions): Promise<Record<string, number>> {
  const src = opts.sourceDir ?? FASHION_MNIST_DIR;
  const images = await readIdxImages(path.join(src, `${opts.split}-images-idx3-ubyte.gz`));
  const labels = await readIdxLabels(path.join(src, `${opts.split}-labels-idx1-ubyte.gz`));
  const keep = new Set(opts.classes ?? FASHION_MNIST_CLASSES.map((_, i) => i));
  const counts: Record<string, number> = {};
  const size = images.rows * images.cols;
  const scale = opts.scale ?? 1;
  const end = Math.min(images.count, opts.first ?? images.count);
  for (let i = 0; i < end; i++) {
    const label = labels[i] as number;
    if (!keep.has(label)) continue;
    const name = FASHION_MNIST_CLASSES[label] as string;
    if (opts.perClass !== undefined && (counts[name] ?? 0) >= opts.perClass) continue;
    counts[name] = (counts[name] ?? 0) + 1;
    const gray = Buffer.from(images.pixels.subarray(i * size, (i + 1) * size));
    let img = sharp(gray, { raw: { width: images.cols, height: images.rows, channels: 1 } });
    if (scale !== 1) img = img.resize(images.cols * scale, images.rows * scale, { kernel: 'lanczos3' });
    // Stored as 3-channel JPEGs: the codelab's inputs are RGB photos, and the records say RGB.
    const jpeg = await img.toColourspace('srgb').jpeg({ quality: opts.quality ?? 90 }).toBuffer();
    const dir = path.join(opts.outDir, name);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, `${opts.split}-${String(i).padStart(5, '0')}.jpg`), jpeg);
  }
  return counts;
}
