/**
 * The gcp backend: what the notebooks call when `backend = "gcp"`. The signatures are the contract
 * the notebooks are written against; the implementations (Dataflow, Vertex AI training on TPU,
 * Vertex AI endpoints) come with the cloud issue. Until then every call stops with one clear
 * UserError instead of half-running something against a real project.
 */
import { UserError } from '../errors';
import type { ServiceAccountSettings } from './service-account';

export * from './service-account';

export const GCP_NOT_AVAILABLE =
  'the gcp backend is not available yet: run with backend = "local" (tracked in the cloud issue)';

/** Where a gcp job runs and bills. */
export interface GcpSettings {
  project: string;
  bucket: string;
  region: string;
}

export interface DataflowPreprocessOptions extends GcpSettings {
  trainCsv: string;
  validationCsv: string;
  labelsFile: string;
  /** gs:// folder for the shards. */
  outputDir: string;
  numShards?: number;
}

export interface VertexTrainOptions extends GcpSettings {
  dataDir: string;
  modelDir: string;
  exportDir: string;
  resnetDepth: number;
  imageSize: number;
  trainBatchSize: number;
  trainSteps: number;
  stepsPerEval?: number;
  baseLearningRate?: number;
  /** e.g. "v3-8"; the codelab's BASIC_TPU tier was one v2-8. */
  tpu?: string;
}

export interface VertexDeployOptions extends GcpSettings {
  exportDir: string;
  modelName: string;
}

export interface VertexDeployment {
  endpoint: string;
  predictUrl: string;
  modelName: string;
  version: string;
}

function notAvailable(what: string): never {
  throw new UserError(`${what}: ${GCP_NOT_AVAILABLE}`);
}

/** Section 2: create the TPU service agent and grant it its roles (see serviceAccountCommands). */
export async function ensureServiceAccount(_s: ServiceAccountSettings): Promise<{ email: string }> {
  return notAvailable('setting up the TPU service account');
}

/** Section 5: jpeg_to_tf_record on Dataflow, writing shards to gs://. */
export async function preprocessOnDataflow(_o: DataflowPreprocessOptions): Promise<{ jobId: string; outputDir: string }> {
  return notAvailable('preprocessing on Dataflow');
}

/** Section 6: the ResNet trainer as a Vertex AI custom job on a TPU. */
export async function trainOnVertex(_o: VertexTrainOptions): Promise<{ jobId: string; exportPath: string }> {
  return notAvailable('training on Vertex AI');
}

/** Section 7: the export uploaded as a Vertex AI model and deployed to an endpoint. */
export async function deployToVertex(_o: VertexDeployOptions): Promise<VertexDeployment> {
  return notAvailable('deploying to Vertex AI');
}

/** Section 8: the :predict URL of a Vertex AI endpoint. */
export function vertexPredictUrl(_s: GcpSettings & { endpoint: string }): string {
  return notAvailable('predicting with Vertex AI');
}

/** Undo deployToVertex. */
export async function undeployFromVertex(_s: GcpSettings & { endpoint: string }): Promise<void> {
  return notAvailable('undeploying from Vertex AI');
}
