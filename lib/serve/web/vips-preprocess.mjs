// The server's image preprocessing (lib/train/augment.ts: imageInfo and cropResize, which call
// sharp) as the same libvips operations on wasm-vips, so the page can prepare an image for the model
// in the browser and get the server's pixels bit for bit. wasm-vips 0.0.19 is built from libvips
// 8.18.7 and mozjpeg 0826579, the versions inside sharp 0.35's prebuilt libvips; the test
// (test/page-preprocess.test.ts) checks the bytes against sharp, so a bump of either that changes
// the arithmetic fails there first.
//
// Each step below names the step of sharp's pipeline (src/pipeline.cc) it stands for, for the
// options augment.ts passes: extract before resize (which turns off JPEG shrink-on-load), fit
// 'fill', removeAlpha, toColourspace('srgb'), raw uchar output.
//
// Plain JavaScript (an ES module) because the browser loads it as it is, and Node's test imports
// the same file.

/** sharp's decode options in augment.ts: failOn 'truncated', limitInputPixels 2^28. */
const FAIL_ON = 'truncated';
const MAX_PIXELS = 1 << 28;

/** Frees wasm-vips images (their pixels live in the WebAssembly heap, not with the JS objects). */
function freeAll(images) {
  for (const im of images) {
    try {
      im.delete();
    } catch {
      /* already freed */
    }
  }
}

/**
 * libvips's errors reach JavaScript as a WebAssembly.Exception whose `message` is
 * ['vips::Error', text]; an Error with that text is what callers can show.
 */
function asError(err) {
  const m = err?.message;
  if (Array.isArray(m)) return new Error(String(m[m.length - 1]).trim().replace(/\n+/g, ': '));
  return err instanceof Error ? err : new Error(String(err));
}

function load(vips, bytes) {
  let image;
  try {
    image = vips.Image.newFromBuffer(bytes, '', { fail_on: FAIL_ON });
  } catch (err) {
    throw asError(err);
  }
  if (image.width * image.pageHeight > MAX_PIXELS) {
    image.delete();
    throw new Error('Input image exceeds pixel limit');
  }
  return image;
}

/** augment.ts imageInfo(): size as stored (first page of a multi-page image) and whether it has alpha. */
export function imageInfo(vips, bytes) {
  const image = load(vips, bytes);
  try {
    const width = image.width;
    const height = image.pageHeight || image.height;
    if (width < 1 || height < 1) throw new Error('image has no size');
    return { width, height, hasAlpha: image.hasAlpha() };
  } finally {
    image.delete();
  }
}

const is16Bit = (interpretation) => interpretation === 'rgb16' || interpretation === 'grey16';

/**
 * One sharp pipeline run: input → [extract] → ICC/CMYK to sRGB → [resize] → removeAlpha →
 * colourspace sRGB → raw, as uchar. `raw` is sharp's raw-pixel input ({ width, height, channels }).
 */
function pipeline(vips, input, { raw, extract, resize, removeAlpha }) {
  const made = [];
  const keep = (im) => (made.push(im), im);
  try {
    let image;
    if (raw) {
      // common.cc OpenInput for raw input: new_from_memory, then Type from the channel count.
      const mem = keep(vips.Image.newFromMemory(input, raw.width, raw.height, raw.channels, 'uchar'));
      image = keep(mem.copy({ interpretation: raw.channels < 3 ? 'b-w' : 'srgb' }));
    } else {
      image = keep(load(vips, input));
    }
    if (extract) image = keep(image.extractArea(extract.left, extract.top, extract.width, extract.height));
    const width = image.width;
    const height = image.height;
    // pipeline.cc: an embedded profile is applied (to sRGB, perceptual); CMYK without one gets the
    // built-in CMYK profile.
    const interpretation = image.interpretation;
    if (!raw && image.getTypeof('icc-profile-data') !== 0 && interpretation !== 'labs' && interpretation !== 'grey16') {
      try {
        image = keep(image.iccTransform('srgb', { embedded: true, depth: is16Bit(interpretation) ? 16 : 8, intent: 'perceptual' }));
      } catch {
        // sharp warns "Invalid embedded profile" and goes on without it.
      }
    } else if (!raw && interpretation === 'cmyk') {
      image = keep(image.iccTransform('srgb', { input_profile: 'cmyk', intent: 'perceptual' }));
    }
    if (resize) {
      const hshrink = width / resize.width;
      const vshrink = height / resize.height;
      if (hshrink !== 1 || vshrink !== 1) {
        // Alpha is premultiplied around the resize, as sharp does (never reached from augment.ts,
        // which removes alpha in a first pass).
        const premultiply = image.hasAlpha();
        const format = image.format;
        if (premultiply) image = keep(keep(image.premultiply()).cast(format));
        image = keep(image.resize(1 / hshrink, { vscale: 1 / vshrink, kernel: resize.kernel }));
        if (premultiply) image = keep(keep(image.unpremultiply()).cast(format));
      }
    }
    if (removeAlpha) {
      while (image.bands > 1 && image.hasAlpha()) image = keep(image.extractBand(0, { n: image.bands - 1 }));
    }
    if (is16Bit(image.interpretation)) image = keep(image.cast('ushort'));
    if (image.interpretation !== 'srgb') image = keep(image.colourspace('srgb', { source_space: image.interpretation }));
    // pipeline.cc's raw output: the first band of a b-w image, cast to the requested depth.
    if (image.interpretation === 'b-w') image = keep(image.extractBand(0));
    if (image.format !== 'uchar') image = keep(image.cast('uchar'));
    const data = image.writeToMemory();
    return { data: new Uint8Array(data), width: image.width, height: image.height, channels: image.bands };
  } catch (err) {
    throw asError(err);
  } finally {
    freeAll(made);
  }
}

/**
 * augment.ts cropResize() without the flip: decode, crop to `window`, resize to imageSize ×
 * imageSize (aspect ratio not kept) with the settings' kernel, as interleaved 8-bit RGB.
 */
export function cropResize(vips, bytes, window, settings, hasAlpha) {
  const size = settings.imageSize;
  const kernel = settings.resize === 'bicubic' ? 'cubic' : 'linear';
  let input = bytes;
  let raw;
  if (hasAlpha) {
    // augment.ts's two passes for an image with alpha: alpha dropped before resizing.
    const first = pipeline(vips, bytes, { extract: window, removeAlpha: true });
    input = first.data;
    raw = { width: first.width, height: first.height, channels: first.channels };
  }
  const out = pipeline(vips, input, { raw, extract: hasAlpha ? undefined : window, resize: { width: size, height: size, kernel }, removeAlpha: true });
  if (out.width !== size || out.height !== size || out.channels !== 3 || out.data.length !== size * size * 3) {
    throw new Error(`decoding gave ${out.width}x${out.height}x${out.channels}, expected ${size}x${size}x3`);
  }
  return out.data;
}

/** augment.ts evalTransform(): center crop (the server's own centerCropWindow, passed in) and resize. */
export function evalTransform(vips, bytes, settings, centerCropWindow) {
  const { width, height, hasAlpha } = imageInfo(vips, bytes);
  return cropResize(vips, bytes, centerCropWindow(width, height, settings), settings, hasAlpha);
}
