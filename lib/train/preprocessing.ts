/**
 * The preprocessing constants and per-pixel normalization shared by training, evaluation and the
 * prediction server, so a served model sees its inputs exactly as it saw them in training.
 *
 * Values from tensorflow/tpu models/official/resnet: MEAN_RGB and STDDEV_RGB as resnet_main.py
 * defines them (ImageNet statistics on the 0–255 scale, applied inside the model function after
 * the input pipeline has produced 0–255 pixels). The eval crop: resnet_preprocessing.py had a fixed
 * CROP_PADDING = 32 when the codelab was written and now has CROP_FRACTION = 0.875; both keep
 * 224 / 256 of the image at the codelab's 224 px. We follow the fraction, because a fixed 32 px
 * at the small sizes a CPU trains at would throw away half the image (32 / 64 at 32 px).
 */

/** The codelab's padding at 224 px (224 / (224 + 32) = 0.875). */
export const CROP_PADDING = 32;
export const CROP_FRACTION = 0.875;

/** Padding that keeps CROP_FRACTION of the shorter side at this size: 32 at 224 px, 9 at 64, 5 at 32. */
export function cropPaddingFor(imageSize: number): number {
  return Math.round(imageSize * (1 / CROP_FRACTION - 1));
}
export const MEAN_RGB: readonly [number, number, number] = [0.485 * 255, 0.456 * 255, 0.406 * 255];
export const STDDEV_RGB: readonly [number, number, number] = [0.229 * 255, 0.224 * 255, 0.225 * 255];

/**
 * tensorflow/tpu resizes with tf.image.resize_bicubic in both _decode_and_random_crop and
 * _decode_and_center_crop, so bicubic is the default; bilinear is there for speed experiments.
 */
export type ResizeMethod = 'bicubic' | 'bilinear';

export interface PreprocessingSettings {
  /** Side of the square images fed to the model. */
  imageSize: number;
  /** The eval center crop keeps imageSize / (imageSize + cropPadding) of the shorter side. */
  cropPadding: number;
  meanRgb: readonly [number, number, number];
  stddevRgb: readonly [number, number, number];
  resize: ResizeMethod;
  /**
   * Training only: the smallest area of the random crop, as a fraction of the image (the lower end of
   * sample_distorted_bounding_box's area_range; tensorflow/tpu uses 0.08, the default). Small images
   * such as 28x28 Fashion-MNIST learn better with a larger value.
   */
  minCropArea?: number;
  /**
   * Channel order the model takes: 'rgb' (ours, the default) or 'bgr' (Caffe-style models, given by
   * a pretrained model's preprocessing.json). meanRgb and stddevRgb are in the model's order.
   */
  channelOrder?: ChannelOrder;
}

export type ChannelOrder = 'rgb' | 'bgr';

export function defaultPreprocessing(imageSize: number): PreprocessingSettings {
  const settings: PreprocessingSettings = {
    imageSize,
    cropPadding: cropPaddingFor(imageSize),
    meanRgb: MEAN_RGB,
    stddevRgb: STDDEV_RGB,
    resize: 'bicubic',
  };
  checkSettings(settings);
  return settings;
}

/** Throws on settings that cannot produce an image (they come from flags and saved model metadata). */
export function checkSettings(s: PreprocessingSettings): void {
  if (!Number.isInteger(s.imageSize) || s.imageSize < 1) {
    throw new RangeError(`image size must be a positive integer, got ${s.imageSize}`);
  }
  if (!Number.isFinite(s.cropPadding) || s.cropPadding < 0) {
    throw new RangeError(`crop padding must be a number >= 0, got ${s.cropPadding}`);
  }
  if (s.meanRgb.length !== 3 || s.stddevRgb.length !== 3 || s.stddevRgb.some((v) => !(v > 0))) {
    throw new RangeError('meanRgb and stddevRgb must hold 3 numbers each, stddevRgb all > 0');
  }
  if (s.minCropArea !== undefined && !(s.minCropArea > 0 && s.minCropArea <= 1)) {
    throw new RangeError(`min crop area must be a fraction in (0, 1], got ${s.minCropArea}`);
  }
  if (s.channelOrder !== undefined && s.channelOrder !== 'rgb' && s.channelOrder !== 'bgr') {
    throw new RangeError(`channel order must be "rgb" or "bgr", got "${String(s.channelOrder)}"`);
  }
  if (s.resize !== 'bicubic' && s.resize !== 'bilinear') {
    throw new RangeError(`resize must be "bicubic" or "bilinear", got "${String(s.resize)}"`);
  }
}

/**
 * (x - mean) / stddev per channel of interleaved RGB pixels, as resnet_main.py's model_fn does,
 * written into `out` (same length as `pixels`), which is returned. Emulates TensorFlow's float32
 * arithmetic (float32 constants, a rounded difference, a true division rather than a reciprocal
 * multiply) so the values are bit for bit what the TensorFlow model_fn computes.
 */
export function normalizeInto(pixels: Uint8Array, out: Float32Array, settings: PreprocessingSettings): Float32Array {
  if (pixels.length % 3 !== 0) throw new RangeError(`expected interleaved RGB pixels, got ${pixels.length} values (not a multiple of 3)`);
  if (out.length !== pixels.length) throw new RangeError(`output holds ${out.length} values, input ${pixels.length}`);
  const [m0, m1, m2] = settings.meanRgb.map(Math.fround) as [number, number, number];
  const [s0, s1, s2] = settings.stddevRgb.map(Math.fround) as [number, number, number];
  // Output channel c reads input channel c, or 2 - c for BGR.
  const [c0, c2] = settings.channelOrder === 'bgr' ? [2, 0] : [0, 2];
  // A float32 quotient of float32 operands computed in double and rounded once is exact, and the
  // store into the Float32Array is that rounding.
  for (let i = 0; i < pixels.length; i += 3) {
    out[i] = Math.fround(pixels[i + c0]! - m0) / s0;
    out[i + 1] = Math.fround(pixels[i + 1]! - m1) / s1;
    out[i + 2] = Math.fround(pixels[i + c2]! - m2) / s2;
  }
  return out;
}
