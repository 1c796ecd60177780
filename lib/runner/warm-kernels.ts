/**
 * Kernels started ahead of time for a suite of notebooks. Starting tslab takes about 1.4 s (Node,
 * the TypeScript compiler, the ZeroMQ sockets), and every notebook gets a fresh kernel, as papermill
 * gives it. While one notebook runs, the next one's kernel starts beside it; when that notebook
 * asks for a kernel it gets the warm one, which has run no code. A warm kernel is used only for the
 * same kernelspec and working folder; otherwise it is shut down and a new one started.
 */
import { KernelClient, type KernelSpec } from './kernel-client';

export interface TakeOptions {
  /** Start another kernel like this one for the notebook that comes next. */
  warmAnother: boolean;
  startTimeoutMs?: number;
}

interface Warm {
  key: string;
  kernel: Promise<KernelClient>;
}

export class WarmKernels {
  private warm: Warm | undefined;
  private readonly counts = { started: 0, reused: 0, discarded: 0 };
  private readonly discarding = new Set<Promise<void>>();

  /** A started kernel for `spec` in `cwd`: the warm one when it matches, else a new one. */
  async take(spec: KernelSpec, cwd: string, opts: TakeOptions): Promise<KernelClient> {
    const key = JSON.stringify([spec.name, spec.argv, spec.env, cwd]);
    const warm = this.warm;
    this.warm = undefined;
    let kernel: KernelClient | undefined;
    if (warm?.key === key) {
      // A warm kernel that failed to start is started again below, and that error, if any, is reported.
      kernel = await warm.kernel.catch(() => undefined);
      if (kernel?.exit) {
        // It died while waiting (killed from outside): free its sockets, start another.
        await kernel.shutdown();
        kernel = undefined;
      }
      if (kernel) this.counts.reused++;
    } else if (warm) {
      const d = this.discard(warm).finally(() => this.discarding.delete(d));
      this.discarding.add(d);
    }
    kernel ??= await this.start(spec, cwd, opts.startTimeoutMs);
    if (opts.warmAnother) {
      const next = this.start(spec, cwd, opts.startTimeoutMs);
      next.catch(() => undefined); // reported when taken
      this.warm = { key, kernel: next };
    }
    return kernel;
  }

  stats(): { started: number; reused: number; discarded: number } {
    return { ...this.counts };
  }

  /** Shut down the warm kernel nobody took (and wait for those discarded earlier). */
  async close(): Promise<void> {
    const warm = this.warm;
    this.warm = undefined;
    if (warm) await this.discard(warm);
    await Promise.all(this.discarding);
  }

  private start(spec: KernelSpec, cwd: string, startTimeoutMs?: number): Promise<KernelClient> {
    this.counts.started++;
    return KernelClient.start(spec, { cwd, startTimeoutMs });
  }

  private async discard(warm: Warm): Promise<void> {
    this.counts.discarded++;
    const k = await warm.kernel.catch(() => undefined);
    await k?.shutdown();
  }
}
