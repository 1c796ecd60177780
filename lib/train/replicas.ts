/**
 * Synchronous data parallelism over worker threads: each step the batch is split across replicas,
 * each computes its gradient, the coordinator averages them (weighted by sub-batch size, so the
 * result equals the gradient of the whole batch's mean loss) and every replica applies the average.
 */
import { Worker } from 'node:worker_threads';
import * as os from 'node:os';
import { likelyEngine, type BackendName } from '../engine/backend';
import { weightedSumNative } from '../engine/onednn';
import * as path from 'node:path';
import { UserError } from '../errors';
import type { ToReplica, FromReplica, ReplicaInit, TensorData } from './protocol';

type Pending = { resolve: (m: FromReplica) => void; reject: (e: Error) => void };

class ReplicaHandle {
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private failed: Error | undefined;
  private readyWaiter: Pending | undefined;

  constructor(readonly index: number, private worker: Worker) {
    worker.on('message', (msg: FromReplica) => this.receive(msg));
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', (code) => {
      if (code !== 0) this.fail(new Error(`training replica ${index} exited with code ${code}`));
    });
  }

  private receive(msg: FromReplica): void {
    if (msg.kind === 'ready') {
      this.readyWaiter?.resolve(msg);
      this.readyWaiter = undefined;
      return;
    }
    if (msg.kind === 'error') {
      const err = msg.user ? new UserError(msg.message) : Object.assign(new Error(`replica ${this.index}: ${msg.message}`), { stack: msg.stack });
      if (msg.id === undefined) {
        this.fail(err);
        return;
      }
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      (p ?? this.readyWaiter)?.reject(err);
      return;
    }
    const p = this.pending.get(msg.id);
    this.pending.delete(msg.id);
    p?.resolve(msg);
  }

  private fail(err: Error): void {
    this.failed ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.readyWaiter?.reject(err);
    this.readyWaiter = undefined;
  }

  init(init: ReplicaInit): Promise<Extract<FromReplica, { kind: 'ready' }>> {
    return new Promise((resolve, reject) => {
      this.readyWaiter = { resolve: resolve as (m: FromReplica) => void, reject };
      this.worker.postMessage({ kind: 'init', init } satisfies ToReplica);
    });
  }

  request<K extends FromReplica['kind']>(msg: Record<string, unknown> & { kind: ToReplica['kind'] }, transfer: ArrayBuffer[] = []): Promise<Extract<FromReplica, { kind: K }>> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (m: FromReplica) => void, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  async close(): Promise<void> {
    this.worker.postMessage({ kind: 'close' } satisfies ToReplica);
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => void this.worker.terminate().then(() => resolve()), 5000);
      this.worker.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

export interface ReplicaPoolOptions extends Omit<ReplicaInit, 'gradSlot' | 'avgGrad' | 'index'> {
  replicas: number;
  /** Number of floats in the model's trainable weights (from modelSummary). */
  trainableParams: number;
}

export interface StepResult {
  loss: number;
  crossEntropy: number;
  /** Wall time of the step's phases, for benchmarks: gradients (slowest replica), averaging, update. */
  phaseMs: { grads: number; average: number; apply: number };
}

export interface EvalSums {
  lossSum: number;
  top1Sum: number;
  top5Sum: number;
  count: number;
}

/** Sizes of `parts` nearly equal pieces of `n` (the first ones one larger). */
export function splitSizes(n: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(n / parts) + (i < n % parts ? 1 : 0));
}

/**
 * How many replicas train a batch and how many oneDNN threads each gets. On the oneDNN engine the
 * step runs as one native graph on all cores, so one replica takes every core (a second would
 * duplicate the step's fixed costs and add the gradient average); on the other engines each replica
 * is single-threaded tfjs, so there is one per core. `workers` overrides either, never more replicas
 * than images, and the cores are shared out so that replicas x threads <= cores. train() and the
 * compute-only benchmark both size their pool with it.
 */
export function poolLayout(workers: number | undefined, batchSize: number, cores: number = os.availableParallelism(),
  engine: BackendName | undefined = likelyEngine(undefined)): { replicas: number; threads: number } {
  const replicas = Math.max(1, Math.min(workers ?? (engine === 'onednn' ? 1 : cores), batchSize));
  return { replicas, threads: Math.max(1, Math.floor(cores / replicas)) };
}

export class ReplicaPool {
  private constructor(
    private handles: ReplicaHandle[],
    private slots: Float32Array[],
    private avg: Float32Array,
    readonly backend: string,
    readonly engine: BackendName,
    readonly backendNote: string,
    private imagePixels: number,
  ) {}

  get size(): number {
    return this.handles.length;
  }

  static async start(opts: ReplicaPoolOptions): Promise<ReplicaPool> {
    const n = Math.max(1, opts.replicas);
    const slotBufs = Array.from({ length: n }, () => new SharedArrayBuffer(opts.trainableParams * 4));
    // One replica: its gradient is the average, so it reads back the slot it wrote.
    const avgBuf = n === 1 ? (slotBufs[0] as SharedArrayBuffer) : new SharedArrayBuffer(opts.trainableParams * 4);
    const handles = slotBufs.map((_, i) => new ReplicaHandle(i, new Worker(path.join(__dirname, 'replica.js'))));
    const { replicas: _r, trainableParams: _t, ...rest } = opts;
    try {
      const ready = await Promise.all(handles.map((h, i) => h.init({ ...rest, index: i, gradSlot: slotBufs[i] as SharedArrayBuffer, avgGrad: avgBuf })));
      const first = ready[0] as Extract<FromReplica, { kind: 'ready' }>;
      return new ReplicaPool(
        handles,
        slotBufs.map((b) => new Float32Array(b)),
        new Float32Array(avgBuf),
        first.backend,
        first.engine,
        `${first.note}; ${first.stepNote}`,
        opts.model.imageSize * opts.model.imageSize * 3,
      );
    } catch (err) {
      await Promise.all(handles.map((h) => h.close()));
      throw err;
    }
  }

