/**
 * The served model on a worker thread of its own. A model call takes tens of milliseconds of
 * compute; on the main thread it would block the event loop, so the requests that arrive meanwhile
 * would be parsed, and their images decoded, only after it ends, and the next batch would start with
 * the few that were ready. With the model here, the main thread keeps accepting and decoding while
 * the model runs, and the Batcher hands it full batches.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BackendName } from '../engine/backend';
import { UserError } from '../errors';

export type ToModelWorker =
  | { kind: 'classify'; id: number; batch: Float32Array; count: number }
  | { kind: 'dispose' };

export type FromModelWorker =
  | { kind: 'ready'; backendNote: string }
  | { kind: 'error'; message: string }
  | { kind: 'result'; id: number; probs: Float32Array }
  | { kind: 'failed'; id: number; message: string };

interface Pending {
  count: number;
  resolve: (out: Float32Array[]) => void;
  reject: (err: Error) => void;
}

export class ModelThread {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  /** Why the worker can no longer classify (exited or disposed). */
  private gone: string | undefined;
  private readonly exited: Promise<void>;

  private constructor(private readonly worker: Worker, readonly backendNote: string) {
    worker.on('message', (msg: FromModelWorker) => {
      if (msg.kind !== 'result' && msg.kind !== 'failed') return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.kind === 'failed') p.reject(new Error(`model thread: ${msg.message}`));
      else {
        const classes = msg.probs.length / p.count;
        p.resolve(Array.from({ length: p.count }, (_, i) => msg.probs.slice(i * classes, (i + 1) * classes)));
      }
    });
    this.exited = new Promise((resolve) => {
      worker.on('error', (err) => this.fail(`the model thread crashed: ${err.message}`));
      worker.on('exit', (code) => {
        this.fail(`the model thread exited (code ${code})`);
        resolve();
      });
    });
  }

  /** Load the export version folder `versionPath` on a new worker thread; resolves once it can classify. */
  static start(versionPath: string, backend?: BackendName): Promise<ModelThread> {
    const worker = new Worker(path.join(__dirname, 'model-worker.js'), { workerData: { versionPath, backend } });
    return new Promise<ModelThread>((resolve, reject) => {
      const onMessage = (msg: FromModelWorker) => {
        if (msg.kind === 'ready') {
          cleanup();
          resolve(new ModelThread(worker, msg.backendNote));
        } else if (msg.kind === 'error') {
          cleanup();
          void worker.terminate();
          reject(new UserError(`cannot load ${versionPath} on the model thread: ${msg.message}`));
        }
      };
      const onError = (err: Error) => {
        cleanup();
        reject(new Error(`the model thread failed to start: ${err.message}`));
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new Error(`the model thread exited (code ${code}) before loading ${versionPath}`));
      };
      const cleanup = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
  }

  /** Class probabilities, one array per input. The inputs are copied into one batch buffer, which moves to the worker. */
  classify(inputs: Float32Array[]): Promise<Float32Array[]> {
    if (this.gone) return Promise.reject(new Error(this.gone));
    if (inputs.length === 0) return Promise.resolve([]);
    const pixels = inputs[0]!.length;
    const batch = new Float32Array(inputs.length * pixels);
    inputs.forEach((x, i) => {
      if (x.length !== pixels) throw new RangeError(`input ${i} holds ${x.length} values, input 0 ${pixels}`);
      batch.set(x, i * pixels);
    });
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { count: inputs.length, resolve, reject });
      const msg: ToModelWorker = { kind: 'classify', id, batch, count: inputs.length };
      this.worker.postMessage(msg, [batch.buffer as ArrayBuffer]);
    });
  }

  /** Free the model and end the thread; classify() rejects from now on. */
  async dispose(): Promise<void> {
    if (!this.gone) {
      this.fail('the model thread was disposed');
      this.worker.postMessage({ kind: 'dispose' } satisfies ToModelWorker);
    }
    await this.exited;
  }

  private fail(why: string): void {
    this.gone ??= why;
    for (const p of this.pending.values()) p.reject(new Error(why));
    this.pending.clear();
  }
}
