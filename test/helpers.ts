/** Shared test fixtures: temp folders and real images made with sharp. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';

export function tempDir(prefix = 'imgclass-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** A textured RGB image (noise over a colour), so JPEGs have realistic entropy-coded data. */
export async function photo(width: number, height: number, seed = 0): Promise<sharp.Sharp> {
  const raw = await sharp({
    create: { width, height, channels: 3, background: '#000', noise: { type: 'gaussian', mean: 100 + (seed % 50), sigma: 40 } },
  })
    .blur(1.5)
    .raw()
    .toBuffer();
  return sharp(raw, { raw: { width, height, channels: 3 } });
}

export async function jpeg(width: number, height: number, seed = 0): Promise<Buffer> {
  return (await photo(width, height, seed)).jpeg({ quality: 90 }).toBuffer();
}

export const REPO_ROOT = path.resolve(__dirname, '../..');
export const CLI = path.join(REPO_ROOT, 'dist/lib/cli.js');
