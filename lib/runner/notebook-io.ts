/**
 * .ipynb (nbformat 4) in and out, local or gs://, written the way Jupyter writes it (sorted keys,
 * one-space indent, multi-line strings split into lines, trailing newline) so diffs stay small;
 * and parameter files for `-f`.
 */
import * as crypto from 'node:crypto';
import { UserError } from '../errors';
import { readText, writeFile } from '../storage';
import type { Parameters } from './translator';
import { parse as parseYaml } from 'yaml';

export type MimeBundle = Record<string, unknown>;

export interface StreamOutput {
  output_type: 'stream';
  name: 'stdout' | 'stderr';
  text: string;
}
export interface DisplayDataOutput {
  output_type: 'display_data';
  data: MimeBundle;
  metadata: Record<string, unknown>;
}
export interface ExecuteResultOutput {
  output_type: 'execute_result';
  execution_count: number | null;
  data: MimeBundle;
  metadata: Record<string, unknown>;
}
export interface ErrorOutput {
  output_type: 'error';
  ename: string;
  evalue: string;
  traceback: string[];
}
export type Output = StreamOutput | DisplayDataOutput | ExecuteResultOutput | ErrorOutput;

export interface CellPapermillMetadata {
  status: 'pending' | 'running' | 'completed' | 'failed';
  start_time: string | null;
  end_time: string | null;
  duration: number | null;
  exception: boolean | null;
}

export interface CellMetadata {
  tags?: string[];
  papermill?: CellPapermillMetadata;
  [key: string]: unknown;
}

interface BaseCell {
  id?: string;
  metadata: CellMetadata;
  /** Always one string in memory; split into lines only on disk. */
  source: string;
  [key: string]: unknown;
}
export interface CodeCell extends BaseCell {
  cell_type: 'code';
  execution_count: number | null;
  outputs: Output[];
}
export interface MarkdownCell extends BaseCell {
  cell_type: 'markdown';
}
export interface RawCell extends BaseCell {
  cell_type: 'raw';
}
export type Cell = CodeCell | MarkdownCell | RawCell;

export interface NotebookPapermillMetadata {
  default_parameters: Record<string, unknown>;
  parameters: Parameters;
  environment_variables: Record<string, string>;
  version: string;
  input_path?: string;
  output_path?: string;
  start_time?: string | null;
  end_time?: string | null;
  duration?: number | null;
  exception?: boolean | null;
}

export interface Notebook {
  nbformat: number;
  nbformat_minor: number;
  metadata: { papermill?: NotebookPapermillMetadata; [key: string]: unknown };
  cells: Cell[];
}

/** A random cell id as nbformat 4.5 makes them. */
export function newCellId(): string {
  return crypto.randomBytes(4).toString('hex');
}

const joinLines = (v: unknown): unknown => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? v.join('') : v);

const isJsonMime = (mime: string): boolean => mime === 'application/json' || (mime.startsWith('application/') && mime.endsWith('+json'));

function joinBundle(data: unknown): MimeBundle {
  const out: MimeBundle = {};
  for (const [k, v] of Object.entries((data ?? {}) as MimeBundle)) out[k] = isJsonMime(k) ? v : joinLines(v);
  return out;
}

/**
 * Parse notebook JSON. `where` names the file in errors. Older 4.x minors are upgraded to 4.5 (cell
 * ids), as papermill does, because the runner adds cells and 4.5 requires every cell to have an id.
 */
