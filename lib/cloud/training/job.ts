/**
 * Section 6 on gcp: a Vertex AI custom job on Cloud TPU running Model Garden's trainer and then the
 * export script, followed to its end: state changes, the trainer's log lines (Cloud Logging), and the
 * loss/accuracy curves from the event files it writes to MODEL_DIR.
 *
 * One job, one worker pool of one replica on the TPU machine: `python3 -m official.vision.train
 * --mode=train_and_eval` (which resumes from MODEL_DIR's newest checkpoint, as the local trainer does),
 * then export_imgclass.py into EXPORT_DIR/<unix time>/. The config and labels.txt are staged in
 * MODEL_DIR/imgclass/; the model flags are kept in MODEL_DIR/imgclass/model.json so a later run with
 * other ones is refused, as lib/train refuses them with the checkpoint's own record.
 */
import type { aiplatform_v1 } from 'googleapis/build/src/apis/aiplatform/v1';
import type { logging_v2 } from 'googleapis/build/src/apis/logging/v2';
import * as storage from '../../storage';
import { UserError, errorMessage } from '../../errors';
import { datasetInfo, listShards } from '../../train/input';
import { modelSummary, ResNetConfig } from '../../model';
import type { TrainEvent, TrainResult, EvalResult } from '../../train';
import type { BackendTrainOptions, TrainStatusRequest } from '../../backend';
import type { MetricsLine } from '../../charts/specs';
import type { CloudClient } from '../client';
import { experimentConfig, configYaml, evaluatedImages, EXPERIMENT, ExperimentConfig } from './config';
import { tpuSpec, regionsHint, TpuSpec } from './tpu';
import { trainerImage, imageUri, EXPORT_SCRIPT_PATH } from './image';
import { CurveFollower } from './events';
import { pause } from '../operations';

type CustomJob = aiplatform_v1.Schema$GoogleCloudAiplatformV1CustomJob;
type LogEntry = logging_v2.Schema$LogEntry;

export const JOB_LABEL = 'imgclass';
const DEFAULT_IMAGE_SIZE = 224;
const DEFAULT_POLL_MS = 15_000;
const TERMINAL = new Set(['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED', 'JOB_STATE_EXPIRED']);

/** What the model is, as kept in MODEL_DIR: a run with other values would not fit the checkpoints. */
interface ModelRecord {
  experiment: string;
  resnetDepth: number;
  imageSize: number;
  numClasses: number;
}

/** Everything a job is made from, before anything is sent. */
export interface TrainingPlan {
  modelDir: string;
  exportDir: string;
  tpu: TpuSpec;
  config: ExperimentConfig;
  yaml: string;
  configUri: string;
  labelsUri: string;
  labels: string[];
  model: ModelRecord;
  numTrainImages: number;
  numEvalImages: number;
  /** What was checked and what a dry run took on trust. */
  notes: string[];
}

function gcsFolder(flag: string, p: string | undefined): string {
  if (!p) throw new UserError(`--${flag} is required with --backend gcp: a gs:// folder the job can read and write`);
  if (!storage.isGcsPath(p)) throw new UserError(`--${flag} ${p} is not a gs:// path: a Vertex AI job reads and writes Cloud Storage, not this machine's disk`);
  return p.replace(/\/+$/, '');
}

const modelRecordFile = (modelDir: string): string => storage.joinPath(modelDir, 'imgclass', 'model.json');

async function checkModelRecord(modelDir: string, want: ModelRecord): Promise<boolean> {
  const file = modelRecordFile(modelDir);
  if (!(await storage.exists(file))) return false;
  let saved: ModelRecord;
  try {
    saved = JSON.parse(await storage.readText(file)) as ModelRecord;
  } catch (err) {
    throw new UserError(`${file} is not valid JSON (${errorMessage(err)}): it records the model trained in ${modelDir}; restore it, or use a new --model_dir`);
  }
  const names: Record<keyof ModelRecord, string> = { experiment: 'experiment', resnetDepth: 'resnet_depth', imageSize: 'image_size', numClasses: 'classes' };
  for (const k of Object.keys(want) as (keyof ModelRecord)[]) {
    if (saved[k] !== want[k]) {
      throw new UserError(
        `${modelDir} holds checkpoints trained with ${names[k]}=${saved[k]}, but this run asks for ${want[k]}: ` +
          'use the same flags to continue training, or a new --model_dir to start over',
      );
    }
  }
  return true;
}

