/**
 * Errors in the shape Google's JSON/REST APIs send them (google.rpc.Status mapped to JSON,
 * https://cloud.google.com/apis/design/errors#http_mapping):
 *   {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED", "details": [...]}}
 * and the canned faults tests inject with failNext().
 */

export type FailKind = 'SERVICE_DISABLED' | 'PERMISSION_DENIED' | 'QUOTA' | 'NOT_FOUND' | 'RESET' | 429 | 500 | 503;

export const FAIL_KINDS: readonly FailKind[] = ['SERVICE_DISABLED', 'PERMISSION_DENIED', 'QUOTA', 'NOT_FOUND', 'RESET', 429, 500, 503];

export class GoogleError extends Error {
  constructor(
    readonly code: number,
    readonly status: string,
    message: string,
    readonly details: unknown[] = [],
    /** Set when the request was refused as not matching the published API (as opposed to an API-level answer). */
    readonly rejected = false,
  ) {
    super(message);
  }

  body(): { error: { code: number; message: string; status: string; details?: unknown[] } } {
    const error: { code: number; message: string; status: string; details?: unknown[] } = { code: this.code, message: this.message, status: this.status };
    if (this.details.length) error.details = this.details;
    return { error };
  }
}

/** A request that does not match the discovery document: 400 INVALID_ARGUMENT with a BadRequest detail. */
export function invalidArgument(message: string, field?: string): GoogleError {
  const details = [
    {
      '@type': 'type.googleapis.com/google.rpc.BadRequest',
      fieldViolations: [{ field: field ?? '', description: message }],
    },
  ];
  return new GoogleError(400, 'INVALID_ARGUMENT', message, details, true);
}

export function notFound(message: string): GoogleError {
  return new GoogleError(404, 'NOT_FOUND', message);
}

export function failedPrecondition(message: string): GoogleError {
  return new GoogleError(400, 'FAILED_PRECONDITION', message);
}

export function badValue(message: string): GoogleError {
  return new GoogleError(400, 'INVALID_ARGUMENT', message);
}

export function alreadyExists(message: string): GoogleError {
  return new GoogleError(409, 'ALREADY_EXISTS', message);
}

export function unauthenticated(): GoogleError {
  return new GoogleError(
    401,
    'UNAUTHENTICATED',
    'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
    [
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: 'ACCESS_TOKEN_TYPE_UNSUPPORTED',
        domain: 'googleapis.com',
      },
    ],
  );
}

/** Human titles of the services, as the console and SERVICE_DISABLED messages name them. */
export const SERVICE_TITLES: Record<string, string> = {
  'aiplatform.googleapis.com': 'Vertex AI API',
  'dataflow.googleapis.com': 'Dataflow API',
  'cloudresourcemanager.googleapis.com': 'Cloud Resource Manager API',
  'serviceusage.googleapis.com': 'Service Usage API',
  'iam.googleapis.com': 'Identity and Access Management (IAM) API',
  'logging.googleapis.com': 'Cloud Logging API',
  'cloudbuild.googleapis.com': 'Cloud Build API',
  'artifactregistry.googleapis.com': 'Artifact Registry API',
  'storage.googleapis.com': 'Cloud Storage API',
};

/**
 * 403 for a service not enabled on the consumer project, as Google sends it (the ErrorInfo,
 * LocalizedMessage and Help details as in the errors quoted in google-gemini/gemini-cli#1343 and
 * GoogleCloudPlatform/vertex-ai-samples#476).
 */
export function serviceDisabled(service: string, projectNumber: string): GoogleError {
  const title = SERVICE_TITLES[service] ?? service;
  const url = `https://console.developers.google.com/apis/api/${service}/overview?project=${projectNumber}`;
  const message =
    `${title} has not been used in project ${projectNumber} before or it is disabled. Enable it by visiting ${url} then retry. ` +
    'If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.';
  return new GoogleError(403, 'PERMISSION_DENIED', message, [
    {
      '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
      reason: 'SERVICE_DISABLED',
      domain: 'googleapis.com',
      metadata: {
        service,
        consumer: `projects/${projectNumber}`,
        serviceTitle: title,
        containerInfo: projectNumber,
        activationUrl: url,
      },
    },
    { '@type': 'type.googleapis.com/google.rpc.LocalizedMessage', locale: 'en-US', message },
    { '@type': 'type.googleapis.com/google.rpc.Help', links: [{ description: 'Google developers console API activation', url }] },
  ]);
}

