/**
 * The project's notebooks as one suite: 01-…08-*.ipynb run in order on one shared work folder, each
 * given the parameters it declares, stopping at the first failure and always taking the prediction
 * server down at the end (07 starts it in the background; a failed 08 would leave it running).
 * Also: the notebooks are kept in git without outputs, and stripOutputs() makes them so.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError, errorMessage } from './errors';
import { runNotebook, type Parameters, type RunNotebookResult } from './runner';
import { readNotebook, writeNotebook, type Notebook } from './runner/notebook-io';
import { findDeclarations, hasTag, PARAMETERS_TAG, INJECTED_TAG } from './runner/parameterize';
import { ERROR_MARKER_TAG } from './runner/execute';
import { undeployLocal } from './serve/daemon';
import { WarmKernels } from './runner/warm-kernels';

/** The numbered notebooks of a folder (NN-name.ipynb), in order. */
export function listNotebooks(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    throw new UserError(`notebook folder ${dir} does not exist`);
  }
  const found = names.filter((n) => /^\d\d-.+\.ipynb$/.test(n)).sort();
  if (found.length === 0) throw new UserError(`no numbered notebooks (01-….ipynb) in ${dir}`);
  return found.map((n) => path.join(dir, n));
}

/** Names declared by the notebook's cell tagged `parameters`. */
export function declaredParameters(nb: Notebook): string[] {
  const cell = nb.cells.find((c) => hasTag(c, PARAMETERS_TAG));
  return cell ? findDeclarations(cell.source).map((d) => d.name) : [];
}

export interface SuiteOptions {
  /** Folder of the numbered notebooks. */
  notebooksDir: string;
  /** Where the executed copies go (same names). */
  outDir: string;
  /** The shared work folder, passed to every notebook as work_dir; default outDir/work. */
  workDir?: string;
  /** Parameters for the notebooks; each notebook gets only those its parameters cell declares. */
  parameters?: Parameters;
  /** Seconds a cell may run. */
  executionTimeout?: number;
  logOutput?: boolean;
  /** Called before and after each notebook (for a progress line). */
  onStart?: (notebook: string) => void;
  onDone?: (notebook: string, result: RunNotebookResult) => void;
}

export interface SuiteResult {
  ok: boolean;
  results: { notebook: string; result: RunNotebookResult }[];
  /** The notebook that failed, if one did. */
  failed?: string;
  /**
   * What undeploying at the end did, when a deployment was still recorded then (notebook 07 left its
   * server running, or a run stopped before notebook 08 undeployed); undefined when there was none.
   */
  undeploy?: string;
}

export async function runNotebookSuite(o: SuiteOptions): Promise<SuiteResult> {
  const notebooks = listNotebooks(o.notebooksDir);
  const outDir = path.resolve(o.outDir);
  const workDir = path.resolve(o.workDir ?? path.join(outDir, 'work'));
  fs.mkdirSync(workDir, { recursive: true });
  const results: SuiteResult['results'] = [];
  let failed: string | undefined;
  let undeploy: string | undefined;
  // The next notebook's kernel starts while this one runs (see warm-kernels.ts).
  const kernels = new WarmKernels();
  try {
    for (const [i, input] of notebooks.entries()) {
      const declared = new Set(declaredParameters(await readNotebook(input)));
      const parameters: Parameters = { work_dir: workDir };
      for (const [k, v] of Object.entries(o.parameters ?? {})) if (declared.has(k)) parameters[k] = v;
      o.onStart?.(input);
      const result = await runNotebook({
        input,
        output: path.join(outDir, path.basename(input)),
        parameters,
        executionTimeout: o.executionTimeout,
        logOutput: o.logOutput,
        progress: false,
        startKernel: (spec, cwd, startTimeoutMs) => kernels.take(spec, cwd, { warmAnother: i < notebooks.length - 1, startTimeoutMs }),
      });
      results.push({ notebook: input, result });
      o.onDone?.(input, result);
      if (!result.ok) {
        failed = input;
        break;
      }
    }
  } finally {
    await kernels.close();
    try {
      const u = await undeployLocal(workDir);
      if (u.recorded) undeploy = u.message;
    } catch (err) {
      undeploy = `could not undeploy: ${errorMessage(err)}`;
    }
  }
  return { ok: failed === undefined, results, failed, undeploy };
}

/**
 * The notebook as it belongs in git: no outputs, no execution counts, no run metadata (papermill's,
 * an injected-parameters cell, error markers). Returns whether anything changed.
 */
export function stripOutputs(nb: Notebook): boolean {
  const before = JSON.stringify(nb);
  nb.cells = nb.cells.filter((c) => !hasTag(c, INJECTED_TAG) && !hasTag(c, ERROR_MARKER_TAG));
  for (const c of nb.cells) {
    delete c.metadata.papermill;
    delete c.metadata.execution;
    if (c.cell_type === 'code') {
      c.outputs = [];
      c.execution_count = null;
    }
  }
  delete nb.metadata.papermill;
  return JSON.stringify(nb) !== before;
}

/** Strip the outputs of notebook files in place; returns the files that changed. */
export async function stripOutputFiles(files: readonly string[]): Promise<string[]> {
  const changed: string[] = [];
  for (const f of files) {
    const nb = await readNotebook(f);
    if (stripOutputs(nb)) {
      await writeNotebook(f, nb);
      changed.push(f);
    }
  }
  return changed;
}
