/**
 * The `imgclass run-notebook` command's own argument handling: papermill's two-word `-p NAME VALUE`
 * and `-r NAME VALUE` (commander has no two-value options, so the CLI hands them over raw), value
 * typing as papermill's `_resolve_type`, parameter files, and the exit code.
 */
import { InvalidArgumentError } from 'commander';
import { UserError } from '../errors';
import { snakeCaseFlags } from '../cli-flags';
import { readParametersFile } from './notebook-io';
import { runNotebook } from './index';
import type { Parameters, ParameterValue } from './translator';

export interface RunNotebookCommandOptions {
  parametersFile?: string[];
  cwd?: string;
  kernel?: string;
  executionTimeout?: number;
  startTimeout?: number;
  prepareOnly?: boolean;
  logOutput?: boolean;
  progressBar?: boolean;
}

export const RUN_NOTEBOOK_HELP = `
Parameters (as papermill):
  -p, --parameters NAME VALUE      VALUE typed: 3 → number, 2.5/1e-3/inf/nan → number,
                                   true/false (True/False) → boolean, null (None) → null,
                                   anything else → string; repeatable
  -r, --parameters_raw NAME VALUE  VALUE as a string, always; repeatable
  -f, --parameters_file FILE       a JSON object of parameters; repeatable
  Later sources win: -f files, then -p, then -r.

Exit status: 0 all cells ran; 1 a cell failed, timed out or the kernel died (OUT is still written,
with an error marker at the top linking to the failed cell); 2 bad usage or a missing input file.`;

/** commander parser for --execution_timeout / --start_timeout. */
export function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a positive number of seconds, got "${value}"`);
  return n;
}

/** papermill's `_resolve_type`, with TypeScript spellings accepted beside Python's. */
export function resolveParameterValue(value: string): ParameterValue {
  if (value === 'True' || value === 'true') return true;
  if (value === 'False' || value === 'false') return false;
  if (value === 'None' || value === 'null') return null;
  const t = value.trim();
  if (/^[+-]?\d+$/.test(t)) return Number(t);
  if (/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t)) return Number(t);
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(t);
  if (special) {
    if (special[2]!.toLowerCase() === 'nan') return NaN;
    return special[1] === '-' ? -Infinity : Infinity;
  }
  return value;
}

export interface SplitArgs {
  positionals: string[];
  typed: [string, string][];
  raw: [string, string][];
}

/** Pull `-p NAME VALUE` / `-r NAME VALUE` pairs out of the arguments commander passed through. */
export function splitParameterArgs(args: string[]): SplitArgs {
  const out: SplitArgs = { positionals: [], typed: [], raw: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const isTyped = a === '-p' || a === '--parameters';
    const isRaw = a === '-r' || a === '--parameters-raw';
    if (isTyped || isRaw) {
      if (i + 2 >= args.length) {
        throw new UserError(snakeCaseFlags(`${a} needs two values: ${a} NAME VALUE`));
      }
      (isTyped ? out.typed : out.raw).push([args[i + 1]!, args[i + 2]!]);
      i += 2;
    } else if (a.startsWith('-') && a !== '-') {
      throw new UserError(`run-notebook: unknown option ${snakeCaseFlags(a)} (see imgclass run-notebook --help)`);
    } else out.positionals.push(a);
  }
  return out;
}

/** Parameters in papermill's order of precedence: files, then -p, then -r. */
export async function collectParameters(split: SplitArgs, files: string[] = []): Promise<Parameters> {
  const params: Parameters = {};
  for (const f of files) Object.assign(params, await readParametersFile(f));
  for (const [name, value] of split.typed) params[name] = resolveParameterValue(value);
  for (const [name, value] of split.raw) params[name] = value;
  return params;
}

/** Run the command; returns the exit code (0 or 1). Usage errors throw UserError (exit 2). */
export async function runNotebookCommand(args: string[], o: RunNotebookCommandOptions): Promise<number> {
  const split = splitParameterArgs(args);
  if (split.positionals.length !== 2) {
    throw new UserError(`run-notebook needs IN.ipynb and OUT.ipynb, got ${split.positionals.length} path(s): imgclass run-notebook IN.ipynb OUT.ipynb [-p NAME VALUE]...`);
  }
  const [input, output] = split.positionals as [string, string];
  const parameters = await collectParameters(split, o.parametersFile);
  const r = await runNotebook({
    input,
    output,
    parameters,
    cwd: o.cwd,
    kernel: o.kernel,
    executionTimeout: o.executionTimeout,
    startTimeout: o.startTimeout,
    prepareOnly: o.prepareOnly,
    logOutput: o.logOutput,
    progress: o.progressBar ?? (!!process.stderr.isTTY && !o.logOutput),
    handleSignals: true,
  });
  if (r.ok) {
    process.stderr.write(`${o.prepareOnly ? 'prepared' : 'executed'} ${input} → ${output} in ${r.seconds.toFixed(1)} s\n`);
    return 0;
  }
  process.stderr.write(`imgclass: ${r.error}\nthe executed notebook (with the error) is in ${output}\n`);
  return 1;
}
