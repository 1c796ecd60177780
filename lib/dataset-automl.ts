/**
 * Vertex AI AutoML's image import CSV, `[ML_USE,]GCS_FILE_PATH,LABEL` per line, where ML_USE is
 * TRAINING, VALIDATION, TEST or UNASSIGNED (https://cloud.google.com/vertex-ai/docs/image-data/classification/prepare-data).
 * Many people who classified images on Google Cloud hold such a file; it is read with the same row
 * checks as the codelab's CSVs, and its UNASSIGNED rows (all rows, without the column) are split by
 * our seeded stratified split, 80/10/10.
 */
import { UserError } from './errors';
import { readCsvRecords, LabeledRowChecker, where, type LabeledImage } from './dataset-csv';
import { splitThreeWay, type ThreeWaySplit } from './dataset-split';

export const ML_USES = ['TRAINING', 'VALIDATION', 'TEST', 'UNASSIGNED'] as const;
export type MlUse = (typeof ML_USES)[number];

export interface AutoMlCsv extends ThreeWaySplit {
  /** Whether the file has the ML_USE column. */
  hasMlUse: boolean;
  /** Rows per ML_USE as written (before UNASSIGNED is split). */
  counts: Record<MlUse, number>;
  warnings: string[];
}

/** A header line some exports add: `ml_use,gcs_file_path,label` (any case), or without ml_use. */
function isAutoMlHeader(fields: string[]): boolean {
  const f = fields.map((x) => x.trim().toLowerCase());
  const tail = f.slice(-2);
  const pathNames = ['gcs_file_path', 'filename', 'path', 'image'];
  return tail.length === 2 && pathNames.includes(tail[0]!) && tail[1] === 'label' && (f.length === 2 || (f.length === 3 && f[0] === 'ml_use'));
}

/** Whether a CSV's first row has three fields (the ML_USE column), without checking the rest. */
export async function hasMlUseColumn(csvPath: string): Promise<boolean> {
  const records = await readCsvRecords(csvPath, isAutoMlHeader);
  return records[0]!.fields.length === 3;
}

/**
 * Read an AutoML CSV and place every row: TRAINING, VALIDATION and TEST where they say, UNASSIGNED
 * (and every row of a file without the column) by splitThreeWay with `heldOutFraction` (default 0.1)
 * and `seed`. Errors name the line: a wrong ML_USE, or rows with and without the column mixed.
 */
export async function readAutoMlCsv(csvPath: string, opts: { heldOutFraction?: number; seed?: number } = {}): Promise<AutoMlCsv> {
  const records = await readCsvRecords(csvPath, isAutoMlHeader);
  const first = records[0]!;
  if (first.fields.length !== 2 && first.fields.length !== 3) {
    throw new UserError(
      `${where(csvPath, first.line)}: expected ML_USE,GCS_FILE_PATH,LABEL or GCS_FILE_PATH,LABEL, got ${first.fields.length} fields` +
        (first.fields.length > 3 ? ' (several labels on one line, AutoML\'s multi-label form, are not supported: one label per image)' : ''),
    );
  }
  const hasMlUse = first.fields.length === 3;
  const checker = new LabeledRowChecker(csvPath);
  const placed: Record<MlUse, LabeledImage[]> = { TRAINING: [], VALIDATION: [], TEST: [], UNASSIGNED: [] };
  for (const { fields, line } of records) {
    const at = where(csvPath, line);
    if (fields.length !== first.fields.length) {
      const form = (n: number): string => (n === 3 ? '3 fields (ML_USE,GCS_FILE_PATH,LABEL)' : n === 2 ? '2 fields (GCS_FILE_PATH,LABEL)' : `${n} fields`);
      throw new UserError(
        `${at}: ${form(fields.length)}, but line ${first.line} has ${form(first.fields.length)}; ` +
          'give every line the ML_USE column (TRAINING, VALIDATION, TEST or UNASSIGNED) or none',
      );
    }
    let use: MlUse = 'UNASSIGNED';
    if (hasMlUse) {
      const raw = fields[0]!.trim().toUpperCase();
      if (!(ML_USES as readonly string[]).includes(raw)) {
        throw new UserError(`${at}: ML_USE "${fields[0]}" is not one of ${ML_USES.join(', ')}; fix the first field of that line`);
      }
      use = raw as MlUse;
    }
    const [p, label] = hasMlUse ? [fields[1]!, fields[2]!] : [fields[0]!, fields[1]!];
    const row = checker.add(p, label, line, use);
    if (row) placed[use].push(row);
  }
  const counts = Object.fromEntries(ML_USES.map((u) => [u, placed[u].length])) as Record<MlUse, number>;
  const rest = splitThreeWay(placed.UNASSIGNED, { fraction: opts.heldOutFraction ?? 0.1, seed: opts.seed });
  return {
    hasMlUse,
    counts,
    train: [...placed.TRAINING, ...rest.train],
    validation: [...placed.VALIDATION, ...rest.validation],
    test: [...placed.TEST, ...rest.test],
    warnings: checker.warnings.done(),
  };
}
