/** Notebook 02 (section 2, the TPU service account): the gcloud commands, or the local checks. */
import * as cloud from '../cloud';
import { checkLocalPrerequisites, Check } from '../prerequisites';
import type { GcloudStep } from '../cloud/service-account';
import type { Settings } from './settings';

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

/**
 * gcp: run those commands (the cloud code). local: no account is needed; check what the local run
 * needs instead, and return the checks.
 */
export async function setUpAccess(s: Settings): Promise<Check[]> {
  if (s.backend === 'gcp') {
    const sa = await cloud.ensureServiceAccount({ project: s.project, bucket: s.bucket, region: s.region });
    return [{ name: 'TPU service account', value: sa.email, ok: true }];
  }
  return checkLocalPrerequisites(s.workDir);
}
