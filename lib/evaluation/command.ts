/** `imgclass evaluate`: the figures as a table (or one JSON object with --json) and where they were saved. */
import { evaluateModel, evaluationJson, formatEvaluation, EvaluateOptions } from './run';
import { terminalProgress } from '../progress';

export interface EvaluateCommandOptions extends Omit<EvaluateOptions, 'onProgress' | 'save'> {
  json: boolean;
}

export async function runEvaluateCommand(o: EvaluateCommandOptions): Promise<void> {
  const { json, ...opts } = o;
  let bar: ReturnType<typeof terminalProgress> | undefined;
  const e = await evaluateModel({
    ...opts,
    onProgress: (done, total) => (bar ??= terminalProgress('evaluate', total)).update(done),
  }).finally(() => bar?.stop());
  if (json) {
    process.stdout.write(JSON.stringify({ ...evaluationJson(e), files: e.files }) + '\n');
    return;
  }
  process.stdout.write(formatEvaluation(e));
}
