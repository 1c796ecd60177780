/**
 * The one cloud client every gcp call goes through: the googleapis API objects on the right roots
 * (Vertex AI's regional host, or a CLOUDSDK_API_ENDPOINT_OVERRIDES_* root), credentials, retries with
 * exponential backoff, a timeout on every request, errors as one clear line, and dry runs.
 *
 * A dry run goes through the same code as a real run, up to the HTTP layer: gaxios hands the finished
 * request (method, URL, body) to our adapter instead of the network; the adapter prints it with the
 * equivalent gcloud command and answers what the caller says a real API would, so the steps after it
 * can be shown too. No credentials are looked up and nothing is sent.
 */
import { aiplatform_v1 } from 'googleapis/build/src/apis/aiplatform/v1';
import { cloudresourcemanager_v1 } from 'googleapis/build/src/apis/cloudresourcemanager/v1';
import { serviceusage_v1 } from 'googleapis/build/src/apis/serviceusage/v1';
import { iam_v1 } from 'googleapis/build/src/apis/iam/v1';
import { logging_v2 } from 'googleapis/build/src/apis/logging/v2';
import { dataflow_v1b3 } from 'googleapis/build/src/apis/dataflow/v1b3';
import { cloudbuild_v1 } from 'googleapis/build/src/apis/cloudbuild/v1';
import { artifactregistry_v1 } from 'googleapis/build/src/apis/artifactregistry/v1';
import { storage_v1 } from 'googleapis/build/src/apis/storage/v1';
import type { GlobalOptions, MethodOptions } from 'googleapis-common';
import { UserError } from '../errors';
import { apiRoot, apiOverride, API_NAMES, ApiName } from './apis';
import { apiAuth, knownIdentity } from './auth';
import { cloudError } from './errors';
import { Reporter, terminalReporter } from './report';

export interface CloudOptions {
  project: string;
  region: string;
  /** Print every request instead of sending it. */
  dryRun?: boolean;
  reporter?: Reporter;
  env?: NodeJS.ProcessEnv;
  /** Per HTTP request (each retry has its own); default 60 s. */
  timeoutMs?: number;
  /** Retries after the first try; default 5 (about 15 s of backoff in all). */
  retries?: number;
}

export interface CallSpec<T> {
  /** What the call does, for messages: `creating endpoint "flowers" in us-central1`. */
  what: string;
  /** The gcloud command that does the same, shown in dry runs. */
  gcloud?: string;
  /**
   * A POST that is safe to send twice (a read such as :predict, or a change that ends in the same
   * state), so it is retried like GET. Creates that would make a second resource are not.
   */
  retryPost?: boolean;
  /** What a dry run pretends the API answered. */
  dryRun?: T;
}

/** A request as sent (or, in a dry run, as it would have been). */
export interface PlannedRequest {
  what: string;
  method: string;
  url: string;
  body?: unknown;
  gcloud?: string;
}

export const DEFAULT_TIMEOUT_MS = 60_000;
const DEFAULT_RETRIES = 5;

type Factories = {
  AIPLATFORM: aiplatform_v1.Aiplatform;
  CLOUDRESOURCEMANAGER: cloudresourcemanager_v1.Cloudresourcemanager;
  SERVICEUSAGE: serviceusage_v1.Serviceusage;
  IAM: iam_v1.Iam;
  LOGGING: logging_v2.Logging;
  DATAFLOW: dataflow_v1b3.Dataflow;
  CLOUDBUILD: cloudbuild_v1.Cloudbuild;
  ARTIFACTREGISTRY: artifactregistry_v1.Artifactregistry;
  STORAGE: storage_v1.Storage;
};

