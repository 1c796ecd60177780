/**
 * `imgclass preprocess --backend gcp` through the CLI, as a child process, against the fake Google
 * API server (every request checked against the published discovery documents): the checks before
 * launch, the upload and launch, following the job (state changes, messages, a 429 retried),
 * success with the report, failure with the job's error message, Ctrl-C, --no-wait and a dry run
 * that sends nothing. And the interrupt path in the library with an injected signal and answer.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { CLI } from './helpers';
import { shellQuote } from '../lib/cloud/service-account';
import { dataflowFixture, runCli, cliEnv, DataflowFixture, BUCKET, PROJECT, REGION, LABELS } from './dataflow-fixture';
import { pipelineTransformConfig } from '../lib/cloud/dataflow';
import { followJob } from '../lib/cloud/dataflow/follow';
import { askToCancel } from '../lib/cloud/dataflow/interrupt';
import { CloudClient } from '../lib/cloud/client';
import { memoryReporter } from '../lib/cloud/report';
import type { PreprocessReport } from '../lib/preprocess';
import type { LaunchedJob } from '../lib/backend';
import { UserError } from '../lib/errors';

const fixtures: DataflowFixture[] = [];
after(async () => {
  for (const f of fixtures) await f.close();
});

async function fixture(numShards?: number): Promise<DataflowFixture> {
  const f = await dataflowFixture('data', numShards);
  fixtures.push(f);
  return f;
}

function args(fx: DataflowFixture, out: string, ...extra: string[]): string[] {
  return [
    'preprocess', '--backend', 'gcp', '--project', PROJECT, '--region', REGION,
    '--train_csv', fx.trainCsv, '--validation_csv', fx.validationCsv, '--labels_file', fx.labelsFile,
    '--output_dir', `gs://${BUCKET}/${out}`, ...extra,
  ];
}

const methods = (fx: DataflowFixture): string[] => fx.fake.requests.map((r) => r.methodId ?? `${r.httpMethod} ${r.path}`);
const count = (fx: DataflowFixture, id: string): number => methods(fx).filter((m) => m === id).length;

test('launch, follow, success: the job is polled through its states, its shards counted into preprocess_report.json', async () => {
  const fx = await fixture(2);
  fx.messages = [{ time: '2026-12-01T21:00:05.000Z', messageImportance: 'JOB_MESSAGE_BASIC', messageText: 'Workers have started successfully.' }];
  const r = await runCli(args(fx, 'out/tfrecords', '--num_shards', '2', '--max_workers', '3', '--service_account', `df-worker@${PROJECT}.iam.gserviceaccount.com`), cliEnv(fx));
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(fx.fake.rejected(), [], 'every request fits the API');

  // The launch: the uploaded pipeline, on Google's YAML template, with the flags as environment.
  const launch = fx.fake.requests.find((q) => q.methodId === 'dataflow.projects.locations.flexTemplates.launch')!;
  assert.equal(launch.httpMethod, 'POST');
  const lp = (launch.body as { launchParameter: Record<string, any> }).launchParameter;
  assert.match(lp.jobName, /^imgclass-preprocess-out-tfrecords-\d{8}-\d{6}$/);
  assert.equal(lp.containerSpecGcsPath, `gs://dataflow-templates-${REGION}/latest/flex/Yaml_Template`);
  const pipelineKey = `imgclass-staging/dataflow/${lp.jobName}/pipeline.yaml`;
  assert.deepEqual(lp.parameters, { yaml_pipeline_file: `gs://${BUCKET}/${pipelineKey}` });
  assert.equal(lp.environment.maxWorkers, 3);
  assert.equal(lp.environment.serviceAccountEmail, `df-worker@${PROJECT}.iam.gserviceaccount.com`);
  assert.equal(lp.environment.tempLocation, `gs://${BUCKET}/imgclass-staging/dataflow/temp`);
  const uploaded = fx.fake.gcs.get(BUCKET, pipelineKey)!.toString('utf8');
  const kw = pipelineTransformConfig(uploaded).kwargs;
  assert.deepEqual(kw, {
    train_csv: fx.trainCsv, validation_csv: fx.validationCsv, labels: LABELS,
    output_dir: `gs://${BUCKET}/out/tfrecords`, num_shards: { train: 2, validation: 2 },
  });
  // The upload happened before the launch; the output folder was checked before the upload.
  const order = methods(fx);
  assert.ok(order.indexOf('storage.objects.insert') < order.indexOf('dataflow.projects.locations.flexTemplates.launch'));

  // Followed with GETs until done; each state change and the job's message shown once.
  const gets = fx.fake.requests.filter((q) => q.methodId === 'dataflow.projects.locations.jobs.get');
  assert.ok(gets.length >= 4 && gets.every((q) => q.httpMethod === 'GET'), `${gets.length} jobs.get`);
  const jobId = (fx.fake.state.dataflowJobs.values().next().value!).job.id!;
  assert.match(r.stderr, new RegExp(`Dataflow job ${lp.jobName}: id ${jobId}\\n  console: https://console\\.cloud\\.google\\.com/dataflow/jobs/${REGION}/${jobId}\\?project=${PROJECT}`));
  const states = [...r.stderr.matchAll(new RegExp(`^Dataflow job ${lp.jobName}: (queued|pending|running|done)$`, 'gm'))].map((m) => m[1]);
  assert.deepEqual(states, ['queued', 'pending', 'running', 'done']);
  assert.equal(r.stderr.split('Workers have started successfully.').length - 1, 1, r.stderr);
  assert.match(r.stderr, /2026-12-01T21:00:05Z BASIC Workers have started successfully\./);

  // The report, from the shards the job wrote: per split and class, the broken row with its line.
  assert.match(r.stdout, /^train: 4 records in 2 shard\(s\); validation: 2 records in 2 shard\(s\); skipped 1$/m);
  assert.match(r.stderr, new RegExp(`skipped ${fx.trainCsv}:4 ${fx.broken.path}: truncated or corrupt image data`));
  const report = JSON.parse(fx.fake.gcs.get(BUCKET, 'out/tfrecords/preprocess_report.json')!.toString('utf8')) as PreprocessReport;
  assert.deepEqual(report.labels, LABELS);
  assert.deepEqual(report.splits.train, {
    csv: fx.trainCsv, rows: 5, records: 4, skipped: 1, perClass: { daisy: 2, roses: 2 },
    shards: ['train-00000-of-00002', 'train-00001-of-00002'],
  });
  assert.deepEqual(report.splits.validation.perClass, { daisy: 1, roses: 1 });
  assert.deepEqual(report.skipped.map((s) => [s.split, s.csv, s.line, s.path]), [['train', fx.trainCsv, 4, fx.broken.path]]);
  assert.deepEqual(report.warnings, []);
  assert.deepEqual(report.settings.numShards, { train: 2, validation: 2 });
});

test('bad input is refused before anything is uploaded, with the local run\'s messages; a non-empty output folder needs --overwrite', async () => {
  const fx = await fixture();
  fx.fake.gcs.put(BUCKET, 'data/bad_train.csv', 'images/daisy-0.jpg,daisy\nimages/roses-1.jpg,roses\nimages/daisy-2.jpg,tulips\n');
  const bad = await runCli([...args(fx, 'out/a'), '--train_csv', `gs://${BUCKET}/data/bad_train.csv`], cliEnv(fx));
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(bad.stderr.trim(), `imgclass: gs://${BUCKET}/data/bad_train.csv:3: label "tulips" is not in ${fx.labelsFile}; add it to labels.txt or fix the row`);
  fx.fake.gcs.put(BUCKET, 'data/three.csv', 'images/daisy-0.jpg,daisy,extra\n');
  const fields = await runCli([...args(fx, 'out/a'), '--validation_csv', `gs://${BUCKET}/data/three.csv`], cliEnv(fx));
  assert.equal(fields.code, 2);
  assert.match(fields.stderr, new RegExp(`^imgclass: gs://${BUCKET}/data/three\\.csv:1: expected 2 fields \\(path,label\\), got 3; a path or label containing a comma must be renamed`));

  fx.fake.gcs.put(BUCKET, 'out/used/train-00000-of-00003', 'old');
  const used = await runCli(args(fx, 'out/used'), cliEnv(fx));
  assert.equal(used.code, 2);
  assert.equal(used.stderr.trim(), `imgclass: output folder gs://${BUCKET}/out/used is not empty (1 file, e.g. train-00000-of-00003); choose an empty folder, or pass --overwrite to replace earlier train-*/validation-* shards`);
  assert.equal(count(fx, 'storage.objects.insert'), 0, 'nothing uploaded');
  assert.equal(fx.fake.requests.filter((q) => q.api === 'dataflow').length, 0, 'nothing launched');

  const local = await runCli([...args(fx, 'out/b'), '--train_csv', '/tmp/train_set.csv'], cliEnv(fx));
  assert.equal(local.code, 2);
  assert.match(local.stderr, /--train_csv "\/tmp\/train_set\.csv" is not a gs:\/\/ path: the Dataflow workers read and write Cloud Storage only/);

  // --overwrite: the earlier run's shard of another count is replaced, and removed after the job.
  const again = await runCli([...args(fx, 'out/used'), '--overwrite'], cliEnv(fx));
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(fx.fake.gcs.keys(BUCKET).filter((k) => k.startsWith('out/used/')), [
    'out/used/_rejects/rejects-00000-of-00001.jsonl', 'out/used/preprocess_report.json',
    'out/used/train-00000-of-00001', 'out/used/validation-00000-of-00001',
  ]);
  assert.deepEqual(fx.fake.rejected(), []);
});

test('a failed job: its error messages are shown and the command fails with one clear line (exit 2)', async () => {
  const fx = await fixture();
  fx.fake.state.dataflowPlan = ['JOB_STATE_QUEUED', 'JOB_STATE_RUNNING', 'JOB_STATE_FAILED'];
  fx.writes = false;
  fx.messages = [
    { time: '2026-12-01T21:00:01.000Z', messageImportance: 'JOB_MESSAGE_DETAILED', messageText: 'Autoscaling: raised the number of workers to 1.' },
    { time: '2026-12-01T21:00:09.000Z', messageImportance: 'JOB_MESSAGE_ERROR', messageText: 'Error message from worker: ValueError: gs://imgclass-data/data/train_set.csv:2: label "roses " is not in labels.txt\nTraceback (most recent call last): ...' },
    { time: '2026-12-01T21:00:10.000Z', messageImportance: 'JOB_MESSAGE_ERROR', messageText: 'Workflow failed.' },
  ];
  const r = await runCli(args(fx, 'out/failing'), cliEnv(fx));
  assert.equal(r.code, 2, r.stderr);
  const last = r.stderr.trim().split('\n').at(-1)!;
  assert.match(last, /^imgclass: Dataflow job imgclass-preprocess-out-failing-\d{8}-\d{6} \(\S+\) failed: Error message from worker: ValueError: gs:\/\/imgclass-data\/data\/train_set\.csv:2: label "roses " is not in labels\.txt \(and 1 more error message above\); the job's page: https:\/\/console\.cloud\.google\.com\/dataflow\/jobs\//);
  assert.match(r.stderr, /2026-12-01T21:00:10Z ERROR Workflow failed\./);
  assert.doesNotMatch(r.stderr, /Autoscaling/, 'DETAILED messages are not shown');
  assert.ok(fx.fake.requests.some((q) => q.methodId === 'dataflow.projects.locations.jobs.messages.list' && q.query.minimumImportance === 'JOB_MESSAGE_ERROR'));
  assert.equal(fx.fake.gcs.get(BUCKET, 'out/failing/preprocess_report.json'), undefined, 'no report');
  assert.equal(r.stdout, '');
  assert.deepEqual(fx.fake.rejected(), []);
});

test('a 429 on jobs.get is retried, and the job is followed to its end', async () => {
  const fx = await fixture();
  fx.fake.state.dataflowPlan = ['JOB_STATE_RUNNING', 'JOB_STATE_DONE'];
  fx.fake.failNext({ method: 'dataflow.projects.locations.jobs.get' }, 429, 2);
  const r = await runCli(args(fx, 'out/retried'), cliEnv(fx));
  assert.equal(r.code, 0, r.stderr);
  const gets = fx.fake.requests.filter((q) => q.methodId === 'dataflow.projects.locations.jobs.get');
  assert.deepEqual(gets.slice(0, 3).map((q) => q.status), [429, 429, 200]);
  assert.match(r.stderr, /reading Dataflow job \S+ \(\S+\): HTTP 429, retrying \(1 of 5\)/);
  assert.match(r.stderr, /reading Dataflow job \S+ \(\S+\): HTTP 429, retrying \(2 of 5\)/);
  assert.match(r.stdout, /^train: 4 records in 1 shard\(s\); validation: 2 records in 1 shard\(s\); skipped 1$/m);
  assert.deepEqual(fx.fake.rejected(), []);
});

test('Ctrl-C while waiting: --cancel_on_interrupt cancels the job (jobs.update); without it (no terminal) the job is left running', async () => {
  const fx = await fixture();
  fx.fake.state.dataflowPlan = ['JOB_STATE_RUNNING'];
  const interruptWhenRunning = (soFar: string, child: { kill(s: NodeJS.Signals): boolean }, sent: { done: boolean }): void => {
    if (!sent.done && /: running\n/.test(soFar)) {
      sent.done = true;
      child.kill('SIGINT');
    }
  };
  const s1 = { done: false };
  const cancelled = await runCli([...args(fx, 'out/cancel'), '--cancel_on_interrupt'], cliEnv(fx), (t, c) => interruptWhenRunning(t, c, s1));
  assert.equal(cancelled.code, 2, cancelled.stderr);
  assert.match(cancelled.stderr, /: cancel requested; waiting for the workers to stop\n/);
  assert.match(cancelled.stderr, /: cancelled\n/);
  assert.match(cancelled.stderr, /imgclass: Dataflow job \S+ \(\S+\) was cancelled as you asked; it may have left beam-temp-\* folders of unfinished shards in the output folder: remove them \(`gcloud storage rm -r gs:\/\/imgclass-data\/out\/cancel\/beam-temp-\*`\)/);
  const update = fx.fake.requests.find((q) => q.methodId === 'dataflow.projects.locations.jobs.update')!;
  assert.equal(update.httpMethod, 'PUT');
  assert.deepEqual(update.body, { requestedState: 'JOB_STATE_CANCELLED' });
  const [first] = [...fx.fake.state.dataflowJobs.values()];
  assert.equal(first!.job.currentState, 'JOB_STATE_CANCELLED');

  const s2 = { done: false };
  const left = await runCli(args(fx, 'out/left'), cliEnv(fx), (t, c) => interruptWhenRunning(t, c, s2));
  assert.equal(left.code, 2, left.stderr);
  const second = [...fx.fake.state.dataflowJobs.values()][1]!;
  assert.match(left.stderr, new RegExp(`imgclass: stopped following Dataflow job \\S+ \\(${second.job.id}\\); it goes on running, and billing: watch it at https://console\\.cloud\\.google\\.com/\\S+ or with \`gcloud dataflow jobs describe ${second.job.id} --region=${REGION} --project=${PROJECT}\`, cancel it with \`gcloud dataflow jobs cancel ${second.job.id}`));
  assert.equal(count(fx, 'dataflow.projects.locations.jobs.update'), 1, 'only the first job was cancelled');
  assert.equal(second.job.currentState, 'JOB_STATE_RUNNING');
  assert.deepEqual(fx.fake.rejected(), []);
});

