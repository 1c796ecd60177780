/**
 * Waiting for a long-running operation (google.longrunning.Operation: Vertex AI uploads and
 * deployments, Service Usage enables) to its end: polled with backoff from 1 s, the wait shown as a
 * status with the elapsed time, a failed operation turned into one line with its error.message.
 */
import { UserError } from '../errors';
import type { CloudClient } from './client';
import { statusError, GoogleStatus } from './errors';

export interface Operation {
  name?: string | null;
  done?: boolean | null;
  error?: GoogleStatus | null;
  response?: { [key: string]: unknown } | null;
  metadata?: { [key: string]: unknown } | null;
}

export interface WaitOptions {
  /** What the operation does, for the status line and errors. */
  what: string;
  /** Reads the operation by name (the API's operations.get), passing the per-call options on. */
  get: (name: string, options: Parameters<Parameters<CloudClient['call']>[1]>[0]) => Promise<{ data: Operation }>;
  /** Give up after this long (the operation goes on in the cloud); default 2 h. */
  timeoutMs?: number;
  /** First delay between polls; default 1 s, growing ×1.5 up to maxDelayMs. */
  initialDelayMs?: number;
  maxDelayMs?: number;
}

/** `42 s`, `3 min 5 s`: how long a cloud wait has taken, for status lines. */
export function formatElapsed(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** Wait `ms` between two polls; true when `signal` was aborted first (or already): a Ctrl-C ends the wait. */
export function pause(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(true);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(false);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Poll `op` until done; returns its `response` (throws a UserError when the operation failed). */
export async function waitForOperation(client: CloudClient, op: Operation, o: WaitOptions): Promise<Record<string, unknown>> {
  const started = Date.now();
  const deadline = started + (o.timeoutMs ?? 2 * 3600_000);
  let delay = o.initialDelayMs ?? client.pollMs ?? 1000;
  const maxDelay = o.maxDelayMs ?? 15_000;
  let current = op;
  try {
    while (!current.done) {
      if (!current.name) throw new UserError(`${o.what}: the API answered an operation without a name; cannot follow it`);
      if (Date.now() > deadline) {
        throw new UserError(`${o.what}: still running after ${formatElapsed(Date.now() - started)}; it goes on in the cloud: follow it with \`gcloud ai operations describe ${current.name}\``);
      }
      client.reporter.status(`${o.what}: running, ${formatElapsed(Date.now() - started)}`);
      await pause(delay);
      delay = Math.min(maxDelay, delay * 1.5);
      const name = current.name;
      current = await client.call({ what: `${o.what} (checking operation ${name})` }, (opts) => o.get(name, opts));
    }
  } finally {
    client.reporter.endStatus();
  }
  if (current.error) {
    throw statusError(current.error, { what: `${o.what} (operation ${current.name ?? ''})`, project: client.project }, undefined, true);
  }
  client.reporter.line(`${o.what}: done in ${formatElapsed(Date.now() - started)}`);
  return current.response ?? {};
}

/** A dry run's stand-in for an operation that finished with `response`. */
export function dryRunOperation(response: Record<string, unknown>): Operation {
  return { name: 'operations/dry-run', done: true, response };
}