/** The newest checkpoint step Model Garden recorded in MODEL_DIR/checkpoint (0 when none). */
async function checkpointStep(modelDir: string): Promise<number> {
  const file = storage.joinPath(modelDir, 'checkpoint');
  if (!(await storage.exists(file))) return 0;
  const m = /model_checkpoint_path:\s*"[^"]*?(\d+)"/.exec(await storage.readText(file));
  return m ? Number(m[1]) : 0;
}

/** Counts from the data (or, in a dry run given all three, from the flags), the config, the paths. */
export async function planTraining(c: CloudClient, o: BackendTrainOptions, opts: { allowMissingData?: boolean } = {}): Promise<TrainingPlan> {
  const dataDir = gcsFolder('data_dir', o.dataDir);
  const modelDir = gcsFolder('model_dir', o.modelDir);
  const exportDir = gcsFolder('export_dir', o.exportDir);
  const tpu = tpuSpec(o.tpu);
  const notes: string[] = [];
  let numTrainImages = 0;
  let numEvalImages = 0;
  let numClasses = 0;
  let labels: string[] | undefined;
  // Counts not read from the data: the flags', else one batch of each (shown, never trained on).
  const assumed = (why: string): void => {
    numTrainImages = o.numTrainImages ?? o.trainBatchSize ?? 128;
    numEvalImages = o.numEvalImages ?? o.evalBatchSize ?? 32;
    numClasses = o.numLabelClasses ?? 2;
    notes.push(`${why}: counts ${numTrainImages} training / ${numEvalImages} validation images, ${numClasses} classes are the flags' (--num_train_images, --num_eval_images, --num_label_classes) or one batch`);
  };
  if (c.dryRun) {
    // A dry run sends nothing, Cloud Storage reads included.
    assumed(`dry run: ${dataDir} is not read`);
  } else if (opts.allowMissingData && (await listShards(dataDir, 'train')).length === 0) {
    // Notebook 03 comes before the data (notebooks 04-05 write it).
    assumed(`no shards in ${dataDir} yet (notebooks 04-05 write them; notebook 06 counts them)`);
  } else {
    c.reporter.status(`counting the records of ${dataDir}`);
    const info = await datasetInfo(dataDir).finally(() => c.reporter.endStatus());
    const check = (flag: string, given: number | undefined, actual: number): number => {
      if (given !== undefined && given !== actual) throw new UserError(`--${flag} is ${given} but ${dataDir} holds ${actual}; omit the flag to use the count from the data`);
      return actual;
    };
    numTrainImages = check('num_train_images', o.numTrainImages, info.numTrainImages);
    numEvalImages = check('num_eval_images', o.numEvalImages, info.numEvalImages);
    if (o.numLabelClasses !== undefined && o.numLabelClasses < info.numClasses) {
      throw new UserError(`--num_label_classes is ${o.numLabelClasses} but ${dataDir} has labels up to ${info.numClasses}`);
    }
    numClasses = o.numLabelClasses ?? info.numClasses;
    labels = info.labels;
  }
  labels = Array.from({ length: numClasses }, (_, i) => labels?.[i] ?? `class_${i}`);
  const imageSize = o.imageSize ?? DEFAULT_IMAGE_SIZE;
  const config = experimentConfig({
    dataDir,
    resnetDepth: o.resnetDepth ?? 18,
    imageSize,
    trainBatchSize: o.trainBatchSize ?? 128,
    // Unset (notebooks): the training batch, or less on a small validation set, split evenly over the cores.
    evalBatchSize: o.evalBatchSize ?? Math.min(o.trainBatchSize ?? 128, Math.max(tpu.cores, Math.floor(numEvalImages / tpu.cores) * tpu.cores)),
    trainSteps: o.trainSteps,
    stepsPerEval: o.stepsPerEval ?? o.trainSteps,
    stepsPerCheckpoint: o.stepsPerCheckpoint,
    numTrainImages,
    numEvalImages,
    numClasses,
    baseLearningRate: o.baseLearningRate,
    weightDecay: o.weightDecay,
    labelSmoothing: o.labelSmoothing,
    minCropArea: o.minCropArea,
    initCheckpoint: o.initCheckpoint,
    ...(o.precision ? { precision: o.precision } : {}),
    tpu,
  });
  const staged = storage.joinPath(modelDir, 'imgclass');
  const stamp = Math.floor(Date.now() / 1000);
  return {
    modelDir,
    exportDir,
    tpu,
    config,
    yaml: configYaml(config),
    configUri: storage.joinPath(staged, `config-${stamp}.yaml`),
    labelsUri: storage.joinPath(staged, 'labels.txt'),
    labels,
    model: { experiment: EXPERIMENT, resnetDepth: o.resnetDepth ?? 18, imageSize, numClasses },
    numTrainImages,
    numEvalImages,
    notes,
  };
}

