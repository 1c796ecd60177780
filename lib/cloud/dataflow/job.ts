/**
 * Reading a Dataflow job back: which states are final, how to print its messages, and the rejects
 * file the pipeline writes (skipped rows, in the shape of the local preprocess_report.json).
 */
import type { dataflow_v1b3 } from 'googleapis/build/src/apis/dataflow';
import { UserError } from '../../errors';
import type { SkippedRow } from '../../preprocess';

/** States after which a job never changes again (Schema$Job.currentState). */
export const TERMINAL_JOB_STATES: ReadonlySet<string> = new Set([
  'JOB_STATE_DONE',
  'JOB_STATE_FAILED',
  'JOB_STATE_CANCELLED',
  'JOB_STATE_UPDATED',
  'JOB_STATE_DRAINED',
]);

export function isTerminalJobState(state: string | null | undefined): boolean {
  return !!state && TERMINAL_JOB_STATES.has(state);
}

/** `JOB_STATE_RUNNING` → `running`, for progress lines. */
export function jobStateLabel(state: string | null | undefined): string {
  if (!state) return 'unknown';
  return state.replace(/^JOB_STATE_/, '').toLowerCase().replace(/_/g, ' ');
}

/** One job message as a log line: `2026-12-01T21:05:09Z ERROR text`. */
export function formatJobMessage(m: dataflow_v1b3.Schema$JobMessage): string {
  const importance = (m.messageImportance ?? 'JOB_MESSAGE_IMPORTANCE_UNKNOWN').replace(/^JOB_MESSAGE_/, '');
  const time = m.time ? m.time.replace(/\.\d+Z$/, 'Z') : '-';
  return `${time} ${importance} ${(m.messageText ?? '').trimEnd()}`;
}

/** Where the pipeline writes its rejects, relative to the output folder. */
export const REJECTS_GLOB = '_rejects/rejects-*.jsonl';

/**
 * The skipped rows of one rejects file (JSON lines written by the pipeline), ordered by split,
 * CSV and line as the local report lists them. `file` names the file in errors.
 */
export function parseRejects(text: string, file: string): SkippedRow[] {
  const rows: SkippedRow[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let r: Partial<SkippedRow>;
    try {
      r = JSON.parse(line) as Partial<SkippedRow>;
    } catch (err) {
      throw new UserError(`${file}:${i + 1}: not a JSON line (${(err as Error).message}); was the file written by this pipeline?`);
    }
    if ((r.split !== 'train' && r.split !== 'validation') || typeof r.csv !== 'string' || typeof r.line !== 'number' || typeof r.path !== 'string' || typeof r.reason !== 'string') {
      throw new UserError(`${file}:${i + 1}: expected {split, csv, line, path, reason}, got ${line.slice(0, 200)}`);
    }
    rows.push({ split: r.split, csv: r.csv, line: r.line, path: r.path, reason: r.reason });
  });
  return sortSkipped(rows);
}

/** Train before validation, then by CSV and line: the order the local run meets the rows in. */
export function sortSkipped(rows: SkippedRow[]): SkippedRow[] {
  const splitOrder = (s: string): number => (s === 'train' ? 0 : 1);
  return [...rows].sort((a, b) => splitOrder(a.split) - splitOrder(b.split) || (a.csv < b.csv ? -1 : a.csv > b.csv ? 1 : 0) || a.line - b.line);
}
