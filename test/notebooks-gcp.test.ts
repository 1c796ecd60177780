/**
 * Notebooks 02, 07 and 08 with backend = "gcp", headless, against the fake Google API server (the
 * kernel inherits the override variables), and once more with dry_run = true, where the fakes must
 * receive no request at all.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { startFakeGoogle, FakeGoogle } from './fake-google';
import { tempDir, removeDir, REPO_ROOT, CLI } from './helpers';
import { parseNotebook, type Output } from '../lib/runner/notebook-io';

const run = promisify(execFile);
const PROJECT = 'imgclass-test';
const BUCKET = 'imgclass-nb-bucket';
const WORK = `gs://${BUCKET}/work`;
const NOTEBOOKS = path.join(REPO_ROOT, 'notebooks');

let fake: FakeGoogle;
let dir: string;
let image: string;

before(async () => {
  dir = tempDir('imgclass-nb-gcp-');
  image = path.join(dir, 'daisy.jpg');
  fs.writeFileSync(image, await sharp({ create: { width: 64, height: 48, channels: 3, background: '#e0e040' } }).jpeg().toBuffer());
  fake = await startFakeGoogle({ projectId: PROJECT, buckets: [{ name: BUCKET, location: 'US' }] });
  fake.gcs.put(BUCKET, 'work/export/1764600000/saved_model.pb', Buffer.from('graph'));
  fake.gcs.put(BUCKET, 'work/export/1764600000/labels.txt', 'daisy\nroses\n');
  fake.setPredictor(async (_e: string, instances: unknown[]) => instances.map(() => ({ classes: 0, probabilities: [0.75, 0.25] })));
});

after(async () => {
  await fake?.close();
  if (dir) removeDir(dir);
});

const params = (extra: Record<string, string>): string[] =>
  Object.entries({ backend: 'gcp', work_dir: WORK, project: PROJECT, bucket: BUCKET, region: 'us-central1', ...extra }).flatMap(([k, v]) => ['-p', k, v]);

async function runNotebook(name: string, extra: Record<string, string>): Promise<{ code: number; stdout: string; outputs: Output[]; stderr: string }> {
  const out = path.join(dir, `${name}-${Object.values(extra).join('-') || 'plain'}.ipynb`);
  let code = 0;
  let stderr = '';
  try {
    ({ stderr } = await run(process.execPath, [CLI, 'run-notebook', path.join(NOTEBOOKS, name), out, ...params(extra)], { env: { ...process.env, ...fake.env(), IMGCLASS_POLL_MS: '20' }, maxBuffer: 1 << 24 }));
  } catch (err) {
    code = (err as { code: number }).code;
    stderr = (err as { stderr: string }).stderr;
  }
  const nb = parseNotebook(fs.readFileSync(out, 'utf8'), out);
  const outputs = nb.cells.flatMap((c) => (c.cell_type === 'code' ? c.outputs : []));
  const stdout = outputs.map((o) => (o.output_type === 'stream' ? o.text : o.output_type === 'display_data' ? String((o.data as Record<string, unknown>)['text/plain'] ?? '') : '')).join('');
  return { code, stdout, outputs, stderr };
}

const total = (): number => fake.requests.length + fake.gcs.requests.length;

test('notebooks 02, 07, 08 with dry_run = true print the requests and send nothing', { timeout: 300_000 }, async () => {
  const n = total();
  const nb02 = await runNotebook('02-service-account.ipynb', { dry_run: 'true', enable_apis: 'true', grant: 'true' });
  assert.equal(nb02.code, 0, nb02.stderr);
  assert.match(nb02.stdout, /dry run: reading project imgclass-test/);
  assert.match(nb02.stdout, /nothing was read, so nothing was checked/);
  const nb07 = await runNotebook('07-deploy.ipynb', { dry_run: 'true' });
  assert.equal(nb07.code, 0, nb07.stderr);
  assert.match(nb07.stdout, /gcloud: gcloud ai models upload/);
  const nb08 = await runNotebook('08-predict.ipynb', { dry_run: 'true', image, undeploy: 'true' });
  assert.equal(nb08.code, 0, nb08.stderr);
  assert.match(nb08.stdout, /POST .*\/endpoints\/ENDPOINT_ID:predict/);
  assert.match(nb08.stdout, /dry run: no request was sent/);
  assert.equal(total(), n, 'no request reached the fakes');
});

test('notebooks 02, 07 and 08 with backend = "gcp" against the fakes: access table, deploy, predict, undeploy', { timeout: 300_000 }, async () => {
  const nb02 = await runNotebook('02-service-account.ipynb', {});
  assert.equal(nb02.code, 0, nb02.stderr);
  assert.match(nb02.stdout, /ok +project +imgclass-test \(number 123456789012\)/);
  assert.match(nb02.stdout, /bucket +gs:\/\/imgclass-nb-bucket in US/);
  const nb07 = await runNotebook('07-deploy.ipynb', {});
  assert.equal(nb07.code, 0, nb07.stderr);
  assert.match(nb07.stdout, /model "imgclass" version 1764600000 is deployed to Vertex AI endpoint projects\//);
  assert.ok(fake.gcs.get(BUCKET, 'work/deployment.json'), 'recorded for notebook 08');
  const nb08 = await runNotebook('08-predict.ipynb', { image, undeploy: 'true' });
  assert.equal(nb08.code, 0, nb08.stderr);
  assert.match(nb08.stdout, /prediction: daisy \(75\.0 %\)/);
  assert.match(nb08.stdout, /undeployed \d+/);
  assert.equal([...fake.state.endpoints.values()][0]!.deployedModels?.length ?? 0, 0);
  assert.deepEqual(fake.rejected(), []);
});