/** The container's command: Model Garden's trainer, then the export (shown in dry runs and notebook 03). */
export function jobCommand(p: TrainingPlan): string[] {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const trainCmd = [
    'python3 -m official.vision.train', `--experiment=${EXPERIMENT}`, '--mode=train_and_eval',
    `--model_dir=${q(p.modelDir)}`, `--config_file=${q(p.configUri)}`, '--tpu=local',
  ].join(' ');
  const exportCmd = ['python3', EXPORT_SCRIPT_PATH, EXPERIMENT, q(p.configUri), q(p.modelDir), q(p.exportDir), q(p.labelsUri)].join(' ');
  return ['bash', '-c', `set -e; ${trainCmd}; ${exportCmd}`];
}

/** The customJobs.create body: one worker pool, one replica, the TPU machine. */
export function customJobBody(p: TrainingPlan, imageUri: string, serviceAccount?: string): CustomJob {
  const [cmd, ...args] = jobCommand(p);
  const env: aiplatform_v1.Schema$GoogleCloudAiplatformV1EnvVar[] = p.tpu.choice.startsWith('v5e')
    // TensorFlow on TPU v5e runs on the PJRT runtime only (Vertex AI's TPU training guide).
    ? [{ name: 'NEXT_PLUGGABLE_DEVICE_USE_C_API', value: 'true' }, { name: 'TF_PLUGGABLE_DEVICE_LIBRARY_PATH', value: '/lib/libtpu.so' }]
    : [];
  return {
    displayName: `imgclass-train-${storage.baseName(p.modelDir)}`.slice(0, 128),
    labels: { [JOB_LABEL]: 'train' },
    jobSpec: {
      workerPoolSpecs: [{
        machineSpec: p.tpu.machineSpec,
        replicaCount: '1',
        containerSpec: { imageUri, command: [cmd!], args, ...(env.length ? { env } : {}) },
      }],
      baseOutputDirectory: { outputUriPrefix: storage.joinPath(p.modelDir, 'imgclass', 'vertex') },
      ...(serviceAccount ? { serviceAccount } : {}),
    },
  };
}

/** A short description of the job for notebook 03 and the dry run. */
export function formatPlan(p: TrainingPlan, imageUri = 'REGION-docker.pkg.dev/PROJECT/imgclass/trainer:TAG'): string {
  const t = p.config.trainer;
  return [
    `Vertex AI custom job on TPU ${p.tpu.choice} (${p.tpu.cores} cores, about $${p.tpu.usdPerHour.toFixed(2)} an hour list price)`,
    `  image:    ${imageUri}`,
    `  command:  ${jobCommand(p).slice(2).join(' ')}`,
    `  config:   ${p.configUri}`,
    `  data:     ${p.numTrainImages} training / ${p.numEvalImages} validation images, ${p.labels.length} classes (Model Garden: ${p.config.task.model.num_classes} outputs, 0 unused)`,
    `  steps:    ${t.train_steps}, evaluation every ${t.validation_interval} on ${evaluatedImages(p.config)} images, checkpoint every ${t.checkpoint_interval}, summaries every ${t.summary_interval}`,
    `  export:   ${p.exportDir}/<unix time>/ (input image_bytes; outputs classes, probabilities)`,
    ...p.notes.map((n) => `  note: ${n}`),
  ].join('\n');
}

