/**
 * deployLocal / undeployLocal with a real background `imgclass serve` process, and the confusion
 * matrix of an export over real TFRecords, checked against the model's predictions made in process.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir, removeDir, jpeg, CLI } from './helpers';
import { exportFixture, inProcessProbabilities, LABELS, ServingFixture } from './serve-fixture';
import { deployLocal, undeployLocal, readDeployment, processAlive, DEPLOYMENT_FILE } from '../lib/serve/daemon';
import { predict } from '../lib/predict';
import { preprocess } from '../lib/preprocess';
import { confusionMatrixOfExport } from '../lib/evaluate';
import { argmax } from '../lib/serve/classifier';
import { UserError } from '../lib/errors';

const dir = tempDir('imgclass-deploy-');
const started: number[] = [];
let fixture: ServingFixture;
let probes: Buffer[];

before(async () => {
  probes = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => jpeg(40 + i * 3, 36, i * 17)));
  fixture = await exportFixture(path.join(dir, 'export'), probes);
});

after(async () => {
  // A failed assertion must not leave a server behind.
  for (const pid of started) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
  removeDir(dir);
});

test('deployLocal starts a server that answers predictions and outlives its starter; deploying again replaces it; undeployLocal stops it', async () => {
  const work = path.join(dir, 'work');
  const d = await deployLocal({ workDir: work, exportDir: fixture.exportDir, port: 0, modelName: 'flowers' });
  started.push(d.pid);
  assert.ok(processAlive(d.pid));
  assert.match(d.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(d.predictUrl, `${d.url}/v1/models/flowers:predict`);
  assert.equal(d.version, path.basename(fixture.versionDir));
  assert.deepEqual(d.labels, LABELS);
  assert.deepEqual(await readDeployment(work), d, 'deployment.json holds what deployLocal returned');
  assert.match(fs.readFileSync(path.join(work, 'server.log'), 'utf8'), /serving model "flowers"/);

  const health = (await (await fetch(`${d.url}/healthz`)).json()) as { status: string; version: string };
  assert.deepEqual([health.status, health.version], ['ok', d.version]);
  // The model's page (lib/serve/page.ts) and its info come with the deployed server.
  const pageRes = await fetch(`${d.url}/`);
  assert.equal(pageRes.status, 200);
  assert.match(await pageRes.text(), /<script type="module" src="\/page\/page\.mjs">/);
  const info = (await (await fetch(`${d.url}/page/info.json`)).json()) as { predictPath: string; labels: string[] };
  assert.deepEqual([info.predictPath, info.labels], ['/v1/models/flowers:predict', LABELS]);
  const r = await predict(d.predictUrl, [probes[0]!]);
  const expected = await inProcessProbabilities(fixture, probes[0]!);
  r.predictions[0]!.probabilities.forEach((p, i) => assert.ok(Math.abs(p - expected[i]!) < 1e-4, `class ${i}: ${p} vs ${expected[i]}`));

  // Its own session: a signal to this process's group does not reach it.
  const pgid = spawnSync('ps', ['-o', 'pgid=', '-p', String(d.pid)], { encoding: 'utf8' }).stdout.trim();
  assert.equal(pgid, String(d.pid), 'the server leads its own process group');

  const again = await deployLocal({ workDir: work, exportDir: fixture.exportDir, port: 0, modelName: 'flowers' });
  started.push(again.pid);
  assert.notEqual(again.pid, d.pid);
  assert.equal(processAlive(d.pid), false, 'the first server was stopped');
  assert.ok(processAlive(again.pid));

  const u = await undeployLocal(work);
  assert.deepEqual([u.recorded, u.stopped, u.pid], [true, true, again.pid]);
  assert.equal(processAlive(again.pid), false);
  assert.equal(fs.existsSync(path.join(work, DEPLOYMENT_FILE)), false);
  assert.match(fs.readFileSync(path.join(work, 'server.log'), 'utf8'), /SIGTERM: finishing requests in flight/);
  const twice = await undeployLocal(work);
  assert.deepEqual([twice.recorded, twice.stopped], [false, false]);
  await assert.rejects(readDeployment(work), /no deployment in .*: deploy the model first/);
});

test('undeployLocal never signals a recorded pid that is not an imgclass server', async () => {
  const work = path.join(dir, 'stale');
  fs.mkdirSync(work, { recursive: true });
  // This test process is alive but is not `imgclass serve`: it must survive, and the record goes.
  fs.writeFileSync(path.join(work, DEPLOYMENT_FILE), JSON.stringify({ pid: process.pid, url: 'http://127.0.0.1:1' }));
  const u = await undeployLocal(work);
  assert.deepEqual([u.recorded, u.stopped], [true, false]);
  assert.match(u.message, /was not running/);
  assert.equal(fs.existsSync(path.join(work, DEPLOYMENT_FILE)), false);
});

test('deployLocal: a server that cannot start is a UserError with its log, and leaves no process', async () => {
  const work = path.join(dir, 'broken');
  const bogus = path.join(dir, 'bogus-export');
  fs.mkdirSync(bogus, { recursive: true });
  await assert.rejects(deployLocal({ workDir: work, exportDir: bogus, port: 0 }), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /the prediction server exited before it was ready/);
    assert.match(e.message, /no exported model found in/, 'the log tail says why');
    return true;
  });
  assert.equal(fs.existsSync(path.join(work, DEPLOYMENT_FILE)), false);
  await assert.rejects(deployLocal({ workDir: work, exportDir: path.join(dir, 'nope') }), /export folder .*nope does not exist/);
  await assert.rejects(deployLocal({ workDir: 'gs://b/w', exportDir: fixture.exportDir }), /on Cloud Storage/);
});

test('the CLI deploy / undeploy commands', () => {
  const work = path.join(dir, 'cli');
  const dep = spawnSync(process.execPath, [CLI, 'deploy', '--export_dir', fixture.exportDir, '--work_dir', work, '--port', '0'], { encoding: 'utf8' });
  assert.equal(dep.status, 0, dep.stderr);
  const rec = JSON.parse(fs.readFileSync(path.join(work, DEPLOYMENT_FILE), 'utf8')) as { pid: number; url: string };
  started.push(rec.pid);
  assert.match(dep.stdout, new RegExp(`at ${rec.url.replace(/[.]/g, '\\.')} \\(pid ${rec.pid}`));
  assert.ok(processAlive(rec.pid), 'the server outlives the deploy command');
  const un = spawnSync(process.execPath, [CLI, 'undeploy', '--work_dir', work], { encoding: 'utf8' });
  assert.equal(un.status, 0, un.stderr);
  assert.match(un.stdout, new RegExp(`stopped the prediction server \\(pid ${rec.pid}\\)`));
  assert.equal(processAlive(rec.pid), false);
});

test('confusionMatrixOfExport: the export over every validation record matches the model run in process', async () => {
  // A data set of the fixture's three classes; its validation images are the probes.
  const data = path.join(dir, 'data');
  fs.mkdirSync(data, { recursive: true });
  const rows = (split: string, imgs: Buffer[]): string =>
    imgs
      .map((img, i) => {
        const f = path.join(data, `${split}-${i}.jpg`);
        fs.writeFileSync(f, img);
        return `${f},${LABELS[i % LABELS.length]}\n`;
      })
      .join('');
  fs.writeFileSync(path.join(data, 'train.csv'), rows('train', probes.slice(0, 3)));
  fs.writeFileSync(path.join(data, 'eval.csv'), rows('eval', probes));
  fs.writeFileSync(path.join(data, 'labels.txt'), LABELS.join('\n') + '\n');
  const records = path.join(dir, 'records');
  await preprocess({ trainCsv: path.join(data, 'train.csv'), validationCsv: path.join(data, 'eval.csv'), labelsFile: path.join(data, 'labels.txt'), outputDir: records, workers: 1 });

  const cm = await confusionMatrixOfExport({ exportDir: fixture.exportDir, dataDir: records, batchSize: 4 });
  const expected = LABELS.map(() => LABELS.map(() => 0));
  const predicted: number[] = [];
  for (const [i, img] of probes.entries()) {
    predicted.push(argmax(await inProcessProbabilities(fixture, img)));
    expected[i % LABELS.length]![predicted[i]!]!++;
  }
  assert.ok(new Set(predicted).size > 1, `the fixture tells the images apart (${predicted})`);
  assert.deepEqual(cm.matrix, expected);
  assert.deepEqual(cm.labels, LABELS);
  assert.equal(cm.count, probes.length);
  assert.equal(cm.accuracy, expected.reduce((s, row, i) => s + row[i]!, 0) / probes.length);
  await assert.rejects(confusionMatrixOfExport({ exportDir: fixture.exportDir, dataDir: records, batchSize: 0 }), /batch size must be/);
});
