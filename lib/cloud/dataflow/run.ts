/**
 * `imgclass preprocess --backend gcp` (and notebook 05 on gcp): section 5 on Dataflow, end to end.
 * The CSVs and labels.txt are checked here with the local run's code (same messages, line numbers
 * and all), the output folder must be empty unless overwriting, the rendered pipeline goes to the
 * bucket's staging folder, the job is launched and followed, and when it is done the written shards
 * are counted into preprocess_report.json beside them, as the local run writes it.
 *
 * A dry run sends nothing at all, Cloud Storage reads included: it shows the YAML, the launch
 * request and the gcloud lines, with the labels and shard counts as placeholders.
 */
import type { dataflow_v1b3 } from 'googleapis/build/src/apis/dataflow/v1b3';
import * as storage from '../../storage';
import { UserError } from '../../errors';
import { readLabels } from '../../dataset';
import { readPreprocessInputs, checkOutputDir, REPORT_NAME, PreprocessResult, SkippedRow } from '../../preprocess';
import { SHARD_PATTERN, shardName, Split } from '../../preprocess/shards';
import { readRecordFile } from '../../tfrecord';
import { decodeExample, getString } from '../../example';
import type { PreprocessRequest, PreprocessOutcome, LaunchedJob } from '../../backend';
import type { CloudClient } from '../client';
import { cloudError } from '../errors';
import { renderPipeline } from './pipeline';
import { launchParams, gcloudEquivalent, dataflowJobName, dataflowLocations, jobConsoleUrl, DataflowLaunchOptions } from './launch';
import { plannedShardCounts, dataflowReport } from './report';
import { parseRejects, REJECTS_GLOB } from './job';
import { followJob, watchCommands, FollowOptions } from './follow';

const SPLITS: readonly Split[] = ['train', 'validation'];

export interface DataflowRunOptions extends PreprocessRequest {
  /** First pause between polls of the job (tests shorten it); see FollowOptions. */
  pollMs?: number;
  /** The clock the job name is made from (tests fix it). */
  now?: Date;
}

/** The codelab's two CSVs and labels.txt, which the Dataflow pipeline reads. */
type CodelabCsvs = DataflowRunOptions & { validationCsv: string; labelsFile: string };

/** The local-only options, refused by name rather than ignored. */
function checkOptions(o: DataflowRunOptions): asserts o is CodelabCsvs {
  if (o.validationCsv === undefined || o.labelsFile === undefined || o.testCsv !== undefined) {
    throw new UserError(
      'on Dataflow, preprocess takes the codelab\'s --train_csv, --validation_csv and --labels_file (no test split); ' +
        'for an AutoML CSV, run imgclass make-dataset --csv AUTOML.csv first and pass its train_set.csv and eval_set.csv, or preprocess with --backend local',
    );
  }
  if (o.resize) throw new UserError('--resize is not available on Dataflow (the workers have no image decoder); preprocess with --backend local to resize');
  if (o.strict) throw new UserError('--strict applies to the local backend; on Dataflow unreadable rows are listed in OUTPUT/_rejects/ and in preprocess_report.json');
  if (o.workers !== undefined) throw new UserError('--workers sets local worker threads; on Dataflow cap the workers with --max_workers');
  if (o.numShards !== undefined && (!Number.isInteger(o.numShards) || o.numShards < 1)) {
    throw new UserError(`--num_shards must be a whole number ≥ 1, got ${o.numShards}`);
  }
  for (const [flag, p] of [['--train_csv', o.trainCsv], ['--validation_csv', o.validationCsv], ['--output_dir', o.outputDir]] as const) {
    if (!storage.isGcsPath(p)) {
      throw new UserError(`${flag} "${p}" is not a gs:// path: the Dataflow workers read and write Cloud Storage only (copy it with \`gcloud storage cp\`, or preprocess with --backend local)`);
    }
  }
}

