/**
 * Dynamic batching: single items submitted by concurrent requests are merged into one call of a batch
 * function, as TensorFlow Serving's batching scheduler does. A model call on a batch of 32 costs far
 * less than 32 calls on one, so under load the server's throughput approaches the model's batch rate.
 *
 * Policy:
 * - idle, first item arrives: wait at most `maxWaitMs` for company (or until `maxBatch` items are
 *   queued), then run. The wait bounds the latency a lone request pays for batching.
 * - while a batch runs, new items queue; when it ends, the next batch starts at once with what has
 *   queued (those items have already waited a whole model call). It starts on `setImmediate`, after
 *   the I/O callbacks that arrived during a synchronous model call (decoded images, new requests)
 *   have had their turn to join the queue.
 * - one batch runs at a time: the model uses the compute it is given, and a second concurrent call
 *   would only interleave with the first.
 * - items can be announced before they exist (`expect()`: an image still decoding). A model call
 *   blocks the event loop, so the requests that arrived during it only start decoding once it ends;
 *   without announcements the next batch would start with the few images ready at that moment.
 *   When items are announced, the next batch waits for them (at most `maxWaitMs`, or until the
 *   batch is full), so under load batches stay large.
 */

export interface BatcherOptions {
  /** Most items in one call of the batch function. */
  maxBatch: number;
  /** Longest an item waits, when the batcher is idle, for others to join its batch. */
  maxWaitMs: number;
}

export interface BatcherStats {
  /** Calls of the batch function so far. */
  batches: number;
  /** Items that went through those calls. */
  items: number;
  /** Largest batch so far. */
  largestBatch: number;
  /** Items queued or in the running batch now. */
  pending: number;
}

/** Runs a batch; must return one output per input, in order. */
export type BatchFunction<I, O> = (items: I[]) => O[] | Promise<O[]>;

interface Waiting<I, O> {
  item: I;
  resolve: (out: O) => void;
  reject: (err: unknown) => void;
}

export class Batcher<I, O> {
  private readonly queue: Waiting<I, O>[] = [];
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly counts = { batches: 0, items: 0, largestBatch: 0 };
  /** Items announced with expect() and not yet submitted or withdrawn. */
  private expected = 0;

  constructor(private readonly run: BatchFunction<I, O>, private readonly opts: BatcherOptions) {
    if (!Number.isInteger(opts.maxBatch) || opts.maxBatch < 1) throw new RangeError(`maxBatch must be a whole number >= 1, got ${opts.maxBatch}`);
    if (!(opts.maxWaitMs >= 0)) throw new RangeError(`maxWaitMs must be >= 0, got ${opts.maxWaitMs}`);
  }

  /**
   * Announce an item that will be submitted soon (an image being decoded). Returns a release
   * function: call it once, when the item has been submitted or will never be.
   */
  expect(): () => void {
    this.expected++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.expected--;
      // The last announced item has arrived (or was withdrawn): a waiting batch need not wait longer.
      if (this.expected === 0 && this.running === 0 && this.queue.length > 0 && this.timer) this.flushSoon();
    };
  }

  /** Queue one item; resolves with its output once its batch has run (rejects if that batch failed). */
  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.running > 0) return; // picked up when the running batch ends
      this.schedule();
    });
  }

  /** Run now if the batch is full; otherwise wait for company, at most maxWaitMs. */
  private schedule(): void {
    if (this.queue.length >= this.opts.maxBatch) this.flushSoon();
    else this.timer ??= setTimeout(() => this.flush(), this.opts.maxWaitMs);
  }

  stats(): BatcherStats {
    return { ...this.counts, pending: this.queue.length + this.running };
  }

  /** Resolves once nothing is queued or running. */
  idle(): Promise<void> {
    if (this.queue.length === 0 && this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private flushSoon(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.immediate ??= setImmediate(() => this.flush());
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    if (this.running > 0 || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.opts.maxBatch);
    this.running = batch.length;
    this.counts.batches++;
    this.counts.items += batch.length;
    this.counts.largestBatch = Math.max(this.counts.largestBatch, batch.length);
    void this.runBatch(batch);
  }

  private async runBatch(batch: Waiting<I, O>[]): Promise<void> {
    try {
      const out = await this.run(batch.map((w) => w.item));
      if (!Array.isArray(out) || out.length !== batch.length) {
        throw new Error(`batch function returned ${Array.isArray(out) ? out.length : typeof out} outputs for ${batch.length} inputs`);
      }
      batch.forEach((w, i) => w.resolve(out[i]!));
    } catch (err) {
      for (const w of batch) w.reject(err);
    } finally {
      this.running = 0;
      if (this.queue.length > 0 || this.expected > 0) {
        // Items announced but still decoding: give them up to maxWaitMs to join the next batch.
        if (this.expected > 0 && this.queue.length < this.opts.maxBatch) this.timer ??= setTimeout(() => this.flush(), this.opts.maxWaitMs);
        else this.flushSoon();
      }
      if (this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}