/** Stages the config and labels, records the model flags, and creates the job. */
export async function submitTraining(c: CloudClient, p: TrainingPlan, o: Pick<BackendTrainOptions, 'trainerImage' | 'serviceAccount'>): Promise<CustomJob> {
  const resumed = c.dryRun ? false : await checkModelRecord(p.modelDir, p.model);
  const image = await trainerImage(c, o.trainerImage);
  if (c.dryRun) {
    c.reporter.line(`dry run: would write ${p.configUri}:\n${p.yaml.replace(/^/gm, '  ')}`);
    c.reporter.line(`dry run: would write ${p.labelsUri} (${p.labels.length} lines) and ${modelRecordFile(p.modelDir)}`);
  } else {
    await storage.writeFile(p.configUri, p.yaml, { overwrite: true });
    await storage.writeFile(p.labelsUri, p.labels.join('\n') + '\n', { overwrite: true });
    if (!resumed) await storage.writeFile(modelRecordFile(p.modelDir), JSON.stringify(p.model, null, 2) + '\n', { overwrite: true });
    c.reporter.line(`staged ${p.configUri} and ${p.labelsUri}`);
  }
  const body = customJobBody(p, image, o.serviceAccount);
  const parent = `projects/${c.project}/locations/${c.region}`;
  try {
    return await c.call({
      what: `creating the training job on TPU ${p.tpu.choice} in ${c.region}`,
      gcloud: `gcloud ai custom-jobs create --region=${c.region} --project=${c.project} --display-name=${body.displayName} --config=JOB_SPEC.yaml`,
      dryRun: { ...body, name: `${parent}/customJobs/DRY_RUN`, state: 'JOB_STATE_QUEUED' },
    }, (options) => c.aiplatform().projects.locations.customJobs.create({ parent, requestBody: body }, options));
  } catch (err) {
    if (err instanceof UserError && /quota|RESOURCE_EXHAUSTED|capacity/i.test(err.message)) throw new UserError(`${err.message}; ${regionsHint(p.tpu)}`);
    throw err;
  }
}

const jobId = (name: string): string => name.split('/').pop() ?? name;

function jobName(c: CloudClient, job: string): string {
  if (job.startsWith('projects/')) return job;
  if (!/^\d+$/.test(job)) throw new UserError(`--job "${job}" is not a custom job id (digits) or resource name (projects/P/locations/R/customJobs/ID)`);
  return `projects/${c.project}/locations/${c.region}/customJobs/${job}`;
}

/** The text of a log entry, one line per line of it. */
function entryText(e: LogEntry): string {
  if (e.textPayload) return e.textPayload;
  const j = e.jsonPayload as { message?: unknown } | undefined;
  if (j && typeof j.message === 'string') return j.message;
  return j ? JSON.stringify(j) : '';
}

/** The last Python traceback in the log lines (from "Traceback" to the exception line), if any. */
export function lastTraceback(lines: readonly string[]): string | undefined {
  const start = lines.map((l) => l.includes('Traceback (most recent call last)')).lastIndexOf(true);
  if (start < 0) return undefined;
  const tb: string[] = [];
  for (const l of lines.slice(start)) {
    tb.push(l);
    if (tb.length > 1 && /^\s*[A-Za-z_.]+(Error|Exception|Exit)\b.*/.test(l) && !/^\s+File /.test(l)) break;
  }
  return tb.join('\n');
}