/** Storage calls of this step as one clear line each (a UserError from our own checks passes as it is). */
async function step<T>(c: CloudClient, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw cloudError(err, { what, project: c.project });
  }
}

export async function runDataflowPreprocess(c: CloudClient, o: DataflowRunOptions): Promise<PreprocessOutcome> {
  const started = Date.now();
  checkOptions(o);
  const outputDir = o.outputDir.replace(/\/+$/, '');
  const say = (text: string): void => c.reporter.line(text);

  let labels: string[];
  let rows: Record<Split, number> | undefined;
  let warnings: string[] = [];
  if (c.dryRun) {
    // Reading a gs:// file is a request too, and a dry run sends none.
    say(
      `dry run: ${[o.trainCsv, o.validationCsv, o.labelsFile].filter(storage.isGcsPath).join(', ')} not read and not checked ` +
        '(a dry run sends no request, Cloud Storage reads included), nor whether the output folder is empty; ' +
        'the real run checks them first, as the local run does. The labels and shard counts in the pipeline below are placeholders.',
    );
    // A local labels.txt costs no request: the pipeline then shows the real labels.
    labels = storage.isGcsPath(o.labelsFile) ? [`LABELS (the lines of ${o.labelsFile})`] : await readLabels(o.labelsFile);
  } else {
    const inputs = await step(c, 'reading the CSVs and labels.txt', () => readPreprocessInputs(o));
    labels = inputs.labels;
    warnings = inputs.warnings;
    rows = { train: inputs.train.length, validation: inputs.validation.length };
    for (const w of warnings) say(`warning: ${w}`);
    await step(c, `checking the output folder ${outputDir}`, () => checkOutputDir(outputDir, !!o.overwrite));
  }
  const numShards = rows ? plannedShardCounts(rows, o.numShards) : { train: o.numShards ?? 1, validation: o.numShards ?? 1 };

  const yaml = renderPipeline({ trainCsv: o.trainCsv, validationCsv: o.validationCsv, labels, outputDir, numShards });
  const jobName = dataflowJobName(outputDir, o.now ?? new Date());
  const bucket = storage.parseGcsPath(outputDir).bucket;
  const locations = dataflowLocations(bucket, jobName);
  const launch: DataflowLaunchOptions = {
    project: c.project,
    region: c.region,
    bucket,
    jobName,
    pipelineFile: locations.pipelineFile,
    maxWorkers: o.maxWorkers,
    serviceAccountEmail: o.serviceAccount,
  };
  // Built first so a bad --max_workers or --service_account stops before anything is uploaded.
  const params = launchParams(launch);
  const gcloud = gcloudEquivalent(launch);

  if (c.dryRun) {
    say(`dry run: the pipeline (${locations.pipelineFile}):\n${yaml.trimEnd()}`);
    say(`dry run: would upload it: gcloud storage cp pipeline.yaml ${locations.pipelineFile}`);
  } else {
    await step(c, `uploading the pipeline to ${locations.pipelineFile}`, () => storage.writeFile(locations.pipelineFile, yaml, { overwrite: true }));
    say(`uploaded the pipeline to ${locations.pipelineFile}`);
  }

  const dryRunJob: dataflow_v1b3.Schema$Job = { id: 'DRY_RUN_JOB_ID', name: jobName, projectId: c.project, location: c.region, currentState: 'JOB_STATE_QUEUED' };
  const res = await c.call<dataflow_v1b3.Schema$LaunchFlexTemplateResponse>(
    // Not retried: a launch that reached Dataflow and lost its answer would start a second job.
    { what: `launching Dataflow job ${jobName} in ${c.region}`, gcloud: gcloud.flexTemplateRun, dryRun: { job: dryRunJob } },
    (opts) => c.dataflow().projects.locations.flexTemplates.launch(params, opts),
  );
  const id = res.job?.id;
  if (!id) throw new UserError(`launching Dataflow job ${jobName}: the answer named no job id; look for the job at https://console.cloud.google.com/dataflow/jobs?project=${c.project}`);
  const job: LaunchedJob = { id, name: jobName, project: c.project, region: c.region, consoleUrl: jobConsoleUrl(c.project, c.region, id) };

  if (c.dryRun) {
    say(`dry run: the same launch with gcloud:\n  ${gcloud.yamlRun}\n  or, spelled out:\n  ${gcloud.flexTemplateRun}`);
    return { launched: job, outputDir, dryRun: true, next: [gcloud.yamlRun, gcloud.flexTemplateRun] };
  }
  say(`Dataflow job ${jobName}: id ${id}\n  console: ${job.consoleUrl}`);
  const watch = watchCommands(job);
  if (o.wait === false) {
    say(`not waiting (--no-wait): watch it with \`${watch.describe}\`; cancel it with \`${watch.cancel}\``);
    return { launched: job, outputDir, dryRun: false, next: [watch.describe, watch.cancel] };
  }

  const follow: FollowOptions = { signal: o.signal, confirmCancel: o.confirmCancel, initialDelayMs: o.pollMs, outputDir };
  await followJob(c, job, follow);
  const result = await step(c, `reading the shards in ${outputDir}`, () =>
    writeReport(o, { outputDir, labels, rows: rows!, numShards, warnings }),
  );
  const seconds = (Date.now() - started) / 1000;
  return { ...result, seconds, imagesPerSecond: (rows!.train + rows!.validation) / seconds };
}

