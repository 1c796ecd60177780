/**
 * A progress line for a notebook cell: one display (an HTML progress bar with a plain-text twin)
 * redrawn in place, at most a few times a second however often work reports, so a run of thousands
 * of images does not flood the kernel's message channel or bloat the saved notebook.
 */
import { randomBytes } from 'node:crypto';
import { sendDisplay } from './charts/display';

export interface NotebookProgress {
  /** Report progress; shown now or at the end of the current interval (the newest report wins). */
  update(done: number, total: number, info?: string): void;
  /** Show the final state (`summary` replaces the info text) and stop. */
  finish(summary?: string): void;
}

export interface NotebookProgressOptions {
  /** Least time between two redraws; default 250 ms. */
  intervalMs?: number;
  /** Called with the plain-text line each time it is drawn (tests, logs). */
  onDraw?: (line: string) => void;
}

interface State {
  done: number;
  total: number;
  info?: string;
}

function escapeHtml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

/** The plain-text form of a progress state, e.g. "preprocess: 250/400 (62 %) 688 img/s". */
export function progressLine(label: string, s: State): string {
  const pct = s.total > 0 ? Math.floor((100 * s.done) / s.total) : 100;
  return `${label}: ${s.done}/${s.total} (${pct} %)${s.info ? `  ${s.info}` : ''}`;
}

function progressHtml(label: string, s: State): string {
  const max = Math.max(1, s.total);
  return (
    `<div style="font-family:monospace">${escapeHtml(label)} ` +
    `<progress value="${Math.min(s.done, max)}" max="${max}" style="width:280px;vertical-align:middle"></progress> ` +
    `${escapeHtml(progressLine(label, s).slice(label.length + 2))}</div>`
  );
}

/**
 * A progress display in the current tslab cell. Outside a kernel nothing is drawn except through
 * `onDraw`, and finish() prints the last line to stdout so a plain script still sees the outcome.
 */
export function notebookProgress(label: string, opts: NotebookProgressOptions = {}): NotebookProgress {
  const interval = opts.intervalMs ?? 250;
  const displayId = randomBytes(8).toString('hex');
  let shown = false;
  let inKernel = true;
  let lastDraw = -Infinity;
  let latest: State | undefined;
  let timer: NodeJS.Timeout | undefined;
  let finished = false;

  const draw = (): void => {
    if (!latest) return;
    lastDraw = Date.now();
    const line = progressLine(label, latest);
    opts.onDraw?.(line);
    if (inKernel) {
      inKernel = sendDisplay(
        { data: { 'text/html': progressHtml(label, latest), 'text/plain': line }, metadata: {} },
        { displayId, update: shown },
      );
      shown ||= inKernel;
    }
  };

  return {
    update(done, total, info) {
      if (finished) return;
      latest = { done, total, info };
      if (timer) return; // a redraw is already scheduled and will show this state
      const wait = lastDraw + interval - Date.now();
      if (wait <= 0) return draw();
      timer = setTimeout(() => {
        timer = undefined;
        draw();
      }, wait);
      timer.unref();
    },
    finish(summary) {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      latest = { ...(latest ?? { done: 0, total: 0 }), ...(summary !== undefined ? { info: summary } : {}) };
      draw();
      if (!shown) process.stdout.write(progressLine(label, latest) + '\n');
    },
  };
}