/** A failed job as one message: capacity or quota (with the TPU's regions), a rejected config, a traceback. */
export function failureMessage(job: CustomJob, logLines: readonly string[], p: { tpu?: TpuSpec; configUri?: string }): string {
  const msg = job.error?.message ?? 'no error message';
  const id = jobId(job.name ?? '');
  if (/quota|insufficient|capacity|resources? (are|is) not available|RESOURCE_EXHAUSTED|stockout|no available/i.test(msg)) {
    return `training job ${id} could not get its TPU: ${msg}` + (p.tpu ? `; ${regionsHint(p.tpu)}, or try again later` : '');
  }
  const tb = lastTraceback(logLines);
  if (tb) {
    const last = tb.split('\n').pop()!.trim();
    if (/hyperparams|params_dict|override_params_dict|config_definitions|\.validate\(|KeyError|AttributeError: .*(is not|does not exist|no attribute)/.test(tb)) {
      return `training job ${id}: Model Garden rejected the config${p.configUri ? ` ${p.configUri}` : ''}: ${last}\n${tb}`;
    }
    return `training job ${id} failed: ${last}\nthe trainer's traceback:\n${tb}`;
  }
  return `training job ${id} failed: ${msg} (see its logs: gcloud ai custom-jobs stream-logs ${id} --region=...)`;
}

interface FollowContext {
  plan?: TrainingPlan;
  /** The state the job was created in (shown as its first state). */
  initialState?: string;
  modelDir: string;
  exportDir?: string;
  numClasses?: number;
  evalCount?: number;
  signal?: AbortSignal;
  confirmCancel?: () => Promise<boolean>;
  pollIntervalMs?: number;
  onEvent?: (e: TrainEvent) => void;
  trainSteps?: number;
}

/** The newest EXPORT_DIR/<unix time>/ with saved_model.pb written since `sinceSeconds`. */
export async function findExport(exportDir: string, sinceSeconds: number): Promise<string | undefined> {
  const files = await storage.list(exportDir);
  const root = exportDir.replace(/\/+$/, '') + '/';
  const versions = new Set<number>();
  for (const f of files) {
    const m = /^(\d+)\/saved_model\.pb$/.exec(f.slice(root.length));
    if (m && Number(m[1]) >= sinceSeconds) versions.add(Number(m[1]));
  }
  const newest = Math.max(...versions);
  return Number.isFinite(newest) ? `${root}${newest}` : undefined;
}

/** Follows a job to its end: state changes, log lines, curves; Ctrl-C asks whether to cancel. */
export async function followJob(c: CloudClient, name: string, f: FollowContext): Promise<TrainResult> {
  const started = Date.now();
  const ai = c.aiplatform();
  const id = jobId(name);
  const poll = f.pollIntervalMs ?? c.pollMs ?? DEFAULT_POLL_MS;
  const curves = new CurveFollower(f.modelDir);
  const logLines: string[] = [];
  const seenLogs = new Set<string>();
  let lastEval: EvalResult | undefined;
  let lastStep = 0;
  let since = new Date(started - 3600_000).toISOString();
  let state = f.initialState ?? '';
  if (state) c.reporter.line(`training job ${id}: ${state.replace('JOB_STATE_', '')}`);
  let job: CustomJob = {};
  let detached = false;
  let cancelAsked = false;

  const readLogs = async (): Promise<void> => {
    const filter = `resource.type="ml_job" AND resource.labels.job_id="${id}" AND timestamp>="${since}"`;
    let pageToken: string | undefined;
    do {
      const page: logging_v2.Schema$ListLogEntriesResponse = await c.call({ what: `reading the logs of training job ${id}` }, (options) =>
        c.logging().entries.list({ requestBody: { resourceNames: [`projects/${c.project}`], filter, orderBy: 'timestamp asc', pageSize: 1000, pageToken } }, options));
      for (const e of page.entries ?? []) {
        const key = e.insertId ?? `${e.timestamp}:${entryText(e)}`;
        if (seenLogs.has(key)) continue;
        seenLogs.add(key);
        if (e.timestamp && e.timestamp > since) since = e.timestamp;
        for (const line of entryText(e).split('\n')) {
          logLines.push(line);
          c.reporter.line(`  ${line}`);
        }
      }
      pageToken = page.nextPageToken ?? undefined;
    } while (pageToken);
  };
  const readCurves = async (): Promise<void> => {
    let fresh: MetricsLine[];
    try {
      fresh = await curves.poll();
    } catch (err) {
      c.reporter.line(`  (event files in ${f.modelDir} not readable yet: ${errorMessage(err)})`);
      return;
    }
    for (const l of fresh) {
      const step = l.step as number;
      lastStep = Math.max(lastStep, step);
      if (l.kind === 'train') {
        f.onEvent?.({ kind: 'step', step, loss: l.loss as number, crossEntropy: l.loss as number, lr: (l.lr as number | undefined) ?? NaN, epoch: NaN,
          imagesPerSecond: NaN, phaseMs: { input: 0, grads: 0, average: 0, apply: 0 } });
      } else {
        lastEval = { step, top1: l.top1 as number, ...(l.top5 !== undefined ? { top5: l.top5 as number } : {}), loss: (l.loss as number | undefined) ?? NaN, count: f.evalCount ?? 0 };
        f.onEvent?.({ kind: 'eval', ...lastEval, seconds: 0 });
      }
    }
  };
  const onAbort = async (): Promise<void> => {
    if (cancelAsked) return;
    cancelAsked = true;
    const yes = f.confirmCancel ? await f.confirmCancel() : false;
    if (!yes) {
      detached = true;
      c.reporter.line(`training job ${id} goes on in the cloud; follow it with: imgclass train-status --backend gcp --project ${c.project} --region ${c.region} --job ${id}`);
      return;
    }
    await c.call({ what: `cancelling training job ${id}`, gcloud: `gcloud ai custom-jobs cancel ${id} --region=${c.region} --project=${c.project}` },
      (options) => ai.projects.locations.customJobs.cancel({ name, requestBody: {} }, options));
    c.reporter.line(`training job ${id}: cancel requested`);
  };

  let aborting: Promise<void> | undefined;
  f.signal?.addEventListener('abort', () => void (aborting = onAbort().catch((err: unknown) => c.reporter.line(`could not cancel: ${errorMessage(err)}`))), { once: true });
  try {
    for (;;) {
      job = await c.call({ what: `reading training job ${id}`, gcloud: `gcloud ai custom-jobs describe ${id} --region=${c.region}` },
        (options) => ai.projects.locations.customJobs.get({ name }, options));
      if (job.state && job.state !== state) {
        state = job.state;
        c.reporter.line(`training job ${id}: ${state.replace('JOB_STATE_', '')}`);
      }
      await readLogs();
      await readCurves();
      if (TERMINAL.has(state)) break;
      if (aborting) await aborting;
      if (detached) break;
      await pause(poll, cancelAsked ? undefined : f.signal);
    }
  } finally {
    c.reporter.endStatus();
  }

  const base: TrainResult = {
    modelDir: f.modelDir, step: lastStep, interrupted: state !== 'JOB_STATE_SUCCEEDED', lastEval,
    seconds: (Date.now() - started) / 1000, imagesPerSecond: NaN, backend: 'gcp', engine: 'tensorflow', replicas: f.plan?.tpu.cores ?? 1,
  };
  if (detached || state === 'JOB_STATE_CANCELLED') return base;
  if (state === 'JOB_STATE_FAILED' || state === 'JOB_STATE_EXPIRED') {
    throw new UserError(failureMessage(job, logLines, { tpu: f.plan?.tpu, configUri: f.plan?.configUri }));
  }
  if (f.trainSteps !== undefined) base.step = Math.max(base.step, f.trainSteps);
  if (f.exportDir) {
    const jobStart = Date.parse(job.startTime ?? job.createTime ?? '') / 1000;
    const exportPath = await findExport(f.exportDir, Number.isFinite(jobStart) ? Math.floor(jobStart) - 60 : 0);
    if (!exportPath) {
      throw new UserError(`training job ${id} succeeded but wrote no export: no ${f.exportDir}/<unix time>/saved_model.pb; see the job's log lines above`);
    }
    base.exportPath = exportPath;
    f.onEvent?.({ kind: 'export', step: base.step, path: exportPath });
  }
  return base;
}

/** Section 6 on Vertex AI: plan, image, submit, and (unless noWait) follow to the export. */
export async function trainOnVertex(c: CloudClient, o: BackendTrainOptions): Promise<TrainResult> {
  const started = Date.now();
  const p = await planTraining(c, o);
  c.reporter.line(formatPlan(p));
  const startStep = c.dryRun ? 0 : await checkpointStep(p.modelDir);
  const summary = modelSummary({ depth: p.model.resnetDepth as ResNetConfig['depth'], imageSize: p.model.imageSize, numClasses: p.model.numClasses });
  const job = await submitTraining(c, p, o);
  const id = jobId(job.name ?? '');
  const result: TrainResult = {
    modelDir: p.modelDir, step: startStep, interrupted: true, seconds: 0, imagesPerSecond: NaN, backend: 'gcp', engine: 'tensorflow', replicas: p.tpu.cores,
  };
  if (c.dryRun) return result;
  c.reporter.line(`training job ${id} submitted: https://console.cloud.google.com/vertex-ai/locations/${c.region}/training/${id}/cpu?project=${c.project}`);
  o.onEvent?.({
    kind: 'start', backend: 'gcp', engine: 'tensorflow', backendNote: `Vertex AI custom job ${id} on TPU ${p.tpu.choice} (Model Garden ${EXPERIMENT})`,
    replicas: p.tpu.cores, startStep, trainSteps: o.trainSteps, params: summary.params, flopsPerImage: summary.flopsPerImage,
    numTrainImages: p.numTrainImages, numEvalImages: p.numEvalImages, numClasses: p.model.numClasses, resumed: startStep > 0,
  });
  if (o.noWait) {
    c.reporter.line(`not waiting (--no-wait); follow it with: imgclass train-status --backend gcp --project ${c.project} --region ${c.region} --job ${id}`);
    return { ...result, seconds: (Date.now() - started) / 1000 };
  }
  return followJob(c, job.name!, {
    plan: p, initialState: job.state ?? undefined, modelDir: p.modelDir, exportDir: p.exportDir, evalCount: evaluatedImages(p.config), signal: o.signal,
    confirmCancel: o.confirmCancel, pollIntervalMs: o.pollIntervalMs, onEvent: o.onEvent, trainSteps: o.trainSteps,
  });
}

/** `imgclass train-status`: follows a job submitted before, its paths read from the job itself. */
export async function trainStatusOnVertex(c: CloudClient, r: TrainStatusRequest): Promise<TrainResult> {
  const name = jobName(c, r.job);
  if (c.dryRun) {
    await c.call({ what: `reading training job ${jobId(name)}`, dryRun: {} }, (options) => c.aiplatform().projects.locations.customJobs.get({ name }, options));
    return { modelDir: '', step: 0, interrupted: true, seconds: 0, imagesPerSecond: NaN, backend: 'gcp', engine: 'tensorflow', replicas: 1 };
  }
  const job: CustomJob = await c.call({ what: `reading training job ${jobId(name)}` }, (options) => c.aiplatform().projects.locations.customJobs.get({ name }, options));
  const args = job.jobSpec?.workerPoolSpecs?.[0]?.containerSpec?.args?.join(' ') ?? '';
  const modelDir = /--model_dir='([^']+)'/.exec(args)?.[1];
  const exportDir = new RegExp(`${EXPORT_SCRIPT_PATH.replace(/[.]/g, '\\.')} \\S+ '[^']+' '[^']+' '([^']+)'`).exec(args)?.[1];
  if (!modelDir) throw new UserError(`training job ${jobId(name)} was not started by imgclass train (no --model_dir in its command); follow it in the console`);
  return followJob(c, name, { modelDir, exportDir, signal: r.signal, confirmCancel: r.confirmCancel, pollIntervalMs: r.pollIntervalMs, onEvent: r.onEvent });
}

/** Notebook 03 on gcp: the job train(o) would create and the config it stages; nothing is sent. */
export async function describeVertexTraining(c: CloudClient, o: BackendTrainOptions): Promise<string> {
  const p = await planTraining(c, o, { allowMissingData: true });
  const image = o.trainerImage ?? `${imageUri(c)} (built with Cloud Build by the first run if missing)`;
  return `${formatPlan(p, image)}\n\nthe Model Garden config it stages (${p.configUri}):\n${p.yaml}`;
}
