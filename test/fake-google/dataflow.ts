/**
 * Dataflow (flex template launch, job state, cancel, job messages) and Cloud Logging
 * (entries.list over test-provided entries) in the fake.
 */
import type { Core, Handler, HandlerContext } from './core';
import { GoogleError, badValue, failedPrecondition, notFound } from './errors';
import type { DataflowJob, FakeDataflowJob, JobMessage, LogEntry } from './state';

const TERMINAL = /^JOB_STATE_(DONE|FAILED|CANCELLED|UPDATED|DRAINED)$/;
const IMPORTANCE = ['JOB_MESSAGE_IMPORTANCE_UNKNOWN', 'JOB_MESSAGE_DEBUG', 'JOB_MESSAGE_DETAILED', 'JOB_MESSAGE_BASIC', 'JOB_MESSAGE_WARNING', 'JOB_MESSAGE_ERROR'];

function jobId(now: Date, core: Core): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const d = `${now.getUTCFullYear()}-${p(now.getUTCMonth() + 1)}-${p(now.getUTCDate())}_${p(now.getUTCHours())}_${p(now.getUTCMinutes())}_${p(now.getUTCSeconds())}`;
  return `${d}-${core.newId()}`;
}

function getJob(c: HandlerContext): FakeDataflowJob {
  const project = c.core.project(c.params.projectId as string);
  const j = c.core.state.dataflowJobs.get(c.params.jobId as string);
  if (!j || j.job.projectId !== project.projectId || j.job.location !== c.params.location) {
    throw notFound(`(${c.params.jobId as string}): Could not find workflow with id: ${c.params.jobId as string} in region ${c.params.location as string}.`);
  }
  return j;
}

const launch: Handler = (c) => {
  const project = c.core.project(c.params.projectId as string);
  const lp = c.body.launchParameter as { jobName: string; containerSpecGcsPath?: string; containerSpec?: unknown; parameters?: Record<string, string> };
  if (!lp.containerSpecGcsPath && !lp.containerSpec) {
    throw badValue('Exactly one of launch_parameter.container_spec_gcs_path or launch_parameter.container_spec must be set.');
  }
  if (!/^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$/.test(lp.jobName)) {
    throw badValue(`(${lp.jobName}): The workflow name is not a valid Cloud Label. Labels must be 1-1024 characters long, begin with [a-z] and contain only [-a-z0-9].`);
  }
  for (const j of c.core.state.dataflowJobs.values()) {
    if (j.job.name === lp.jobName && j.job.projectId === project.projectId && !TERMINAL.test(j.job.currentState ?? '')) {
      throw new GoogleError(409, 'ALREADY_EXISTS', `(${j.job.id as string}): The workflow could not be created. Causes: (${j.job.id as string}): There is already an active job named ${lp.jobName}.`);
    }
  }
  if (c.body.validateOnly) return {};
  const now = new Date();
  const job: DataflowJob = {
    id: jobId(now, c.core),
    projectId: project.projectId,
    name: lp.jobName,
    type: 'JOB_TYPE_BATCH',
    location: c.params.location,
    createTime: now.toISOString(),
    startTime: now.toISOString(),
    currentStateTime: '1970-01-01T00:00:00Z',
  };
  c.core.state.dataflowJobs.set(job.id as string, { job, plan: [...c.core.state.dataflowPlan] });
  return { job };
};

const jobsGet: Handler = (c) => {
  const j = getJob(c);
  const next = j.plan.length > 1 ? j.plan.shift() : j.plan[0];
  if (next && next !== j.job.currentState) {
    j.job.currentState = next;
    j.job.currentStateTime = c.core.now();
  }
  return j.job;
};

const jobsUpdate: Handler = (c) => {
  const j = getJob(c);
  const body = c.body as DataflowJob;
  const fields = Object.keys(body).filter((k) => !['id', 'projectId', 'name', 'location'].includes(k));
  if (fields.length !== 1 || fields[0] !== 'requestedState') {
    throw new GoogleError(400, 'INVALID_ARGUMENT', `fake-google: jobs.update implements only {requestedState}; got fields ${fields.join(', ')}`, [], true);
  }
  if (body.requestedState !== 'JOB_STATE_CANCELLED') {
    throw new GoogleError(400, 'INVALID_ARGUMENT', `fake-google: jobs.update implements only requestedState JOB_STATE_CANCELLED, not ${String(body.requestedState)}`, [], true);
  }
  if (TERMINAL.test(j.job.currentState ?? '')) {
    throw failedPrecondition(`(${j.job.id as string}): Workflow modification failed. Causes: (${j.job.id as string}): Could not cancel workflow; job is in state ${j.job.currentState as string}.`);
  }
  j.job.requestedState = 'JOB_STATE_CANCELLED';
  j.job.currentState = 'JOB_STATE_CANCELLING';
  j.job.currentStateTime = c.core.now();
  j.plan = ['JOB_STATE_CANCELLED'];
  return j.job;
};

