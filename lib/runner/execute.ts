/**
 * The execution loop, as papermill's NotebookExecutionManager runs it: every cell goes
 * pending → running → completed | failed with timestamps in `metadata.papermill`, outputs are
 * recorded as they arrive, the output notebook is saved as the run goes (throttled) and always at the
 * end; the first failing cell (an error, a timeout, a dead kernel) stops the run, leaves the rest
 * pending and gets papermill's error markers.
 */
import type { ExecuteOutcome, KernelClient } from './kernel-client';
import { describeExit } from './kernel-client';
import type { Cell, CellPapermillMetadata, CodeCell, MarkdownCell, Notebook, Output } from './notebook-io';
import { newCellId } from './notebook-io';
import { dropTrailingStderr, errorFromStderr, OutputRecorder } from './outputs';
import { terminalProgress, type ProgressSink } from '../progress';
import { errorMessage } from '../errors';

export const ERROR_MARKER_TAG = 'papermill-error-cell-tag';
const ERROR_STYLE = 'style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;"';
/** papermill's markers, word for word, so tools that look for them (and readers used to them) find them. */
export function errorMessageMarker(executionCount: number | null): string {
  return `<span ${ERROR_STYLE}>An Exception was encountered at '<a href="#papermill-error-cell">In [${executionCount ?? ' '}]</a>'.</span>`;
}
export const ERROR_ANCHOR = `<span id="papermill-error-cell" ${ERROR_STYLE}>Execution using papermill encountered an exception here and stopped:</span>`;

export type FailureReason = 'error' | 'timeout' | 'kernel-died' | 'interrupted' | 'kernel-start';

export interface Failure {
  reason: FailureReason;
  /** One line for the terminal, naming the cell. */
  message: string;
  /** Index of the failed cell in the saved notebook (after the error markers were inserted). */
  cellIndex?: number;
  executionCount?: number | null;
  source?: string;
  ename: string;
  evalue: string;
}

export interface ExecuteNotebookOptions {
  startKernel: () => Promise<KernelClient>;
  /** Write the notebook to OUT (prepared by the caller: where, how). */
  save: (nb: Notebook) => Promise<void>;
  /** Per cell; on expiry the kernel is interrupted and the run fails. */
  executionTimeoutMs?: number;
  logOutput?: boolean;
  progress?: boolean;
  /** Aborting (Ctrl-C in the CLI) interrupts the running cell and fails the run. */
  signal?: AbortSignal;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Don't save more often than this after a cell (ms). */
  minSaveIntervalMs?: number;
  /** Save a long-running cell's outputs this often (ms). */
  autosaveMs?: number;
}

export interface ExecuteNotebookResult {
  notebook: Notebook;
  failure?: Failure;
  /** Problems that did not fail the run (a save in the middle that did not go through). */
  warnings: string[];
}

const now = (): string => new Date().toISOString();

function pendingMetadata(): CellPapermillMetadata {
  return { exception: null, start_time: null, end_time: null, duration: null, status: 'pending' };
}

function cellMeta(cell: Cell): CellPapermillMetadata {
  cell.metadata.papermill ??= pendingMetadata();
  return cell.metadata.papermill;
}

function firstLine(source: string): string {
  const line = source.split('\n').find((l) => l.trim() !== '') ?? '';
  return line.length > 60 ? `${line.slice(0, 57)}...` : line;
}

function markdownCell(source: string): MarkdownCell {
  return { id: newCellId(), cell_type: 'markdown', metadata: { tags: [ERROR_MARKER_TAG] }, source };
}

/** Serializes saves, skips ones that come too soon, and keeps a long cell's outputs on disk. */
class Saver {
  private chain: Promise<void> = Promise.resolve();
  private last = 0;
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  readonly warnings: string[] = [];

  constructor(
    private readonly nb: () => Notebook,
    private readonly write: (nb: Notebook) => Promise<void>,
    private readonly minIntervalMs: number,
    autosaveMs: number,
  ) {
    this.timer = setInterval(() => {
      if (this.dirty) void this.save(true);
    }, autosaveMs);
    this.timer.unref();
  }

  markDirty(): void {
    this.dirty = true;
  }

