/**
 * One CSV row → one tf.train.Example, with the keys of tensorflow/tpu's jpeg_to_tf_record.py.
 *
 * Like that script we keep the original JPEG bytes (so nothing is lost to a second lossy encode) and
 * decode them once to check them. Unlike it, we do not crash on the odd file a real data set holds:
 * grayscale, CMYK, PNG or WebP content is re-encoded as an RGB JPEG (TensorFlow's training input
 * decodes `image/encoded` as a 3-channel JPEG), and unreadable files are reported, not fatal.
 */
import sharp from 'sharp';
import * as path from 'node:path';
import { encodeExample } from '../example';
import { readJpegHeader } from './jpeg-header';
import { errorMessage } from '../errors';

/** Why an image was re-encoded rather than stored as given. */
export type ReencodeReason = 'grayscale' | 'cmyk' | 'alpha' | 'png' | 'webp' | 'other-format' | 'resized';

export interface ImageRecordInput {
  bytes: Uint8Array;
  /** The path from the CSV; only its base name is stored, as jpeg_to_tf_record.py does. */
  filename: string;
  label: string;
  /** 0-based index into labels.txt; stored 1-based. */
  labelIndex: number;
  /** Cap on the longest side; 0 or undefined keeps the original size (the tutorial's behaviour). */
  resize?: number;
  /** JPEG quality for re-encoded images. */
  quality?: number;
}

export type ImageRecordResult =
  | { ok: true; example: Uint8Array; width: number; height: number; reencoded?: ReencodeReason }
  | { ok: false; reason: string };

const JPEG_QUALITY = 95;

// 'truncated' rather than sharp's default 'warning': real photo collections are full of JPEGs with
// harmless libjpeg warnings ("extraneous bytes before marker") that TensorFlow decodes without
// complaint; a file that ends early is the case worth skipping.
const DECODE_OPTS: sharp.SharpOptions = { failOn: 'truncated', limitInputPixels: 1 << 28 };

function reencodeReason(meta: sharp.Metadata): ReencodeReason | undefined {
  if (meta.format === 'png') return 'png';
  if (meta.format === 'webp') return 'webp';
  if (meta.format !== 'jpeg') return 'other-format';
  if (meta.space === 'cmyk' || meta.channels === 4) return 'cmyk';
  if (meta.space === 'b-w' || meta.channels === 1 || meta.channels === 2) return 'grayscale';
  return undefined;
}

/** Check, and if needed convert, one image, and build its Example. Never throws for bad image data. */
export async function imageToExample(input: ImageRecordInput): Promise<ImageRecordResult> {
  if (input.bytes.length === 0) return { ok: false, reason: 'empty file (0 bytes)' };
  const cap = input.resize ?? 0;
  const header = readJpegHeader(input.bytes);
  if (header && header.components === 3 && !(cap > 0 && Math.max(header.width, header.height) > cap)) {
    // The common case, kept as it is: one decode to check the data is whole.
    try {
      const { info } = await sharp(input.bytes, DECODE_OPTS).raw().toBuffer({ resolveWithObject: true });
      if (info.channels === 3) return { ok: true, example: buildExample(input, input.bytes, info.width, info.height), width: info.width, height: info.height };
    } catch (err) {
      return { ok: false, reason: `truncated or corrupt image data: ${errorMessage(err)}` };
    }
  }
  let meta: sharp.Metadata;
  try {
    meta = await sharp(input.bytes, DECODE_OPTS).metadata();
  } catch (err) {
    return { ok: false, reason: `not a readable image: ${errorMessage(err)}` };
  }
  let reason = reencodeReason(meta);
  const tooBig = cap > 0 && Math.max(meta.width ?? 0, meta.height ?? 0) > cap;
  if (tooBig) reason = reason ?? 'resized';
  let encoded: Uint8Array = input.bytes;
  let width: number;
  let height: number;
  try {
    if (reason) {
      let img = sharp(input.bytes, DECODE_OPTS).removeAlpha().toColourspace('srgb');
      if (tooBig) img = img.resize(cap, cap, { fit: 'inside' });
      const out = await img.jpeg({ quality: input.quality ?? JPEG_QUALITY }).toBuffer({ resolveWithObject: true });
      encoded = out.data;
      width = out.info.width;
      height = out.info.height;
      if (out.info.channels !== 3) return { ok: false, reason: `could not convert to RGB (${out.info.channels} channels)` };
    } else {
      // A full decode is the only way to know the entropy-coded data is whole.
      const { info } = await sharp(input.bytes, DECODE_OPTS).raw().toBuffer({ resolveWithObject: true });
      width = info.width;
      height = info.height;
    }
  } catch (err) {
    return { ok: false, reason: `truncated or corrupt image data: ${errorMessage(err)}` };
  }
  const example = buildExample(input, encoded, width, height);
  return reason ? { ok: true, example, width, height, reencoded: reason } : { ok: true, example, width, height };
}

function buildExample(input: ImageRecordInput, encoded: Uint8Array, width: number, height: number): Uint8Array {
  return encodeExample({
    'image/height': { int64: [height] },
    'image/width': { int64: [width] },
    'image/colorspace': { bytes: ['RGB'] },
    'image/channels': { int64: [3] },
    'image/class/label': { int64: [input.labelIndex + 1] },
    'image/class/synset': { bytes: [input.label] },
    'image/format': { bytes: ['JPEG'] },
    'image/filename': { bytes: [baseNameOf(input.filename)] },
    'image/encoded': { bytes: [encoded] },
  });
}

function baseNameOf(p: string): string {
  return p.startsWith('gs://') ? path.posix.basename(p) : path.basename(p);
}
