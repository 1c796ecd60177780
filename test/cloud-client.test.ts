/**
 * The cloud client against the fake Google API server (test/fake-google): roots and overrides,
 * the bearer token, retries with backoff, timeouts, errors as one line, operations, dry runs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startFakeGoogle, FakeGoogle } from './fake-google';
import { CloudClient } from '../lib/cloud/client';
import { apiRoot } from '../lib/cloud/apis';
import { memoryReporter } from '../lib/cloud/report';
import { waitForOperation, Operation } from '../lib/cloud/operations';
import { UserError } from '../lib/errors';

let fake: FakeGoogle;
const PROJECT = 'imgclass-test';
const REGION = 'us-central1';
const LIST = 'aiplatform.projects.locations.endpoints.list';

before(async () => {
  fake = await startFakeGoogle({ projectId: PROJECT, buckets: [{ name: 'imgclass-test-bucket', location: 'US-CENTRAL1' }] });
});
after(async () => fake?.close());

function client(o: { dryRun?: boolean; retries?: number; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}) {
  const reporter = memoryReporter();
  const c = new CloudClient({ project: PROJECT, region: REGION, reporter, env: o.env ?? fake.env(), dryRun: o.dryRun, retries: o.retries, timeoutMs: o.timeoutMs });
  return { c, reporter };
}

const listEndpoints = (c: CloudClient) =>
  c.call({ what: 'listing endpoints', dryRun: { endpoints: [] } }, (o) => c.aiplatform().projects.locations.endpoints.list({ parent: `projects/${PROJECT}/locations/${REGION}` }, o));

const seen = (methodId: string): number => fake.requests.filter((r) => r.methodId === methodId).length;

test('API roots: Vertex AI on its regional host, every API overridable with gcloud\'s variables', () => {
  assert.equal(apiRoot('AIPLATFORM', 'europe-west4', {}), 'https://europe-west4-aiplatform.googleapis.com/');
  assert.equal(apiRoot('DATAFLOW', 'europe-west4', {}), 'https://dataflow.googleapis.com/');
  assert.equal(apiRoot('AIPLATFORM', 'europe-west4', { CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM: 'http://127.0.0.1:9000/x' }), 'http://127.0.0.1:9000/x/');
  assert.throws(() => apiRoot('LOGGING', 'us-central1', { CLOUDSDK_API_ENDPOINT_OVERRIDES_LOGGING: 'not a url' }), /CLOUDSDK_API_ENDPOINT_OVERRIDES_LOGGING="not a url" is not a URL/);
  assert.throws(() => new CloudClient({ project: 'My Project', region: REGION }), /not a Google Cloud project id/);
  assert.throws(() => new CloudClient({ project: PROJECT, region: 'mars' }), /region "mars"/);
});

test('requests go to the override root with GOOGLE_OAUTH_ACCESS_TOKEN as the bearer token; the fake accepts them', async () => {
  const before = fake.requests.length;
  const { c } = client();
  const r = await listEndpoints(c);
  assert.deepEqual(r.endpoints ?? [], []);
  const sent = fake.requests.slice(before);
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.methodId, LIST);
  assert.deepEqual(fake.rejected(), []);
  // A wrong token is refused by the fake, and the client says what to do.
  const { c: bad } = client({ env: { ...fake.env(), GOOGLE_OAUTH_ACCESS_TOKEN: 'wrong-token' } });
  await assert.rejects(listEndpoints(bad), (e: unknown) => e instanceof UserError && /credentials were refused/.test(e.message) && /gcloud auth application-default login/.test(e.message));
});

test('an override root with a path of its own (a proxy\'s http://host/aiplatform/) keeps its path', async () => {
  const root = `${fake.root}aiplatform/`;
  const before = fake.requests.length;
  const { c } = client({ env: { ...fake.env(), CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM: root } });
  await listEndpoints(c);
  const sent = fake.requests.slice(before);
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.methodId, LIST);
  assert.equal(sent[0]!.rejected, undefined);
});

test('429, 503 and a reset connection are retried with backoff; a GET then succeeds', async () => {
  for (const kind of [429, 503, 'RESET'] as const) {
    const n = seen(LIST);
    fake.failNext({ method: LIST }, kind, 2);
    const { c, reporter } = client();
    await listEndpoints(c);
    assert.equal(seen(LIST) - n, 3, `${kind}: two failures then the answer`);
    assert.equal(reporter.lines.filter((l) => /retrying/.test(l)).length, 2, `${kind}: ${reporter.lines.join(' | ')}`);
  }
});

test('a create that is not safe to repeat is not retried on 503: one clear line instead', async () => {
  const create = 'aiplatform.projects.locations.endpoints.create';
  const n = seen(create);
  fake.failNext({ method: create }, 503, 1);
  const { c } = client();
  await assert.rejects(
    c.call({ what: 'creating endpoint "x"' }, (o) => c.aiplatform().projects.locations.endpoints.create({ parent: `projects/${PROJECT}/locations/${REGION}`, requestBody: { displayName: 'x' } }, o)),
    (e: unknown) => e instanceof UserError && /^creating endpoint "x": UNAVAILABLE \(HTTP 503\)/.test(e.message),
  );
  assert.equal(seen(create) - n, 1);
});

test('errors are one line naming what to do: API disabled, permission, quota, not found', async () => {
  const cases: [Parameters<FakeGoogle['failNext']>[1], RegExp][] = [
    ['SERVICE_DISABLED', /listing endpoints: the Vertex AI API \(aiplatform\.googleapis\.com\) is not enabled in project imgclass-test: run `gcloud services enable aiplatform\.googleapis\.com --project=imgclass-test`/],
    ['PERMISSION_DENIED', /listing endpoints: permission denied: .* lacks the permission aiplatform\.endpoints\.list.*roles\/aiplatform\.user/],
    ['QUOTA', /listing endpoints: quota exceeded in project imgclass-test/],
    ['NOT_FOUND', /listing endpoints: not found: .*check the project \(imgclass-test\), the region and the name/],
  ];
  for (const [kind, re] of cases) {
    // QUOTA is a 429: make it persist past the retries.
    fake.failNext({ method: LIST }, kind, kind === 'QUOTA' ? 2 : 1);
    const { c } = client({ retries: 1 });
    await assert.rejects(listEndpoints(c), (e: unknown) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, re);
      assert.ok(!e.message.includes('\n'), 'one line');
      assert.ok(!/at .*\.js:\d+/.test(e.message), 'no stack');
      return true;
    });
  }
});

test('a server that never answers: each request times out and the error says so (no hang)', async () => {
  const sockets = new Set<import('node:net').Socket>();
  const hang = http.createServer(() => undefined);
  hang.on('connection', (s) => sockets.add(s));
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
  const root = `http://127.0.0.1:${(hang.address() as AddressInfo).port}/`;
  try {
    const { c } = client({ env: { ...fake.env(), CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM: root }, retries: 1, timeoutMs: 300 });
    const t0 = Date.now();
    await assert.rejects(listEndpoints(c), (e: unknown) => e instanceof UserError && /^listing endpoints: /.test(e.message));
    assert.ok(Date.now() - t0 < 20_000);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => hang.close(() => r()));
  }
});

test('operations are polled until done (done: false first); a failed operation gives its error.message', async () => {
  const { c, reporter } = client();
  const what = 'creating endpoint "ops"';
  const op = await c.call<Operation>({ what }, (o) =>
    c.aiplatform().projects.locations.endpoints.create({ parent: `projects/${PROJECT}/locations/${REGION}`, requestBody: { displayName: 'ops' } }, o),
  );
  assert.equal(op.done ?? false, false, 'the fake answers done: false first');
  const polls = fake.requests.filter((r) => /operations\.get$/.test(r.methodId ?? '')).length;
  const res = await waitForOperation(c, op, { what, get: (n, o) => c.aiplatform().projects.locations.operations.get({ name: n }, o) });
  assert.equal(res.displayName, 'ops');
  assert.ok(fake.requests.filter((r) => /operations\.get$/.test(r.methodId ?? '')).length - polls >= 1, JSON.stringify(fake.requests.slice(-3).map((r) => r.methodId)));
  assert.ok(reporter.statuses.some((s) => /creating endpoint "ops": running/.test(s)));
  assert.ok(reporter.lines.some((l) => /creating endpoint "ops": done in/.test(l)));
  await assert.rejects(
    waitForOperation(c, { name: 'x', done: false }, { what: 'failing', initialDelayMs: 1, get: async () => ({ data: { name: 'x', done: true, error: { code: 8, message: 'The following quota metrics exceed quota limits: custom_model_serving_cpus' } } }) }),
    /failing \(operation x\) failed: The following quota metrics exceed quota limits: custom_model_serving_cpus \(code 8\)$/,
  );
});

test('dry run: every request is printed with its gcloud line, and nothing is sent (not even for credentials)', async () => {
  const n = fake.requests.length;
  const { c, reporter } = client({ dryRun: true, env: { CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM: fake.env().CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM! } });
  const r = await c.call(
    { what: 'creating endpoint "dry"', gcloud: 'gcloud ai endpoints create --display-name=dry', dryRun: { name: 'operations/dry-run', done: true } },
    (o) => c.aiplatform().projects.locations.endpoints.create({ parent: `projects/${PROJECT}/locations/${REGION}`, requestBody: { displayName: 'dry' } }, o),
  );
  assert.equal(r.name, 'operations/dry-run');
  assert.equal(fake.requests.length, n, 'the fake saw nothing');
  assert.equal(c.planned.length, 1);
  assert.equal(c.planned[0]!.method, 'POST');
  assert.equal(c.planned[0]!.url, `${fake.env().CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM}v1/projects/${PROJECT}/locations/${REGION}/endpoints`);
  assert.deepEqual(c.planned[0]!.body, { displayName: 'dry' });
  assert.match(reporter.lines.join('\n'), /dry run: creating endpoint "dry"\n  POST http.*\/endpoints\n  \{\n    "displayName": "dry"\n  \}\n  gcloud: gcloud ai endpoints create --display-name=dry/);
});
