/**
 * How a cloud step tells the user what it does: a line for each state change, log line or dry-run
 * request, and a status redrawn in place while it waits (an operation running for minutes). The CLI
 * draws on stderr (stdout stays for results); a notebook draws in its cell.
 */
import { randomBytes } from 'node:crypto';
import { sendDisplay } from '../charts/display';

export interface Reporter {
  /** A line that stays: a state change, a job's log line, a request a dry run would send. */
  line(text: string): void;
  /** The current state while waiting, redrawn in place (elapsed time and all). */
  status(text: string): void;
  /** The wait is over: the last status stays as a line. */
  endStatus(): void;
}

/** stderr: a status line redrawn with \r on a terminal; in a log, a status only when it changes. */
export function terminalReporter(stream: NodeJS.WriteStream = process.stderr): Reporter {
  let current = '';
  let lastLogged = '';
  const tty = Boolean(stream.isTTY);
  const clear = (): void => {
    if (tty && current) stream.write('\r\x1b[K');
  };
  return {
    line(text) {
      clear();
      stream.write(`${text}\n`);
      if (tty && current) stream.write(current);
    },
    status(text) {
      if (tty) {
        current = text;
        stream.write(`\r\x1b[K${text}`);
        return;
      }
      // In a log, the elapsed time alone changing is not news.
      const gist = text.replace(/\b\d+(\.\d+)? ?(s|min)\b/g, '');
      if (gist !== lastLogged) stream.write(`${text}\n`);
      lastLogged = gist;
      current = text;
    },
    endStatus() {
      if (tty && current) stream.write('\n');
      current = '';
      lastLogged = '';
    },
  };
}

/** A notebook cell: lines on stdout, the status as one display updated in place. */
export function notebookReporter(): Reporter {
  let displayId = randomBytes(8).toString('hex');
  let shown = false;
  let last = '';
  return {
    line(text) {
      process.stdout.write(`${text}\n`);
    },
    status(text) {
      last = text;
      const ok = sendDisplay({ data: { 'text/plain': text }, metadata: {} }, { displayId, update: shown });
      shown ||= ok;
    },
    endStatus() {
      if (!shown && last) process.stdout.write(`${last}\n`);
      displayId = randomBytes(8).toString('hex');
      shown = false;
      last = '';
    },
  };
}

/** Collects everything (tests, and callers that show the lines themselves). */
export function memoryReporter(): Reporter & { lines: string[]; statuses: string[] } {
  const lines: string[] = [];
  const statuses: string[] = [];
  return { lines, statuses, line: (t) => void lines.push(t), status: (t) => void statuses.push(t), endStatus() {} };
}
