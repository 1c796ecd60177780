/**
 * The launch of the section 5 pipeline on Dataflow: the flexTemplates.launch request body for
 * Google's Beam YAML template, the equivalent gcloud lines (for dry runs and for people who want to
 * run it by hand), the job name and the console URL. Pure functions: the cloud client sends.
 */
import type { dataflow_v1b3 } from 'googleapis/build/src/apis/dataflow';
import { UserError } from '../../errors';
import { checkServiceAccountSettings, shellQuote } from '../service-account';

/** Google's Beam YAML flex template in `region` (DataflowTemplates, Yaml_Template). */
export function yamlTemplatePath(region: string): string {
  return `gs://dataflow-templates-${region}/latest/flex/Yaml_Template`;
}

export interface DataflowLocations {
  /** Where the rendered pipeline YAML is uploaded (the `yaml_pipeline_file` parameter). */
  pipelineFile: string;
  /** Dataflow's and Beam's temp files (the TFRecord sink itself writes into OUTPUT/beam-temp-*, then renames). */
  tempLocation: string;
  /** Where the launcher stages the SDK and requirements. */
  stagingLocation: string;
}

/** Our folders in the bucket, outside the output folder so they never mix with the shards. */
export function dataflowLocations(bucket: string, jobName: string): DataflowLocations {
  const b = bucket.replace(/^gs:\/\//, '').replace(/\/+$/, '');
  const root = `gs://${b}/imgclass-staging/dataflow`;
  return { pipelineFile: `${root}/${jobName}/pipeline.yaml`, tempLocation: `${root}/temp`, stagingLocation: `${root}/staging` };
}

/** Dataflow's rule for job names (Schema$LaunchFlexTemplateParameter.jobName, Job.name). */
export const JOB_NAME_PATTERN = /^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$/;

const JOB_NAME_SLUG_MAX = 40;

function timestamp(when: Date): string {
  const iso = when.toISOString(); // 2026-12-01T21:05:09.123Z
  return `${iso.slice(0, 10).replace(/-/g, '')}-${iso.slice(11, 19).replace(/:/g, '')}`;
}

/**
 * `imgclass-preprocess-<folder>-YYYYMMDD-HHMMSS` (UTC): the output folder's last two path parts,
 * lowercased, every other character a hyphen, so the console's job list says what each job wrote.
 */
export function dataflowJobName(outputDir: string, when: Date): string {
  const parts = outputDir.replace(/^gs:\/\//, '').replace(/\/+$/, '').split('/').filter(Boolean);
  const tail = parts.length > 1 ? parts.slice(-2) : parts;
  let slug = tail
    .join('-')
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '') // é → e: the accent is a combining mark after NFKD
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (slug.length > JOB_NAME_SLUG_MAX) slug = slug.slice(slug.length - JOB_NAME_SLUG_MAX).replace(/^-+/, '');
  const name = `imgclass-preprocess-${slug ? `${slug}-` : ''}${timestamp(when)}`;
  if (!JOB_NAME_PATTERN.test(name)) throw new Error(`job name "${name}" breaks Dataflow's pattern ${JOB_NAME_PATTERN}`);
  return name;
}

export interface DataflowLaunchOptions {
  project: string;
  region: string;
  /** Bucket for the staging and temp folders (normally the output folder's bucket). */
  bucket: string;
  jobName: string;
  /** gs:// path of the uploaded, rendered pipeline (dataflowLocations().pipelineFile). */
  pipelineFile: string;
  /** Autoscaling cap, 1–1000; Dataflow's own default when left out. */
  maxWorkers?: number;
  /** Run the workers as this service account instead of the Compute Engine default one. */
  serviceAccountEmail?: string;
  /** Worker machine type, e.g. n1-standard-2; Dataflow's batch default when left out. */
  machineType?: string;
  /** Validate the launch on Google's side without starting a job (flexTemplates.launch validateOnly). */
  validateOnly?: boolean;
}

interface Checked extends DataflowLaunchOptions {
  locations: DataflowLocations;
}

function check(o: DataflowLaunchOptions): Checked {
  const { project, bucket, region } = checkServiceAccountSettings({ project: o.project, bucket: o.bucket, region: o.region });
  if (!JOB_NAME_PATTERN.test(o.jobName)) {
    throw new UserError(`job name "${o.jobName}" is not a Dataflow job name: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen`);
  }
  if (!/^gs:\/\/[^/]+\/.+/.test(o.pipelineFile)) throw new UserError(`pipeline file "${o.pipelineFile}" is not a gs:// file path`);
  if (o.maxWorkers !== undefined && (!Number.isInteger(o.maxWorkers) || o.maxWorkers < 1 || o.maxWorkers > 1000)) {
    throw new UserError(`--max_workers must be a whole number from 1 to 1000, got ${o.maxWorkers}`);
  }
  if (o.serviceAccountEmail !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(o.serviceAccountEmail)) {
    throw new UserError(`--service_account "${o.serviceAccountEmail}" is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)`);
  }
  if (o.machineType !== undefined && !/^[a-z][a-z0-9-]*$/.test(o.machineType)) {
    throw new UserError(`machine type "${o.machineType}" is not a Compute Engine machine type such as n1-standard-2`);
  }
  return { ...o, project, bucket, region, locations: dataflowLocations(bucket, o.jobName) };
}

/** The body of projects.locations.flexTemplates.launch (path: projectId, location = region). */
export function launchRequest(opts: DataflowLaunchOptions): dataflow_v1b3.Schema$LaunchFlexTemplateRequest {
  const o = check(opts);
  const environment: dataflow_v1b3.Schema$FlexTemplateRuntimeEnvironment = {
    tempLocation: o.locations.tempLocation,
    stagingLocation: o.locations.stagingLocation,
    additionalUserLabels: { 'imgclass-step': 'preprocess' },
  };
  if (o.maxWorkers !== undefined) environment.maxWorkers = o.maxWorkers;
  if (o.serviceAccountEmail !== undefined) environment.serviceAccountEmail = o.serviceAccountEmail;
  if (o.machineType !== undefined) environment.machineType = o.machineType;
  const launchParameter: dataflow_v1b3.Schema$LaunchFlexTemplateParameter = {
    jobName: o.jobName,
    containerSpecGcsPath: yamlTemplatePath(o.region),
    parameters: { yaml_pipeline_file: o.pipelineFile },
    environment,
  };
  return o.validateOnly ? { launchParameter, validateOnly: true } : { launchParameter };
}

/** The request's path parameters, for dataflow.projects.locations.flexTemplates.launch. */
export function launchParams(opts: DataflowLaunchOptions): dataflow_v1b3.Params$Resource$Projects$Locations$Flextemplates$Launch {
  const o = check(opts);
  return { projectId: o.project, location: o.region, requestBody: launchRequest(opts) };
}

export interface GcloudEquivalent {
  /** `gcloud dataflow yaml run …`, the short form (it picks the same template). */
  yamlRun: string;
  /** `gcloud dataflow flex-template run …`, the same launch spelled out as our request. */
  flexTemplateRun: string;
}

/** The gcloud commands that launch the same job (flags as in the gcloud reference pages). */
export function gcloudEquivalent(opts: DataflowLaunchOptions): GcloudEquivalent {
  const o = check(opts);
  const q = shellQuote;
  const common = [
    `--project=${q(o.project)}`,
    `--region=${q(o.region)}`,
    `--temp-location=${q(o.locations.tempLocation)}`,
    `--staging-location=${q(o.locations.stagingLocation)}`,
    ...(o.maxWorkers !== undefined ? [`--max-workers=${o.maxWorkers}`] : []),
    ...(o.serviceAccountEmail !== undefined ? [`--service-account-email=${q(o.serviceAccountEmail)}`] : []),
    ...(o.machineType !== undefined ? [`--worker-machine-type=${q(o.machineType)}`] : []),
    `--additional-user-labels=imgclass-step=preprocess`,
  ];
  return {
    yamlRun: ['gcloud dataflow yaml run', q(o.jobName), `--yaml-pipeline-file=${q(o.pipelineFile)}`, ...common].join(' '),
    flexTemplateRun: [
      'gcloud dataflow flex-template run',
      q(o.jobName),
      `--template-file-gcs-location=${q(yamlTemplatePath(o.region))}`,
      `--parameters=yaml_pipeline_file=${q(o.pipelineFile)}`,
      ...common,
    ].join(' '),
  };
}

/** The job's page in the Cloud console. */
export function jobConsoleUrl(project: string, region: string, jobId: string): string {
  return `https://console.cloud.google.com/dataflow/jobs/${encodeURIComponent(region)}/${encodeURIComponent(jobId)}?project=${encodeURIComponent(project)}`;
}
