/**
 * A Google API failure turned into one clear line (a UserError: the CLI prints it alone and exits 2),
 * never a client stack trace. Each kind says what to do: log in, enable the API, grant the role,
 * fix the name, wait for quota.
 */
import { UserError, errorMessage } from '../errors';
import { TITLE_OF } from './apis';

/** google.rpc.Status as the JSON APIs send it (and the `error` of a failed operation). */
export interface GoogleStatus {
  code?: number | null;
  message?: string | null;
  status?: string | null;
  details?: Array<Record<string, unknown>> | null;
  /** Cloud Storage's JSON API adds these. */
  errors?: Array<{ reason?: string; message?: string }> | null;
}

export interface ErrorContext {
  /** What was being done, e.g. `creating endpoint "flowers" in us-central1`. */
  what: string;
  project: string;
  /** The identity the request ran as, when known (for permission errors). */
  identity?: string;
}

/** The user's commands to get credentials, named in every credentials error. */
export const LOGIN_HINT =
  'run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, ' +
  'or GOOGLE_OAUTH_ACCESS_TOKEN to an access token (`gcloud auth print-access-token`)';

function detail(status: GoogleStatus, type: string): Record<string, unknown> | undefined {
  return status.details?.find((d) => typeof d['@type'] === 'string' && (d['@type'] as string).endsWith(type));
}

function metadataOf(d: Record<string, unknown> | undefined): Record<string, string> {
  const m = d?.metadata;
  return m && typeof m === 'object' ? (m as Record<string, string>) : {};
}

/** The status in a thrown error: gaxios (googleapis), @google-cloud/storage's ApiError, or none. */
export function statusOf(err: unknown): { http?: number; status: GoogleStatus } | undefined {
  const e = err as {
    response?: { status?: number; data?: unknown };
    code?: unknown;
    errors?: GoogleStatus['errors'];
    message?: string;
  };
  const data = e?.response?.data as { error?: GoogleStatus } | string | undefined;
  if (data && typeof data === 'object' && data.error && typeof data.error === 'object') {
    return { http: e.response?.status, status: data.error };
  }
  if (typeof data === 'string' && data.trim().startsWith('{')) {
    try {
      const parsed = JSON.parse(data) as { error?: GoogleStatus };
      if (parsed.error) return { http: e.response?.status, status: parsed.error };
    } catch {
      // not JSON after all: fall through
    }
  }
  if (e?.response?.status) return { http: e.response.status, status: { code: e.response.status, message: e.message } };
  // @google-cloud/storage's ApiError: a numeric code and the JSON API's `errors`.
  if (typeof e?.code === 'number') return { http: e.code, status: { code: e.code, message: e.message, errors: e.errors } };
  return undefined;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'ECONNABORTED']);

function networkCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
  }
  return undefined;
}

function isCredentialsError(err: unknown): boolean {
  const m = errorMessage(err);
  return /Could not load the default credentials|Could not refresh access token|invalid_grant|reauth|Unable to detect a Project Id|The file at .* does not exist|Unexpected token .* in JSON at position|No refresh token is set/i.test(m);
}

/** One line for a failed call (the caller throws it). `url` names the host for network errors. */
export function cloudError(err: unknown, ctx: ErrorContext, url?: string): UserError {
  if (err instanceof UserError) return err;
  if (isCredentialsError(err)) {
    return new UserError(`${ctx.what}: no usable Google Cloud credentials (${errorMessage(err).split('\n')[0]}): ${LOGIN_HINT}`);
  }
  const net = networkCode(err);
  const got = statusOf(err);
  if (!got) {
    if (net) return new UserError(`${ctx.what}: cannot reach ${url ? new URL(url).host : 'the API'} (${net}) after retries: check the network, a proxy, or a CLOUDSDK_API_ENDPOINT_OVERRIDES_* variable`);
    if ((err as Error)?.name === 'AbortError' || /timeout/i.test(errorMessage(err))) {
      return new UserError(`${ctx.what}: no answer in time (${errorMessage(err)}); try again, or check the network`);
    }
    return new UserError(`${ctx.what}: ${errorMessage(err)}`);
  }
  return statusError(got.status, ctx, got.http);
}

