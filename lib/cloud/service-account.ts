/**
 * Section 2 of the codelab: the Cloud TPU service account. Training on a TPU runs as Google's TPU
 * service agent (service-PROJECT_NUMBER@cloud-tpu.iam.gserviceaccount.com), not as you, so before the
 * first job it must be allowed to act for the training service (the codelab grants
 * roles/ml.serviceAgent on the project), to read the TFRecords and write checkpoints and the export
 * in your bucket, and to write logs. This module builds those gcloud commands (it runs nothing), so
 * a notebook can show exactly what the gcp backend would do, and the cloud code can run the same list.
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

/** Roles granted to the TPU service agent, and why (shown with the commands). */
export const TPU_PROJECT_ROLES: readonly { role: string; why: string }[] = [
  { role: 'roles/ml.serviceAgent', why: 'lets the training service use the TPU and bill it to the project (the codelab\'s grant)' },
  { role: 'roles/logging.logWriter', why: 'lets the training job write its logs to Cloud Logging' },
];
/**
 * objectAdmin rather than objectViewer + objectCreator: TensorFlow rewrites its `checkpoint` index file
 * on every save, and replacing an object needs delete permission, which objectCreator lacks.
 */
export const TPU_BUCKET_ROLE = 'roles/storage.objectAdmin';

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
      why: 'enable the APIs the gcp backend calls (TPU, Vertex AI training and prediction, Dataflow, Cloud Storage)',
      command: `gcloud services enable tpu.googleapis.com aiplatform.googleapis.com dataflow.googleapis.com storage.googleapis.com --project=${p}`,
    },
  ];
  let member: string;
  if (projectNumber === undefined) {
    steps.push({
      why: 'look up the project number: the TPU service agent is named after it',
      command: `PROJECT_NUMBER=$(gcloud projects describe ${p} --format='value(projectNumber)')`,
    });
    steps.push({
      why: 'the Cloud TPU service agent of this project',
      command: 'TPU_SA="service-${PROJECT_NUMBER}@cloud-tpu.iam.gserviceaccount.com"',
    });
    member = '"serviceAccount:${TPU_SA}"';
  } else {
    member = shellQuote(`serviceAccount:service-${projectNumber}@cloud-tpu.iam.gserviceaccount.com`);
  }
  steps.push({
    why: 'create the TPU service agent now if no TPU was ever used in the project (harmless if it exists)',
    command: `gcloud beta services identity create --service=tpu.googleapis.com --project=${p}`,
  });
  for (const r of TPU_PROJECT_ROLES) {
    steps.push({ why: r.why, command: `gcloud projects add-iam-policy-binding ${p} --member=${member} --role=${r.role} --condition=None` });
  }
  steps.push({
    why: 'lets the TPU read the TFRecords and write checkpoints, TensorBoard logs and the export in the bucket',
    command: `gcloud storage buckets add-iam-policy-binding ${shellQuote(`gs://${bucket}`)} --member=${member} --role=${TPU_BUCKET_ROLE}`,
  });
  return steps;
}

/** The steps as a shell script: each command under a comment saying why. */
export function formatCommands(steps: readonly GcloudStep[]): string {
  return steps.map((s) => `# ${s.why}\n${s.command}`).join('\n\n') + '\n';
}
