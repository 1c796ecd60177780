/**
 * Section 2 on Google Cloud, the modern `enable_tpu_mlengine.sh`: is this project ready for the
 * later sections? It finds the project number, checks the APIs they call, the bucket and its region,
 * the identities the jobs run as, and whether each can read and write the bucket, and returns a table
 * of what is ready and what is missing with the command that fixes each line. It changes nothing
 * unless asked: `enableApis` enables the missing APIs, `grant` adds the missing bucket role bindings
 * (a read-modify-write of the bucket's IAM policy with its etag; nothing else is touched).
 */
import type { storage_v1 } from 'googleapis/build/src/apis/storage/v1';
import type { cloudresourcemanager_v1 } from 'googleapis/build/src/apis/cloudresourcemanager/v1';
import type { serviceusage_v1 } from 'googleapis/build/src/apis/serviceusage/v1';
import { UserError } from '../errors';
import { TITLE_OF } from './apis';
import type { CloudClient } from './client';
import { waitForOperation, dryRunOperation, Operation } from './operations';
import { GCP_SERVICES, TPU_BUCKET_ROLE, jobIdentities } from './service-account';

const WHY: Record<(typeof GCP_SERVICES)[number], string> = {
  'aiplatform.googleapis.com': 'sections 6-8: training on TPU, endpoints',
  'dataflow.googleapis.com': 'section 5: preprocessing at scale',
  'compute.googleapis.com': 'section 5: the Dataflow workers',
  'storage.googleapis.com': 'every section: data, models, exports',
  'logging.googleapis.com': 'sections 5-6: job logs',
  'cloudbuild.googleapis.com': 'section 6: building the trainer image',
  'artifactregistry.googleapis.com': 'section 6: storing the trainer image',
};

/** The services the later sections call, and why. */
export const REQUIRED_SERVICES: readonly { service: string; why: string }[] = GCP_SERVICES.map((service) => ({ service, why: WHY[service] }));

/** The role granted on the bucket (why objectAdmin: see TPU_BUCKET_ROLE). */
export const BUCKET_ROLE = TPU_BUCKET_ROLE;
/** Roles on a bucket that let a member read and write its objects. */
const BUCKET_RW_ROLES = new Set(['roles/storage.objectAdmin', 'roles/storage.admin', 'roles/storage.objectUser', 'roles/storage.legacyBucketOwner', 'roles/storage.legacyBucketWriter']);
/** Roles on the bucket's project that do the same for its buckets. */
const PROJECT_RW_ROLES = new Set(['roles/owner', 'roles/editor', 'roles/storage.admin', 'roles/storage.objectAdmin', 'roles/storage.objectUser']);
const DATAFLOW_WORKER_ROLES = new Set(['roles/dataflow.worker', 'roles/editor', 'roles/owner']);

export interface AccessOptions {
  /** gs://BUCKET or BUCKET. */
  bucket: string;
  /** Runs the jobs instead of the default identities. */
  serviceAccount?: string;
  enableApis?: boolean;
  grant?: boolean;
}

export type CheckState = 'ready' | 'missing' | 'warning';

export interface AccessCheck {
  check: string;
  state: CheckState;
  detail: string;
  /** The command that fixes a missing line. */
  fix?: string;
}

export interface AccessReport {
  project: string;
  projectNumber: string;
  region: string;
  bucket: string;
  identities: { vertex: string; dataflow: string };
  checks: AccessCheck[];
  ready: boolean;
}

