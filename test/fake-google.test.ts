/**
 * The fake Google server (test/fake-google/) driven by the REAL googleapis generated clients, with
 * rootUrl taken from its env() overrides and an OAuth2 client holding its token, through the flows
 * the gcp backend uses; and its refusals, with raw fetch, of requests the published APIs do not
 * define. Every test of an accepted flow also asserts the fake rejected nothing.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { google } from 'googleapis';
import type { aiplatform_v1 } from 'googleapis';
import { Storage } from '@google-cloud/storage';
import { startFakeGoogle } from './fake-google';
import type { FakeGoogle } from './fake-google';
import { REPO_ROOT } from './helpers';

let fake: FakeGoogle;
let env: Record<string, string>;
const LOC = 'projects/imgclass-test/locations/us-central1';

function auth(token = 'fake-token') {
  const a = new google.auth.OAuth2();
  a.setCredentials({ access_token: token });
  return a;
}

function clients(f: FakeGoogle = fake) {
  const e = f.env();
  const a = auth(e.GOOGLE_OAUTH_ACCESS_TOKEN);
  return {
    ai: google.aiplatform({ version: 'v1', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM }),
    crm: google.cloudresourcemanager({ version: 'v1', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER }),
    su: google.serviceusage({ version: 'v1', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_SERVICEUSAGE }),
    iam: google.iam({ version: 'v1', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM }),
    logging: google.logging({ version: 'v2', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_LOGGING }),
    dataflow: google.dataflow({ version: 'v1b3', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_DATAFLOW }),
    cb: google.cloudbuild({ version: 'v1', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD }),
    ar: google.artifactregistry({ version: 'v1', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_ARTIFACTREGISTRY }),
    storage: google.storage({ version: 'v1', auth: a, rootUrl: e.CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE }),
  };
}

type Op = aiplatform_v1.Schema$GoogleLongrunningOperation;

/** Poll an operation to done, as client code does; returns it and how many polls said not done. */
async function wait(get: (name: string) => Promise<{ data: Op }>, first: Op): Promise<{ op: Op; pending: number }> {
  let op = first;
  let pending = 0;
  for (let i = 0; i < 10 && !op.done; i++) {
    op = (await get(op.name as string)).data;
    if (!op.done) pending++;
  }
  assert.ok(op.done, `operation ${op.name} never finished`);
  return { op, pending };
}

function assertNoRejections(f: FakeGoogle = fake): void {
  assert.deepEqual(
    f.rejected().map((r) => `${r.httpMethod} ${r.path}: ${r.rejected}`),
    [],
    'the fake rejected requests of the real client',
  );
}

async function gerr(p: Promise<unknown>): Promise<{ status: number; error: { code: number; status: string; message: string; details?: Record<string, unknown>[] } }> {
  try {
    await p;
  } catch (err) {
    const e = err as { status?: number; response?: { status: number; data: { error: never } } };
    assert.ok(e.response, `expected an HTTP error, got ${String(err)}`);
    return { status: e.response.status, error: e.response.data.error };
  }
  assert.fail('expected the call to fail');
}

before(async () => {
  fake = await startFakeGoogle({ buckets: [{ name: 'imgclass-test-bucket', location: 'us-central1' }] });
  env = fake.env();
});

after(async () => {
  await fake.close();
});