test('Ctrl-C on a terminal (a real pty, through script(1)) asks whether to cancel: y cancels the job, n leaves it running', { timeout: 120_000, skip: fs.existsSync('/usr/bin/script') ? false : 'no /usr/bin/script (util-linux) to give the CLI a terminal' }, async () => {
  const fx = await fixture();
  fx.fake.state.dataflowPlan = ['JOB_STATE_RUNNING'];
  const onTerminal = (out: string, answer: string): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve, reject) => {
      // `exec`: script(1) runs the command through $SHELL -c; dash (CI's /bin/sh) would otherwise stay
      // as the parent, take the pty's SIGINT itself and exit 130 whatever the CLI returned.
      const cmd = `exec ${[process.execPath, CLI, ...args(fx, out)].map((a) => shellQuote(a)).join(' ')}`;
      const child = spawn('/usr/bin/script', ['-qefc', cmd, '/dev/null'], { env: { ...process.env, ...cliEnv(fx) } });
      let text = '';
      let stage = 0;
      child.stdout.on('data', (d: Buffer) => {
        text += d.toString();
        // Ctrl-C typed into the terminal: the pty sends SIGINT to the CLI, which then asks.
        if (stage === 0 && /: running\r?\n/.test(text)) {
          stage = 1;
          child.stdin.write('\x03');
        }
        if (stage === 1 && /\[y\/N\] /.test(text)) {
          stage = 2;
          child.stdin.write(`${answer}\r`);
        }
      });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, out: text }));
    });
  const yes = await onTerminal('out/tty-yes', 'y');
  assert.equal(yes.code, 2, yes.out);
  assert.match(yes.out, /Cancel Dataflow job imgclass-preprocess-out-tty-yes-\d{8}-\d{6} \(\S+\)\? Its workers are billed until it stops\. \[y\/N\] /);
  assert.match(yes.out, /imgclass: Dataflow job \S+ \(\S+\) was cancelled as you asked/);
  const no = await onTerminal('out/tty-no', 'n');
  assert.equal(no.code, 2, no.out);
  assert.match(no.out, /imgclass: stopped following Dataflow job \S+ \(\S+\); it goes on running/);
  const [first, second] = [...fx.fake.state.dataflowJobs.values()];
  assert.equal(first!.job.currentState, 'JOB_STATE_CANCELLED');
  assert.equal(second!.job.currentState, 'JOB_STATE_RUNNING');
  assert.equal(count(fx, 'dataflow.projects.locations.jobs.update'), 1);
  assert.deepEqual(fx.fake.rejected(), []);
});