const PROJECT_ID = /^[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
const REGION = /^[a-z]+-[a-z]+[0-9]+$/;

/** The project and region checked as Google Cloud names; the message names the flag. */
export function checkProjectRegion(project: string, region: string): void {
  if (!project) throw new UserError('no project given: pass --project PROJECT_ID (notebooks: the `project` parameter)');
  if (!PROJECT_ID.test(project)) {
    throw new UserError(`project "${project}" is not a Google Cloud project id: 6 to 30 lowercase letters, digits or hyphens, starting with a letter (the id, not the display name or number)`);
  }
  if (!REGION.test(region)) throw new UserError(`region "${region}" is not a Google Cloud region such as us-central1 or europe-west4 (--region)`);
}

export class CloudClient {
  readonly project: string;
  readonly region: string;
  readonly dryRun: boolean;
  readonly reporter: Reporter;
  readonly env: NodeJS.ProcessEnv;
  /**
   * IMGCLASS_POLL_MS: the first pause between polls of every cloud wait (operations, Dataflow and
   * training jobs), instead of each wait's own (1 s, 3 s, 15 s). The tests against the fake APIs set
   * it short; a user has no reason to.
   */
  readonly pollMs: number | undefined;
  /** Every request a dry run printed, in order (tests and notebooks read it). */
  readonly planned: PlannedRequest[] = [];
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly apis = new Map<ApiName, unknown>();
  private identity: Promise<string | undefined> | undefined;
  private overrides: ReadonlyArray<readonly [google: string, override: string]> | undefined;

  constructor(o: CloudOptions) {
    checkProjectRegion(o.project, o.region);
    this.project = o.project;
    this.region = o.region;
    this.dryRun = o.dryRun ?? false;
    this.reporter = o.reporter ?? terminalReporter();
    this.env = o.env ?? process.env;
    this.timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.retries = o.retries ?? DEFAULT_RETRIES;
    const poll = Number(this.env.IMGCLASS_POLL_MS);
    this.pollMs = Number.isFinite(poll) && poll > 0 ? poll : undefined;
  }

  /** The root URL of `api` for this client's region. */
  root(api: ApiName): string {
    return apiRoot(api, this.region, this.env);
  }

  /**
   * A CLOUDSDK_API_ENDPOINT_OVERRIDES_* root in place of Google's at the start of `url`. googleapis
   * resolves its paths (`/v1b3/projects/...`) against a global rootUrl as absolute paths, which
   * drops a path in the root (`http://host:9000/dataflow/`), so the APIs are made with Google's
   * roots and the override is put in here, on the finished URL.
   */
  private overridden(url: string): string {
    // Read from the environment (and checked) on the first request, not on every one.
    this.overrides ??= API_NAMES.flatMap((api) => {
      const o = apiOverride(api, this.env);
      return o ? [[apiRoot(api, this.region, {}), o] as const] : [];
    });
    for (const [google, o] of this.overrides) {
      if (url.startsWith(google)) return o + url.slice(google.length);
    }
    return url;
  }

  private options(api: ApiName): GlobalOptions {
    return {
      rootUrl: apiRoot(api, this.region, {}),
      // A dry run sends nothing, so it needs no credentials (and must not look any up).
      ...(this.dryRun ? {} : { auth: apiAuth(this.env) }),
    };
  }

  private api<K extends ApiName>(name: K, make: (o: GlobalOptions) => Factories[K]): Factories[K] {
    let a = this.apis.get(name) as Factories[K] | undefined;
    if (!a) {
      a = make(this.options(name));
      this.apis.set(name, a);
    }
    return a;
  }

  aiplatform(): aiplatform_v1.Aiplatform {
    return this.api('AIPLATFORM', (o) => new aiplatform_v1.Aiplatform(o));
  }
  resourceManager(): cloudresourcemanager_v1.Cloudresourcemanager {
    return this.api('CLOUDRESOURCEMANAGER', (o) => new cloudresourcemanager_v1.Cloudresourcemanager(o));
  }
  serviceUsage(): serviceusage_v1.Serviceusage {
    return this.api('SERVICEUSAGE', (o) => new serviceusage_v1.Serviceusage(o));
  }
  iam(): iam_v1.Iam {
    return this.api('IAM', (o) => new iam_v1.Iam(o));
  }
  logging(): logging_v2.Logging {
    return this.api('LOGGING', (o) => new logging_v2.Logging(o));
  }
  dataflow(): dataflow_v1b3.Dataflow {
    return this.api('DATAFLOW', (o) => new dataflow_v1b3.Dataflow(o));
  }
  cloudbuild(): cloudbuild_v1.Cloudbuild {
    return this.api('CLOUDBUILD', (o) => new cloudbuild_v1.Cloudbuild(o));
  }
  artifactRegistry(): artifactregistry_v1.Artifactregistry {
    return this.api('ARTIFACTREGISTRY', (o) => new artifactregistry_v1.Artifactregistry(o));
  }
  /** The JSON API of Cloud Storage through googleapis: bucket metadata and IAM (objects go through lib/storage). */
  storageJson(): storage_v1.Storage {
    return this.api('STORAGE', (o) => new storage_v1.Storage(o));
  }

  /** The identity requests run as, when the credentials say so without a request. */
  callerIdentity(): Promise<string | undefined> {
    if (this.dryRun) return Promise.resolve(undefined);
    this.identity ??= knownIdentity(this.env);
    return this.identity;
  }

  /** Run one API method: `fn` gets the per-call options and must pass them to the googleapis method. */
  async call<T>(spec: CallSpec<T>, fn: (options: MethodOptions) => Promise<{ data: T }>): Promise<T> {
    const methods = ['GET', 'HEAD', 'PUT', 'OPTIONS', 'DELETE', ...(spec.retryPost ? ['POST', 'PATCH'] : [])];
    let lastUrl: string | undefined;
    const options: MethodOptions = {
      timeout: this.timeoutMs,
      retry: true,
      retryConfig: {
        retry: this.retries,
        noResponseRetries: this.retries,
        retryDelay: 500,
        retryDelayMultiplier: 2,
        maxRetryDelay: 16_000,
        httpMethodsToRetry: methods,
        statusCodesToRetry: [[429, 429], [500, 500], [502, 504]],
        onRetryAttempt: (err) => {
          const status = (err as { response?: { status?: number } }).response?.status;
          const why = status ? `HTTP ${status}` : ((err as { code?: string }).code ?? 'no response');
          // gaxios counts the retry before it calls this hook, so the count is this retry's number.
          const attempt = (err as { config?: { retryConfig?: { currentRetryAttempt?: number } } }).config?.retryConfig?.currentRetryAttempt ?? 1;
          this.reporter.line(`  ${spec.what}: ${why}, retrying (${attempt} of ${this.retries})`);
        },
      },
    };
    if (this.dryRun) {
      options.adapter = (async (prepared: { method?: string; url: URL | string; body?: unknown; data?: unknown }) => {
        const planned: PlannedRequest = {
          what: spec.what,
          method: (prepared.method ?? 'GET').toUpperCase(),
          url: this.overridden(prepared.url.toString()),
          body: requestBody(prepared),
          gcloud: spec.gcloud,
        };
        this.planned.push(planned);
        this.reporter.line(formatPlanned(planned));
        return { config: prepared, data: spec.dryRun ?? {}, status: 200, statusText: 'OK (dry run)', headers: new Headers() };
      }) as unknown as MethodOptions['adapter'];
    } else {
      const prev = options.adapter;
      options.adapter = (async (prepared: { url: URL | string }, next: (p: unknown) => Promise<unknown>) => {
        lastUrl = this.overridden(prepared.url.toString());
        prepared.url = new URL(lastUrl);
        return prev ? (prev as unknown as (p: unknown, n: unknown) => Promise<unknown>)(prepared, next) : next(prepared);
      }) as unknown as MethodOptions['adapter'];
    }
    try {
      const res = await fn(options);
      return res.data;
    } catch (err) {
      throw cloudError(err, { what: spec.what, project: this.project, identity: await this.callerIdentity().catch(() => undefined) }, lastUrl);
    }
  }
}

function requestBody(prepared: { body?: unknown; data?: unknown }): unknown {
  const raw = prepared.data ?? prepared.body;
  if (typeof raw === 'string') {
    try {
      return JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  return raw ?? undefined;
}

/** How a dry run shows a request: what, method and URL, the body, the gcloud line. */
export function formatPlanned(p: PlannedRequest): string {
  const lines = [`dry run: ${p.what}`, `  ${p.method} ${p.url}`];
  if (p.body !== undefined && p.body !== null && !(typeof p.body === 'object' && Object.keys(p.body as object).length === 0)) {
    lines.push(...JSON.stringify(p.body, null, 2).split('\n').map((l) => `  ${l}`));
  }
  if (p.gcloud) lines.push(`  gcloud: ${p.gcloud}`);
  return lines.join('\n');
}
