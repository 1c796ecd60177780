/**
 * `runNotebook`: papermill for tslab notebooks. Read IN, inject parameters, execute every cell in a
 * fresh kernel, write OUT (as the run goes and at the end, also when a cell fails).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../errors';
import { lockFile, withLock } from '../folder-lock';
import { dirName, isGcsPath } from '../storage';
import { executeNotebook, ERROR_MARKER_TAG, type Failure } from './execute';
import { KernelClient, resolveKernelSpec, type KernelSpec } from './kernel-client';
import { readNotebook, writeNotebook, type Notebook, type NotebookPapermillMetadata } from './notebook-io';
import { findDeclarations, hasTag, parameterizeNotebook, PARAMETERS_TAG } from './parameterize';
import type { Parameters } from './translator';

export type { Parameters, ParameterValue } from './translator';
export type { Failure, FailureReason } from './execute';

export interface RunNotebookOptions {
  /** Notebook to run: a local path or gs:// URL. */
  input: string;
  /** Where the executed notebook goes (may equal `input`). */
  output: string;
  parameters?: Parameters;
  /** The kernel's working folder; default: the input notebook's folder (as Jupyter runs it), or the current folder for gs://. */
  cwd?: string;
  /** Kernelspec name; default: the notebook's `metadata.kernelspec.name`, else `tslab`. */
  kernel?: string;
  /** Seconds a cell may run; then it is interrupted and the run fails. */
  executionTimeout?: number;
  /** Seconds to wait for the kernel to start. Default 60. */
  startTimeout?: number;
  /** How to get a started kernel; default: start one. A suite passes its WarmKernels here. */
  startKernel?: (spec: KernelSpec, cwd: string, startTimeoutMs: number) => Promise<KernelClient>;
  /** Write the parameterized notebook without running it. */
  prepareOnly?: boolean;
  /** Echo cell outputs to stdout/stderr as they arrive. */
  logOutput?: boolean;
  /** Cells done / total on stderr. */
  progress?: boolean;
  /** Ctrl-C / SIGTERM stop the run (the notebook is still saved); for the CLI. */
  handleSignals?: boolean;
  /** Warnings (unknown parameters, …); default: printed on stderr. */
  onWarning?: (message: string) => void;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
}

export interface RunNotebookResult {
  ok: boolean;
  failedCell?: {
    /** Index in the saved notebook. */
    index: number;
    executionCount: number | null;
    source: string;
    ename: string;
    evalue: string;
  };
  /** Why the run failed, naming the cell. */
  error?: string;
  reason?: Failure['reason'];
  output: string;
  seconds: number;
  warnings: string[];
}

function runnerVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../package.json'), 'utf8')) as { name?: string; version?: string };
    return `${pkg.name ?? 'imgclass'} ${pkg.version ?? ''}`.trim();
  } catch {
    return 'imgclass';
  }
}

/** What papermill's load_notebook_node + prepare_notebook_metadata leave in `metadata.papermill`. */
function preparePapermillMetadata(nb: Notebook, input: string, output: string): NotebookPapermillMetadata {
  const pm: NotebookPapermillMetadata = {
    default_parameters: {},
    parameters: {},
    environment_variables: {},
    ...(nb.metadata.papermill ?? {}),
    version: runnerVersion(),
    input_path: input,
    output_path: output,
  };
  nb.metadata.papermill = pm;
  return pm;
}

/** Run one notebook; one runner per output notebook at a time: a second one stops at once (lib/folder-lock.ts). */
export async function runNotebook(opts: RunNotebookOptions): Promise<RunNotebookResult> {
  return withLock(lockFile(opts.output, { command: 'imgclass run-notebook', what: 'output notebook' }), () => runNotebookLocked(opts));
}

async function runNotebookLocked(opts: RunNotebookOptions): Promise<RunNotebookResult> {
  const t0 = Date.now();
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    (opts.onWarning ?? ((w: string) => (opts.stderr ?? process.stderr).write(`warning: ${w}\n`)))(m);
  };
  const positiveOrUndefined = (v: number | undefined, flag: string): number | undefined => {
    if (v === undefined) return undefined;
    if (!(v > 0) || !Number.isFinite(v)) throw new UserError(`${flag} must be a positive number of seconds, got ${v}`);
    return v;
  };
  const executionTimeout = positiveOrUndefined(opts.executionTimeout, '--execution_timeout');
  const startTimeout = positiveOrUndefined(opts.startTimeout, '--start_timeout') ?? 60;

  let nb = await readNotebook(opts.input);
  preparePapermillMetadata(nb, opts.input, opts.output);
  const r = parameterizeNotebook(nb, opts.parameters ?? {});
  nb = r.notebook;
  for (const w of r.warnings) warn(w);
  const paramCell = nb.cells.find((c) => hasTag(c, PARAMETERS_TAG));
  if (paramCell) {
    nb.metadata.papermill!.default_parameters = Object.fromEntries(
      findDeclarations(paramCell.source).map((d) => [d.name, d.initializer ?? null]),
    );
  }
  // Markers from an earlier failed run of this notebook.
  nb.cells = nb.cells.filter((c) => !hasTag(c, ERROR_MARKER_TAG));

  const kernelName = opts.kernel ?? (nb.metadata.kernelspec as { name?: string } | undefined)?.name ?? 'tslab';
  const seconds = (): number => (Date.now() - t0) / 1000;
  if (opts.prepareOnly) {
    await writeNotebook(opts.output, nb);
    return { ok: true, output: opts.output, seconds: seconds(), warnings };
  }

  const spec = resolveKernelSpec(kernelName);
  nb.metadata.kernelspec ??= { name: spec.name, display_name: spec.displayName, language: spec.language };
  let cwd = opts.cwd ?? (isGcsPath(opts.input) ? process.cwd() : path.resolve(dirName(opts.input)));
  cwd = path.resolve(cwd);
  if (!fs.existsSync(cwd) || !fs.statSync(cwd).isDirectory()) throw new UserError(`--cwd ${cwd} is not a folder`);

  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (abort.signal.aborted) process.exit(130); // a second Ctrl-C: stop waiting for the save
    abort.abort(sig);
  };
  if (opts.handleSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  try {
    const res = await executeNotebook(nb, {
      startKernel: () =>
        opts.startKernel ? opts.startKernel(spec, cwd, startTimeout * 1000) : KernelClient.start(spec, { cwd, startTimeoutMs: startTimeout * 1000 }),
      save: (n) => writeNotebook(opts.output, n),
      executionTimeoutMs: executionTimeout === undefined ? undefined : executionTimeout * 1000,
      logOutput: opts.logOutput,
      progress: opts.progress,
      signal: abort.signal,
      stdout: opts.stdout,
      stderr: opts.stderr,
    });
    for (const w of res.warnings) warn(w);
    const f = res.failure;
    if (!f) return { ok: true, output: opts.output, seconds: seconds(), warnings };
    return {
      ok: false,
      error: f.message,
      reason: f.reason,
      failedCell:
        f.cellIndex === undefined
          ? undefined
          : { index: f.cellIndex, executionCount: f.executionCount ?? null, source: f.source ?? '', ename: f.ename, evalue: f.evalue },
      output: opts.output,
      seconds: seconds(),
      warnings,
    };
  } finally {
    if (opts.handleSignals) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}