export function parseNotebook(text: string, where: string): Notebook {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new UserError(`${where} is not a notebook: invalid JSON (${(err as Error).message})`);
  }
  const nb = raw as Partial<Notebook> & { cells?: unknown };
  if (!nb || typeof nb !== 'object' || typeof nb.nbformat !== 'number' || !Array.isArray(nb.cells)) {
    throw new UserError(`${where} is not a notebook: expected a JSON object with "nbformat" and "cells"`);
  }
  if (nb.nbformat !== 4) {
    throw new UserError(`${where} is nbformat ${nb.nbformat}; only version 4 is supported (open and save it in Jupyter to upgrade it)`);
  }
  const ids = new Set<string>();
  const cells = (nb.cells as Record<string, unknown>[]).map((c, i): Cell => {
    if (!c || typeof c !== 'object' || !['code', 'markdown', 'raw'].includes(c.cell_type as string)) {
      throw new UserError(`${where}: cell ${i + 1} has no valid cell_type (code, markdown or raw)`);
    }
    const cell = { ...c, metadata: { ...((c.metadata as CellMetadata) ?? {}) }, source: String(joinLines(c.source ?? '')) } as Cell;
    delete cell.metadata.trusted;
    if (typeof cell.id !== 'string' || cell.id === '' || ids.has(cell.id)) cell.id = newCellId();
    ids.add(cell.id);
    if (c.attachments && typeof c.attachments === 'object') {
      cell.attachments = Object.fromEntries(Object.entries(c.attachments).map(([k, v]) => [k, joinBundle(v)]));
    }
    if (cell.cell_type === 'code') {
      cell.execution_count = typeof c.execution_count === 'number' ? c.execution_count : null;
      cell.outputs = ((c.outputs as Output[]) ?? []).map((o) => {
        if (o.output_type === 'stream') return { ...o, text: String(joinLines(o.text)) };
        if (o.output_type === 'display_data' || o.output_type === 'execute_result') return { ...o, data: joinBundle(o.data) };
        return o;
      });
    }
    return cell;
  });
  const metadata = { ...((nb.metadata as Notebook['metadata']) ?? {}) };
  delete metadata.signature;
  delete metadata.orig_nbformat;
  return { ...(nb as Notebook), nbformat: 4, nbformat_minor: Math.max(5, nb.nbformat_minor ?? 0), metadata, cells };
}

/** Python's str.splitlines(keepends=True), which nbformat uses to write multi-line strings. */
export function splitLines(s: string): string[] {
  return s.match(/[^\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*(?:\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029])|[^\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+$/g) ?? [];
}

function splitBundle(data: MimeBundle): MimeBundle {
  const out: MimeBundle = {};
  for (const [k, v] of Object.entries(data)) {
    out[k] = typeof v === 'string' && (k.startsWith('text/') || k === 'application/javascript' || k === 'image/svg+xml') ? splitLines(v) : v;
  }
  return out;
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.keys(v as object)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

/** Notebook JSON as `nbformat.writes` produces it. */
export function serializeNotebook(nb: Notebook): string {
  const cells = nb.cells.map((c) => {
    const out: Record<string, unknown> = { ...c, source: splitLines(c.source) };
    if (c.attachments && typeof c.attachments === 'object') {
      out.attachments = Object.fromEntries(Object.entries(c.attachments).map(([k, v]) => [k, splitBundle(v as MimeBundle)]));
    }
    if (c.cell_type === 'code') {
      out.outputs = c.outputs.map((o) => {
        if (o.output_type === 'stream') return { ...o, text: splitLines(o.text) };
        if (o.output_type === 'display_data' || o.output_type === 'execute_result') return { ...o, data: splitBundle(o.data) };
        return o;
      });
    }
    return out;
  });
  return JSON.stringify(sortKeys({ ...nb, cells }), null, 1) + '\n';
}

export async function readNotebook(p: string): Promise<Notebook> {
  return parseNotebook(await readText(p), p);
}

/** Write atomically (storage.writeFile), replacing an earlier output as papermill does. */
export async function writeNotebook(p: string, nb: Notebook): Promise<void> {
  await writeFile(p, serializeNotebook(nb), { overwrite: true });
}

/** Parameters from a `-f` file: a JSON or YAML (.yaml/.yml, as papermill reads) mapping of names to values. */
export async function readParametersFile(p: string): Promise<Parameters> {
  const text = await readText(p);
  const isYaml = /\.ya?ml$/i.test(p);
  let v: unknown;
  try {
    v = isYaml ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new UserError(`${p}: not valid ${isYaml ? 'YAML' : 'JSON'} (${(err as Error).message.split('\n')[0]}); expected a mapping like ${isYaml ? '"epochs: 3"' : '{"epochs": 3}'}`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    throw new UserError(`${p}: expected a mapping of parameter names to values, like ${isYaml ? '"epochs: 3"' : '{"epochs": 3}'}`);
  }
  return v as Parameters;
}