/** The line for a google.rpc.Status (an HTTP error body, or a failed operation's `error`). */
export function statusError(status: GoogleStatus, ctx: ErrorContext, http?: number, operation = false): UserError {
  const code = http ?? status.code;
  if (operation) {
    // A failed operation's error.message is the service's own account of what went wrong.
    return new UserError(`${ctx.what} failed: ${status.message ?? 'no message'}${status.code ? ` (code ${status.code})` : ''}`);
  }
  const message = (status.message ?? '').split('\n')[0]!.trim();
  const info = detail(status, 'google.rpc.ErrorInfo');
  const reason = (info?.reason as string | undefined) ?? status.errors?.[0]?.reason;
  const meta = metadataOf(info);
  const who = ctx.identity ? ` ${ctx.identity}` : ' the caller';

  if (reason === 'SERVICE_DISABLED' || /has not been used in project|it is disabled/i.test(message)) {
    const service = meta.service ?? /([a-z0-9-]+\.googleapis\.com)/.exec(message)?.[1] ?? 'the API';
    const title = TITLE_OF[service] ? `the ${TITLE_OF[service]} API (${service})` : service;
    return new UserError(
      `${ctx.what}: ${title} is not enabled in project ${ctx.project}: run \`gcloud services enable ${service} --project=${ctx.project}\`, ` +
        'or `imgclass setup-gcp ... --enable_apis`; then wait a minute and try again',
    );
  }
  if (code === 401 || status.status === 'UNAUTHENTICATED') {
    return new UserError(`${ctx.what}: the credentials were refused (${message || 'HTTP 401'}): ${LOGIN_HINT}`);
  }
  if (code === 429 || status.status === 'RESOURCE_EXHAUSTED' || reason === 'RATE_LIMIT_EXCEEDED') {
    const quota = detail(status, 'google.rpc.QuotaFailure') as { violations?: Array<{ subject?: string; description?: string }> } | undefined;
    const which = quota?.violations?.[0]?.description ?? meta.quota_metric ?? meta.quota_limit;
    return new UserError(
      `${ctx.what}: quota exceeded in project ${ctx.project}${which ? ` (${which})` : ''}: ${message || 'HTTP 429'}; ` +
        'wait and try again, or ask for more at https://console.cloud.google.com/iam-admin/quotas',
    );
  }
  if (code === 403 || status.status === 'PERMISSION_DENIED') {
    const permission = meta.permission ?? /permission ['"‘]?([a-zA-Z]+\.[a-zA-Z]+\.[a-zA-Z]+)/.exec(message)?.[1] ??
      /does not have ([a-z]+\.[a-zA-Z]+\.[a-zA-Z]+) access/.exec(message)?.[1];
    const resource = meta.resource ? ` on ${meta.resource}` : '';
    return new UserError(
      `${ctx.what}: permission denied:${who} lacks ${permission ? `the permission ${permission}` : 'a permission'}${resource} ` +
        `(${message || 'HTTP 403'}); grant it a role that has it (e.g. \`gcloud projects add-iam-policy-binding ${ctx.project} ` +
        `--member=user:YOU --role=${roleFor(permission)}\`), or run as an identity that has one`,
    );
  }
  if (code === 404 || status.status === 'NOT_FOUND') {
    return new UserError(`${ctx.what}: not found: ${message || 'HTTP 404'}; check the project (${ctx.project}), the region and the name`);
  }
  if (status.status === 'FAILED_PRECONDITION' || status.status === 'INVALID_ARGUMENT' || code === 400) {
    return new UserError(`${ctx.what}: refused (${status.status ?? `HTTP ${code}`}): ${message}`);
  }
  return new UserError(`${ctx.what}: ${status.status ?? 'error'} (HTTP ${code ?? '?'}): ${message || 'no message'}`);
}

/** A role a user would grant for `permission` (the predefined role of its service). */
export function roleFor(permission: string | undefined): string {
  const service = permission?.split('.')[0];
  switch (service) {
    case 'aiplatform': return 'roles/aiplatform.user';
    case 'dataflow': return 'roles/dataflow.developer';
    case 'storage': return 'roles/storage.objectAdmin';
    case 'serviceusage': return 'roles/serviceusage.serviceUsageAdmin';
    case 'resourcemanager': return 'roles/browser';
    case 'iam': return 'roles/iam.serviceAccountUser';
    case 'logging': return 'roles/logging.viewer';
    case 'cloudbuild': return 'roles/cloudbuild.builds.editor';
    case 'artifactregistry': return 'roles/artifactregistry.writer';
    default: return 'roles/editor';
  }
}
