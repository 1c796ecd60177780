/**
 * The seam between what a step does and where it runs: one interface, a `local` implementation (this
 * machine) and a `gcp` one (Google Cloud, in lib/cloud/). The CLI and lib/steps/ ask backendFor() and
 * never branch on the backend's name.
 */
import type { PreprocessOptions, PreprocessResult } from '../preprocess';
import type { TrainOptions, TrainResult } from '../train';
import type { Deployment } from '../serve/daemon';
import type { PredictResult } from '../predict';
import type { BackendName as EngineName } from '../engine/backend';
import type { Reporter } from '../cloud/report';
import type { VertexDeployment } from '../cloud/endpoints';
import { UserError } from '../errors';

export type BackendKind = 'local' | 'gcp';

/** A local deployment (a background `imgclass serve`) or a Vertex AI endpoint. */
export type AnyDeployment = (Deployment & { backend?: 'local' }) | VertexDeployment;

export interface AccessRequest {
  /** local: the folder whose disk is checked. */
  workDir: string;
  /** gcp: gs://BUCKET. */
  bucket?: string;
  serviceAccount?: string;
  enableApis?: boolean;
  grant?: boolean;
}

export interface AccessOutcome {
  ready: boolean;
  /** The table, as shown. */
  text: string;
}

export interface DeployRequest {
  /** Export root (its newest version) or one version folder. */
  exportDir: string;
  modelName: string;
  /** Where deployment.json goes (required locally; on gcp optional). */
  workDir?: string;
  port?: number;
  host?: string;
  engine?: EngineName;
  machineType?: string;
  minReplicas?: number;
  maxReplicas?: number;
  servingImage?: string;
}

export interface PredictCall {
  /** A deployment as recorded, or an endpoint: a URL locally; an id, display name or resource name on gcp. */
  target: AnyDeployment | string;
  images: (string | Uint8Array)[];
  keys?: string[];
  timeoutMs?: number;
  modelName?: string;
  onResponse?: (status: number, body: unknown) => void;
}

export interface PredictOutcome extends PredictResult {
  /** Class names in labels.txt order, when known. */
  labels: string[];
  /** Where the request went. */
  where: string;
}

export interface UndeployRequest {
  workDir?: string;
  modelName?: string;
  /** gcp: also delete the endpoint and the uploaded model. */
  delete?: boolean;
}

/** Sections 4-5: what preprocess takes; the gcp backend reads the extras, local ignores them. */
export interface PreprocessRequest extends PreprocessOptions {
  /** gcp: autoscaling cap of the Dataflow workers. */
  maxWorkers?: number;
  /** gcp: the service account the Dataflow workers run as (default: Compute Engine's default one). */
  serviceAccount?: string;
  /** gcp: false returns once the job is launched; default true (follow it to the end). */
  wait?: boolean;
  /** gcp: aborted while waiting (Ctrl-C, a notebook interrupt): ask `confirmCancel` whether to cancel the job. */
  signal?: AbortSignal;
  /** gcp: whether to cancel the job after an interrupt; without it the job is left running. */
  confirmCancel?: (job: LaunchedJob) => Promise<boolean>;
}

/** A Dataflow job as launched. */
export interface LaunchedJob {
  id: string;
  name: string;
  project: string;
  region: string;
  consoleUrl: string;
}

/**
 * A preprocess that was launched and not waited for (gcp --no-wait), or only shown (a dry run):
 * there are no shards to count yet, so no report.
 */
export interface PreprocessLaunch {
  launched: LaunchedJob;
  outputDir: string;
  dryRun: boolean;
  /** The gcloud lines that watch (or, in a dry run, start) the job. */
  next: string[];
}

export type PreprocessOutcome = PreprocessResult | PreprocessLaunch;

/** Whether preprocess ended with shards and a report (and not only a launched job). */
export function isPreprocessed(r: PreprocessOutcome): r is PreprocessResult {
  return (r as PreprocessResult).report !== undefined;
}