  save(force: boolean): Promise<void> {
    this.dirty = true;
    if (!force && Date.now() - this.last < this.minIntervalMs) return this.chain;
    this.last = Date.now();
    this.dirty = false;
    // Snapshot now: the loop keeps changing the notebook while the write is under way.
    const snapshot = structuredClone(this.nb());
    this.chain = this.chain.then(() =>
      this.write(snapshot).catch((err) => {
        this.warnings.push(`could not save the notebook during the run: ${errorMessage(err)}`);
      }),
    );
    return this.chain;
  }

  /** The last save: waits for earlier ones and lets its error through. */
  async final(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.chain;
    await this.write(this.nb());
  }
}

function echo(o: Output, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream): void {
  switch (o.output_type) {
    case 'stream':
      (o.name === 'stderr' ? stderr : stdout).write(o.text);
      break;
    case 'error':
      stderr.write(`${o.traceback.length ? o.traceback.join('\n') : `${o.ename}: ${o.evalue}`}\n`);
      break;
    default: {
      const text = o.data['text/plain'];
      const kinds = Object.keys(o.data).join(', ');
      stdout.write(typeof text === 'string' ? `${text.replace(/\n?$/, '\n')}` : `[${o.output_type}: ${kinds}]\n`);
    }
  }
}

/**
 * Run every cell of `nb` (changed in place and returned). Never throws for what happens in the
 * kernel: failures come back in `failure`, with the notebook saved to show them.
 */
export async function executeNotebook(nb: Notebook, opts: ExecuteNotebookOptions): Promise<ExecuteNotebookResult> {
  const stdout = opts.stdout ?? process.stdout;
  const stderr = opts.stderr ?? process.stderr;
  const pm = nb.metadata.papermill!;
  const started = Date.now();

  // notebook_start: clear what an earlier run left.
  pm.start_time = new Date(started).toISOString();
  pm.end_time = null;
  pm.duration = null;
  pm.exception = null;
  for (const cell of nb.cells) {
    if (cell.cell_type === 'code') {
      cell.execution_count = null;
      cell.outputs = [];
    }
    cell.metadata.papermill = pendingMetadata();
  }
  // The first save is not best-effort: if OUT can't be written, say so before running anything.
  await opts.save(structuredClone(nb));
  const saver = new Saver(() => nb, opts.save, opts.minSaveIntervalMs ?? 1000, opts.autosaveMs ?? 10_000);

  let failure: Failure | undefined;
  let failedCell: Cell | undefined;
  let kernel: KernelClient | undefined;
  let bar: ProgressSink | undefined;
  const recorder = new OutputRecorder();
  try {
    try {
      kernel = await opts.startKernel();
    } catch (err) {
      failure = { reason: 'kernel-start', message: `the kernel failed to start: ${errorMessage(err)}`, ename: 'KernelStartError', evalue: errorMessage(err) };
    }
    if (kernel) {
      if (kernel.info.language_info) nb.metadata.language_info = kernel.info.language_info;
      kernel.onInputRequest = (prompt) =>
        saver.warnings.push(`a cell asked for input (${JSON.stringify(prompt)}); a headless run answers with an empty line`);
      bar = terminalProgress('run-notebook', nb.cells.length, { stream: stderr as NodeJS.WriteStream, quiet: !opts.progress });
      for (let i = 0; i < nb.cells.length; i++) {
        const cell = nb.cells[i]!;
        const meta = cellMeta(cell);
        const t0 = Date.now();
        meta.start_time = new Date(t0).toISOString();
        meta.status = 'running';
        meta.exception = false;
        if (opts.logOutput) stderr.write(`--- cell ${i + 1}/${nb.cells.length} (${cell.cell_type}) ---\n`);
        if (cell.cell_type === 'code' && cell.source.trim() !== '') {
          void saver.save(false);
          failure = await runCell(kernel, cell, i, recorder, opts, saver, stdout, stderr);
        }
        meta.end_time = now();
        meta.duration = (Date.now() - t0) / 1000;
        if (failure) {
          meta.exception = true;
          meta.status = 'failed';
          pm.exception = true;
          failedCell = cell;
          break;
        }
        meta.status = 'completed';
        void saver.save(false);
        bar.update(i + 1, { rate: `${((Date.now() - started) / 1000).toFixed(1)} s` });
      }
    }
  } finally {
    bar?.stop();
    await kernel?.shutdown();
  }

  // notebook_complete
  pm.end_time = now();
  pm.duration = (Date.now() - started) / 1000;
  if (failure) pm.exception = true;
  for (const cell of nb.cells) {
    const meta = cellMeta(cell);
    if (meta.status === 'failed') break;
    if (meta.status === 'pending' && !failure) meta.status = 'completed';
  }

  if (failure && failedCell) {
    // papermill's markers: the anchor right before the failed cell, the message (linking to it) on top.
    const at = nb.cells.indexOf(failedCell);
    nb.cells.splice(at, 0, markdownCell(ERROR_ANCHOR));
    nb.cells.unshift(markdownCell(errorMessageMarker(failure.executionCount ?? null)));
    failure.cellIndex = at + 2;
  }
  await saver.final();
  return { notebook: nb, failure, warnings: saver.warnings };
}

