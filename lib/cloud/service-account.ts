/**
 * Section 2 of the codelab, as gcloud commands. The codelab granted Cloud ML Engine's TPU service
 * account its roles; on Vertex AI the training job runs as the project's Vertex AI custom code
 * service agent (service-PROJECT_NUMBER@gcp-sa-aiplatform-cc.iam.gserviceaccount.com) and Dataflow's
 * workers as the Compute Engine default service account. Both must read the TFRecords and write
 * checkpoints, TensorBoard logs and the export in your bucket; the workers also need
 * roles/dataflow.worker. This module builds the commands (it runs nothing), so a notebook can show
 * what `imgclass setup-gcp` checks and what its fixes do.
 */
import { UserError } from '../errors';

export interface ServiceAccountSettings {
  /** Project id (not the number), e.g. my-project-123. */
  project: string;
  /** Bucket name, with or without gs://. */
  bucket: string;
  /** Region of the bucket and jobs, e.g. us-central1. */
  region?: string;
  /** The project number, when known; otherwise the commands look it up with gcloud. */
  projectNumber?: string;
}

export interface GcloudStep {
  /** Why the step is needed, one line. */
  why: string;
  /** One shell line (values quoted for POSIX shells). */
  command: string;
}

/**
 * objectAdmin rather than objectViewer + objectCreator: TensorFlow rewrites its `checkpoint` index file
 * on every save, and replacing an object needs delete permission, which objectCreator lacks.
 */
export const TPU_BUCKET_ROLE = 'roles/storage.objectAdmin';

/** The APIs the gcp backend's sections call (Dataflow's workers are Compute Engine VMs). */
export const GCP_SERVICES = [
  'aiplatform.googleapis.com', 'dataflow.googleapis.com', 'compute.googleapis.com', 'storage.googleapis.com',
  'logging.googleapis.com', 'cloudbuild.googleapis.com', 'artifactregistry.googleapis.com',
] as const;

/** The identities the jobs run as, from the project number (or a shell variable holding it). */
export function jobIdentities(projectNumber: string): { vertex: string; dataflow: string } {
  return {
    vertex: `service-${projectNumber}@gcp-sa-aiplatform-cc.iam.gserviceaccount.com`,
    dataflow: `${projectNumber}-compute@developer.gserviceaccount.com`,
  };
}

const PROJECT_ID = /^[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
const BUCKET_NAME = /^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/;
const REGION = /^[a-z]+-[a-z]+[0-9]+$/;

/** Quote a value for a POSIX shell when it holds anything but safe characters. */
export function shellQuote(value: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/** The project, bucket and region checked as GCP names; a UserError names the field and the rule. */
export function checkServiceAccountSettings(s: ServiceAccountSettings): Required<Omit<ServiceAccountSettings, 'projectNumber'>> & { projectNumber?: string } {
  const project = (s.project ?? '').trim();
  if (project === '') throw new UserError('project is empty: set the `project` parameter to your Google Cloud project id (e.g. my-project-123)');
  if (!PROJECT_ID.test(project)) {
    throw new UserError(`project "${project}" is not a Google Cloud project id: 6 to 30 lowercase letters, digits or hyphens, starting with a letter (the id, not the display name or number)`);
  }
  const bucket = (s.bucket ?? '').trim().replace(/^gs:\/\//, '').replace(/\/+$/, '');
  if (bucket === '') throw new UserError('bucket is empty: set the `bucket` parameter to a Cloud Storage bucket name (e.g. my-project-123-ml)');
  if (bucket.includes('/')) throw new UserError(`bucket "${s.bucket}" has a path in it; give only the bucket name (e.g. ${bucket.split('/')[0]})`);
  if (!BUCKET_NAME.test(bucket) || bucket.includes('..') || bucket.length > 63 && !bucket.includes('.')) {
    throw new UserError(`bucket "${bucket}" is not a valid bucket name: 3 to 63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit`);
  }
  const region = (s.region ?? 'us-central1').trim();
  if (!REGION.test(region)) throw new UserError(`region "${region}" is not a Google Cloud region such as us-central1 or europe-west4`);
  if (s.projectNumber !== undefined && !/^\d{6,20}$/.test(s.projectNumber)) {
    throw new UserError(`projectNumber "${s.projectNumber}" is not a project number (digits only); leave it out to look it up`);
  }
  return { project, bucket, region, projectNumber: s.projectNumber };
}

/**
 * The commands that set up the TPU service account for `project` and `bucket`, in order. The
 * account's address needs the project number; without `projectNumber` the first command looks it
 * up into $PROJECT_NUMBER and the others use "$TPU_SA".
 */
export function serviceAccountCommands(settings: ServiceAccountSettings): GcloudStep[] {
  const { project, bucket, projectNumber } = checkServiceAccountSettings(settings);
  const p = shellQuote(project);
  const steps: GcloudStep[] = [
    {
      why: 'enable the APIs the gcp backend calls (Vertex AI, Dataflow and its Compute Engine workers, Cloud Storage, Logging, Cloud Build, Artifact Registry)',
      command: `gcloud services enable ${GCP_SERVICES.join(' ')} --project=${p}`,
    },
  ];
  let vertex: string;
  let dataflow: string;
  if (projectNumber === undefined) {
    steps.push({
      why: 'look up the project number: the identities the jobs run as are named after it',
      command: `PROJECT_NUMBER=$(gcloud projects describe ${p} --format='value(projectNumber)')`,
    });
    vertex = '"serviceAccount:service-${PROJECT_NUMBER}@gcp-sa-aiplatform-cc.iam.gserviceaccount.com"';
    dataflow = '"serviceAccount:${PROJECT_NUMBER}-compute@developer.gserviceaccount.com"';
  } else {
    const ids = jobIdentities(projectNumber);
    vertex = shellQuote(`serviceAccount:${ids.vertex}`);
    dataflow = shellQuote(`serviceAccount:${ids.dataflow}`);
  }
  steps.push({
    why: 'create the Vertex AI service agents now if Vertex AI was never used in the project (harmless if they exist)',
    command: `gcloud beta services identity create --service=aiplatform.googleapis.com --project=${p}`,
  });
  steps.push({
    why: 'lets the training job (Vertex AI custom code service agent) read the TFRecords and write checkpoints, TensorBoard logs and the export',
    command: `gcloud storage buckets add-iam-policy-binding ${shellQuote(`gs://${bucket}`)} --member=${vertex} --role=${TPU_BUCKET_ROLE}`,
  });
  steps.push({
    why: 'lets the Dataflow workers (Compute Engine default service account) read the JPEGs and write the shards',
    command: `gcloud storage buckets add-iam-policy-binding ${shellQuote(`gs://${bucket}`)} --member=${dataflow} --role=${TPU_BUCKET_ROLE}`,
  });
  steps.push({
    why: 'lets the Dataflow workers take work items from the Dataflow service',
    command: `gcloud projects add-iam-policy-binding ${p} --member=${dataflow} --role=roles/dataflow.worker --condition=None`,
  });
  return steps;
}

/** The steps as a shell script: each command under a comment saying why. */
export function formatCommands(steps: readonly GcloudStep[]): string {
  return steps.map((s) => `# ${s.why}\n${s.command}`).join('\n\n') + '\n';
}
