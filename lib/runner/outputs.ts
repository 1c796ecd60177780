/**
 * iopub messages → nbformat outputs of the running cell, with the semantics Jupyter front ends give
 * them: consecutive stream chunks merge (and `\r` overwrites the line, as a terminal would), a
 * `display_id` ties later updates to every output that showed it (even in earlier cells), and
 * `clear_output(wait=True)` clears only when the next output arrives.
 * Also: an error output for kernels (tslab) that fail a cell with a bare `status: error` and print
 * the details on stderr.
 */
import type { JupyterMessage } from './kernel-client';
import type { CodeCell, DisplayDataOutput, ErrorOutput, ExecuteResultOutput, MimeBundle, Output } from './notebook-io';

type Displayable = DisplayDataOutput | ExecuteResultOutput;

/** Terminal semantics for a stream: CRLF is a newline, text before a lone `\r` on a line is overwritten. */
export function collapseCarriageReturns(text: string): string {
  return text.replace(/\r+\n/g, '\n').replace(/[^\n]*\r(?=[^\n])/g, '');
}

export class OutputRecorder {
  private cell: CodeCell | undefined;
  private clearOnNextOutput = false;
  private readonly displays = new Map<string, Displayable[]>();
  /** stderr chunks of the current cell, in arrival order (tslab prints a failed cell's error there). */
  stderrChunks: string[] = [];

  /** Direct the following messages to `cell`. */
  begin(cell: CodeCell): void {
    this.cell = cell;
    this.clearOnNextOutput = false;
    this.stderrChunks = [];
  }

  private get outputs(): Output[] {
    if (!this.cell) throw new Error('OutputRecorder.begin() was not called');
    return this.cell.outputs;
  }

  private clearIfWaiting(): void {
    if (this.clearOnNextOutput) {
      this.outputs.splice(0);
      this.clearOnNextOutput = false;
    }
  }

  private append(o: Output): void {
    this.clearIfWaiting();
    this.outputs.push(o);
  }

  private updateDisplays(id: string, data: MimeBundle, metadata: Record<string, unknown>): void {
    for (const o of this.displays.get(id) ?? []) {
      o.data = data;
      o.metadata = metadata;
    }
  }

  /** Apply one iopub message; returns the output it added or changed (for echoing), if any. */
  handle(msg: JupyterMessage): Output | undefined {
    const c = msg.content;
    const displayId: string | undefined = c.transient?.display_id;
    switch (msg.header.msg_type) {
      case 'execute_input':
        if (this.cell && typeof c.execution_count === 'number') this.cell.execution_count = c.execution_count;
        return undefined;
      case 'stream': {
        const name = c.name === 'stderr' ? 'stderr' : 'stdout';
        const text = String(c.text ?? '');
        if (name === 'stderr') this.stderrChunks.push(text);
        this.clearIfWaiting();
        const last = this.outputs[this.outputs.length - 1];
        if (last?.output_type === 'stream' && last.name === name) last.text = collapseCarriageReturns(last.text + text);
        else this.append({ output_type: 'stream', name, text: collapseCarriageReturns(text) });
        return { output_type: 'stream', name, text };
      }
      case 'display_data':
      case 'execute_result': {
        const data = (c.data ?? {}) as MimeBundle;
        const metadata = (c.metadata ?? {}) as Record<string, unknown>;
        const o: Displayable =
          msg.header.msg_type === 'execute_result'
            ? { output_type: 'execute_result', execution_count: c.execution_count ?? this.cell?.execution_count ?? null, data, metadata }
            : { output_type: 'display_data', data, metadata };
        if (displayId) {
          // A new output with a known id also updates the earlier ones (Jupyter's display semantics).
          this.updateDisplays(displayId, data, metadata);
          this.displays.set(displayId, [...(this.displays.get(displayId) ?? []), o]);
        }
        this.append(o);
        return o;
      }
      case 'update_display_data': {
        if (!displayId) return undefined;
        this.updateDisplays(displayId, (c.data ?? {}) as MimeBundle, (c.metadata ?? {}) as Record<string, unknown>);
        return this.displays.get(displayId)?.[0];
      }
      case 'clear_output':
        if (c.wait) this.clearOnNextOutput = true;
        else {
          this.outputs.splice(0);
          this.clearOnNextOutput = false;
        }
        return undefined;
      case 'error': {
        const o: ErrorOutput = {
          output_type: 'error',
          ename: String(c.ename ?? 'Error'),
          evalue: String(c.evalue ?? ''),
          traceback: Array.isArray(c.traceback) ? c.traceback.map(String) : [],
        };
        this.append(o);
        return o;
      }
      default:
        return undefined;
    }
  }

