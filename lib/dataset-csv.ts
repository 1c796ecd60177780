/**
 * The codelab's data set CSVs (train_set.csv, eval_set.csv, all_data.csv): one image per line,
 * `path,label`, no quoting. Reading is strict and every complaint names the file and line, because
 * a bad row found later (while writing TFRecords or training) is far harder to trace back.
 */
import * as path from 'node:path';
import { parse } from 'csv-parse/sync';
import type { Info } from 'csv-parse/sync';
import { UserError } from './errors';
import * as storage from './storage';

/** One labelled image: its resolved path, its class, and where the row came from. */
export interface LabeledImage {
  /** Local path or gs:// URL; relative CSV paths are resolved against the CSV's folder. */
  path: string;
  label: string;
  /** The CSV (or, for csvFromFolders, the images folder) the row came from. */
  source: string;
  /** 1-based line in `source`; 0 when the row did not come from a file line. */
  line: number;
}

export interface ReadCsvResult {
  rows: LabeledImage[];
  warnings: string[];
}

/**
 * First-line spellings taken as a header and skipped (compared case-insensitively, after trimming
 * each field). The codelab's files have no header, but spreadsheets and pandas add one.
 */
const HEADER_PATH_NAMES = new Set(['filename', 'path', 'image']);

/** Past this many, similar warnings are folded into one "... and N more" line. */
const MAX_SIMILAR_WARNINGS = 10;

/** Position of a row for messages: `file:line`, which editors and terminals can open. */
export function where(source: string, line: number): string {
  return line > 0 ? `${source}:${line}` : source;
}

/** The 1-based line of character offset `index` in `text`. */
function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

/**
 * Decode UTF-8 strictly: a CSV saved as Latin-1 would otherwise turn accented file names into
 * U+FFFD and fail later as "file not found" for a name that looks right.
 */
export function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const loose = new TextDecoder('utf-8').decode(bytes);
    const line = lineAt(loose, loose.indexOf('\uFFFD'));
    throw new UserError(`${file}:${line}: not valid UTF-8; save the file with UTF-8 encoding`);
  }
}

interface ParsedRecord {
  fields: string[];
  line: number;
}

/** Parse CSV text into records with the line each starts on; blank lines are dropped. */
function parseRecords(text: string, file: string): ParsedRecord[] {
  let parsed: { record: string[]; info: Info }[];
  try {
    parsed = parse(text, {
      bom: true,
      info: true,
      // Both endings, explicitly: auto-detection locks onto the first one seen, so a file mixing
      // CRLF and LF lines (common after hand edits) would otherwise merge lines.
      record_delimiter: ['\r\n', '\n'],
      relax_column_count: true, // we report the field count ourselves, with the line
      skip_empty_lines: true,
    }) as unknown as { record: string[]; info: Info }[];
  } catch (err) {
    const e = err as { lines?: number; message?: string };
    const msg = (e.message ?? String(err)).replace(/^[^:]*: /, '');
    throw new UserError(`${where(file, e.lines ?? 0)}: cannot parse CSV (${msg}); check the quotes on that line`);
  }
  const out: ParsedRecord[] = [];
  for (const { record, info } of parsed) {
    if (record.length === 1 && record[0]!.trim() === '') continue; // a line of spaces
    // info.lines is the line the record ends on; a quoted field with line breaks starts earlier.
    const breaks = record.reduce((n, f) => n + (f.match(/\n/g)?.length ?? 0), 0);
    out.push({ fields: record, line: info.lines - breaks });
  }
  return out;
}

function isHeader(fields: string[]): boolean {
  return (
    fields.length === 2 &&
    HEADER_PATH_NAMES.has(fields[0]!.trim().toLowerCase()) &&
    fields[1]!.trim().toLowerCase() === 'label'
  );
}

/** Collects warnings, folding repeats of one kind past a limit so a bad file can't flood the log. */
export class WarningList {
  readonly items: string[] = [];
  private readonly counts = new Map<string, number>();

  add(kind: string, message: string): void {
    const n = (this.counts.get(kind) ?? 0) + 1;
    this.counts.set(kind, n);
    if (n <= MAX_SIMILAR_WARNINGS) this.items.push(message);
  }

  /** The warnings, with one summary line per kind that went over the limit. */
  done(): string[] {
    const out = [...this.items];
    for (const [kind, n] of this.counts) {
      if (n > MAX_SIMILAR_WARNINGS) out.push(`... and ${n - MAX_SIMILAR_WARNINGS} more ${kind}`);
    }
    return out;
  }
}

/** A CSV's records after decoding and parsing, the optional header line dropped; no records is an error. */
export async function readCsvRecords(csvPath: string, isHeaderLine: (fields: string[]) => boolean = isHeader): Promise<ParsedRecord[]> {
  const text = decodeUtf8(await storage.readFile(csvPath), csvPath);
  const records = parseRecords(text, csvPath);
  if (records.length > 0 && isHeaderLine(records[0]!.fields)) records.shift();
  if (records.length === 0) {
    throw new UserError(`${csvPath} has no rows; expected one image per line, like "daisy/123.jpg,daisy"`);
  }
  return records;
}

export type { ParsedRecord as CsvRecord };

/**
 * The checks every `path,label` pair of a CSV gets, with duplicates detected across the file:
 * Spaces around a label are trimmed with a warning rather than rejected: they are almost always an
 * editing accident (`a.jpg, daisy`), "daisy " is never meant as a class of its own, and the trim is
 * unambiguous. Paths are left as written, since a file name may really contain spaces.
 *
 * Exact duplicate rows are dropped with a warning (kept once, so the image isn't weighted double);
 * one path with two different labels is an error, because only the user knows which is right. So is
 * one path in two `group`s (an AutoML CSV's TRAINING and TEST): the test split would not be held out.
 */
