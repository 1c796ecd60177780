/**
 * The Google APIs the gcp backend calls: their service names (what `gcloud services enable` takes),
 * their default roots, and gcloud's way of pointing them elsewhere. A user behind a proxy or a
 * private endpoint, and our tests' fake server, set `CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>` to a URL
 * root (e.g. `http://127.0.0.1:9000/`), exactly as they would for gcloud.
 */
import { UserError } from '../errors';

export type ApiName =
  | 'AIPLATFORM'
  | 'DATAFLOW'
  | 'CLOUDRESOURCEMANAGER'
  | 'SERVICEUSAGE'
  | 'IAM'
  | 'LOGGING'
  | 'CLOUDBUILD'
  | 'ARTIFACTREGISTRY'
  | 'STORAGE';

export const API_NAMES: readonly ApiName[] = [
  'AIPLATFORM', 'DATAFLOW', 'CLOUDRESOURCEMANAGER', 'SERVICEUSAGE', 'IAM', 'LOGGING', 'CLOUDBUILD', 'ARTIFACTREGISTRY', 'STORAGE',
];

/** The service name of each API, as Service Usage and `gcloud services enable` know it. */
export const SERVICE_OF: Record<ApiName, string> = {
  AIPLATFORM: 'aiplatform.googleapis.com',
  DATAFLOW: 'dataflow.googleapis.com',
  CLOUDRESOURCEMANAGER: 'cloudresourcemanager.googleapis.com',
  SERVICEUSAGE: 'serviceusage.googleapis.com',
  IAM: 'iam.googleapis.com',
  LOGGING: 'logging.googleapis.com',
  CLOUDBUILD: 'cloudbuild.googleapis.com',
  ARTIFACTREGISTRY: 'artifactregistry.googleapis.com',
  STORAGE: 'storage.googleapis.com',
};

/** Human names for messages ("the Vertex AI API is not enabled ..."). */
export const TITLE_OF: Record<string, string> = {
  'aiplatform.googleapis.com': 'Vertex AI',
  'dataflow.googleapis.com': 'Dataflow',
  'cloudresourcemanager.googleapis.com': 'Cloud Resource Manager',
  'serviceusage.googleapis.com': 'Service Usage',
  'iam.googleapis.com': 'IAM',
  'logging.googleapis.com': 'Cloud Logging',
  'cloudbuild.googleapis.com': 'Cloud Build',
  'artifactregistry.googleapis.com': 'Artifact Registry',
  'storage.googleapis.com': 'Cloud Storage',
  'compute.googleapis.com': 'Compute Engine',
};

export function overrideVariable(api: ApiName): string {
  return `CLOUDSDK_API_ENDPOINT_OVERRIDES_${api}`;
}

/** The override of `api` in `env`, checked and with a trailing slash; undefined when unset. */
export function apiOverride(api: ApiName, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const raw = env[overrideVariable(api)]?.trim();
  if (!raw) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UserError(`${overrideVariable(api)}="${raw}" is not a URL; set it to an API root such as http://127.0.0.1:9000/ or unset it`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UserError(`${overrideVariable(api)}="${raw}" must be an http:// or https:// URL`);
  }
  return url.href.endsWith('/') ? url.href : `${url.href}/`;
}

/**
 * The root URL requests to `api` go to: the override when set, else Google's. Vertex AI is
 * regional: its resources in REGION are served only by https://REGION-aiplatform.googleapis.com/.
 */
export function apiRoot(api: ApiName, region: string, env: NodeJS.ProcessEnv = process.env): string {
  const o = apiOverride(api, env);
  if (o) return o;
  if (api === 'AIPLATFORM') return `https://${region}-aiplatform.googleapis.com/`;
  return `https://${SERVICE_OF[api]}/`;
}
