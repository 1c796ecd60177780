/**
 * Ctrl-C while a Dataflow job is followed: SIGINT becomes an AbortSignal (so the waiting stops
 * instead of the process), and the question whether to cancel the job, asked on a terminal.
 * A notebook's stop button sends the kernel the same SIGINT; there the `cancel_on_interrupt`
 * parameter answers instead of a prompt.
 */
import * as readline from 'node:readline';
import type { LaunchedJob } from '../../backend';

export interface InterruptSignal {
  signal: AbortSignal;
  /** Stop listening for SIGINT (call when the wait is over). */
  dispose(): void;
}

/**
 * SIGINT aborts the returned signal. A second SIGINT, after the first was not answered by the
 * code waiting on it (a stuck request), exits with 130 as an unhandled Ctrl-C would.
 */
export function interruptSignal(exitOnSecond = true): InterruptSignal {
  const ac = new AbortController();
  const onSigint = (): void => {
    if (!ac.signal.aborted) ac.abort();
    else if (exitOnSecond && !asking) process.exit(130);
  };
  process.on('SIGINT', onSigint);
  return { signal: ac.signal, dispose: () => void process.off('SIGINT', onSigint) };
}

let asking = false;

/**
 * Ask on the terminal whether to cancel `job` (default no: the job goes on). Without a terminal to
 * ask on (a pipe, CI), the answer is no and the caller says how to cancel by hand.
 */
export function askToCancel(input: NodeJS.ReadStream = process.stdin, output: NodeJS.WriteStream = process.stderr): (job: LaunchedJob) => Promise<boolean> {
  return async (job) => {
    if (!input.isTTY || !output.isTTY) return false;
    asking = true;
    const rl = readline.createInterface({ input, output });
    try {
      return await new Promise<boolean>((resolve) => {
        // Ctrl-C again at the prompt: no, leave the job alone and stop.
        rl.on('SIGINT', () => resolve(false));
        rl.question(`\nCancel Dataflow job ${job.name} (${job.id})? Its workers are billed until it stops. [y/N] `, (a) => resolve(/^\s*y(es)?\s*$/i.test(a)));
      });
    } finally {
      rl.close();
      asking = false;
    }
  };
}