export class LabeledRowChecker {
  readonly warnings = new WarningList();
  private readonly seen = new Map<string, LabeledImage & { group?: string }>();
  private readonly base: string;

  constructor(private readonly csvPath: string) {
    this.base = storage.dirName(csvPath);
  }

  /** The checked row, or undefined for a duplicate (warned about). */
  add(rawPath: string, rawLabel: string, line: number, group?: string): LabeledImage | undefined {
    const at = where(this.csvPath, line);
    if (/[\r\n]/.test(rawPath) || /[\r\n]/.test(rawLabel)) {
      throw new UserError(`${at}: a quoted field spans several lines; put each image on one line`);
    }
    if (rawPath.trim() === '') throw new UserError(`${at}: empty path; give the image's path before the comma`);
    if (rawPath.includes(',')) {
      throw new UserError(
        `${at}: path "${rawPath}" contains a comma; rename the file (the TensorFlow pipeline splits lines on commas)`,
      );
    }
    const label = rawLabel.trim();
    if (label === '') throw new UserError(`${at}: empty label; give the image's class after the comma`);
    if (label.includes(',')) {
      throw new UserError(
        `${at}: label "${label}" contains a comma; rename the class (the TensorFlow pipeline splits lines on commas)`,
      );
    }
    if (label !== rawLabel) this.warnings.add('labels with spaces trimmed', `${at}: label "${rawLabel}" has spaces around it; using "${label}"`);
    const row: LabeledImage = { path: storage.resolvePath(this.base, rawPath), label, source: this.csvPath, line };
    const prev = this.seen.get(row.path);
    if (prev) {
      if (prev.label !== label) {
        throw new UserError(
          `${at}: ${rawPath} is labelled "${label}", but line ${prev.line} labels it "${prev.label}"; keep one of the two lines`,
        );
      }
      if (prev.group !== group) {
        throw new UserError(`${at}: ${rawPath} is in ${group}, but line ${prev.line} puts it in ${prev.group}; an image belongs to one split: keep one of the two lines`);
      }
      this.warnings.add('duplicate rows', `${at}: duplicate of line ${prev.line} (${rawPath},${label}); using it once`);
      return undefined;
    }
    this.seen.set(row.path, { ...row, group });
    return row;
  }
}

/**
 * Read a `path,label` CSV. An optional header line `filename,label` (or `path,label`, `image,label`,
 * any case) is skipped. Relative paths are resolved against the CSV's folder. Rows are checked by
 * LabeledRowChecker.
 */
export async function readLabeledCsv(csvPath: string): Promise<ReadCsvResult> {
  const records = await readCsvRecords(csvPath);
  const checker = new LabeledRowChecker(csvPath);
  const rows: LabeledImage[] = [];
  for (const { fields, line } of records) {
    if (fields.length !== 2) {
      const hint =
        fields.length > 2
          ? '; a path or label containing a comma must be renamed (the TensorFlow pipeline splits lines on commas)'
          : '; each line must be "path,label"';
      throw new UserError(`${where(csvPath, line)}: expected 2 fields (path,label), got ${fields.length}${hint}`);
    }
    const row = checker.add(fields[0]!, fields[1]!, line);
    if (row) rows.push(row);
  }
  return { rows, warnings: checker.warnings.done() };
}

/** The path as written into a CSV: relative to `relativeTo` when both are local and it lies inside. */
function csvPathFor(p: string, relativeTo: string | undefined): string {
  if (relativeTo === undefined || storage.isGcsPath(relativeTo) || storage.isGcsPath(p)) return p;
  const abs = path.resolve(p);
  const rel = path.relative(path.resolve(relativeTo), abs);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return p;
  // Forward slashes, so a data set committed on Windows still resolves elsewhere.
  return rel.split(path.sep).join('/');
}

export interface FormatCsvOptions {
  /** Write local paths inside this local folder relative to it, so the data set stays relocatable. */
  relativeTo?: string;
}

/**
 * CSV text in the codelab's format: no header, `path,label` per line, nothing quoted. Quoting is
 * refused rather than applied because the TensorFlow pipeline splits lines on plain commas.
 */
export function formatCsv(rows: LabeledImage[], opts: FormatCsvOptions = {}): string {
  const lines: string[] = [];
  for (const r of rows) {
    const p = csvPathFor(r.path, opts.relativeTo);
    for (const [what, value] of [['path', r.path], ['label', r.label]] as const) {
      if (/[,\r\n]/.test(value)) {
        throw new UserError(
          `${where(r.source, r.line)}: ${what} "${value}" contains a comma or line break; rename it (the CSV is split on commas)`,
        );
      }
    }
    lines.push(`${p},${r.label}\n`);
  }
  return lines.join('');
}

export interface WriteCsvOptions extends FormatCsvOptions {
  overwrite?: boolean;
}

/** Write rows as a CSV; local paths under the CSV's own folder are written relative to it by default. */
export async function writeCsv(csvPath: string, rows: LabeledImage[], opts: WriteCsvOptions = {}): Promise<void> {
  const relativeTo = opts.relativeTo ?? (storage.isGcsPath(csvPath) ? undefined : storage.dirName(csvPath));
  await storage.writeFile(csvPath, formatCsv(rows, { relativeTo }), { overwrite: opts.overwrite });
}
