/**
 * Sections 2, 7 and 8 on the gcp backend, through the CLI, against the fake Google API server:
 * setup-gcp's checks and fixes, deploy (once), predict with the codelab's body (answered by a real
 * local server behind the fake endpoint, so the numbers are a real model's), undeploy, and dry runs
 * that send nothing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { startFakeGoogle, FakeGoogle } from './fake-google';
import { startServer, RunningServer } from '../lib/serve';
import { exportFixture, LABELS, ServingFixture } from './serve-fixture';
import { tempDir, removeDir, CLI } from './helpers';
import { modelIdFor } from '../lib/cloud/endpoints';

const run = promisify(execFile);
const PROJECT = 'imgclass-test';
const BUCKET = 'imgclass-test-bucket';
const EXPORT = `gs://${BUCKET}/work/export`;
const VERSION = '1764600000';

let fake: FakeGoogle;
let dir: string;
let fx: ServingFixture;
let server: RunningServer;
let jpgPath: string;

before(async () => {
  dir = tempDir('imgclass-vertex-');
  jpgPath = path.join(dir, 'rose.jpg');
  fs.writeFileSync(jpgPath, await sharp({ create: { width: 300, height: 200, channels: 3, background: '#c03050' } }).jpeg().toBuffer());
  fx = await exportFixture(path.join(dir, 'export'), [fs.readFileSync(jpgPath)]);
  server = await startServer({ modelDir: fx.exportDir, port: 0, modelName: 'local' });
  fake = await startFakeGoogle({ projectId: PROJECT, buckets: [{ name: BUCKET, location: 'US-CENTRAL1' }] });
  // What the training issue's export writes: a SavedModel version folder and labels.txt.
  fake.gcs.put(BUCKET, `work/export/${VERSION}/saved_model.pb`, Buffer.from('\x08\x01 not a real graph'));
  fake.gcs.put(BUCKET, `work/export/${VERSION}/variables/variables.index`, Buffer.from('index'));
  fake.gcs.put(BUCKET, `work/export/${VERSION}/labels.txt`, LABELS.join('\n') + '\n');
  // The endpoint's answers come from the real local server, as Vertex's would from the model.
  fake.setPredictor(async (_endpoint, instances) => {
    const res = await fetch(server.predictUrl ?? `${server.url}/v1/models/local:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances }) });
    const body = (await res.json()) as { predictions: Array<Record<string, unknown>> };
    // Vertex's TensorFlow container answers the signature's outputs only: no label names.
    return body.predictions.map(({ classes, probabilities }) => ({ classes, probabilities }));
  });
});

after(async () => {
  await server?.close();
  fx?.model.dispose();
  await fake?.close();
  if (dir) removeDir(dir);
});

async function cli(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...fake.env(), IMGCLASS_POLL_MS: '20', ...extraEnv }, maxBuffer: 1 << 24 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const count = (methodId: string): number => fake.requests.filter((r) => r.methodId === methodId).length;
const gcp = ['--backend', 'gcp', '--project', PROJECT, '--region', 'us-central1'];

test('setup-gcp: the table of what is ready and missing with the command that fixes each line; --enable_apis and --grant fix them', async () => {
  fake.project.enabledServices.delete('dataflow.googleapis.com');
  let r = await cli(['setup-gcp', '--project', PROJECT, '--region', 'us-central1', '--bucket', `gs://${BUCKET}`]);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stdout, /MISSING API dataflow\.googleapis\.com/);
  assert.match(r.stdout, /gcloud services enable dataflow\.googleapis\.com --project=imgclass-test/);
  assert.match(r.stdout, /ok +bucket +gs:\/\/imgclass-test-bucket in US-CENTRAL1.*covers us-central1/);
  assert.match(r.stdout, /Vertex AI training and export \(service-123456789012@gcp-sa-aiplatform-cc\.iam\.gserviceaccount\.com\)/);
  const sets = count('storage.buckets.setIamPolicy');
  const enables = count('serviceusage.services.batchEnable');
  assert.equal(count('serviceusage.services.batchEnable'), enables, 'nothing changed without the flags');

  const sa = 'trainer@imgclass-test.iam.gserviceaccount.com';
  fake.project.serviceAccounts.set(sa, { name: `projects/${PROJECT}/serviceAccounts/${sa}`, email: sa, projectId: PROJECT, uniqueId: '1', displayName: 'trainer' } as never);
  r = await cli(['setup-gcp', '--project', PROJECT, '--bucket', `gs://${BUCKET}`, '--service_account', sa]);
  assert.match(r.stdout, new RegExp(`MISSING .*\\(${sa.replace(/\./g, '\\.')}\\).*no$`, 'm'));
  assert.match(r.stdout, new RegExp(`gcloud storage buckets add-iam-policy-binding gs://${BUCKET} --member=serviceAccount:${sa.replace(/\./g, '\\.')} --role=roles/storage\\.objectAdmin`));

  r = await cli(['setup-gcp', '--project', PROJECT, '--bucket', `gs://${BUCKET}`, '--service_account', sa, '--enable_apis', '--grant']);
  assert.equal(count('serviceusage.services.batchEnable'), enables + 1);
  assert.equal(count('storage.buckets.setIamPolicy'), sets + 1);
  assert.ok(fake.project.enabledServices.has('dataflow.googleapis.com'));
  const policy = fake.state.buckets.get(BUCKET)!.iamPolicy;
  assert.ok((policy.bindings ?? []).some((b) => b.role === 'roles/storage.objectAdmin' && b.members.includes(`serviceAccount:${sa}`)), JSON.stringify(policy));
  assert.match(r.stdout, /granted now/);
  assert.deepEqual(fake.rejected(), []);
});

test('setup-gcp --dry_run prints each request and its gcloud line and sends nothing', async () => {
  const n = fake.requests.length + fake.gcs.requests.length;
  const r = await cli(['setup-gcp', '--project', PROJECT, '--bucket', `gs://${BUCKET}`, '--enable_apis', '--grant', '--dry_run']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fake.requests.length + fake.gcs.requests.length, n, 'no request reached the fakes');
  assert.match(r.stderr, /dry run: reading project imgclass-test\n  GET http:\/\/127\.0\.0\.1:\d+\/(cloudresourcemanager\/)?v1\/projects\/imgclass-test\n  gcloud: gcloud projects describe imgclass-test/);
  assert.match(r.stderr, /dry run: enabling .*\n  POST .*services:batchEnable/);
  assert.match(r.stderr, /dry run: granting roles\/storage\.objectAdmin on gs:\/\/imgclass-test-bucket/);
});

test('deploy --backend gcp: upload, endpoint, deploy with all traffic, recorded; a second run uploads and deploys nothing', async () => {
  const work = `gs://${BUCKET}/work`;
  let r = await cli(['deploy', ...gcp, '--export_dir', EXPORT, '--model_name', 'flowers', '--work_dir', work]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /deployed model "flowers" version 1764600000 to projects\/.+\/endpoints\/\d+/);
  assert.equal(count('aiplatform.projects.locations.models.upload'), 1);
  assert.equal(count('aiplatform.projects.locations.endpoints.create'), 1);
  assert.equal(count('aiplatform.projects.locations.endpoints.deployModel'), 1);
  const upload = fake.requests.find((q) => q.methodId === 'aiplatform.projects.locations.models.upload')!.body as Record<string, any>;
  assert.equal(upload.modelId, modelIdFor(`${EXPORT}/${VERSION}`));
  assert.equal(upload.model.artifactUri, `${EXPORT}/${VERSION}`);
  assert.equal(upload.model.containerSpec.imageUri, 'us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest');
  const dep = fake.requests.find((q) => q.methodId === 'aiplatform.projects.locations.endpoints.deployModel')!.body as Record<string, any>;
  assert.deepEqual(dep.trafficSplit, { '0': 100 });
  assert.equal(dep.deployedModel.dedicatedResources.machineSpec.machineType, 'n1-standard-2');
  const record = JSON.parse(fake.gcs.get(BUCKET, 'work/deployment.json')!.toString('utf8'));
  assert.equal(record.backend, 'gcp');
  assert.deepEqual(record.labels, LABELS);
  assert.match(r.stderr, /deploying model .*: running/);

  r = await cli(['deploy', ...gcp, '--export_dir', EXPORT, '--model_name', 'flowers', '--work_dir', work]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(count('aiplatform.projects.locations.models.upload'), 1, 'not uploaded twice');
  assert.equal(count('aiplatform.projects.locations.endpoints.deployModel'), 1, 'not deployed twice');
  assert.match(r.stderr, /already uploaded/);
  assert.match(r.stderr, /already serves all traffic/);
  assert.deepEqual(fake.rejected(), []);
});

test('predict --backend gcp by display name, id or resource name: the same answer as the local server, with label names', async () => {
  const local = await cli(['predict', '--endpoint', `${server.url}/v1/models/local:predict`, '--image', jpgPath, '--json']);
  assert.equal(local.code, 0, local.stderr);
  const want = JSON.parse(local.stdout).predictions[0];
  const endpoint = [...fake.state.endpoints.values()][0]!;
  for (const ref of ['flowers', endpoint.name!.split('/').pop()!, endpoint.name!]) {
    const r = await cli(['predict', ...gcp, '--endpoint', ref, '--image', jpgPath, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout).predictions[0];
    assert.equal(got.classes, want.classes);
    assert.deepEqual(got.probabilities, want.probabilities);
    assert.equal(got.label, LABELS[want.classes]);
  }
  const sent = fake.requests.filter((q) => q.methodId === 'aiplatform.projects.locations.endpoints.predict').pop()!.body as { instances: Array<{ image_bytes: { b64: string } }> };
  assert.equal(Buffer.from(sent.instances[0]!.image_bytes.b64, 'base64').compare(fs.readFileSync(jpgPath)), 0, 'the codelab body: the JPEG bytes, base64');
  const text = await cli(['predict', ...gcp, '--endpoint', 'flowers', '--image', jpgPath]);
  assert.match(text.stdout, new RegExp(`rose\\.jpg\\t${LABELS[want.classes]}\\t[01]\\.\\d{4}`));
});

test('predict accepts Model Garden\'s probs output (label 0 unused) and answers classes 0-based', async () => {
  fake.setPredictor(async (_e, instances) => instances.map(() => ({ probs: [0.0, 0.2, 0.6, 0.2], logits: [0, 1, 2, 1] })));
  const r = await cli(['predict', ...gcp, '--endpoint', 'flowers', '--image', jpgPath, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const p = JSON.parse(r.stdout).predictions[0];
  assert.equal(p.classes, 1);
  assert.deepEqual(p.probabilities.map((x: number) => Number(x.toFixed(6))), [0.2, 0.6, 0.2]);
  assert.equal(p.label, LABELS[1]);
});

test('errors through the CLI: API disabled, permission denied, an unknown endpoint: exit 2 and one line', async () => {
  fake.failNext({ method: 'aiplatform.projects.locations.endpoints.list' }, 'SERVICE_DISABLED');
  let r = await cli(['predict', ...gcp, '--endpoint', 'flowers', '--image', jpgPath]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^imgclass: looking for endpoint "flowers" in us-central1: the Vertex AI API \(aiplatform\.googleapis\.com\) is not enabled in project imgclass-test: run `gcloud services enable aiplatform\.googleapis\.com --project=imgclass-test`/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  fake.failNext({ method: 'aiplatform.projects.locations.endpoints.list' }, 'PERMISSION_DENIED');
  r = await cli(['undeploy', ...gcp, '--model_name', 'flowers']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /permission denied/);
  r = await cli(['predict', ...gcp, '--endpoint', 'tulips-nowhere', '--image', jpgPath]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no endpoint named "tulips-nowhere" in project imgclass-test, region us-central1: deploy first/);
  r = await cli(['deploy', ...gcp, '--export_dir', `gs://${BUCKET}/nothing-here`, '--model_name', 'x']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /export_dir gs:\/\/imgclass-test-bucket\/nothing-here is empty or does not exist/);
});

test('through the CLI: 503 and 429 are retried to success; a 429 that persists and missing credentials are one line each', async () => {
  const LIST = 'aiplatform.projects.locations.endpoints.list';
  let n = count(LIST);
  fake.failNext({ method: LIST }, 503, 1);
  fake.failNext({ method: LIST }, 429, 1);
  let r = await cli(['predict', ...gcp, '--endpoint', 'flowers', '--image', jpgPath, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(count(LIST) - n, 3, 'two failures, then the answer');
  assert.match(r.stderr, /looking for endpoint "flowers" in us-central1: HTTP 503, retrying \(1 of 5\)/);
  n = count(LIST);
  fake.failNext({ method: LIST }, 'QUOTA', 6);
  r = await cli(['predict', ...gcp, '--endpoint', 'flowers', '--image', jpgPath]);
  assert.equal(r.code, 2);
  assert.equal(count(LIST) - n, 6, 'the first try and five retries');
  assert.match(r.stderr, /^imgclass: looking for endpoint "flowers" in us-central1: quota exceeded in project imgclass-test/m);
  // No token, no key file, no gcloud login, and a metadata server that is not there.
  const home = path.join(dir, 'no-credentials-home');
  fs.mkdirSync(home, { recursive: true });
  r = await cli(['predict', ...gcp, '--endpoint', 'flowers', '--image', jpgPath], {
    GOOGLE_OAUTH_ACCESS_TOKEN: '', GOOGLE_APPLICATION_CREDENTIALS: '', HOME: home, CLOUDSDK_CONFIG: path.join(home, 'gcloud'),
    GCE_METADATA_HOST: '127.0.0.1:9', GCE_METADATA_IP: '127.0.0.1:9', METADATA_SERVER_DETECTION: 'none',
  });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /no usable Google Cloud credentials .*gcloud auth application-default login/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
});

test('deploy, predict and undeploy --dry_run send nothing and print the requests with their gcloud lines', async () => {
  const n = fake.requests.length + fake.gcs.requests.length;
  const d = await cli(['deploy', ...gcp, '--export_dir', EXPORT, '--model_name', 'flowers', '--dry_run']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stderr, /dry run: uploading model flowers .*\n  POST .*\/models:upload\n/);
  assert.match(d.stderr, /gcloud: gcloud ai models upload --project=imgclass-test --region=us-central1 --model-id=imgclass-/);
  assert.match(d.stderr, /gcloud: gcloud ai endpoints create /);
  assert.match(d.stderr, /gcloud: gcloud ai endpoints deploy-model ENDPOINT_ID .*--traffic-split=0=100/);
  const p = await cli(['predict', ...gcp, '--endpoint', '1234', '--image', jpgPath, '--dry_run']);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stderr, /POST .*\/endpoints\/1234:predict\n  \{\n    "instances": \[/);
  const u = await cli(['undeploy', ...gcp, '--model_name', 'flowers', '--delete', '--dry_run']);
  assert.equal(u.code, 0, u.stderr);
  assert.equal(fake.requests.length + fake.gcs.requests.length, n, 'no request reached the fakes');
});

test('undeploy --backend gcp stops the billing; --delete removes the endpoint and the model imgclass uploaded', async () => {
  let r = await cli(['undeploy', ...gcp, '--model_name', 'flowers']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /undeployed \d+ \(model imgclass-[0-9a-f]+\) from projects\//);
  assert.equal([...fake.state.endpoints.values()][0]!.deployedModels?.length ?? 0, 0);
  r = await cli(['undeploy', ...gcp, '--model_name', 'flowers', '--delete']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fake.state.endpoints.size, 0);
  assert.match(r.stdout, /deleted endpoint projects\//);
  assert.match(r.stdout, /deleted model projects\/.+\/models\/imgclass-[0-9a-f]+/);
  assert.equal(fake.state.models.size, 0, 'the model imgclass uploaded is gone too');
  assert.deepEqual(fake.rejected(), []);
});