  /**
   * Send each replica its slice of a batch (nearly equal sizes; replicas with an empty slice get no
   * message). Returns the slice sizes, which replicas got one, and their pending answers.
   */
  private scatter<K extends 'grads-done' | 'eval-done'>(
    kind: 'grads' | 'eval',
    images: Uint8Array,
    labels: Int32Array,
    size: number,
  ): { sizes: number[]; active: number[]; jobs: Promise<Extract<FromReplica, { kind: K }>>[] } {
    const sizes = splitSizes(size, this.handles.length);
    const active: number[] = [];
    const jobs: Promise<Extract<FromReplica, { kind: K }>>[] = [];
    let start = 0;
    sizes.forEach((s, i) => {
      if (s === 0) return;
      const imgs = images.slice(start * this.imagePixels, (start + s) * this.imagePixels);
      const labs = labels.slice(start, start + s);
      jobs.push((this.handles[i] as ReplicaHandle).request<K>({ kind, images: imgs, labels: labs, size: s }, [imgs.buffer as ArrayBuffer, labs.buffer as ArrayBuffer]));
      active.push(i);
      start += s;
    });
    return { sizes, active, jobs };
  }

  /** One synchronous SGD step on a whole batch. */
  async trainStep(images: Uint8Array, labels: Int32Array, size: number, lr: number): Promise<StepResult> {
    const t0 = performance.now();
    const { sizes, active, jobs } = this.scatter<'grads-done'>('grads', images, labels, size);
    const results = await Promise.all(jobs);
    const t1 = performance.now();
    // Weighted average: each replica's gradient is of its sub-batch's mean loss.
    let crossEntropy = 0;
    const weights = results.map((r, k) => {
      const w = (sizes[active[k] as number] as number) / size;
      crossEntropy += w * r.crossEntropy;
      return w;
    });
    if (this.handles.length > 1) {
      const inputs = active.map((i) => this.slots[i] as Float32Array);
      if (!(this.engine === 'onednn' && weightedSumNative(this.avg, inputs, weights))) {
        const avg = this.avg;
        avg.fill(0);
        inputs.forEach((slot, k) => {
          const w = weights[k] as number;
          for (let j = 0; j < avg.length; j++) avg[j] = (avg[j] as number) + w * (slot[j] as number);
        });
      }
    }
    const t2 = performance.now();
    // Every replica applies the update, including any that had no examples this step.
    const applied = await Promise.all(this.handles.map((h) => h.request<'applied'>({ kind: 'apply', lr })));
    const t3 = performance.now();
    return {
      loss: crossEntropy + (applied[0]?.decayLoss ?? 0),
      crossEntropy,
      phaseMs: { grads: t1 - t0, average: t2 - t1, apply: t3 - t2 },
    };
  }

  /** Evaluate one batch split across replicas; returns sums so batches of any size combine exactly. */
  async evalBatch(images: Uint8Array, labels: Int32Array, size: number): Promise<EvalSums> {
    const { jobs } = this.scatter<'eval-done'>('eval', images, labels, size);
    const sums: EvalSums = { lossSum: 0, top1Sum: 0, top5Sum: 0, count: 0 };
    for (const r of await Promise.all(jobs)) {
      sums.lossSum += r.loss * r.count;
      sums.top1Sum += r.top1 * r.count;
      sums.top5Sum += r.top5 * r.count;
      sums.count += r.count;
    }
    return sums;
  }

  /** Average the batch-norm moving statistics (the only state in which replicas differ) into all replicas. */
  async syncBatchNorm(): Promise<void> {
    if (this.handles.length === 1) return;
    const states = await Promise.all(this.handles.map((h) => h.request<'state'>({ kind: 'get-state', nonTrainableOnly: true })));
    const first = (states[0] as Extract<FromReplica, { kind: 'state' }>).weights;
    const averaged: TensorData[] = first.map((w, k) => {
      const data = new Float32Array(w.data.length);
      for (const s of states) {
        const d = (s.weights[k] as TensorData).data;
        for (let j = 0; j < data.length; j++) data[j] = (data[j] as number) + (d[j] as number) / states.length;
      }
      return { ...w, data };
    });
    await Promise.all(this.handles.map((h) => h.request<'state-set'>({ kind: 'set-state', weights: averaged })));
  }

  /** All weights and optimizer slots (from replica 0; call syncBatchNorm first). */
  async getState(): Promise<{ weights: TensorData[]; optimizer: TensorData[] }> {
    const s = await (this.handles[0] as ReplicaHandle).request<'state'>({ kind: 'get-state' });
    return { weights: s.weights, optimizer: s.optimizer };
  }

  async setState(weights: TensorData[], optimizer: TensorData[]): Promise<void> {
    await Promise.all(this.handles.map((h) => h.request<'state-set'>({ kind: 'set-state', weights, optimizer })));
  }

  async exportModel(exportDir: string, labels: string[], meta: Record<string, unknown>): Promise<string> {
    const r = await (this.handles[0] as ReplicaHandle).request<'exported'>({ kind: 'export', exportDir, labels, meta });
    return r.path;
  }

  async close(): Promise<void> {
    await Promise.all(this.handles.map((h) => h.close()));
  }
}