/**
 * What `train` takes beyond the local options: the gcp extras (a Vertex AI custom job on Cloud TPU).
 * The local backend ignores them.
 */
export interface CloudTrainOptions {
  /** TPU v5e-1|v5e-4|v5e-8|v2-8|v3-8 (default v5e-4). */
  tpu?: string;
  /** A trainer image to run as is (skips the Cloud Build). */
  trainerImage?: string;
  /** The identity the job runs as (default: Vertex AI's custom code service agent). */
  serviceAccount?: string;
  /** A checkpoint to start from (transfer learning), e.g. a public ImageNet ResNet's. */
  initCheckpoint?: string;
  /** Return once the job is submitted (follow it later with trainStatus). */
  noWait?: boolean;
  /** Asked when following is interrupted (Ctrl-C): true cancels the job, false leaves it running. */
  confirmCancel?: () => Promise<boolean>;
  /** How often the job, its logs and its event files are read; default 15 s. */
  pollIntervalMs?: number;
}

export type BackendTrainOptions = TrainOptions & CloudTrainOptions;

/** `imgclass train-status`: follow a job submitted earlier. */
export interface TrainStatusRequest extends Pick<CloudTrainOptions, 'confirmCancel' | 'pollIntervalMs'>, Pick<TrainOptions, 'signal' | 'onEvent'> {
  /** The job's id or full resource name. */
  job: string;
}

export interface Backend {
  readonly kind: BackendKind;
  /** Section 2: is everything in place to run the later sections? */
  access(r: AccessRequest): Promise<AccessOutcome>;
  /** Sections 4-5: CSVs → TFRecord shards (gcp: a Dataflow job, or only its launch). */
  preprocess(o: PreprocessRequest): Promise<PreprocessOutcome>;
  /** Section 6. */
  train(o: BackendTrainOptions): Promise<TrainResult>;
  /** Section 3: where and how `train(o)` will run, in a few lines (gcp: the job and its config). Sends nothing. */
  describeTraining(o: BackendTrainOptions): Promise<string>;
  /** Section 6, later: follow (or report on) a training job submitted with noWait. */
  trainStatus(r: TrainStatusRequest): Promise<TrainResult>;
  /** Section 7: the newest export behind a prediction endpoint, recorded in workDir. */
  deploy(r: DeployRequest): Promise<AnyDeployment>;
  /** Section 8: the codelab's request to a deployment or endpoint. */
  predict(c: PredictCall): Promise<PredictOutcome>;
  /** Take the deployment down; returns what happened. */
  undeploy(r: UndeployRequest): Promise<string>;
  /** The deployment the last deploy recorded in `workDir`. */
  currentDeployment(workDir: string): Promise<AnyDeployment>;
}

export interface BackendSettings {
  backend: BackendKind | string;
  project?: string;
  region?: string;
  dryRun?: boolean;
  reporter?: Reporter;
  env?: NodeJS.ProcessEnv;
}

/** The backend for `s`; loading the gcp one pulls in googleapis, so the local path never does. */
export function backendFor(s: BackendSettings): Backend {
  if (s.backend === 'local' || s.backend === undefined || s.backend === '') {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { localBackend } = require('./local') as typeof import('./local');
    return localBackend();
  }
  if (s.backend === 'gcp') {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { gcpBackend } = require('../cloud/backend') as typeof import('../cloud/backend');
    return gcpBackend({ project: s.project ?? '', region: s.region || 'us-central1', dryRun: s.dryRun, reporter: s.reporter, env: s.env });
  }
  throw new UserError(`backend "${s.backend}" is not known: use local or gcp (--backend)`);
}

/** Whether a recorded deployment is a Vertex AI one. */
export function isVertexDeployment(d: AnyDeployment): d is VertexDeployment {
  return (d as VertexDeployment).backend === 'gcp';
}
