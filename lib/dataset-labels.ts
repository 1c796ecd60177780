/**
 * labels.txt: one class name per line; the line order gives each class its integer id (line 1 is
 * class 0), which is baked into the TFRecords and the trained model's output.
 */
import { UserError } from './errors';
import * as storage from './storage';
import { decodeUtf8, type LabeledImage } from './dataset-csv';

/**
 * Compare by Unicode code point, as Python's sorted() does on str. JavaScript's default sort
 * compares UTF-16 code units, which orders characters above U+FFFF before U+E000–U+FFFF; with
 * this, labels.txt made here and by the codelab's Python gives every class the same id.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; ) {
    const ca = a.codePointAt(i)!;
    const cb = b.codePointAt(i)!;
    if (ca !== cb) return ca - cb;
    i += ca > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/** The classes present in `rows`, unique and sorted as Python's sorted() would. */
export function deriveLabels(rows: LabeledImage[]): string[] {
  return [...new Set(rows.map((r) => r.label))].sort(compareCodePoints);
}

/** Check labels that are about to be written; `where(i)` names label i's origin for messages. */
function checkLabels(labels: string[], where: (i: number) => string): void {
  const first = new Map<string, number>();
  labels.forEach((label, i) => {
    if (label === '') throw new UserError(`${where(i)}: empty label`);
    if (/[\r\n]/.test(label)) throw new UserError(`${where(i)}: label "${label}" contains a line break`);
    if (label.includes(',')) {
      throw new UserError(
        `${where(i)}: label "${label}" contains a comma; rename the class (the TensorFlow pipeline splits lines on commas)`,
      );
    }
    if (label.trim() !== label) {
      throw new UserError(`${where(i)}: label "${label}" has spaces around it; remove them`);
    }
    const j = first.get(label);
    if (j !== undefined) {
      throw new UserError(`${where(i)}: label "${label}" is listed twice (also ${where(j)}); remove one`);
    }
    first.set(label, i);
  });
}

/** labels.txt contents: one label per line, with a trailing newline. */
export function formatLabels(labels: string[]): string {
  checkLabels(labels, (i) => `label ${i + 1}`);
  return labels.map((l) => `${l}\n`).join('');
}

/**
 * Read labels.txt. Trailing blank lines are allowed (editors add them); a blank line between labels
 * is an error, because skipping it would silently shift the class id of every label after it.
 * Spaces around a label are an error too: labels.txt is short and hand-edited, so asking for the
 * fix is cheap, and it keeps the file and the model's labels byte-identical.
 */
export async function readLabels(labelsPath: string): Promise<string[]> {
  const text = decodeUtf8(await storage.readFile(labelsPath), labelsPath).replace(/^\uFEFF/, '');
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1]!.trim() === '') lines.pop();
  if (lines.length === 0) {
    throw new UserError(`${labelsPath} is empty; list one class name per line`);
  }
  lines.forEach((l, i) => {
    if (l.trim() === '') {
      throw new UserError(
        `${labelsPath}:${i + 1}: blank line between labels; remove it (line order gives each class its id)`,
      );
    }
  });
  checkLabels(lines, (i) => `${labelsPath}:${i + 1}`);
  return lines;
}

export async function writeLabels(
  labelsPath: string,
  labels: string[],
  opts: { overwrite?: boolean } = {},
): Promise<void> {
  if (labels.length === 0) throw new UserError(`no labels to write to ${labelsPath}`);
  await storage.writeFile(labelsPath, formatLabels(labels), { overwrite: opts.overwrite });
}