function bucketName(b: string): string {
  const name = b.trim().replace(/^gs:\/\//, '').replace(/\/+$/, '');
  if (!name) throw new UserError('no bucket given: pass --bucket gs://BUCKET (notebooks: the `bucket` parameter)');
  if (name.includes('/')) throw new UserError(`bucket "${b}" has a path in it; give only the bucket (gs://${name.split('/')[0]})`);
  if (!/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(name)) throw new UserError(`bucket "${name}" is not a valid bucket name (--bucket)`);
  return name;
}

/** Predefined dual-regions and the regions they span (https://cloud.google.com/storage/docs/locations). */
const DUAL_REGIONS: Record<string, string[]> = {
  ASIA1: ['asia-northeast1', 'asia-northeast2'],
  EUR4: ['europe-north1', 'europe-west4'],
  EUR5: ['europe-west1', 'europe-west2'],
  EUR7: ['europe-west2', 'europe-west3'],
  EUR8: ['europe-west3', 'europe-west6'],
  NAM4: ['us-central1', 'us-east1'],
};

/** Whether a bucket's location is `region` or covers it (a multi-region or dual-region holding it). */
export function locationCovers(bucket: storage_v1.Schema$Bucket, region: string): boolean {
  const loc = (bucket.location ?? '').toUpperCase();
  if (loc === region.toUpperCase()) return true;
  if (loc === 'US') return region.startsWith('us-') || region.startsWith('northamerica-');
  if (loc === 'EU') return region.startsWith('europe-');
  if (loc === 'ASIA') return region.startsWith('asia-');
  const dual = bucket.customPlacementConfig?.dataLocations?.map((d) => d.toLowerCase()) ?? DUAL_REGIONS[loc];
  return dual?.includes(region.toLowerCase()) ?? false;
}

function hasRole(bindings: Array<{ role?: string | null; members?: string[] | null }> | undefined | null, member: string, roles: Set<string>): string | undefined {
  return bindings?.find((b) => b.role && roles.has(b.role) && (b.members ?? []).includes(member))?.role ?? undefined;
}

/** Run the checks (and the fixes asked for); a dry run prints the requests instead. */
export async function checkAccess(c: CloudClient, o: AccessOptions): Promise<AccessReport> {
  const bucket = bucketName(o.bucket);
  const checks: AccessCheck[] = [];
  const p = c.project;

  const project = await c.call<cloudresourcemanager_v1.Schema$Project>(
    { what: `reading project ${p}`, gcloud: `gcloud projects describe ${p}`, dryRun: { projectId: p, projectNumber: 'PROJECT_NUMBER' } },
    (opts) => c.resourceManager().projects.get({ projectId: p }, opts),
  ).catch((err: unknown) => {
    if (err instanceof UserError && /not found|permission denied/.test(err.message)) {
      throw new UserError(`project ${p} does not exist or you cannot see it (${err.message}); check --project (the id, not the name) and the account you are logged in with`);
    }
    throw err;
  });
  const number = project.projectNumber ?? '';
  checks.push({ check: 'project', state: 'ready', detail: `${p} (number ${number})` });

  // APIs
  const names = REQUIRED_SERVICES.map((s) => `projects/${number}/services/${s.service}`);
  const got = await c.call<serviceusage_v1.Schema$BatchGetServicesResponse>(
    {
      what: 'checking which APIs are enabled',
      gcloud: `gcloud services list --enabled --project=${p}`,
      // A dry run knows nothing, so it shows what enabling all of them would send.
      dryRun: { services: names.map((name) => ({ name, state: 'DISABLED' })) },
    },
    (opts) => c.serviceUsage().services.batchGet({ parent: `projects/${number}`, names }, opts),
  );
  const enabled = new Set((got.services ?? []).filter((s) => s.state === 'ENABLED').map((s) => s.name?.split('/').pop()));
  let missing = REQUIRED_SERVICES.filter((s) => !enabled.has(s.service));
  if (missing.length > 0 && o.enableApis) {
    const serviceIds = missing.map((s) => s.service);
    const what = `enabling ${serviceIds.join(', ')}`;
    const op = await c.call<Operation>(
      { what, gcloud: `gcloud services enable ${serviceIds.join(' ')} --project=${p}`, retryPost: true, dryRun: dryRunOperation({}) },
      (opts) => c.serviceUsage().services.batchEnable({ parent: `projects/${number}`, requestBody: { serviceIds } }, opts),
    );
    await waitForOperation(c, op, { what, get: (name, opts) => c.serviceUsage().operations.get({ name }, opts) });
    for (const s of missing) checks.push({ check: `API ${s.service}`, state: 'ready', detail: `enabled now (${s.why})` });
    missing = [];
  }
  for (const s of REQUIRED_SERVICES) {
    if (missing.includes(s)) {
      checks.push({ check: `API ${s.service}`, state: 'missing', detail: `${TITLE_OF[s.service] ?? s.service}: not enabled (${s.why})`, fix: `gcloud services enable ${s.service} --project=${p}` });
    } else if (!checks.some((x) => x.check === `API ${s.service}`)) {
      checks.push({ check: `API ${s.service}`, state: 'ready', detail: `enabled (${s.why})` });
    }
  }

  // Bucket
  const b = await c.call<storage_v1.Schema$Bucket>(
    { what: `reading bucket gs://${bucket}`, gcloud: `gcloud storage buckets describe gs://${bucket}`, dryRun: { name: bucket, location: c.region.toUpperCase(), projectNumber: number } },
    (opts) => c.storageJson().buckets.get({ bucket }, opts),
  ).catch((err: unknown) => {
    if (err instanceof UserError && /not found/.test(err.message)) {
      throw new UserError(`bucket gs://${bucket} does not exist: create it with \`gcloud storage buckets create gs://${bucket} --project=${p} --location=${c.region}\``);
    }
    throw err;
  });
  const covers = locationCovers(b, c.region);
  checks.push({
    check: 'bucket',
    state: covers ? 'ready' : 'warning',
    detail: `gs://${bucket} in ${b.location}${b.locationType ? ` (${b.locationType})` : ''}${covers ? `, covers ${c.region}` : `, not in ${c.region}: jobs in ${c.region} read it across regions (slower, and egress is billed)`}`,
    ...(covers ? {} : { fix: `use a bucket in ${c.region}, or --region ${(b.location ?? '').toLowerCase()}` }),
  });
  const sameProject = String(b.projectNumber ?? '') === String(number);

  // Identities
  const defaults = jobIdentities(number);
  const vertex = o.serviceAccount ?? defaults.vertex;
  const dataflow = o.serviceAccount ?? defaults.dataflow;
  if (o.serviceAccount) {
    const email = o.serviceAccount;
    if (!/^[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com$/.test(email) && !/@developer\.gserviceaccount\.com$/.test(email)) {
      throw new UserError(`service_account "${email}" is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)`);
    }
    await c.call(
      { what: `reading service account ${email}`, gcloud: `gcloud iam service-accounts describe ${email} --project=${p}`, dryRun: { email } },
      (opts) => c.iam().projects.serviceAccounts.get({ name: `projects/-/serviceAccounts/${email}` }, opts),
    ).catch((err: unknown) => {
      if (err instanceof UserError && /not found/.test(err.message)) {
        throw new UserError(`service account ${email} does not exist: create it with \`gcloud iam service-accounts create ${email.split('@')[0]} --project=${p}\`, or leave --service_account out`);
      }
      throw err;
    });
  }

  const projectPolicy = await c.call<cloudresourcemanager_v1.Schema$Policy>(
    { what: `reading the IAM policy of project ${p}`, gcloud: `gcloud projects get-iam-policy ${p}`, retryPost: true, dryRun: { bindings: [] } },
    (opts) => c.resourceManager().projects.getIamPolicy({ resource: p, requestBody: { options: { requestedPolicyVersion: 3 } } }, opts),
  );
  let bucketPolicy = await readBucketPolicy(c, bucket);

  const identities = [
    { who: vertex, runs: 'Vertex AI training and export', isDefaultAgent: !o.serviceAccount },
    ...(dataflow !== vertex ? [{ who: dataflow, runs: 'Dataflow workers', isDefaultAgent: false }] : []),
  ];
  for (const id of identities) {
    const member = `serviceAccount:${id.who}`;
    const onBucket = hasRole(bucketPolicy.bindings, member, BUCKET_RW_ROLES);
    const onProject = sameProject ? hasRole(projectPolicy.bindings, member, PROJECT_RW_ROLES) : undefined;
    let state: CheckState = onBucket || onProject ? 'ready' : 'missing';
    let detail = onBucket ? `${onBucket} on the bucket` : onProject ? `${onProject} on project ${p}` : 'no role that reads and writes the bucket';
    if (state === 'missing' && id.isDefaultAgent && sameProject) {
      // Vertex AI's custom code service agent reads and writes the buckets of its own project by default.
      state = 'ready';
      detail = 'the service agent\'s default access to buckets of its own project';
    }
    if (state === 'missing' && o.grant) {
      bucketPolicy = await grantBucketRole(c, bucket, member);
      state = 'ready';
      detail = `${BUCKET_ROLE} on the bucket, granted now`;
    }
    checks.push({
      check: `${id.runs} (${id.who})`,
      state,
      detail: `can read and write gs://${bucket}: ${state === 'ready' ? detail : 'no'}`,
      ...(state === 'missing' ? { fix: `gcloud storage buckets add-iam-policy-binding gs://${bucket} --member=${member} --role=${BUCKET_ROLE}` } : {}),
    });
  }
  const worker = hasRole(projectPolicy.bindings, `serviceAccount:${dataflow}`, DATAFLOW_WORKER_ROLES);
  checks.push({
    check: `Dataflow worker role (${dataflow})`,
    state: worker ? 'ready' : 'missing',
    detail: worker ? `${worker} on project ${p}` : 'lacks roles/dataflow.worker on the project (the workers cannot take work items)',
    ...(worker ? {} : { fix: `gcloud projects add-iam-policy-binding ${p} --member=serviceAccount:${dataflow} --role=roles/dataflow.worker` }),
  });

  return {
    project: p,
    projectNumber: number,
    region: c.region,
    bucket,
    identities: { vertex, dataflow },
    checks,
    ready: checks.every((x) => x.state !== 'missing'),
  };
}

async function readBucketPolicy(c: CloudClient, bucket: string): Promise<storage_v1.Schema$Policy> {
  return c.call<storage_v1.Schema$Policy>(
    { what: `reading the IAM policy of gs://${bucket}`, gcloud: `gcloud storage buckets get-iam-policy gs://${bucket}`, dryRun: { bindings: [], etag: 'ETAG' } },
    (opts) => c.storageJson().buckets.getIamPolicy({ bucket, optionsRequestedPolicyVersion: 3 }, opts),
  );
}

/** Add `member` to the bucket's objectAdmin binding; the etag makes a concurrent change fail, and we read again. */
async function grantBucketRole(c: CloudClient, bucket: string, member: string): Promise<storage_v1.Schema$Policy> {
  for (let attempt = 1; ; attempt++) {
    const policy = c.dryRun && attempt === 1 ? { bindings: [], etag: 'ETAG', version: 3 } : await readBucketPolicy(c, bucket);
    const bindings = (policy.bindings ?? []).map((b) => ({ ...b, members: [...(b.members ?? [])] }));
    const binding = bindings.find((b) => b.role === BUCKET_ROLE && !b.condition);
    if (binding) {
      if (!binding.members.includes(member)) binding.members.push(member);
    } else {
      bindings.push({ role: BUCKET_ROLE, members: [member] });
    }
    const body: storage_v1.Schema$Policy = { bindings, etag: policy.etag, version: policy.version ?? 3 };
    try {
      return await c.call<storage_v1.Schema$Policy>(
        {
          what: `granting ${BUCKET_ROLE} on gs://${bucket} to ${member}`,
          gcloud: `gcloud storage buckets add-iam-policy-binding gs://${bucket} --member=${member} --role=${BUCKET_ROLE}`,
          dryRun: body,
        },
        (opts) => c.storageJson().buckets.setIamPolicy({ bucket, requestBody: body }, opts),
      );
    } catch (err) {
      // 412: someone changed the policy since we read it; read it again rather than overwrite theirs.
      if (attempt < 4 && err instanceof UserError && /HTTP 412|HTTP 409|conditionNotMet|ABORTED/.test(err.message)) continue;
      throw err;
    }
  }
}

/** The report as a table: one line a check, then the commands that fix what is missing. */
export function formatAccessReport(r: AccessReport, dryRun = false): string {
  if (dryRun) return 'dry run: nothing was read, so nothing was checked; the requests above are what a real run sends\n';
  const mark = (s: CheckState): string => (s === 'ready' ? 'ok  ' : s === 'missing' ? 'MISSING' : 'warn');
  const w = Math.max(...r.checks.map((c) => c.check.length));
  const lines = r.checks.map((c) => `${mark(c.state).padEnd(7)} ${c.check.padEnd(w)}  ${c.detail}`);
  const fixes = r.checks.filter((c) => c.fix).map((c) => `  ${c.fix}`);
  return (
    lines.join('\n') + '\n' +
    (fixes.length ? `\nto fix what is missing (or rerun with --enable_apis / --grant):\n${fixes.join('\n')}\n` : '') +
    (r.ready ? `\nproject ${r.project} is ready for the gcp backend\n` : '')
  );
}