/**
 * 403 for a missing IAM permission (the shape quoted in dandye/agentic_soc_gemini_enterprise#26
 * for aiplatform: ErrorInfo IAM_PERMISSION_DENIED with metadata.permission and .resource).
 */
export function permissionDenied(service: string, permission: string, resource: string): GoogleError {
  return new GoogleError(403, 'PERMISSION_DENIED', `Permission '${permission}' denied on resource '//${service}/${resource}' (or it may not exist).`, [
    {
      '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
      reason: 'IAM_PERMISSION_DENIED',
      domain: service,
      metadata: { permission, resource },
    },
  ]);
}

/** 429 RESOURCE_EXHAUSTED for a per-minute quota, with ErrorInfo RATE_LIMIT_EXCEEDED and a Help link. */
export function quotaExceeded(service: string, projectNumber: string, metric: string): GoogleError {
  const limit = `${metric.split('/').pop() ?? metric}PerMinutePerProject`;
  return new GoogleError(
    429,
    'RESOURCE_EXHAUSTED',
    `Quota exceeded for quota metric '${metric}' and limit '${limit}' of service '${service}' for consumer 'project_number:${projectNumber}'.`,
    [
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: 'RATE_LIMIT_EXCEEDED',
        domain: 'googleapis.com',
        metadata: {
          service,
          consumer: `projects/${projectNumber}`,
          quota_metric: `${service}/${metric}`,
          quota_limit: limit,
          quota_limit_value: '60',
          quota_location: 'global',
        },
      },
      {
        '@type': 'type.googleapis.com/google.rpc.Help',
        links: [{ description: 'Request a higher quota limit.', url: 'https://cloud.google.com/docs/quotas/help/request_increase' }],
      },
    ],
  );
}

const HTTP_STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  412: 'FAILED_PRECONDITION',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  501: 'UNIMPLEMENTED',
  503: 'UNAVAILABLE',
};

export function statusFor(code: number): string {
  return HTTP_STATUS[code] ?? 'UNKNOWN';
}

/** The injected fault for a kind other than RESET (which has no response at all). */
export function faultFor(kind: Exclude<FailKind, 'RESET'>, ctx: { service: string; projectNumber: string; methodId: string; resource: string }): GoogleError {
  switch (kind) {
    case 'SERVICE_DISABLED':
      return serviceDisabled(ctx.service, ctx.projectNumber);
    case 'PERMISSION_DENIED':
      return permissionDenied(ctx.service, permissionOf(ctx.methodId), ctx.resource);
    case 'QUOTA':
      return quotaExceeded(ctx.service, ctx.projectNumber, 'requests');
    case 'NOT_FOUND':
      return notFound(`Resource ${ctx.resource} was not found (fault injected by the test).`);
    case 429:
      return new GoogleError(429, 'RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).');
    case 500:
      return new GoogleError(500, 'INTERNAL', 'Internal error encountered.');
    case 503:
      return new GoogleError(503, 'UNAVAILABLE', 'The service is currently unavailable.');
  }
}

/**
 * The IAM permission a method needs, by Google's naming rule `service.resourcePlural.verb`
 * (e.g. aiplatform.projects.locations.endpoints.list -> aiplatform.endpoints.list).
 */
export function permissionOf(methodId: string): string {
  const parts = methodId.split('.');
  const service = parts[0] as string;
  const verb = parts[parts.length - 1] as string;
  const resource = parts.length >= 3 ? (parts[parts.length - 2] as string) : 'resources';
  return `${service}.${resource}.${verb === 'deployModel' ? 'deploy' : verb === 'undeployModel' ? 'undeploy' : verb}`;
}