test('env() points every API at its own root on the fake, and storage at the FakeGcs part', async () => {
  const ports = new Set<string>();
  for (const api of ['AIPLATFORM', 'DATAFLOW', 'CLOUDRESOURCEMANAGER', 'SERVICEUSAGE', 'IAM', 'LOGGING', 'CLOUDBUILD', 'ARTIFACTREGISTRY']) {
    const root = env[`CLOUDSDK_API_ENDPOINT_OVERRIDES_${api}`] as string;
    assert.equal(root, fake.roots[api.toLowerCase()]);
    assert.match(root, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    ports.add(root);
  }
  assert.equal(ports.size, 8, 'googleapis keeps only the origin of a rootUrl, so each API needs a port of its own');
  // The same API under its prefix on the main server, for raw requests and a per-call rootUrl.
  const crm = google.cloudresourcemanager({ version: 'v1', auth: auth() });
  const viaPrefix = await crm.projects.get({ projectId: 'imgclass-test' }, { rootUrl: `${fake.root}cloudresourcemanager/` });
  assert.equal(viaPrefix.data.projectNumber, '123456789012');
  assert.equal(fake.requests.at(-1)?.path, '/cloudresourcemanager/v1/projects/imgclass-test');
  assert.match(fake.root, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.equal(env.STORAGE_EMULATOR_HOST, fake.gcs.endpoint);
  assert.equal(env.CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE, `${fake.gcs.endpoint}/`);
  assert.equal(env.GOOGLE_OAUTH_ACCESS_TOKEN, 'fake-token');
});

test('Vertex AI: upload, list by filter, endpoint, deploy with traffic split, predict, undeploy, delete', async () => {
  const { ai } = clients();
  const models = ai.projects.locations.models;
  const endpoints = ai.projects.locations.endpoints;
  const modelOps = (name: string) => models.operations.get({ name });
  const endpointOps = (name: string) => endpoints.operations.get({ name });

  const up = await models.upload({
    parent: LOC,
    requestBody: {
      model: {
        displayName: 'flowers-resnet',
        labels: { app: 'imgclass', run: 'r1' },
        artifactUri: 'gs://imgclass-test-bucket/export/',
        containerSpec: { imageUri: 'us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest', predictRoute: '/predict', healthRoute: '/health', ports: [{ containerPort: 8080 }] },
      },
    },
  });
  assert.equal(up.data.done, false);
  assert.match(up.data.name as string, /^projects\/123456789012\/locations\/us-central1\/models\/\d+\/operations\/\d+$/);
  assert.equal((up.data.metadata as Record<string, string>)['@type'], 'type.googleapis.com/google.cloud.aiplatform.v1.UploadModelOperationMetadata');
  const uploaded = await wait(modelOps, up.data);
  assert.ok(uploaded.pending >= 1, 'the operation should be pending on the first poll');
  const response = uploaded.op.response as { '@type': string; model: string };
  assert.equal(response['@type'], 'type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse');
  assert.match(response.model, /^projects\/123456789012\/locations\/us-central1\/models\/\d+$/);
  const modelName = response.model;

  const got = await models.get({ name: modelName.replace('123456789012', 'imgclass-test') });
  assert.equal(got.data.displayName, 'flowers-resnet');
  assert.equal(got.data.name, modelName, 'names carry the project number');
  // A second model, so the filters have something to leave out.
  const other = await models.upload({ parent: LOC, requestBody: { model: { displayName: 'other', labels: { app: 'else' }, containerSpec: { imageUri: 'gcr.io/x/y' } } } });
  await wait(modelOps, other.data);
  assert.deepEqual((await models.list({ parent: LOC, filter: 'display_name="flowers-resnet"' })).data.models?.map((m) => m.name), [modelName]);
  assert.deepEqual((await models.list({ parent: LOC, filter: 'labels.app="imgclass"' })).data.models?.map((m) => m.name), [modelName]);
  assert.equal((await models.list({ parent: LOC, filter: 'labels.app="imgclass" AND displayName="other"' })).data.models, undefined);
  assert.equal((await models.list({ parent: LOC })).data.models?.length, 2);

  const created = await endpoints.create({ parent: LOC, requestBody: { displayName: 'flowers-endpoint', labels: { app: 'imgclass' } } });
  const endpoint = (await wait(endpointOps, created.data)).op.response as aiplatform_v1.Schema$GoogleCloudAiplatformV1Endpoint & { '@type': string };
  assert.equal(endpoint['@type'], 'type.googleapis.com/google.cloud.aiplatform.v1.Endpoint');
  const endpointName = endpoint.name as string;
  assert.deepEqual((await endpoints.list({ parent: LOC, filter: 'display_name="flowers-endpoint"' })).data.endpoints?.map((e) => e.name), [endpointName]);

  const deploy = await endpoints.deployModel({
    endpoint: endpointName,
    requestBody: {
      deployedModel: { model: modelName, displayName: 'flowers-v1', dedicatedResources: { machineSpec: { machineType: 'n1-standard-2' }, minReplicaCount: 1, maxReplicaCount: 1 } },
      trafficSplit: { '0': 100 },
    },
  });
  const deployed = (await wait(endpointOps, deploy.data)).op.response as { '@type': string; deployedModel: { id: string; model: string } };
  assert.equal(deployed['@type'], 'type.googleapis.com/google.cloud.aiplatform.v1.DeployModelResponse');
  assert.match(deployed.deployedModel.id, /^\d+$/);
  const ep = (await endpoints.get({ name: endpointName })).data;
  assert.deepEqual(ep.trafficSplit, { [deployed.deployedModel.id]: 100 });
  assert.equal(ep.deployedModels?.[0]?.model, modelName);

  const seen: unknown[] = [];
  fake.setPredictor(async (name, instances) => {
    seen.push(name, instances);
    return instances.map(() => ({ classes: 2, probabilities: [0.1, 0.2, 0.7] }));
  });
  const instances = [{ image_bytes: { b64: Buffer.from('jpeg bytes').toString('base64') } }];
  const pred = await endpoints.predict({ endpoint: endpointName, requestBody: { instances } });
  assert.deepEqual(pred.data, {
    predictions: [{ classes: 2, probabilities: [0.1, 0.2, 0.7] }],
    deployedModelId: deployed.deployedModel.id,
    model: modelName,
    modelDisplayName: 'flowers-resnet',
    modelVersionId: '1',
  });
  assert.deepEqual(seen, [endpointName, instances]);

  const refused = await gerr(models.delete({ name: modelName }));
  assert.equal(refused.error.status, 'FAILED_PRECONDITION', 'a deployed model cannot be deleted');

  const undeploy = await endpoints.undeployModel({ endpoint: endpointName, requestBody: { deployedModelId: deployed.deployedModel.id } });
  assert.equal((await wait(endpointOps, undeploy.data)).op.response?.['@type'], 'type.googleapis.com/google.cloud.aiplatform.v1.UndeployModelResponse');
  const after = (await endpoints.get({ name: endpointName })).data;
  assert.equal(after.deployedModels, undefined);
  const noModel = await gerr(endpoints.predict({ endpoint: endpointName, requestBody: { instances } }));
  assert.equal(noModel.status, 400);
  assert.equal(noModel.error.status, 'FAILED_PRECONDITION');

  const opsGet = (name: string) => ai.projects.locations.operations.get({ name });
  await wait(opsGet, (await endpoints.delete({ name: endpointName })).data);
  await wait(opsGet, (await models.delete({ name: modelName })).data);
  assert.equal(fake.state.endpoints.has(endpointName), false);
  assert.equal(fake.state.models.has(modelName), false);
  assert.equal((await gerr(models.get({ name: modelName }))).status, 404);
  assertNoRejections();
});

test('Vertex AI custom jobs: create, state walks to SUCCEEDED; cancel', async () => {
  const { ai } = clients();
  const jobs = ai.projects.locations.customJobs;
  const spec = {
    displayName: 'train-resnet',
    jobSpec: {
      workerPoolSpecs: [{ machineSpec: { machineType: 'cloud-tpu', acceleratorType: 'TPU_V2', acceleratorCount: 8 }, replicaCount: '1', containerSpec: { imageUri: 'us-docker.pkg.dev/p/r/trainer:1', args: ['--epochs=1'] } }],
      baseOutputDirectory: { outputUriPrefix: 'gs://imgclass-test-bucket/runs/1' },
    },
  };
  const job = (await jobs.create({ parent: LOC, requestBody: spec })).data;
  assert.equal(job.state, 'JOB_STATE_QUEUED');
  const states: string[] = [];
  for (let i = 0; i < 5; i++) states.push((await jobs.get({ name: job.name as string })).data.state as string);
  assert.deepEqual(states, ['JOB_STATE_PENDING', 'JOB_STATE_RUNNING', 'JOB_STATE_SUCCEEDED', 'JOB_STATE_SUCCEEDED', 'JOB_STATE_SUCCEEDED']);
  const second = (await jobs.create({ parent: LOC, requestBody: spec })).data;
  await jobs.cancel({ name: second.name as string, requestBody: {} });
  assert.equal((await jobs.get({ name: second.name as string })).data.state, 'JOB_STATE_CANCELLED');
  assertNoRejections();
});

test('a disabled service answers SERVICE_DISABLED as Google does; Service Usage enables it through an operation', async () => {
  const f = await startFakeGoogle({ projectId: 'p2', projectNumber: '222', enabledServices: ['serviceusage.googleapis.com', 'cloudresourcemanager.googleapis.com'] });
  try {
    const { ai, su } = clients(f);
    const denied = await gerr(ai.projects.locations.endpoints.list({ parent: 'projects/p2/locations/us-central1' }));
    assert.equal(denied.status, 403);
    assert.equal(denied.error.status, 'PERMISSION_DENIED');
    assert.match(denied.error.message, /Vertex AI API has not been used in project 222 before or it is disabled/);
    assert.deepEqual(denied.error.details?.[0], {
      '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
      reason: 'SERVICE_DISABLED',
      domain: 'googleapis.com',
      metadata: {
        service: 'aiplatform.googleapis.com',
        consumer: 'projects/222',
        serviceTitle: 'Vertex AI API',
        containerInfo: '222',
        activationUrl: 'https://console.developers.google.com/apis/api/aiplatform.googleapis.com/overview?project=222',
      },
    });
    assert.ok(denied.error.details?.some((d) => d['@type'] === 'type.googleapis.com/google.rpc.Help'));

    const names = ['projects/p2/services/aiplatform.googleapis.com', 'projects/p2/services/dataflow.googleapis.com', 'projects/p2/services/serviceusage.googleapis.com'];
    const states = (await su.services.batchGet({ parent: 'projects/p2', names })).data.services?.map((s) => [s.config?.name, s.state]);
    assert.deepEqual(states, [
      ['aiplatform.googleapis.com', 'DISABLED'],
      ['dataflow.googleapis.com', 'DISABLED'],
      ['serviceusage.googleapis.com', 'ENABLED'],
    ]);
    const one = await su.services.enable({ name: 'projects/p2/services/aiplatform.googleapis.com', requestBody: {} });
    assert.equal(one.data.done, false);
    const polled = await wait((name) => su.operations.get({ name }), one.data);
    assert.ok(polled.pending >= 1);
    assert.equal((polled.op.response as { '@type': string })['@type'], 'type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse');
    assert.equal((await su.services.get({ name: 'projects/222/services/aiplatform.googleapis.com' })).data.state, 'ENABLED');
    const batch = await su.services.batchEnable({ parent: 'projects/222', requestBody: { serviceIds: ['dataflow.googleapis.com', 'logging.googleapis.com'] } });
    await wait((name) => su.operations.get({ name }), batch.data);
    assert.ok(f.project.enabledServices.has('dataflow.googleapis.com') && f.project.enabledServices.has('logging.googleapis.com'));
    assert.deepEqual((await ai.projects.locations.endpoints.list({ parent: 'projects/p2/locations/us-central1' })).data, {});
    assertNoRejections(f);
  } finally {
    await f.close();
  }
});

test('Resource Manager project and IAM policy; IAM service account', async () => {
  const { crm, iam } = clients();
  const p = (await crm.projects.get({ projectId: 'imgclass-test' })).data;
  assert.equal(p.projectNumber, '123456789012');
  assert.equal(p.lifecycleState, 'ACTIVE');
  const policy = (await crm.projects.getIamPolicy({ resource: 'imgclass-test', requestBody: { options: { requestedPolicyVersion: 3 } } })).data;
  assert.ok(policy.bindings?.some((b) => b.role === 'roles/owner'));
  fake.project.iamPolicy.bindings?.push({ role: 'roles/aiplatform.user', members: ['serviceAccount:trainer@imgclass-test.iam.gserviceaccount.com'] });
  const again = (await crm.projects.getIamPolicy({ resource: 'imgclass-test', requestBody: {} })).data;
  assert.ok(again.bindings?.some((b) => b.role === 'roles/aiplatform.user'));
  const sa = (await iam.projects.serviceAccounts.get({ name: 'projects/-/serviceAccounts/123456789012-compute@developer.gserviceaccount.com' })).data;
  assert.equal(sa.email, '123456789012-compute@developer.gserviceaccount.com');
  assert.equal((await gerr(iam.projects.serviceAccounts.get({ name: 'projects/imgclass-test/serviceAccounts/nobody@imgclass-test.iam.gserviceaccount.com' }))).status, 404);
  assert.equal((await gerr(crm.projects.get({ projectId: 'someone-elses' }))).status, 403);
  assertNoRejections();
});

test('Dataflow: flex template launch, state walk to DONE or FAILED, cancel, job messages; Logging entries by job id', async () => {
  const { dataflow, logging } = clients();
  const jobs = dataflow.projects.locations.jobs;
  const launch = (jobName: string) =>
    dataflow.projects.locations.flexTemplates.launch({
      projectId: 'imgclass-test',
      location: 'us-central1',
      requestBody: {
        launchParameter: {
          jobName,
          containerSpecGcsPath: 'gs://imgclass-test-bucket/templates/preprocess.json',
          parameters: { input: 'gs://imgclass-test-bucket/train.csv', output: 'gs://imgclass-test-bucket/tfrecords/' },
          environment: { tempLocation: 'gs://imgclass-test-bucket/tmp', maxWorkers: 4, machineType: 'n1-standard-4' },
        },
      },
    });
  const job = (await launch('preprocess-1')).data.job;
  assert.match(job?.id as string, /^\d{4}-\d\d-\d\d_\d\d_\d\d_\d\d-\d+$/);
  const states: string[] = [];
  for (let i = 0; i < 5; i++) states.push((await jobs.get({ projectId: 'imgclass-test', location: 'us-central1', jobId: job?.id as string })).data.currentState as string);
  assert.deepEqual(states, ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', 'JOB_STATE_RUNNING', 'JOB_STATE_DONE', 'JOB_STATE_DONE']);

  fake.state.dataflowPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_RUNNING', 'JOB_STATE_FAILED'];
  const failing = (await launch('preprocess-2')).data.job?.id as string;
  const last = [];
  for (let i = 0; i < 3; i++) last.push((await jobs.get({ projectId: 'imgclass-test', location: 'us-central1', jobId: failing })).data.currentState);
  assert.equal(last[2], 'JOB_STATE_FAILED');

  fake.state.dataflowPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_RUNNING', 'JOB_STATE_DONE'];
  const running = (await launch('preprocess-3')).data.job?.id as string;
  const cancelled = await jobs.update({ projectId: 'imgclass-test', location: 'us-central1', jobId: running, requestBody: { requestedState: 'JOB_STATE_CANCELLED' } });
  assert.equal(cancelled.data.currentState, 'JOB_STATE_CANCELLING');
  assert.equal((await jobs.get({ projectId: 'imgclass-test', location: 'us-central1', jobId: running })).data.currentState, 'JOB_STATE_CANCELLED');
  const again = await gerr(jobs.update({ projectId: 'imgclass-test', location: 'us-central1', jobId: running, requestBody: { requestedState: 'JOB_STATE_CANCELLED' } }));
  assert.equal(again.error.status, 'FAILED_PRECONDITION');

  fake.state.jobMessages.set(failing, [
    { id: '1', time: '2026-12-01T10:00:00Z', messageImportance: 'JOB_MESSAGE_DETAILED', messageText: 'Autoscaling: started' },
    { id: '2', time: '2026-12-01T10:01:00Z', messageImportance: 'JOB_MESSAGE_ERROR', messageText: 'Workflow failed.' },
  ]);
  const msgs = (await jobs.messages.list({ projectId: 'imgclass-test', location: 'us-central1', jobId: failing, minimumImportance: 'JOB_MESSAGE_BASIC' })).data;
  assert.deepEqual(msgs.jobMessages?.map((m) => m.messageText), ['Workflow failed.']);

  fake.state.logEntries.push(
    { logName: 'projects/imgclass-test/logs/dataflow.googleapis.com%2Fworker', timestamp: '2026-12-01T10:00:05Z', severity: 'INFO', resource: { type: 'dataflow_step', labels: { job_id: failing } }, textPayload: 'reading train.csv' },
    { logName: 'projects/imgclass-test/logs/dataflow.googleapis.com%2Fworker', timestamp: '2026-12-01T10:00:09Z', severity: 'ERROR', resource: { type: 'dataflow_step', labels: { job_id: failing } }, textPayload: 'bad JPEG' },
    { logName: 'projects/imgclass-test/logs/dataflow.googleapis.com%2Fworker', timestamp: '2026-12-01T10:00:07Z', severity: 'INFO', resource: { type: 'dataflow_step', labels: { job_id: 'another-job' } }, textPayload: 'not ours' },
  );
  const entries = await logging.entries.list({
    requestBody: { resourceNames: ['projects/imgclass-test'], filter: `resource.type="dataflow_step" AND resource.labels.job_id="${failing}" AND timestamp>="2026-12-01T10:00:00Z"`, orderBy: 'timestamp asc' },
  });
  assert.deepEqual(entries.data.entries?.map((e) => e.textPayload), ['reading train.csv', 'bad JPEG']);
  const errors = await logging.entries.list({ requestBody: { resourceNames: ['projects/imgclass-test'], filter: `resource.labels.job_id="${failing}" AND severity>=ERROR` } });
  assert.deepEqual(errors.data.entries?.map((e) => e.textPayload), ['bad JPEG']);
  assertNoRejections();
});

test('Artifact Registry repository, Cloud Build build that pushes an image into it', async () => {
  const { cb, ar } = clients();
  const repos = ar.projects.locations.repositories;
  const arLoc = 'projects/imgclass-test/locations/us-central1';
  assert.equal((await gerr(repos.get({ name: `${arLoc}/repositories/imgclass` }))).status, 404);
  const create = await repos.create({ parent: arLoc, repositoryId: 'imgclass', requestBody: { format: 'DOCKER', description: 'trainer images' } });
  await wait((name) => ar.projects.locations.operations.get({ name }), create.data);
  assert.equal((await repos.get({ name: `${arLoc}/repositories/imgclass` })).data.format, 'DOCKER');
  assert.equal((await gerr(repos.create({ parent: arLoc, repositoryId: 'imgclass', requestBody: { format: 'DOCKER' } }))).status, 409);

  const image = 'us-central1-docker.pkg.dev/imgclass-test/imgclass/trainer:v1';
  const op = await cb.projects.locations.builds.create({
    parent: arLoc,
    requestBody: { steps: [{ name: 'gcr.io/cloud-builders/docker', args: ['build', '-t', image, '.'] }], images: [image], source: { storageSource: { bucket: 'imgclass-test-bucket', object: 'src.tgz' } }, timeout: '1200s' },
  });
  const build = (op.data.metadata as { build: { name: string; status: string } }).build;
  assert.equal(build.status, 'QUEUED');
  assert.equal((await cb.projects.locations.builds.get({ name: build.name })).data.status, 'WORKING');
  const done = await wait((name) => cb.projects.locations.operations.get({ name }), op.data);
  assert.equal((done.op.response as { status: string }).status, 'SUCCESS');
  const images = (await repos.dockerImages.list({ parent: `${arLoc}/repositories/imgclass` })).data.dockerImages ?? [];
  assert.equal(images.length, 1);
  assert.deepEqual(images[0]?.tags, ['v1']);
  assert.match(images[0]?.uri as string, /^us-central1-docker\.pkg\.dev\/imgclass-test\/imgclass\/trainer@sha256:[0-9a-f]{64}$/);
  assert.equal((await repos.dockerImages.get({ name: images[0]?.name as string })).data.uri, images[0]?.uri);
  assertNoRejections();
});

test('Cloud Storage through the same fake: googleapis buckets.get / getIamPolicy / setIamPolicy (stale etag -> 412), @google-cloud/storage via STORAGE_EMULATOR_HOST', async () => {
  const { storage } = clients();
  const b = (await storage.buckets.get({ bucket: 'imgclass-test-bucket' })).data;
  assert.equal(b.location, 'US-CENTRAL1');
  assert.equal(b.locationType, 'region');
  const policy = (await storage.buckets.getIamPolicy({ bucket: 'imgclass-test-bucket', optionsRequestedPolicyVersion: 3 })).data;
  const binding = { role: 'roles/storage.objectAdmin', members: ['serviceAccount:service-123456789012@gcp-sa-aiplatform.iam.gserviceaccount.com'] };
  const set = await storage.buckets.setIamPolicy({ bucket: 'imgclass-test-bucket', requestBody: { bindings: [...(policy.bindings ?? []), binding], etag: policy.etag } });
  assert.notEqual(set.data.etag, policy.etag);
  const stale = await gerr(storage.buckets.setIamPolicy({ bucket: 'imgclass-test-bucket', requestBody: { bindings: [binding], etag: policy.etag } }));
  assert.equal(stale.status, 412);
  assert.ok(fake.state.buckets.get('imgclass-test-bucket')?.iamPolicy.bindings?.some((x) => x.role === 'roles/storage.objectAdmin'));

  const saved = process.env.STORAGE_EMULATOR_HOST;
  process.env.STORAGE_EMULATOR_HOST = env.STORAGE_EMULATOR_HOST;
  let gcs: Storage;
  try {
    gcs = new Storage({ projectId: 'imgclass-test' });
  } finally {
    if (saved === undefined) delete process.env.STORAGE_EMULATOR_HOST;
    else process.env.STORAGE_EMULATOR_HOST = saved;
  }
  const bucket = gcs.bucket('imgclass-test-bucket');
  await bucket.file('dir/hello.txt').save('hello', { resumable: false, contentType: 'text/plain' });
  assert.equal((await bucket.file('dir/hello.txt').download())[0].toString(), 'hello');
  const [meta] = await bucket.getMetadata();
  assert.equal(meta.location, 'US-CENTRAL1');
  const storageCalls = fake.requests.filter((r) => r.api === 'storage');
  assert.ok(storageCalls.some((r) => r.methodId === 'storage.objects.insert') && storageCalls.some((r) => r.methodId === 'storage.buckets.get'));
  assertNoRejections();
});

test('failNext: SERVICE_DISABLED, PERMISSION_DENIED, QUOTA, NOT_FOUND, 429, 500, 503 in the API error shape; RESET drops the connection', async () => {
  const { ai } = clients();
  const list = () => ai.projects.locations.endpoints.list({ parent: LOC }, { retry: false });
  const method = 'aiplatform.projects.locations.endpoints.list';

  fake.failNext({ method }, 'PERMISSION_DENIED');
  const pd = await gerr(list());
  assert.equal(pd.status, 403);
  assert.deepEqual(pd.error.details?.[0], {
    '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
    reason: 'IAM_PERMISSION_DENIED',
    domain: 'aiplatform.googleapis.com',
    metadata: { permission: 'aiplatform.endpoints.list', resource: 'projects/imgclass-test/locations/us-central1' },
  });
  fake.failNext({ method }, 'QUOTA');
  const q = await gerr(list());
  assert.equal(q.status, 429);
  assert.equal(q.error.status, 'RESOURCE_EXHAUSTED');
  assert.equal(q.error.details?.[0]?.reason, 'RATE_LIMIT_EXCEEDED');
  fake.failNext({ method }, 'SERVICE_DISABLED');
  assert.equal((await gerr(list())).error.details?.[0]?.reason, 'SERVICE_DISABLED');
  fake.failNext({ method }, 'NOT_FOUND');
  assert.equal((await gerr(list())).error.status, 'NOT_FOUND');
  for (const [kind, status] of [[429, 'RESOURCE_EXHAUSTED'], [500, 'INTERNAL'], [503, 'UNAVAILABLE']] as const) {
    fake.failNext({ method }, kind);
    const e = await gerr(list());
    assert.equal(e.status, kind);
    assert.equal(e.error.status, status);
  }
  fake.failNext({ method }, 503, 2);
  assert.equal((await gerr(list())).status, 503);
  assert.equal((await gerr(list())).status, 503);
  assert.equal((await list()).status, 200, 'times=2 fails exactly twice');

  fake.failNext({ method }, 'RESET');
  await assert.rejects(fetch(`${env.CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM}v1/${LOC}/endpoints`, { headers: { authorization: 'Bearer fake-token' } }), /fetch failed/);
  assert.equal((await list()).status, 200);

  fake.failNext({ method: 'storage.objects.get' }, 503);
  const r = await fetch(`${fake.gcs.endpoint}/storage/v1/b/imgclass-test-bucket/o/x`);
  assert.equal(r.status, 503);
  assert.throws(() => fake.failNext({ method: 'aiplatform.projects.locations.nope' }, 500), /no method/);
  assertNoRejections();
});

/** A raw request to the fake, as JSON. */
async function raw(method: string, p: string, body?: unknown, token: string | null = 'fake-token') {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${fake.root}${p}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  return { status: res.status, body: (await res.json()) as { error: { code: number; status: string; message: string; details?: { '@type': string; fieldViolations?: { field: string }[] }[] } } };
}

test('refusals name what is wrong, in the API error shape, and are recorded as rejected', async () => {
  const before = fake.rejected().length;
  const model = { displayName: 'm', containerSpec: { imageUri: 'gcr.io/x/y' } };
  const cases: Array<[string, Promise<Awaited<ReturnType<typeof raw>>>, number, RegExp]> = [
    ['unknown body field', raw('POST', `aiplatform/v1/${LOC}/models:upload`, { model: { ...model, colour: 'red' } }), 400, /Unknown name "colour" at 'model': Cannot find field/],
    ['bad enum value', raw('POST', `aiplatform/v1/${LOC}/endpoints/1:deployModel`, { deployedModel: { model: 'm', dedicatedResources: { machineSpec: { acceleratorType: 'TPU_V9' } } } }), 400, /TYPE_ENUM\), "TPU_V9"/],
    ['missing required field', raw('POST', `aiplatform/v1/${LOC}/models:upload`, { model: { containerSpec: { imageUri: 'x' } } }), 400, /Required field 'model\.displayName' is not set/],
    ['wrong JSON type', raw('POST', `aiplatform/v1/${LOC}/endpoints`, { displayName: 5 }), 400, /Invalid value at 'displayName' \(TYPE_STRING\), 5/],
    ['unknown query parameter', raw('GET', `aiplatform/v1/${LOC}/models?colour=red`), 400, /Unknown name "colour": Cannot bind query parameter/],
    ['bad query value', raw('GET', `aiplatform/v1/${LOC}/models?pageSize=ten`), 400, /TYPE_INT32/],
    ['wrong path', raw('GET', `aiplatform/v1/${LOC}/modles`), 400, /defines no method at path/],
    ['wrong method', raw('DELETE', `aiplatform/v1/${LOC}/models`), 400, /HTTP method DELETE is not defined .* GET \(aiplatform\.projects\.locations\.models\.list\)/],
    ['GET on a custom verb', raw('GET', `aiplatform/v1/${LOC}/endpoints/1:predict`), 400, /HTTP method GET is not defined/],
    ['path parameter pattern', raw('GET', `aiplatform/v1/projects/p/models/1`), 400, /defines no method at path/],
    ['no API root', raw('GET', `v1/${LOC}/models`), 400, /no API at/],
    ['body where none is defined', raw('DELETE', `aiplatform/v1/${LOC}/models/1`, {}), 400, /takes no request body/],
    ['missing body', raw('POST', `aiplatform/v1/${LOC}/models:upload`), 400, /needs a JSON request body/],
    ['dataflow job name', raw('POST', `dataflow/v1b3/projects/imgclass-test/locations/us-central1/flexTemplates:launch`, { launchParameter: { jobName: 'j', containerSpecGcsPath: 'gs://b/t', bogus: 1 } }), 400, /Unknown name "bogus" at 'launchParameter'/],
    ['no token', raw('GET', `aiplatform/v1/${LOC}/models`, undefined, null), 401, /invalid authentication credentials/],
    ['wrong token', raw('GET', `aiplatform/v1/${LOC}/models`, undefined, 'stolen'), 401, /invalid authentication credentials/],
  ];
  for (const [what, p, status, message] of cases) {
    const r = await p;
    assert.equal(r.status, status, `${what}: status`);
    assert.equal(r.body.error.code, status, `${what}: error.code`);
    assert.equal(r.body.error.status, status === 401 ? 'UNAUTHENTICATED' : 'INVALID_ARGUMENT', `${what}: error.status`);
    assert.match(r.body.error.message, message, `${what}: message`);
    if (status === 400) assert.equal(r.body.error.details?.[0]?.['@type'], 'type.googleapis.com/google.rpc.BadRequest', `${what}: details`);
  }
  const rejected = fake.rejected().slice(before);
  assert.equal(rejected.length, cases.length, 'every refusal is recorded as rejected');
  assert.ok(rejected.every((r) => r.status === 400 || r.status === 401));
  assert.ok(rejected.some((r) => r.methodId === 'aiplatform.projects.locations.models.upload' && r.body !== undefined), 'records name the method and keep the body');
  // Answers that are the API's own (not found, failed precondition) are not rejections.
  const nf = await raw('GET', `aiplatform/v1/${LOC}/models/404`);
  assert.equal(nf.status, 404);
  assert.equal(fake.rejected().length, before + cases.length);
});

test('the CLI runs the fake in its own process, prints root and env, and stops on SIGTERM', async () => {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'dist/test/fake-google/main.js'), JSON.stringify({ projectId: 'cli-proj', projectNumber: '999' })], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const line = await new Promise<string>((resolve) => readline.createInterface({ input: child.stdout }).once('line', resolve));
  const info = JSON.parse(line) as { root: string; env: Record<string, string> };
  assert.match(info.root, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const crm = google.cloudresourcemanager({ version: 'v1', auth: auth(info.env.GOOGLE_OAUTH_ACCESS_TOKEN), rootUrl: info.env.CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER });
  assert.equal((await crm.projects.get({ projectId: 'cli-proj' })).data.projectNumber, '999');
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
});
