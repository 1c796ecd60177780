/**
 * Following a launched Dataflow job to its end: jobs.get with backoff, a line for each state change
 * and each new job message, a status with the elapsed time while waiting; on failure the job's error
 * messages and one clear line; an interrupt (Ctrl-C, a notebook's stop button) asks whether to
 * cancel the job (jobs.update requestedState JOB_STATE_CANCELLED) or leave it running.
 */
import type { dataflow_v1b3 } from 'googleapis/build/src/apis/dataflow/v1b3';
import { UserError } from '../../errors';
import type { CloudClient } from '../client';
import { formatElapsed, pause } from '../operations';
import type { LaunchedJob } from '../../backend';
import { isTerminalJobState, jobStateLabel, formatJobMessage } from './job';

type Job = dataflow_v1b3.Schema$Job;
type JobMessage = dataflow_v1b3.Schema$JobMessage;

export interface FollowOptions {
  /** Aborted while waiting: ask confirmCancel, then cancel the job or stop following it. */
  signal?: AbortSignal;
  /** Whether to cancel after an interrupt; without it the job is left running. */
  confirmCancel?: (job: LaunchedJob) => Promise<boolean>;
  /** First pause between jobs.get calls; default 3 s, growing ×1.5 up to maxDelayMs. */
  initialDelayMs?: number;
  /** Longest pause; default 30 s (a job runs for minutes; its state changes rarely). */
  maxDelayMs?: number;
  /** The folder the job writes into, for the message after a cancel. */
  outputDir?: string;
}

export const DEFAULT_POLL_MS = 3000;
const DEFAULT_MAX_POLL_MS = 30_000;

function where(job: LaunchedJob): string {
  return `--region=${job.region} --project=${job.project}`;
}

/** The gcloud lines that watch and cancel `job`. */
export function watchCommands(job: LaunchedJob): { describe: string; cancel: string } {
  return {
    describe: `gcloud dataflow jobs describe ${job.id} ${where(job)}`,
    cancel: `gcloud dataflow jobs cancel ${job.id} ${where(job)}`,
  };
}

/** jobs.get: a GET, so the client retries it on 429 and 5xx. */
export function getJob(c: CloudClient, job: LaunchedJob): Promise<Job> {
  return c.call<Job>(
    { what: `reading Dataflow job ${job.name} (${job.id})`, gcloud: watchCommands(job).describe },
    (o) => c.dataflow().projects.locations.jobs.get({ projectId: job.project, location: job.region, jobId: job.id }, o),
  );
}

/** jobs.update with requestedState JOB_STATE_CANCELLED (a PUT: repeating it changes nothing). */
export function cancelJob(c: CloudClient, job: LaunchedJob): Promise<Job> {
  const requestBody: Job = { requestedState: 'JOB_STATE_CANCELLED' };
  return c.call<Job>(
    { what: `cancelling Dataflow job ${job.name} (${job.id})`, gcloud: watchCommands(job).cancel },
    (o) => c.dataflow().projects.locations.jobs.update({ projectId: job.project, location: job.region, jobId: job.id, requestBody }, o),
  );
}

/** Every message of `job` at `minimumImportance` or above (and from `startTime` on), all pages. */
export async function jobMessages(c: CloudClient, job: LaunchedJob, minimumImportance: string, startTime?: string): Promise<JobMessage[]> {
  const out: JobMessage[] = [];
  let pageToken: string | undefined;
  do {
    const params: dataflow_v1b3.Params$Resource$Projects$Locations$Jobs$Messages$List = {
      projectId: job.project,
      location: job.region,
      jobId: job.id,
      minimumImportance,
      ...(startTime ? { startTime } : {}),
      ...(pageToken ? { pageToken } : {}),
    };
    const page = await c.call<dataflow_v1b3.Schema$ListJobMessagesResponse>(
      { what: `reading the messages of Dataflow job ${job.name} (${job.id})` },
      (o) => c.dataflow().projects.locations.jobs.messages.list(params, o),
    );
    out.push(...(page.jobMessages ?? []));
    pageToken = page.nextPageToken ?? undefined;
  } while (pageToken);
  return out;
}

/**
 * Follow `job` until it is in a terminal state. Returns the job when it is JOB_STATE_DONE; throws a
 * UserError with one clear line otherwise (failed: its first error message; cancelled; interrupted).
 */
