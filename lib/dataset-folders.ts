/** Labelled images from the layout most people already have: one sub-folder per class. */
import * as path from 'node:path';
import { UserError } from './errors';
import * as storage from './storage';
import type { LabeledImage } from './dataset-csv';

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp'];

function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

/** The parts of `file` below folder `dir`, split on `/` (gs://) or the local separator. */
function partsBelow(dir: string, file: string): string[] {
  if (storage.isGcsPath(dir)) {
    const prefix = dir.endsWith('/') ? dir : `${dir}/`;
    return file.slice(prefix.length).split('/').filter((p) => p !== '');
  }
  return path.relative(dir, file).split(path.sep);
}

/**
 * One row per image in `dir/<class>/**`: label = the class folder's name; images are found at any
 * depth under it. Files directly in `dir` (a README, an old CSV) are not images of any class and
 * are ignored, as are hidden files and folders (.DS_Store, .ipynb_checkpoints). Rows come sorted by
 * path; `source` is `dir` and `line` is 0, as they come from no file line.
 */
export async function csvFromFolders(dir: string): Promise<LabeledImage[]> {
  if (!storage.isGcsPath(dir) && !(await storage.exists(dir))) {
    throw new UserError(`images folder not found: ${dir}`);
  }
  const files = await storage.list(dir);
  const rows: LabeledImage[] = [];
  const classFolders = new Set<string>();
  for (const file of files) {
    const parts = partsBelow(dir, file);
    if (parts.length < 2 || parts.some((p) => p.startsWith('.'))) continue;
    const label = parts[0]!;
    classFolders.add(label);
    if (!isImageName(file)) continue;
    if (label.includes(',')) {
      throw new UserError(
        `class folder "${storage.joinPath(dir, label)}" has a comma in its name; rename it (the TensorFlow pipeline splits CSV lines on commas)`,
      );
    }
    if (/[,\r\n]/.test(file)) {
      throw new UserError(`image path "${file}" contains a comma or line break; rename it (CSV lines are split on commas)`);
    }
    // Absolute, like the paths readLabeledCsv returns, so rows compare equal however `dir` was spelt.
    rows.push({ path: storage.isGcsPath(file) ? file : path.resolve(file), label, source: dir, line: 0 });
  }
  if (classFolders.size === 0) {
    throw new UserError(
      `no class folders in ${dir}; expected one sub-folder per class, like ${storage.joinPath(dir, 'daisy', '123.jpg')}`,
    );
  }
  if (rows.length === 0) {
    throw new UserError(`no images (${IMAGE_EXTENSIONS.join(' ')}) in the class folders of ${dir}`);
  }
  return rows;
}