const messagesList: Handler = (c) => {
  const j = getJob(c);
  const min = IMPORTANCE.indexOf((c.query.minimumImportance as string | undefined) ?? 'JOB_MESSAGE_IMPORTANCE_UNKNOWN');
  const start = c.query.startTime ? Date.parse(c.query.startTime as string) : -Infinity;
  const end = c.query.endTime ? Date.parse(c.query.endTime as string) : Infinity;
  const all = (c.core.state.jobMessages.get(j.job.id as string) ?? [])
    .filter((m: JobMessage) => IMPORTANCE.indexOf(m.messageImportance ?? 'JOB_MESSAGE_IMPORTANCE_UNKNOWN') >= min)
    .filter((m) => {
      const t = Date.parse(m.time ?? '');
      return !(t < start) && !(t >= end);
    })
    .sort((a, b) => String(a.time).localeCompare(String(b.time)));
  const page = c.core.page(all, c.query, 50);
  return { jobMessages: page.items, ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}) };
};

/**
 * The Logging query language subset a job log follower uses: `FIELD="VALUE"` comparisons (=, !=,
 * >, >=, <, <=) joined by AND, on resource.type, resource.labels.*, logName, severity, timestamp,
 * insertId. Anything else is refused by name rather than ignored.
 */
function logFilter(filter: string | undefined): (e: LogEntry) => boolean {
  if (!filter || !filter.trim()) return () => true;
  const SEVERITY = ['DEFAULT', 'DEBUG', 'INFO', 'NOTICE', 'WARNING', 'ERROR', 'CRITICAL', 'ALERT', 'EMERGENCY'];
  const terms = filter
    .split(/\s+AND\s+|\n+/)
    .map((t) => t.trim())
    .filter(Boolean)
    .map((t) => {
      const m = /^([A-Za-z_.]+)\s*(>=|<=|!=|=|>|<)\s*(?:"((?:[^"\\]|\\.)*)"|(\S+))$/.exec(t);
      if (!m) throw new GoogleError(400, 'INVALID_ARGUMENT', `fake-google: log filter term "${t}" is not one the fake evaluates (FIELD op "VALUE", joined by AND)`, [], true);
      const [, field, op, quoted, bare] = m as unknown as [string, string, string, string | undefined, string | undefined];
      const want = quoted !== undefined ? quoted.replace(/\\(.)/g, '$1') : (bare as string);
      let get: (e: LogEntry) => string | undefined;
      let cmp: (a: string, b: string) => number = (a, b) => a.localeCompare(b);
      if (field === 'resource.type') get = (e) => e.resource?.type ?? undefined;
      else if (field.startsWith('resource.labels.')) get = (e) => e.resource?.labels?.[field.slice('resource.labels.'.length)];
      else if (field === 'logName' || field === 'insertId') get = (e) => (e[field] as string | undefined) ?? undefined;
      else if (field === 'timestamp') {
        get = (e) => e.timestamp ?? undefined;
        cmp = (a, b) => Date.parse(a) - Date.parse(b);
      } else if (field === 'severity') {
        get = (e) => e.severity ?? 'DEFAULT';
        cmp = (a, b) => SEVERITY.indexOf(a) - SEVERITY.indexOf(b);
        if (!SEVERITY.includes(want)) throw badValue(`Unknown severity "${want}" in filter.`);
      } else {
        throw new GoogleError(400, 'INVALID_ARGUMENT', `fake-google: log filter field "${field}" is not one the fake evaluates`, [], true);
      }
      return (e: LogEntry) => {
        const v = get(e);
        if (v === undefined) return op === '!=';
        const d = cmp(v, want);
        return op === '=' ? d === 0 : op === '!=' ? d !== 0 : op === '>' ? d > 0 : op === '>=' ? d >= 0 : op === '<' ? d < 0 : d <= 0;
      };
    });
  return (e) => terms.every((t) => t(e));
}

const entriesList: Handler = (c) => {
  const names = c.body.resourceNames as string[];
  const projects = names.map((n) => {
    const m = /^projects\/([^/]+)$/.exec(n);
    if (!m) throw new GoogleError(400, 'INVALID_ARGUMENT', `fake-google: resource name "${n}" is not projects/PROJECT (the only form the fake holds)`, [], true);
    return c.core.project(m[1] as string);
  });
  const keep = logFilter(c.body.filter as string | undefined);
  const order = ((c.body.orderBy as string | undefined) ?? 'timestamp asc').trim();
  if (!/^timestamp( (asc|desc))?$/.test(order)) throw badValue(`Invalid orderBy "${order}"; only "timestamp asc" and "timestamp desc" are supported.`);
  const all = c.core.state.logEntries
    .filter((e) => !e.logName || projects.some((p) => e.logName?.startsWith(`projects/${p.projectId}/`) || e.logName?.startsWith(`projects/${p.projectNumber}/`)))
    .filter(keep)
    .sort((a, b) => Date.parse(a.timestamp ?? '') - Date.parse(b.timestamp ?? ''));
  if (order.endsWith('desc')) all.reverse();
  const page = c.core.page(all, { pageSize: c.body.pageSize === undefined ? '50' : String(c.body.pageSize), ...(c.body.pageToken ? { pageToken: c.body.pageToken } : {}) }, 50);
  return { entries: page.items, ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}) };
};

export const dataflowHandlers: Record<string, Handler> = {
  'dataflow.projects.locations.flexTemplates.launch': launch,
  'dataflow.projects.locations.jobs.get': jobsGet,
  'dataflow.projects.locations.jobs.update': jobsUpdate,
  'dataflow.projects.locations.jobs.messages.list': messagesList,
  'logging.entries.list': entriesList,
};