export async function followJob(c: CloudClient, job: LaunchedJob, o: FollowOptions = {}): Promise<Job> {
  const started = Date.now();
  const initial = o.initialDelayMs ?? DEFAULT_POLL_MS;
  const maxDelay = Math.max(initial, o.maxDelayMs ?? DEFAULT_MAX_POLL_MS);
  let delay = initial;
  let lastState: string | undefined;
  // Messages already shown, by id (startTime is inclusive, so the last one comes back each time).
  const shown = new Set<string>();
  let since: string | undefined;
  let cancelRequested = false;
  let current: Job;
  try {
    for (;;) {
      current = await getJob(c, job);
      const state = current.currentState ?? 'JOB_STATE_UNKNOWN';
      if (state !== lastState) {
        c.reporter.line(`Dataflow job ${job.name}: ${jobStateLabel(state)}`);
        lastState = state;
      }
      for (const m of await jobMessages(c, job, 'JOB_MESSAGE_BASIC', since)) {
        const key = m.id ?? `${m.time}|${m.messageText}`;
        if (shown.has(key)) continue;
        shown.add(key);
        c.reporter.line(`  ${formatJobMessage(m)}`);
        if (m.time && (!since || m.time > since)) since = m.time;
      }
      if (isTerminalJobState(state)) break;
      c.reporter.status(`Dataflow job ${job.name}: ${jobStateLabel(state)}, ${formatElapsed(Date.now() - started)}`);
      const interrupted = await pause(delay, cancelRequested ? undefined : o.signal);
      delay = Math.min(maxDelay, delay * 1.5);
      if (!interrupted) continue;
      c.reporter.endStatus();
      const cancel = o.confirmCancel ? await o.confirmCancel(job) : false;
      if (!cancel) {
        const w = watchCommands(job);
        throw new UserError(
          `stopped following Dataflow job ${job.name} (${job.id}); it goes on running, and billing: ` +
            `watch it at ${job.consoleUrl} or with \`${w.describe}\`, cancel it with \`${w.cancel}\``,
        );
      }
      await cancelJob(c, job);
      c.reporter.line(`Dataflow job ${job.name}: cancel requested; waiting for the workers to stop`);
      cancelRequested = true;
      delay = initial;
    }
  } finally {
    c.reporter.endStatus();
  }
  const state = current.currentState;
  if (state === 'JOB_STATE_DONE') {
    c.reporter.line(`Dataflow job ${job.name}: done in ${formatElapsed(Date.now() - started)}`);
    return current;
  }
  if (state === 'JOB_STATE_CANCELLED' && cancelRequested) {
    // Beam's file sinks write into OUTPUT/beam-temp-<prefix>-<uuid>/ and rename into place only at
    // the end (apache/beam sdks/python/apache_beam/io/filebasedsink.py, _create_temp_dir and
    // finalize_write, at 0389e9a8ad7f0b9c22fa94537c3439faaf0768fc).
    throw new UserError(`Dataflow job ${job.name} (${job.id}) was cancelled as you asked; it may have left beam-temp-* folders of unfinished shards in the output folder: remove them (\`gcloud storage rm -r ${o.outputDir ?? 'OUTPUT'}/beam-temp-*\`) before using the folder again`);
  }
  if (state === 'JOB_STATE_FAILED') {
    const errors = await jobMessages(c, job, 'JOB_MESSAGE_ERROR');
    const fresh = errors.filter((m) => !shown.has(m.id ?? `${m.time}|${m.messageText}`));
    if (fresh.length) {
      c.reporter.line(`errors of Dataflow job ${job.name}:`);
      for (const m of fresh) c.reporter.line(`  ${formatJobMessage(m)}`);
    }
    const first = (errors[0]?.messageText ?? '').split('\n').map((l) => l.trim()).find((l) => l !== '');
    throw new UserError(
      `Dataflow job ${job.name} (${job.id}) failed: ${first ?? 'the job gave no error message'}` +
        `${errors.length > 1 ? ` (and ${errors.length - 1} more error message${errors.length === 2 ? '' : 's'} above)` : ''}; the job's page: ${job.consoleUrl}`,
    );
  }
  throw new UserError(`Dataflow job ${job.name} (${job.id}) ended ${jobStateLabel(state)}, not done (changed from outside, e.g. the console?); its page: ${job.consoleUrl}`);
}
