/**
 * `imgclass train --backend gcp` and `imgclass train-status` on a terminal: the job's lines on stderr,
 * the result on stdout; Ctrl-C asks whether to cancel the job (no answer, or no terminal: it goes on).
 */
import * as readline from 'node:readline';
import { backendFor, Backend, BackendTrainOptions, TrainStatusRequest } from '../../backend';
import { terminalReporter } from '../report';
import type { TrainEvent, TrainResult } from '../../train';

export interface CloudCommandOptions {
  project?: string;
  region: string;
  dryRun?: boolean;
}

/** Asks on the terminal; stdin closed or anything but y/yes is "no". */
export function askOnTerminal(question: string): Promise<boolean> {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: Boolean(process.stdin.isTTY) });
    let answered = false;
    rl.question(question, (a) => {
      answered = true;
      rl.close();
      resolve(/^\s*y(es)?\s*$/i.test(a));
    });
    rl.on('close', () => {
      if (!answered) resolve(false);
    });
  });
}

function progressLine(e: TrainEvent): string | undefined {
  if (e.kind === 'step') return `step ${e.step}: loss ${e.loss.toFixed(4)}${Number.isFinite(e.lr) ? `, lr ${e.lr.toPrecision(3)}` : ''}`;
  if (e.kind === 'eval') return `eval at step ${e.step}: top-1 ${(100 * e.top1).toFixed(1)} %${e.top5 !== undefined ? `, top-5 ${(100 * e.top5).toFixed(1)} %` : ''}`;
  if (e.kind === 'export') return `exported to ${e.path}`;
  return undefined;
}

async function withCtrlC(run: (signal: AbortSignal, confirmCancel: () => Promise<boolean>) => Promise<TrainResult>): Promise<TrainResult> {
  const abort = new AbortController();
  const onSigint = (): void => {
    process.off('SIGINT', onSigint);
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    return await run(abort.signal, () => askOnTerminal('\ncancel the training job? (it is billed while it runs) [y/N] '));
  } finally {
    process.off('SIGINT', onSigint);
  }
}

function report(r: TrainResult): void {
  process.stdout.write(
    `${r.interrupted ? 'not finished' : 'trained'}: step ${r.step}` +
      (r.lastEval ? `; top-1 ${(100 * r.lastEval.top1).toFixed(1)} %` : '') +
      (r.exportPath ? `; export: ${r.exportPath}` : '') + '\n',
  );
}

/** Runs `call` on the gcp backend with Ctrl-C and progress lines, then prints the result. */
async function runOnGcp(o: CloudCommandOptions, call: (backend: Backend, extras: Pick<BackendTrainOptions, 'signal' | 'confirmCancel' | 'onEvent'>) => Promise<TrainResult>): Promise<void> {
  const backend = backendFor({ backend: 'gcp', project: o.project ?? '', region: o.region, dryRun: o.dryRun, reporter: terminalReporter() });
  const onEvent = (e: TrainEvent): void => {
    const line = progressLine(e);
    if (line) process.stderr.write(`${line}\n`);
  };
  const r = await withCtrlC((signal, confirmCancel) => call(backend, { signal, confirmCancel, onEvent }));
  if (!o.dryRun) report(r);
}

export function runCloudTrainCommand(o: CloudCommandOptions & BackendTrainOptions): Promise<void> {
  return runOnGcp(o, (backend, extras) => backend.train({ ...o, ...extras }));
}

export function runTrainStatusCommand(o: CloudCommandOptions & TrainStatusRequest): Promise<void> {
  return runOnGcp(o, (backend, extras) => backend.trainStatus({ ...o, ...extras }));
}
