/**
 * A contact sheet of images with their labels, as one PNG: how the notebooks show "a few sample
 * images" (of the data set, or decoded back out of TFRecords) without an HTML gallery that would not
 * survive nbconvert or GitHub's renderer.
 */
import sharp from 'sharp';
import * as storage from './storage';
import { UserError, errorMessage } from './errors';

export interface ImageGridOptions {
  /** Images per row; default min(count, 8). */
  columns?: number;
  /** Side of each square cell in pixels; default 96. */
  cellSize?: number;
  /** Title drawn above the grid. */
  title?: string;
}

const PAD = 6;
const LABEL_HEIGHT = 18;
const TITLE_HEIGHT = 24;
const MAX_LABEL_CHARS = 18;
const BACKGROUND = { r: 255, g: 255, b: 255 };

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}

function shorten(label: string): string {
  return label.length > MAX_LABEL_CHARS ? `${label.slice(0, MAX_LABEL_CHARS - 1)}…` : label;
}

/** One image scaled into a cell: small images (28-px Fashion-MNIST) are enlarged with crisp pixels. */
async function cell(image: string | Uint8Array, index: number, size: number): Promise<Buffer> {
  const name = typeof image === 'string' ? image : `image ${index}`;
  const bytes = typeof image === 'string' ? await storage.readFile(image) : image;
  try {
    const img = sharp(bytes, { failOn: 'error' });
    const meta = await img.metadata();
    const longest = Math.max(meta.width ?? 0, meta.height ?? 0);
    return await img
      .rotate() // honour EXIF orientation, as a viewer would
      .resize(size, size, { fit: 'contain', background: BACKGROUND, kernel: longest * 2 <= size ? 'nearest' : 'lanczos3' })
      .flatten({ background: BACKGROUND })
      .removeAlpha()
      .png()
      .toBuffer();
  } catch (err) {
    throw new UserError(`${name}: not an image that can be shown (${errorMessage(err)}); check the file or leave it out`);
  }
}

/**
 * Tile `images` (paths, local or gs://, or encoded bytes) into rows, each with its label underneath,
 * and return the sheet as a PNG.
 */
export async function imageGrid(images: readonly (string | Uint8Array)[], labels?: readonly string[], opts: ImageGridOptions = {}): Promise<Buffer> {
  if (images.length === 0) throw new UserError('imageGrid: no images given; pass at least one image path');
  if (labels && labels.length !== images.length) {
    throw new UserError(`imageGrid: ${images.length} images but ${labels.length} labels; pass one label per image (or none)`);
  }
  const size = opts.cellSize ?? 96;
  if (!Number.isInteger(size) || size < 8 || size > 1024) throw new UserError(`imageGrid: cellSize must be a whole number of pixels from 8 to 1024, got ${size}`);
  const columns = opts.columns ?? Math.min(images.length, 8);
  if (!Number.isInteger(columns) || columns < 1) throw new UserError(`imageGrid: columns must be a whole number ≥ 1, got ${columns}`);

  const cells = await Promise.all(images.map((img, i) => cell(img, i, size)));
  const rows = Math.ceil(images.length / columns);
  const top = opts.title ? TITLE_HEIGHT : 0;
  const labelHeight = labels ? LABEL_HEIGHT : 0;
  const width = PAD + columns * (size + PAD);
  const height = top + PAD + rows * (size + labelHeight + PAD);
  const at = (i: number): { left: number; top: number } => ({
    left: PAD + (i % columns) * (size + PAD),
    top: top + PAD + Math.floor(i / columns) * (size + labelHeight + PAD),
  });

  // Text is drawn by librsvg through sharp, with the system's sans-serif font (Debian: fonts-dejavu-core).
  const texts: string[] = [];
  if (opts.title) {
    texts.push(`<text x="${PAD}" y="${TITLE_HEIGHT - 6}" font-family="sans-serif" font-size="14" font-weight="bold" fill="#222">${escapeXml(opts.title)}</text>`);
  }
  labels?.forEach((label, i) => {
    const p = at(i);
    texts.push(
      `<text x="${p.left + size / 2}" y="${p.top + size + LABEL_HEIGHT - 5}" text-anchor="middle" font-family="sans-serif" font-size="11" fill="#333">${escapeXml(shorten(label))}</text>`,
    );
  });
  const layers: sharp.OverlayOptions[] = cells.map((input, i) => ({ input, ...at(i) }));
  if (texts.length > 0) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${texts.join('')}</svg>`;
    layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  }
  return sharp({ create: { width, height, channels: 3, background: BACKGROUND } }).composite(layers).png().toBuffer();
}
