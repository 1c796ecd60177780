/**
 * Progress for long work: a live bar on a terminal, a line every few seconds in a log (CI, a pipe),
 * nothing when silenced. Library functions report through plain callbacks; the CLI and the notebook
 * each turn those into their own display.
 */
import { SingleBar, Presets } from 'cli-progress';

export interface ProgressSink {
  update(done: number, info?: Record<string, string | number>): void;
  stop(): void;
}

export interface TerminalProgressOptions {
  /** Where to draw; defaults to stderr so stdout stays clean for results. */
  stream?: NodeJS.WriteStream;
  /** Seconds between log lines when the stream is not a terminal. */
  logEverySeconds?: number;
  quiet?: boolean;
}

/** A progress display for `total` units of work labelled `label`. */
export function terminalProgress(label: string, total: number, opts: TerminalProgressOptions = {}): ProgressSink {
  const stream = opts.stream ?? process.stderr;
  if (opts.quiet) return { update() {}, stop() {} };
  if (stream.isTTY) {
    const bar = new SingleBar(
      { format: `${label} [{bar}] {percentage}% | {value}/{total} | {rate} | ETA {eta_formatted}`, stream, hideCursor: true },
      Presets.shades_classic,
    );
    bar.start(total, 0, { rate: '' });
    return {
      update(done, info) {
        bar.update(done, { rate: info?.rate ?? '' });
      },
      stop() {
        bar.stop();
      },
    };
  }
  const every = (opts.logEverySeconds ?? 5) * 1000;
  let last = 0;
  let lastDone = -1;
  let current = 0;
  let lastInfo: Record<string, string | number> | undefined;
  const line = (done: number, info?: Record<string, string | number>) => {
    const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
    const extra = info ? ' ' + Object.entries(info).map(([k, v]) => `${k}=${v}`).join(' ') : '';
    stream.write(`${label}: ${done}/${total} (${pct}%)${extra}\n`);
    lastDone = done;
  };
  return {
    update(done, info) {
      current = done;
      lastInfo = info;
      const now = Date.now();
      if (now - last >= every) {
        last = now;
        line(done, info);
      }
    },
    stop() {
      if (lastDone !== current) line(current, lastInfo);
    },
  };
}
