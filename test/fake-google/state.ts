/**
 * What the fake Google server holds in memory, typed with googleapis' own Schema$ types so tests
 * can seed and inspect it in the shapes the APIs use.
 */
import type {
  aiplatform_v1,
  artifactregistry_v1,
  cloudbuild_v1,
  cloudresourcemanager_v1,
  dataflow_v1b3,
  iam_v1,
  logging_v2,
} from 'googleapis';

export type Model = aiplatform_v1.Schema$GoogleCloudAiplatformV1Model;
export type Endpoint = aiplatform_v1.Schema$GoogleCloudAiplatformV1Endpoint;
export type DeployedModel = aiplatform_v1.Schema$GoogleCloudAiplatformV1DeployedModel;
export type CustomJob = aiplatform_v1.Schema$GoogleCloudAiplatformV1CustomJob;
export type Operation = aiplatform_v1.Schema$GoogleLongrunningOperation;
export type RpcStatus = aiplatform_v1.Schema$GoogleRpcStatus;
export type Policy = cloudresourcemanager_v1.Schema$Policy;
export type ServiceAccount = iam_v1.Schema$ServiceAccount;
export type DataflowJob = dataflow_v1b3.Schema$Job;
export type JobMessage = dataflow_v1b3.Schema$JobMessage;
export type LogEntry = logging_v2.Schema$LogEntry;
export type Build = cloudbuild_v1.Schema$Build;
export type Repository = artifactregistry_v1.Schema$Repository;
export type DockerImage = artifactregistry_v1.Schema$DockerImage;

export interface FakeProject {
  projectId: string;
  projectNumber: string;
  /** cloudresourcemanager projects.getIamPolicy answers this (version, bindings, etag). */
  iamPolicy: Policy;
  /** Service names (e.g. aiplatform.googleapis.com) enabled on the project. */
  enabledServices: Set<string>;
  /** iam projects.serviceAccounts.get answers these, by email. */
  serviceAccounts: Map<string, ServiceAccount>;
}

/** A long-running operation: `done: false` for `pollsLeft` more operations.get calls, then `finish()` runs once. */
export interface FakeOperation {
  name: string;
  metadata: Record<string, unknown>;
  pollsLeft: number;
  finish: () => { response?: Record<string, unknown>; error?: RpcStatus };
  result?: { response?: Record<string, unknown>; error?: RpcStatus };
}

export interface FakeDataflowJob {
  job: DataflowJob;
  /** States the next jobs.get calls move through, one per call (the last one stays). */
  plan: string[];
}

export interface FakeBuild {
  build: Build;
  /** Statuses the next builds.get / operations.get calls move through, one per call. */
  plan: string[];
}

export interface FakeState {
  projects: Map<string, FakeProject>;
  /** Vertex AI resources by full name (projects/NUMBER/locations/R/models/ID, ...). */
  models: Map<string, Model>;
  endpoints: Map<string, Endpoint>;
  customJobs: Map<string, CustomJob & { plan?: string[] }>;
  operations: Map<string, FakeOperation>;
  /** operations.get calls that answer `done: false` before an operation completes (default 1). */
  operationPolls: number;
  dataflowJobs: Map<string, FakeDataflowJob>;
  /** States a newly launched Dataflow job walks through on jobs.get (set the last to JOB_STATE_FAILED to fail it). */
  dataflowPlan: string[];
  /** jobs.messages.list answers these, by job id. */
  jobMessages: Map<string, JobMessage[]>;
  /** logging entries.list filters these. */
  logEntries: LogEntry[];
  builds: Map<string, FakeBuild>;
  /** Statuses a new Cloud Build build walks through (set the last to FAILURE to fail it). */
  buildPlan: string[];
  /** Artifact Registry repositories and images by full name. */
  repositories: Map<string, Repository>;
  dockerImages: Map<string, DockerImage>;
  /** States a new Vertex AI custom job walks through on customJobs.get. */
  customJobPlan: string[];
  /** Next numeric id for Vertex AI resources, operations and jobs. */
  nextId: bigint;
}

export const DEFAULT_SERVICES = [
  'aiplatform.googleapis.com',
  'dataflow.googleapis.com',
  'cloudresourcemanager.googleapis.com',
  'serviceusage.googleapis.com',
  'iam.googleapis.com',
  'logging.googleapis.com',
  'cloudbuild.googleapis.com',
  'artifactregistry.googleapis.com',
  'storage.googleapis.com',
];

export function newProject(projectId: string, projectNumber: string, enabled: string[]): FakeProject {
  const computeSa = `${projectNumber}-compute@developer.gserviceaccount.com`;
  return {
    projectId,
    projectNumber,
    iamPolicy: {
      version: 1,
      etag: 'BwYfakeEtag0=',
      bindings: [
        { role: 'roles/owner', members: ['user:developer@example.com'] },
        { role: 'roles/editor', members: [`serviceAccount:${computeSa}`] },
      ],
    },
    enabledServices: new Set(enabled),
    serviceAccounts: new Map([
      [
        computeSa,
        {
          name: `projects/${projectId}/serviceAccounts/${computeSa}`,
          projectId,
          uniqueId: '100000000000000000001',
          email: computeSa,
          displayName: 'Compute Engine default service account',
          etag: 'MDEwMjE5MjA=',
          oauth2ClientId: '100000000000000000001',
        },
      ],
    ]),
  };
}

export function newState(): FakeState {
  return {
    projects: new Map(),
    models: new Map(),
    endpoints: new Map(),
    customJobs: new Map(),
    operations: new Map(),
    operationPolls: 1,
    dataflowJobs: new Map(),
    dataflowPlan: ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', 'JOB_STATE_RUNNING', 'JOB_STATE_DONE'],
    jobMessages: new Map(),
    logEntries: [],
    builds: new Map(),
    buildPlan: ['QUEUED', 'WORKING', 'SUCCESS'],
    repositories: new Map(),
    dockerImages: new Map(),
    customJobPlan: ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', 'JOB_STATE_RUNNING', 'JOB_STATE_SUCCEEDED'],
    nextId: 1234567890123456000n,
  };
}