async function runCell(
  kernel: KernelClient,
  cell: CodeCell,
  index: number,
  recorder: OutputRecorder,
  opts: ExecuteNotebookOptions,
  saver: Saver,
  stdout: NodeJS.WritableStream,
  stderr: NodeJS.WritableStream,
): Promise<Failure | undefined> {
  recorder.begin(cell);
  const processMark = kernel.processOutputMark;
  const outcome: ExecuteOutcome = await kernel.execute(
    cell.source,
    (msg) => {
      const changed = recorder.handle(msg);
      saver.markDirty();
      if (changed && opts.logOutput && msg.header.msg_type !== 'update_display_data') echo(changed, stdout, stderr);
    },
    { timeoutMs: opts.executionTimeoutMs, signal: opts.signal },
  );
  const reply = outcome.kind === 'died' ? undefined : outcome.reply;
  if (typeof reply?.execution_count === 'number') cell.execution_count = reply.execution_count;
  const label = `cell ${index + 1} (In [${cell.execution_count ?? ' '}]: ${firstLine(cell.source)})`;
  const fail = (reason: FailureReason, ename: string, evalue: string, message: string, traceback: string[] = []): Failure => {
    if (reason !== 'error') {
      const o: Output = { output_type: 'error', ename, evalue, traceback };
      recorder.add(o);
      if (opts.logOutput) echo(o, stdout, stderr);
    }
    return { reason, message, executionCount: cell.execution_count, source: cell.source, ename, evalue };
  };

  switch (outcome.kind) {
    case 'done': {
      if (outcome.reply.status === 'ok') return undefined;
      let err = cell.outputs.find((o) => o.output_type === 'error');
      if (!err && outcome.reply.ename) {
        err = { output_type: 'error', ename: outcome.reply.ename, evalue: outcome.reply.evalue ?? '', traceback: outcome.reply.traceback ?? [] };
        recorder.add(err);
      }
      if (!err) {
        // tslab: a bare `status: error`, the details printed on stderr (or, if they never made it
        // to iopub, on the kernel process's own stderr).
        const chunks = recorder.stderrChunks.length ? recorder.stderrChunks : [kernel.processOutputSince(processMark)];
        const built = errorFromStderr(chunks);
        if (recorder.stderrChunks.length) dropTrailingStderr(cell, built.consumed);
        err = built.error;
        recorder.add(err);
        // With --log_output the stderr chunks were already echoed as they came.
        if (opts.logOutput && !recorder.stderrChunks.length) echo(err, stdout, stderr);
      }
      if (err.output_type !== 'error') return undefined;
      const what = outcome.reply.status === 'abort' ? 'was aborted by the kernel' : 'failed';
      return fail('error', err.ename, err.evalue, `${label} ${what}: ${err.ename}${err.evalue ? `: ${err.evalue}` : ''}`);
    }
    case 'timeout': {
      const s = (opts.executionTimeoutMs ?? 0) / 1000;
      return fail('timeout', 'CellTimeoutError', `the cell did not finish within ${s} s (--execution_timeout) and was interrupted`, `${label} timed out after ${s} s (--execution_timeout)`);
    }
    case 'cancelled':
      return fail('interrupted', 'KeyboardInterrupt', `the run was interrupted (${outcome.reason})`, `${label} was interrupted (${outcome.reason})`);
    case 'died': {
      const how = describeExit(outcome.exit);
      const printed = kernel.processOutputSince(processMark).trim();
      return fail(
        'kernel-died',
        'DeadKernelError',
        `the kernel died (${how}) while running this cell`,
        `the kernel died (${how}) while running ${label}`,
        printed ? printed.split('\n').slice(-30) : [],
      );
    }
  }
}