  /** Append an output the runner made itself (a timeout, a dead kernel). */
  add(o: Output): void {
    this.append(o);
  }
}

const DIAGNOSTIC = /^(?:\S+ )?(\d+):(\d+) - (.*)$/;
const ERROR_HEADER = /^(?:Uncaught )?([A-Za-z_$][\w$]*(?:Error|Exception)|Error)(?: \[[\w-]+\])?(?:: (.*))?$/;
/** Frames of tslab and node:vm below the cell's own code: noise in a notebook. */
const KERNEL_FRAME = /^\s+at (?:sigintHandlersWrap|Script\.runInThisContext|Object\.runInThisContext|.*node:vm:|.*[\\/]tslab[\\/]dist[\\/])/;

export interface StderrError {
  error: ErrorOutput;
  /** The stderr text the error was read from, so the caller can drop it from the stream output. */
  consumed: string;
}

/**
 * Build an error output from what tslab printed on stderr for a failed cell: compile diagnostics
 * (`LINE:COL - message`, printed before anything runs) or the thrown value, printed last with
 * `console.error`.
 */
export function errorFromStderr(chunks: string[]): StderrError {
  const all = chunks.join('');
  const lines = all.split('\n').filter((l) => l.trim() !== '');
  if (lines.length > 0 && lines.every((l) => DIAGNOSTIC.test(l))) {
    const first = DIAGNOSTIC.exec(lines[0]!)!;
    const more = lines.length > 1 ? ` (and ${lines.length - 1} more)` : '';
    return {
      error: {
        output_type: 'error',
        ename: 'CompileError',
        evalue: `line ${first[1]}, column ${first[2]}: ${first[3]}${more}`,
        traceback: lines,
      },
      consumed: all,
    };
  }
  const last = chunks[chunks.length - 1] ?? '';
  const source = last.split('\n').some((l) => ERROR_HEADER.test(l)) ? last : all;
  const srcLines = source.replace(/\n+$/, '').split('\n');
  const h = srcLines.findIndex((l) => ERROR_HEADER.test(l));
  if (h >= 0) {
    const m = ERROR_HEADER.exec(srcLines[h]!)!;
    let end = srcLines.findIndex((l, i) => i > h && KERNEL_FRAME.test(l));
    if (end < 0) end = srcLines.length;
    return {
      error: { output_type: 'error', ename: m[1]!, evalue: m[2] ?? '', traceback: srcLines.slice(0, end) },
      consumed: source,
    };
  }
  const firstLine = srcLines.find((l) => l.trim() !== '');
  return {
    error: {
      output_type: 'error',
      ename: 'Error',
      evalue: firstLine ?? 'the cell failed and the kernel printed no details',
      traceback: srcLines.filter((l) => l.trim() !== ''),
    },
    consumed: firstLine ? source : '',
  };
}

/** Remove `text` from the end of the cell's last stderr stream (it moved into an error output). */
export function dropTrailingStderr(cell: CodeCell, text: string): void {
  if (!text) return;
  const last = cell.outputs[cell.outputs.length - 1];
  if (last?.output_type !== 'stream' || last.name !== 'stderr') return;
  const collapsed = collapseCarriageReturns(text);
  if (!last.text.endsWith(collapsed)) return;
  last.text = last.text.slice(0, last.text.length - collapsed.length);
  if (last.text === '') cell.outputs.pop();
}