test('the interrupt in the library: an aborted signal asks confirmCancel; yes cancels, no leaves the job', async () => {
  const fx = await fixture();
  fx.fake.state.dataflowPlan = ['JOB_STATE_RUNNING'];
  const c = new CloudClient({ project: PROJECT, region: REGION, env: fx.fake.env(), reporter: memoryReporter() });
  const res = await c.call({ what: 'launch' }, (o) => c.dataflow().projects.locations.flexTemplates.launch({
    projectId: PROJECT, location: REGION,
    requestBody: { launchParameter: { jobName: 'imgclass-preprocess-lib', containerSpecGcsPath: `gs://dataflow-templates-${REGION}/latest/flex/Yaml_Template` } },
  }, o));
  const job: LaunchedJob = { id: res.job!.id!, name: 'imgclass-preprocess-lib', project: PROJECT, region: REGION, consoleUrl: 'https://console.cloud.google.com/x' };
  const asked: string[] = [];
  for (const answer of [false, true]) {
    const ac = new AbortController();
    const reporter = memoryReporter();
    const client = new CloudClient({ project: PROJECT, region: REGION, env: fx.fake.env(), reporter });
    // Aborted at the first wait, as Ctrl-C would.
    reporter.status = () => ac.abort();
    await assert.rejects(
      followJob(client, job, { signal: ac.signal, initialDelayMs: 10, confirmCancel: async (j) => (asked.push(j.id), answer) }),
      (e: unknown) => e instanceof UserError && (answer ? /was cancelled as you asked/ : /stopped following .* it goes on running/).test(e.message),
    );
  }
  assert.deepEqual(asked, [job.id, job.id]);
  assert.equal(count(fx, 'dataflow.projects.locations.jobs.update'), 1);
  assert.equal(fx.fake.state.dataflowJobs.get(job.id)!.job.currentState, 'JOB_STATE_CANCELLED');

  // The terminal prompt: y cancels, anything else (or no terminal) does not.
  const tty = (): NodeJS.ReadStream & NodeJS.WriteStream => Object.assign(new PassThrough(), { isTTY: true }) as never;
  for (const [typed, want] of [['y\n', true], ['\n', false], ['no\n', false]] as const) {
    const input = tty();
    const output = tty();
    const p = askToCancel(input, output)(job);
    input.write(typed);
    assert.equal(await p, want, JSON.stringify(typed));
  }
  assert.equal(await askToCancel(new PassThrough() as never, tty())(job), false, 'no terminal: no');
});

