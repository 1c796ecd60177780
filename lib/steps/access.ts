/** Notebook 02 (section 2, the TPU service account): the gcloud commands, or the local checks. */
import * as cloud from '../cloud';
import type { GcloudStep } from '../cloud/service-account';
import { backendOf, Settings } from './settings';
import type { AccessOutcome } from '../backend';

/** Shown when the notebook runs without a project or bucket: the commands with stand-in names. */
export const PLACEHOLDER_PROJECT = 'your-project-id';
export const PLACEHOLDER_BUCKET = 'your-bucket';

/** The service-account commands for the notebook's project and bucket (stand-ins where unset). */
export function serviceAccountCommandsFor(s: Settings): GcloudStep[] {
  return cloud.serviceAccountCommands({
    project: s.project || PLACEHOLDER_PROJECT,
    bucket: s.bucket || PLACEHOLDER_BUCKET,
    region: s.region,
  });
}

export interface AccessParameters {
  /** gcp: enable the missing APIs. */
  enable_apis?: boolean;
  /** gcp: add the missing bucket role bindings. */
  grant?: boolean;
  /** gcp: the service account the jobs run as instead of the default identities. */
  service_account?: string;
}

/**
 * gcp: check the project (APIs, bucket, identities, bucket access), fixing what the parameters allow.
 * local: no account is needed; check what the local run needs instead.
 */
export async function setUpAccess(s: Settings, p: AccessParameters = {}): Promise<AccessOutcome> {
  return backendOf(s).access({
    workDir: s.workDir,
    bucket: s.bucket,
    serviceAccount: p.service_account?.trim() || undefined,
    enableApis: p.enable_apis,
    grant: p.grant,
  });
}