interface Written {
  outputDir: string;
  labels: string[];
  rows: Record<Split, number>;
  numShards: Record<Split, number>;
  warnings: string[];
}

/**
 * After the job: remove an earlier run's shards this run did not replace (when overwriting, as the
 * local run does), count the records per split and class, read the rejects, write the report.
 */
async function writeReport(o: CodelabCsvs, w: Written): Promise<Omit<PreprocessResult, 'seconds' | 'imagesPerSecond'>> {
  const expected = new Set(SPLITS.flatMap((split) => Array.from({ length: w.numShards[split] }, (_, i) => shardName(split, i, w.numShards[split]))));
  const shards: string[] = [];
  for (const split of SPLITS) {
    for (const f of await storage.glob(storage.joinPath(w.outputDir, `${split}-*`))) {
      const name = storage.baseName(f);
      if (!SHARD_PATTERN.test(name)) continue;
      if (expected.has(name)) shards.push(f);
      else if (o.overwrite) await storage.remove(f);
    }
  }
  const perClass: Record<Split, Record<string, number>> = { train: {}, validation: {} };
  for (const f of shards) {
    const split = SHARD_PATTERN.exec(storage.baseName(f))![1] as Split;
    let i = 0;
    for await (const rec of readRecordFile(f)) {
      const label = getString(decodeExample(rec, `record ${i} of ${f}`), 'image/class/synset', `record ${i} of ${f}`);
      perClass[split][label] = (perClass[split][label] ?? 0) + 1;
      i++;
    }
  }
  const skipped: SkippedRow[] = [];
  for (const f of await storage.glob(storage.joinPath(w.outputDir, REJECTS_GLOB))) skipped.push(...parseRejects(await storage.readText(f), f));
  const report = dataflowReport({
    labels: w.labels,
    csv: { train: o.trainCsv, validation: o.validationCsv },
    rows: w.rows,
    numShards: w.numShards,
    shards: shards.map((f) => storage.baseName(f)),
    perClass,
    skipped,
    warnings: w.warnings,
    seed: o.seed ?? 42,
  });
  const reportFile = storage.joinPath(w.outputDir, REPORT_NAME);
  await storage.writeFile(reportFile, JSON.stringify(report, null, 2) + '\n', { overwrite: true });
  return { outputDir: w.outputDir, files: [...shards.sort(), reportFile], reportFile, report };
}