test('--no-wait returns after the launch with the job id and console URL', async () => {
  const fx = await fixture();
  const r = await runCli([...args(fx, 'out/nowait'), '--no-wait'], cliEnv(fx));
  assert.equal(r.code, 0, r.stderr);
  const [entry] = [...fx.fake.state.dataflowJobs.values()];
  assert.match(r.stdout, new RegExp(`^launched Dataflow job imgclass-preprocess-out-nowait-\\d{8}-\\d{6} \\(${entry!.job.id}\\): https://console\\.cloud\\.google\\.com/dataflow/jobs/${REGION}/${entry!.job.id}\\?project=${PROJECT}\\n$`));
  assert.match(r.stderr, /not waiting \(--no-wait\): watch it with `gcloud dataflow jobs describe /);
  assert.equal(count(fx, 'dataflow.projects.locations.jobs.get'), 0);
  assert.equal(count(fx, 'dataflow.projects.locations.flexTemplates.launch'), 1);
  assert.deepEqual(fx.fake.rejected(), []);
});

test('--dry_run sends no request at all (Cloud Storage included) and prints the YAML, the launch request and the gcloud lines', async () => {
  const fx = await fixture();
  const r = await runCli([...args(fx, 'out/dry', '--max_workers', '2'), '--dry_run'], cliEnv(fx));
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(fx.fake.requests, [], 'the fake saw nothing');
  assert.match(r.stderr, /not read and not checked \(a dry run sends no request, Cloud Storage reads included\)/);
  const yaml = /dry run: the pipeline \(gs:\/\/\S+\):\n([\s\S]*?)\ndry run: would upload it/.exec(r.stderr)?.[1];
  assert.ok(yaml, r.stderr);
  const kw = pipelineTransformConfig(yaml + '\n').kwargs;
  assert.equal(kw.train_csv, fx.trainCsv);
  assert.equal(kw.output_dir, `gs://${BUCKET}/out/dry`);
  // The request as it would go: to the API root in force (here the fake's, by the override variable).
  const root = fx.fake.env().CLOUDSDK_API_ENDPOINT_OVERRIDES_DATAFLOW!.replace(/[.]/g, '\\.');
  assert.match(r.stderr, new RegExp(`  POST ${root}v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch\\n  \\{\\n    "launchParameter": \\{`));
  assert.match(r.stderr, /"maxWorkers": 2/);
  assert.match(r.stderr, /\n  gcloud dataflow yaml run imgclass-preprocess-out-dry-\d{8}-\d{6} --yaml-pipeline-file=gs:\/\/imgclass-data\/imgclass-staging\/dataflow\/\S+\/pipeline\.yaml --project=imgclass-test --region=us-central1 /);
  assert.match(r.stderr, /\n  gcloud dataflow flex-template run imgclass-preprocess-out-dry-\d{8}-\d{6} --template-file-gcs-location=gs:\/\/dataflow-templates-us-central1\/latest\/flex\/Yaml_Template /);
  assert.equal(r.stdout, '');
});
