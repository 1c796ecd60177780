/**
 * The image side of tensorflow/tpu's resnet_preprocessing.py, on sharp (libvips) instead of
 * TensorFlow ops: the random "Inception" crop for training, the padded center crop for evaluation
 * (and serving), resize to a square and the random left/right flip. Outputs are interleaved 8-bit
 * RGB, imageSize × imageSize × 3; normalization happens later (preprocessing.ts), as in the
 * reference, where model_fn subtracts the mean.
 *
 * Images are decoded as stored: no EXIF auto-rotation, since TensorFlow's decode_jpeg ignores EXIF
 * and training must see what the served model will see.
 */
import sharp from 'sharp';
import type { Rng } from '../random';
import { PreprocessingSettings } from './preprocessing';

/** A pixel rectangle inside an image. */
export interface CropWindow {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface DistortedBoxOptions {
  minObjectCovered: number;
  aspectRatioRange: readonly [number, number];
  areaRange: readonly [number, number];
  maxAttempts: number;
}

/** What _decode_and_random_crop passes to tf.image.sample_distorted_bounding_box. */
export const RESNET_RANDOM_CROP: DistortedBoxOptions = {
  minObjectCovered: 0.1,
  aspectRatioRange: [3 / 4, 4 / 3],
  areaRange: [0.08, 1.0],
  maxAttempts: 10,
};

// 'truncated', as lib/preprocess does: harmless libjpeg warnings must not fail a training step.
const DECODE_OPTS: sharp.SharpOptions = { failOn: 'truncated', limitInputPixels: 1 << 28 };

const f32 = Math.fround;

/** C's lrintf in the default rounding mode: to nearest, ties to even. */
function lrint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** SimplePhilox::Uniform(n): an integer in [0, n). */
function uniform(rng: Rng, n: number): number {
  return Math.floor(rng() * n);
}

/**
 * GenerateRandomCrop of tensorflow/core/kernels/image/sample_distorted_bounding_box_op.cc, float32
 * arithmetic and rounding included: a height uniform between the heights of the smallest and the
 * largest allowed area at this aspect ratio, width = round(height × aspect), then a uniform offset
 * (Uniform(n) is [0, n), so like TensorFlow the last possible offset is never drawn).
 */
function generateRandomCrop(
  imgW: number,
  imgH: number,
  minRel: number,
  maxRel: number,
  aspect: number,
  rng: Rng,
): CropWindow | null {
  if (maxRel <= 0 || aspect <= 0 || imgW <= 0 || imgH <= 0 || minRel > maxRel) return null;
  const minArea = f32(f32(f32(minRel) * imgW) * imgH);
  const maxArea = f32(f32(f32(maxRel) * imgW) * imgH);
  let height = lrint(f32(Math.sqrt(f32(minArea / aspect))));
  let maxHeight = lrint(f32(Math.sqrt(f32(maxArea / aspect))));
  if (lrint(f32(maxHeight * aspect)) > imgW) {
    const kEps = f32(0.0000001);
    maxHeight = Math.trunc((imgW + 0.5 - kEps) / aspect);
    if (lrint(f32(maxHeight * aspect)) > imgW) maxHeight -= 1;
  }
  if (maxHeight > imgH) maxHeight = imgH;
  if (height >= maxHeight) height = maxHeight;
  if (height < maxHeight) height += uniform(rng, maxHeight - height + 1);
  let width = lrint(f32(height * aspect));
  let area = width * height;
  if (area < minArea) {
    height += 1;
    width = lrint(f32(height * aspect));
    area = width * height;
  }
  if (area > maxArea) {
    height -= 1;
    width = lrint(f32(height * aspect));
    area = width * height;
  }
  if (area < minArea || area > maxArea || width > imgW || height > imgH || width <= 0 || height <= 0) return null;
  const top = height < imgH ? uniform(rng, imgH - height) : 0;
  const left = width < imgW ? uniform(rng, imgW - width) : 0;
  return { left, top, width, height };
}

/**
 * tf.image.sample_distorted_bounding_box with the whole image as the only object box (what
 * _decode_and_random_crop passes): up to maxAttempts aspect ratios, each a random crop that must
 * cover at least minObjectCovered of the image. With the ResNet settings this makes the effective
 * minimum area 0.1, not the 0.08 of areaRange. Returns null where TensorFlow falls back to the
 * whole image.
 */
export function sampleDistortedBoundingBox(
  width: number,
  height: number,
  rng: Rng,
  opts: DistortedBoxOptions = RESNET_RANDOM_CROP,
): CropWindow | null {
  const [minAspect, maxAspect] = opts.aspectRatioRange;
  const imageArea = width * height;
  for (let i = 0; i < opts.maxAttempts; i++) {
    const aspect = f32(f32(f32(rng()) * f32(f32(maxAspect) - f32(minAspect))) + f32(minAspect));
    const crop = generateRandomCrop(width, height, opts.areaRange[0], opts.areaRange[1], aspect, rng);
    if (!crop) continue;
    const area = crop.width * crop.height;
    // SatisfiesOverlapConstraints with the image as the object: a crop lies inside it, so the
    // covered fraction is the crop's share of the image.
    if (area >= 1 && f32(area / imageArea) >= f32(opts.minObjectCovered)) return crop;
  }
  return null;
}

/**
 * _decode_and_center_crop's window: a square of imageSize / (imageSize + cropPadding) of the
 * shorter side (float32, truncated, as tf.cast does), offsets rounded up to center it.
 */
export function centerCropWindow(width: number, height: number, settings: PreprocessingSettings): CropWindow {
  const fraction = f32(settings.imageSize / (settings.imageSize + settings.cropPadding));
  // Never 0: TensorFlow would fail on a 1-pixel image; one pixel scaled up is the useful answer.
  const size = Math.max(1, Math.trunc(f32(fraction * f32(Math.min(width, height)))));
  return {
    left: Math.floor((width - size + 1) / 2),
    top: Math.floor((height - size + 1) / 2),
    width: Math.min(size, width),
    height: Math.min(size, height),
  };
}

export interface TrainCrop {
  window: CropWindow;
  /** True when the center crop was used (no random box found, or the box was the whole image). */
  fallback: boolean;
}

/**
 * _decode_and_random_crop's window. Like the reference it takes the eval center crop whenever the
 * sampled box has the image's full height and width: both when no box was found (TensorFlow then
 * returns the whole image) and when the whole image happened to be drawn.
 */
export function trainCropWindow(width: number, height: number, settings: PreprocessingSettings, rng: Rng): TrainCrop {
  const opts = settings.minCropArea === undefined ? RESNET_RANDOM_CROP
    : { ...RESNET_RANDOM_CROP, areaRange: [settings.minCropArea, 1] as const };
  const box = sampleDistortedBoundingBox(width, height, rng, opts);
  if (!box || (box.width === width && box.height === height)) {
    return { window: centerCropWindow(width, height, settings), fallback: true };
  }
  return { window: box, fallback: false };
}

export interface ImageInfo {
  width: number;
  height: number;
  hasAlpha: boolean;
}

/** Size of an encoded image as stored (no EXIF rotation), and whether it has alpha, from its header. */
export async function imageInfo(bytes: Uint8Array): Promise<ImageInfo> {
  const meta = await sharp(bytes, DECODE_OPTS).metadata();
  const width = meta.width ?? 0;
  const height = meta.pageHeight ?? meta.height ?? 0;
  if (width < 1 || height < 1) throw new Error(`image has no size (format ${meta.format ?? 'unknown'})`);
  return { width, height, hasAlpha: meta.hasAlpha === true };
}

/** Mirror interleaved RGB rows left to right, in place. */
export function flipHorizontal(rgb: Uint8Array, width: number, height: number): Uint8Array {
  for (let y = 0; y < height; y++) {
    let a = y * width * 3;
    let b = a + (width - 1) * 3;
    for (; a < b; a += 3, b -= 3) {
      for (let c = 0; c < 3; c++) {
        const t = rgb[a + c]!;
        rgb[a + c] = rgb[b + c]!;
        rgb[b + c] = t;
      }
    }
  }
  return rgb;
}

export interface CropResizeOptions {
  flip?: boolean;
  /** Whether the image has an alpha channel; looked up when not given. */
  hasAlpha?: boolean;
}

/**
 * Decode, crop to `window`, resize to imageSize × imageSize (aspect ratio not kept, as
 * tf.image.resize_bicubic does) and optionally mirror. Any format sharp reads; grayscale and CMYK
 * become sRGB, 16-bit becomes 8-bit, and alpha is dropped before resizing, as decode_image
 * (channels=3) drops it (libvips would otherwise resize premultiplied colours).
 *
 * 'bicubic' is sharp's 'cubic' kernel, Catmull-Rom (a = -0.5), the kernel of TensorFlow's legacy
 * resize_bicubic. One difference remains: when shrinking, libvips widens the kernel to average over
 * the source pixels (antialiasing) where resize_bicubic samples without it, so strong downscales
 * come out smoother here than in TensorFlow.
 */
export async function cropResize(
  bytes: Uint8Array,
  window: CropWindow,
  settings: PreprocessingSettings,
  opts: CropResizeOptions = {},
): Promise<Uint8Array> {
  const size = settings.imageSize;
  const hasAlpha = opts.hasAlpha ?? (await imageInfo(bytes)).hasAlpha;
  let img = sharp(bytes, DECODE_OPTS).extract(window);
  if (hasAlpha) {
    // Two passes only for the rare image with alpha: sharp removes alpha after resizing.
    const rgb = await img.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    img = sharp(rgb.data, { raw: { width: rgb.info.width, height: rgb.info.height, channels: rgb.info.channels } });
  }
  const { data, info } = await img
    .resize(size, size, { fit: 'fill', kernel: settings.resize === 'bicubic' ? 'cubic' : 'linear' })
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.width !== size || info.height !== size || info.channels !== 3 || data.length !== size * size * 3) {
    throw new Error(`decoding gave ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3`);
  }
  const out = new Uint8Array(data.buffer, data.byteOffset, data.length);
  // Mirrored here rather than with sharp's flop(), which libvips applies before the extract.
  return opts.flip ? flipHorizontal(out, size, size) : out;
}

/**
 * preprocess_for_train without the normalization: random crop (or its center-crop fallback),
 * resize, then a left/right flip with probability 1/2. All randomness comes from `rng`, so a seeded
 * rng gives the same pixels every time.
 */
export async function trainTransform(bytes: Uint8Array, settings: PreprocessingSettings, rng: Rng): Promise<Uint8Array> {
  const { width, height, hasAlpha } = await imageInfo(bytes);
  const { window } = trainCropWindow(width, height, settings, rng);
  const flip = rng() < 0.5;
  return cropResize(bytes, window, settings, { flip, hasAlpha });
}

/**
 * preprocess_for_eval without the normalization: padded center crop, resize. Takes any image sharp
 * reads (JPEG, PNG, WebP, ...), which is what the prediction server needs.
 */
export async function evalTransform(bytes: Uint8Array, settings: PreprocessingSettings): Promise<Uint8Array> {
  const { width, height, hasAlpha } = await imageInfo(bytes);
  return cropResize(bytes, centerCropWindow(width, height, settings), settings, { hasAlpha });
}
