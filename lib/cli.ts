#!/usr/bin/env node
/**
 * `imgclass <command>`: parsing only; each command calls one library function and prints its result.
 * Flags are the tutorial's snake_case (`--train_csv`); kebab-case (`--train-csv`) works too.
 */
import type { Precision } from './engine/native-train';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { normalizeFlags, snakeCaseFlags } from './cli-flags';
import { UserError, errorMessage } from './errors';
import { terminalProgress } from './progress';
import { preprocess, PreprocessOptions, PreprocessResult } from './preprocess';
import { makeDataset, formatSummary } from './dataset';
import { runNotebookCommand, positiveSeconds, RUN_NOTEBOOK_HELP, type RunNotebookCommandOptions } from './runner/command';
import { runTrainCommand, TrainCommandOptions } from './train/command';
import { refuseInitFromOnGcp } from './train/init-from';
import type { ResNetConfig } from './model';
import { BACKEND_NAMES as ENGINES, type BackendName } from './engine/backend';
import { runServeCommand } from './serve/command';
import { parseByteSize, type ServeOptions, DEFAULT_MODEL_NAME, DEFAULT_PORT, DEFAULT_HOST, DEFAULT_MAX_BATCH, DEFAULT_BATCH_WAIT_MS } from './serve';
import { backendFor, BackendKind, Backend, isPreprocessed, isVertexDeployment } from './backend';
import { interruptSignal, askToCancel } from './cloud/dataflow/interrupt';
import { runCloudTrainCommand, runTrainStatusCommand } from './cloud/training/command';
import { terminalReporter } from './cloud/report';
import { runNotebookSuite, stripOutputFiles } from './notebook-suite';
import { collectParameters, splitParameterArgs } from './runner/command';
import { runEvaluateCommand } from './evaluation/command';
import { DEFAULT_THRESHOLD, DEFAULT_GALLERY, type EvalSplit } from './evaluation/run';

export { normalizeFlags };

const SERVE_ROUTES_HELP = `
Routes:
  POST /v1/models/NAME[/versions/V]:predict  {"instances": [{"image_bytes": {"b64": "..."}}]}
  GET  /v1/models/NAME[/versions/V]          model status (TensorFlow Serving's)
  GET  /healthz                              liveness and counters
  GET  /                                     web page: pick, drop, paste or photograph an image; the class
                                             probabilities as a chart; the exact :predict request and
                                             response; "run in this browser" runs the model with TensorFlow.js
  GET  /v1/models/NAME/versions/V/files/F    the export's own files, read-only (model.json, shards, ...)
`;

function wholeNumber(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected a whole number ≥ ${min}, got "${value}"`);
    return n;
  };
}

function depthArg(value: string): ResNetConfig['depth'] {
  const n = Number(value);
  if (![18, 34, 50, 101, 152, 200].includes(n)) throw new InvalidArgumentError(`expected 18, 34, 50, 101, 152 or 200, got "${value}"`);
  return n as ResNetConfig['depth'];
}

function precisionArg(value: string): Precision {
  if (value !== 'float32' && value !== 'bfloat16') throw new InvalidArgumentError(`expected float32 or bfloat16, got "${value}"`);
  return value;
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number > 0, got "${value}"`);
  return n;
}

function fraction(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n < 1)) throw new InvalidArgumentError(`expected a number between 0 and 1 (exclusive), got "${value}"`);
  return n;
}

/**
 * `--backend` means local | gcp; the TensorFlow.js kernel set is `--engine`. The old
 * `--backend onednn|wasm|cpu|tensorflow` still works for one release, with a line saying so.
 */
export function splitBackend(o: { backend?: string; engine?: string }): { backend: BackendKind; engine?: BackendName } {
  const b = o.backend?.trim();
  if (b && ENGINES.includes(b as BackendName)) {
    process.stderr.write(`warning: --backend ${b} names the TensorFlow.js engine, which is now --engine ${b}; --backend is local or gcp (the old spelling works until the next release)\n`);
    return { backend: 'local', engine: (o.engine ?? b) as BackendName };
  }
  if (o.engine !== undefined && !ENGINES.includes(o.engine as BackendName)) throw new UserError(`--engine "${o.engine}" is not known: use ${ENGINES.join(', ')}`);
  if (b && b !== 'local' && b !== 'gcp') throw new UserError(`--backend "${b}" is not known: use local or gcp`);
  return { backend: (b ?? 'local') as BackendKind, engine: o.engine as BackendName | undefined };
}

interface CloudFlags {
  backend?: string;
  engine?: string;
  project?: string;
  region: string;
  dryRun?: boolean;
}

/** The backend and engine a command's flags ask for: --dry_run belongs to gcp, --engine to local. */
function backendFlags(o: CloudFlags): { backend: BackendKind; engine?: BackendName } {
  const { backend, engine } = splitBackend(o);
  if (backend === 'local' && o.dryRun) throw new UserError('--dry_run applies to --backend gcp (the local backend sends no requests)');
  if (backend === 'gcp' && engine) throw new UserError('--engine applies to the local backend; on gcp the model runs on Vertex AI');
  return { backend, engine };
}

/** The Backend for a command's flags. */
function commandBackend(o: CloudFlags): { backend: Backend; engine?: BackendName } {
  const { backend, engine } = backendFlags(o);
  return { backend: backendFor({ backend, project: o.project ?? '', region: o.region, dryRun: o.dryRun, reporter: terminalReporter() }), engine };
}

function withCloudOptions(c: Command): Command {
  return c
    .option('--backend <name>', 'local (this machine) or gcp (Google Cloud)', 'local')
    .option('--project <id>', 'gcp: the Google Cloud project id')
    .option('--region <region>', 'gcp: region of the bucket, jobs and endpoints', 'us-central1')
    .option('--dry-run', 'gcp: print each request (method, URL, body) and its gcloud command; send nothing', false);
}

function printPreprocessResult(r: PreprocessResult): void {
  const rep = r.report;
  for (const w of rep.warnings) process.stderr.write(`warning: ${w}\n`);
  for (const s of rep.skipped) process.stderr.write(`skipped ${s.csv}:${s.line} ${s.path}: ${s.reason}\n`);
  const re = Object.entries(rep.reencoded).map(([k, v]) => `${v} ${k}`).join(', ');
  process.stdout.write(
    `train: ${rep.splits.train.records} records in ${rep.splits.train.shards.length} shard(s); ` +
      `validation: ${rep.splits.validation.records} records in ${rep.splits.validation.shards.length} shard(s); ` +
      (rep.splits.test ? `test: ${rep.splits.test.records} records in ${rep.splits.test.shards.length} shard(s); ` : '') +
      `skipped ${rep.skipped.length}${re ? `; re-encoded ${re}` : ''}\n` +
      `${r.imagesPerSecond.toFixed(1)} images/s, ${r.seconds.toFixed(1)} s; report: ${r.reportFile}\n`,
  );
}

/** Section 5 on Dataflow; Ctrl-C while waiting asks (or, with --cancel_on_interrupt, cancels). */
async function runGcpPreprocess(
  backend: Backend,
  o: PreprocessOptions & { dryRun?: boolean; maxWorkers?: number; serviceAccount?: string; wait: boolean; cancelOnInterrupt: boolean },
): Promise<void> {
  const interrupt = interruptSignal();
  try {
    const r = await backend.preprocess({
      trainCsv: o.trainCsv, validationCsv: o.validationCsv, testCsv: o.testCsv, labelsFile: o.labelsFile, outputDir: o.outputDir,
      numShards: o.numShards, resize: o.resize, workers: o.workers, overwrite: o.overwrite, strict: o.strict,
      maxWorkers: o.maxWorkers, serviceAccount: o.serviceAccount, wait: o.wait,
      signal: interrupt.signal,
      confirmCancel: o.cancelOnInterrupt ? async () => true : askToCancel(),
    });
    if (isPreprocessed(r)) printPreprocessResult(r);
    else if (!r.dryRun) process.stdout.write(`launched Dataflow job ${r.launched.name} (${r.launched.id}): ${r.launched.consoleUrl}\n`);
  } finally {
    interrupt.dispose();
  }
}

export function buildProgram(): Command {
  const program = new Command('imgclass')
    .description('From labelled JPEGs to a trained, deployed ResNet image classifier')
    // Subcommands inherit these three: flags in help and in commander's messages (required option,
    // unknown option, invalid or missing argument) as the README writes them, and a usage error is
    // thrown to main() (exit 2, bad input) instead of exiting with 1.
    .configureHelp({ optionTerm: (option) => snakeCaseFlags(option.flags) })
    .configureOutput({ outputError: (str, write) => write(snakeCaseFlags(str)) })
    .exitOverride()
    .showHelpAfterError();

  program
    .command('make-dataset')
    .description('section 1: train_set.csv, eval_set.csv and labels.txt from a folder of class folders (or one CSV)')
    .option('--images-dir <dir>', 'a folder with one sub-folder of images per class')
    .option('--csv <file>', 'or: one CSV of path,label rows to split, or an AutoML CSV (ML_USE,GCS_FILE_PATH,LABEL: also writes test_set.csv)')
    .requiredOption('--output-dir <dir>', 'where to write train_set.csv, eval_set.csv, labels.txt')
    .option('--eval-fraction <f>', 'share of each class held out for evaluation', fraction, 0.1)
    .option('--seed <n>', 'seed of the split', wholeNumber(0), 42)
    .option('--overwrite', 'replace existing CSVs and labels.txt', false)
    .action(async (o: { imagesDir?: string; csv?: string; outputDir: string; evalFraction: number; seed: number; overwrite: boolean }) => {
      if (!o.imagesDir === !o.csv) throw new UserError('give exactly one of --images_dir or --csv');
      const r = await makeDataset(o);
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stdout.write(`${formatSummary(r.summary)}\nwrote ${[r.trainCsv, r.evalCsv, r.testCsv, r.labelsFile].filter(Boolean).join(', ')}\n`);
    });

  withCloudOptions(
    program
      .command('preprocess')
      .description('sections 4 and 5: JPEGs listed in CSVs → TFRecord shards of tf.train.Example (local: all cores; gcp: a Dataflow job)'),
  )
    .requiredOption('--train-csv <file>', 'CSV of path,label rows for training (gcp: gs://); alone: an AutoML CSV, [ML_USE,]GCS_FILE_PATH,LABEL')
    .option('--validation-csv <file>', 'CSV of path,label rows for evaluation (gcp: gs://); leave out for an AutoML CSV')
    .option('--test-csv <file>', 'local: CSV of path,label rows held out as the test split (test-* shards), never trained on')
    .option('--labels-file <file>', 'labels.txt, one class per line; its order defines the class index (default: derived from the rows, written beside the shards)')
    .requiredOption('--output-dir <dir>', 'where train-*-of-* and validation-*-of-* shards go (local or gs://; gcp: gs://)')
    .option('--num-shards <n>', 'shards per split (default: about 1,024 images a shard)', wholeNumber(1))
    .option('--resize <px>', 'local: cap on the longest side; default 0 keeps the original JPEG bytes', wholeNumber(0), 0)
    .option('--workers <n>', 'local: worker threads (default: one per core)', wholeNumber(1))
    .option('--overwrite', 'replace earlier shards in the output folder', false)
    .option('--strict', 'local: fail on the first unreadable image instead of skipping it', false)
    .option('--project-id <id>', 'the project id, as jpeg_to_tf_record.py spells it (same as --project)')
    .option('--max-workers <n>', 'gcp: most Dataflow workers (autoscaling cap; each is billed per minute)', wholeNumber(1))
    .option('--service-account <email>', 'gcp: the service account the Dataflow workers run as (default: Compute Engine\'s default one)')
    .option('--no-wait', 'gcp: return once the job is launched (no report)')
    .option('--cancel-on-interrupt', 'gcp: Ctrl-C cancels the job without asking (default: ask on a terminal, else leave it running)', false)
    .action(async (o: CloudFlags & {
      projectId?: string;
      trainCsv: string; validationCsv?: string; testCsv?: string; labelsFile?: string; outputDir: string;
      numShards?: number; resize: number; workers?: number; overwrite: boolean; strict: boolean;
      maxWorkers?: number; serviceAccount?: string; wait: boolean; cancelOnInterrupt: boolean;
    }) => {
      const { backend } = commandBackend({ ...o, project: o.project ?? o.projectId });
      if (backend.kind === 'gcp') return runGcpPreprocess(backend, o);
      if (o.maxWorkers !== undefined || o.serviceAccount !== undefined || !o.wait || o.cancelOnInterrupt) {
        throw new UserError('--max_workers, --service_account, --no-wait and --cancel_on_interrupt apply to --backend gcp (a Dataflow job)');
      }
      let bar: ReturnType<typeof terminalProgress> | undefined;
      const r = await preprocess({
        ...o,
        onProgress: (p) => {
          bar ??= terminalProgress('preprocess', p.total);
          bar.update(p.done, { rate: `${p.imagesPerSecond.toFixed(0)} img/s`, skipped: p.skipped });
        },
      }).finally(() => bar?.stop());
      printPreprocessResult(r);
    });

  withCloudOptions(
    program
      .command('train')
      .description('section 6: train a ResNet from scratch on the TFRecord shards (local: TensorFlow.js on all cores; gcp: TensorFlow Model Garden on a Cloud TPU with Vertex AI)'),
  )
    .requiredOption('--data-dir <dir>', 'folder with train-* and validation-* shards (from imgclass preprocess); gcp: gs://')
    .requiredOption('--model-dir <dir>', 'checkpoints and TensorBoard logs; an existing one is resumed; gcp: gs://')
    .option('--resnet-depth <n>', 'ResNet depth: 18, 34, 50, 101, 152 or 200', depthArg, 18)
    .option('--image-size <px>', 'input size (default 64 locally, practical on a CPU; 224 on gcp, as the tutorial)', wholeNumber(16))
    .option('--train-batch-size <n>', 'images per training step (gcp: a multiple of the TPU\'s cores)', wholeNumber(1), 32)
    .option('--eval-batch-size <n>', 'images per evaluation batch (gcp: a multiple of the TPU\'s cores)', wholeNumber(1), 32)
    .requiredOption('--train-steps <n>', 'total training steps (a resumed run continues up to this)', wholeNumber(1))
    .option('--steps-per-eval <n>', 'evaluate on the whole validation set every n steps (and at the end)', wholeNumber(1))
    .option('--steps-per-checkpoint <n>', 'save a checkpoint every n steps (and at the end)', wholeNumber(1))
    .option('--export-dir <dir>', 'export the trained model to DIR/<unix time>/ for serving (required on gcp: gs://)')
    .option('--num-train-images <n>', 'checked against the data when given', wholeNumber(1))
    .option('--num-eval-images <n>', 'checked against the data when given', wholeNumber(1))
    .option('--num-label-classes <n>', 'default: the largest label in the data', wholeNumber(2))
    .option('--label-smoothing <f>', 'label smoothing', Number, 0)
    .option('--min-crop-area <f>', 'smallest area of the training random crop, as a fraction of the image (default 0.08, as tensorflow/tpu; small images do better with more)', Number)
    .option('--weight-decay <f>', 'L2 weight decay (not on batch norm)', Number, 1e-4)
    .option('--base-learning-rate <f>', 'learning rate for a batch of 256', Number, 0.1)
    .option('--seed <n>', 'local: seed of initialisation, shuffling and augmentation', wholeNumber(0), 42)
    .option('--workers <n>', 'local: model replicas on worker threads (default: one on all cores with the onednn engine, else one per core)', wholeNumber(1))
    .option('--engine <name>', 'local: tensorflow (tfjs-node), onednn (wasm + oneDNN kernels), wasm (XNNPACK), or cpu (slow; only when asked); default: the fastest available')
    .option('--precision <type>', 'float32 or bfloat16 (tensorflow/tpu\'s flag): convolutions and matrix products in bfloat16 with float32 accumulation, weights and statistics float32; local default float32 (bfloat16 needs the onednn engine on a CPU with AVX512_BF16 or AMX), gcp default bfloat16', precisionArg)
    .option('--init-from <source>', 'local: start from a pretrained model: an imgclass export (local or gs://), or a TensorFlow.js model.json (Layers or graph format), its folder, or an http(s) URL of one')
    .option('--trainable <part>', 'with --init_from: backbone (the whole network; default for Layers models) or head (backbone frozen; the only choice for graph models)')
    .option('--fine-tune-lr-scale <f>', 'with --init_from and --trainable backbone: the backbone\'s learning rate as a fraction of the head\'s (default 0.1)', positiveNumber)
    .option('--init-cut-at <layer>', 'with --init_from: the layer (graph: node) to put the new head on (default: the one below the source\'s own head)')
    .option('--init-input-range <range>', 'with --init_from, for a source that does not say: 0,1 | -1,1 | imagenet (default: from its preprocessing.json or metadata.json, else graph 0,1 and Layers -1,1)')
    .option('--tpu <type>', 'gcp: v5e-4 (default), v5e-1, v5e-8, v2-8 or v3-8')
    .option('--trainer-image <uri>', 'gcp: run this trainer image instead of building imgclass\'s with Cloud Build')
    .option('--service-account <email>', 'gcp: the identity the job runs as (default: Vertex AI\'s custom code service agent)')
    .option('--init-checkpoint <path>', 'gcp: start from this checkpoint (e.g. a public ImageNet ResNet), for small data sets')
    .option('--no-wait', 'gcp: return once the job is submitted (follow it with imgclass train-status)')
    .option('--poll-seconds <s>', 'gcp: how often the job, its logs and event files are read', positiveNumber, 15)
    .action((o: TrainCommandOptions & CloudFlags & { engine?: string; tpu?: string; trainerImage?: string; serviceAccount?: string; initCheckpoint?: string; wait: boolean; pollSeconds: number }) => {
      const { backend, engine } = backendFlags(o);
      if (backend === 'gcp') {
        refuseInitFromOnGcp(o);
        const { backend: _b, engine: _e, wait, pollSeconds, ...rest } = o;
        return runCloudTrainCommand({ ...rest, noWait: !wait, pollIntervalMs: pollSeconds * 1000 });
      }
      for (const [flag, v] of [['tpu', o.tpu], ['trainer_image', o.trainerImage], ['service_account', o.serviceAccount], ['init_checkpoint', o.initCheckpoint], ['project', o.project]] as const) {
        if (v !== undefined) throw new UserError(`--${flag} applies to --backend gcp`);
      }
      if (!o.wait) throw new UserError('--no-wait applies to --backend gcp');
      const { tpu: _t, trainerImage: _i, serviceAccount: _s, initCheckpoint: _c, wait: _w, pollSeconds: _p, project: _pr, region: _r, dryRun: _d, ...local } = o;
      return runTrainCommand({ ...local, backend: engine });
    });

  withCloudOptions(
    program
      .command('train-status')
      .description('section 6 on gcp: follow a Vertex AI training job (state, log lines, curves) to its end and find its export; Ctrl-C asks whether to cancel it'),
  )
    .requiredOption('--job <id>', 'the custom job\'s id (as imgclass train printed it) or resource name')
    .option('--poll-seconds <s>', 'how often the job, its logs and event files are read', positiveNumber, 15)
    .action((o: CloudFlags & { job: string; pollSeconds: number }) => {
      if (splitBackend(o).backend !== 'gcp') throw new UserError('train-status follows Vertex AI training jobs: pass --backend gcp');
      return runTrainStatusCommand({ project: o.project, region: o.region, dryRun: o.dryRun, job: o.job, pollIntervalMs: o.pollSeconds * 1000 });
    });

  program
    .command('evaluate')
    .description('after section 6: the exported model on the validation or test split: top-1/top-5, per-class precision/recall/F1, confusion, PR curves; saved as evaluation.json beside the model')
    .requiredOption('--model-dir <dir>', 'export folder (its newest version) or one version folder, local or gs:// (a TensorFlow.js export; gcp SavedModels cannot run here)')
    .requiredOption('--data-dir <dir>', 'folder with the validation-* (and test-*) shards')
    .option('--split <name>', 'validation or test', 'validation')
    .option('--confidence-threshold <p>', 'report top-1 accuracy and coverage of the predictions at least this confident', Number, DEFAULT_THRESHOLD)
    .option('--gallery-size <n>', 'how many of the most confidently wrong images to keep', wholeNumber(0), DEFAULT_GALLERY)
    .option('--batch-size <n>', 'images per model call', wholeNumber(1), 32)
    .option('--engine <name>', 'tensorflow (tfjs-node), onednn, wasm, or cpu; default: the fastest available')
    .option('--backend <name>', 'local or gcp: either way the model runs on this machine (gs:// paths are read from Cloud Storage)', 'local')
    .option('--json', 'print one JSON object with every figure', false)
    .action((o: { modelDir: string; dataDir: string; split: string; confidenceThreshold: number; gallerySize: number; batchSize: number; engine?: string; backend?: string; json: boolean }) => {
      const { engine } = splitBackend(o);
      if (o.split !== 'validation' && o.split !== 'test') throw new UserError(`--split "${o.split}" is not known: use validation or test`);
      return runEvaluateCommand({
        modelDir: o.modelDir, dataDir: o.dataDir, split: o.split as EvalSplit, threshold: o.confidenceThreshold,
        gallerySize: o.gallerySize, batchSize: o.batchSize, backend: engine, json: o.json,
      });
    });

  program
    .command('serve')
    .description('section 7, locally: serve an exported model over TensorFlow Serving\'s REST API until Ctrl-C / SIGTERM, with a web page for it at /')
    .addHelpText('after', SERVE_ROUTES_HELP)
    .requiredOption('--model-dir <dir>', 'export folder (its newest <unix time>/ version is served) or one version folder')
    .option('--model-name <name>', 'name in the URL: /v1/models/NAME:predict', DEFAULT_MODEL_NAME)
    .option('--port <n>', 'TCP port (0: any free port)', wholeNumber(0), DEFAULT_PORT)
    .option('--host <addr>', 'address to listen on; 0.0.0.0 exposes the server to the network', DEFAULT_HOST)
    .option('--max-body <size>', 'largest request body, e.g. 512KB (default: 10MB)', (v: string) => {
      try {
        return parseByteSize(v);
      } catch (err) {
        throw new InvalidArgumentError(errorMessage(err));
      }
    })
    .option('--max-batch <n>', 'most images per request and per model call', wholeNumber(1), DEFAULT_MAX_BATCH)
    .option('--batch-wait-ms <ms>', 'how long a batch waits for images still being decoded (a lone request does not wait)', wholeNumber(0), DEFAULT_BATCH_WAIT_MS)
    .option('--confidence-threshold <p>', 'predictions less sure than this come back with "labels": null (see imgclass evaluate for the accuracy and coverage at a threshold)', Number)
    .option('--engine <name>', 'tensorflow (tfjs-node), onednn, wasm, or cpu; default: the fastest available')
    .option('--backend <name>', 'deprecated spelling of --engine')
    .action((o: ServeOptions & { engine?: string }) => {
      const { backend, engine } = splitBackend(o as { backend?: string; engine?: string });
      if (backend === 'gcp') throw new UserError('imgclass serve runs the model on this machine; for Vertex AI use imgclass deploy --backend gcp');
      return runServeCommand({ ...o, backend: engine });
    });

  withCloudOptions(
    program
      .command('predict')
      .description('section 8: classify images with a deployed model: a local server (imgclass serve/deploy) or a Vertex AI endpoint (--backend gcp)'),
  )
    .requiredOption('--endpoint <endpoint>', 'local: predict URL (http://127.0.0.1:8501/v1/models/NAME:predict) or server URL; gcp: the endpoint\'s id, display name or resource name')
    .requiredOption('--image <path>', 'image file, local or gs:// (repeat for more)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--model-name <name>', 'local: model to call when --endpoint is a server URL', DEFAULT_MODEL_NAME)
    .option('--timeout-ms <ms>', 'give up after this long', wholeNumber(1), 60_000)
    .option('--json', 'print the predictions as JSON', false)
    .action(async (o: CloudFlags & { endpoint: string; image: string[]; modelName: string; timeoutMs: number; json: boolean }) => {
      const { backend } = commandBackend(o);
      const r = await backend.predict({ target: o.endpoint, images: o.image, modelName: o.modelName, timeoutMs: o.timeoutMs });
      if (o.dryRun) return;
      if (o.json) {
        process.stdout.write(JSON.stringify({ predictions: r.predictions }) + '\n');
        return;
      }
      r.predictions.forEach((p, i) => {
        const prob = p.probabilities[p.classes] ?? NaN;
        const name = p.label ?? r.labels[p.classes] ?? `class ${p.classes}`;
        process.stdout.write(`${o.image[i]}\t${p.belowThreshold ? `unsure (best guess ${name})` : name}\t${prob.toFixed(4)}\n`);
      });
    });

  withCloudOptions(
    program
      .command('deploy')
      .description('section 7: serve the newest export: locally in the background (WORK/deployment.json records it), or on a Vertex AI endpoint (--backend gcp)'),
  )
    .requiredOption('--export-dir <dir>', 'export folder (its newest version is served) or one version folder; gcp: a gs:// folder of SavedModels')
    .option('--work-dir <dir>', 'where deployment.json (and locally server.log) go; required locally')
    .option('--model-name <name>', 'local: the name in /v1/models/NAME:predict; gcp: the endpoint\'s and model\'s display name', DEFAULT_MODEL_NAME)
    .option('--port <n>', 'local: TCP port (0: any free port)', wholeNumber(0), DEFAULT_PORT)
    .option('--host <addr>', 'local: address to listen on', DEFAULT_HOST)
    .option('--engine <name>', 'local: tensorflow (tfjs-node), onednn, wasm, or cpu; default: the fastest available')
    .option('--machine-type <type>', 'gcp: the serving machine, billed per node-hour while deployed', 'n1-standard-2')
    .option('--min-replicas <n>', 'gcp: nodes always up', wholeNumber(1), 1)
    .option('--max-replicas <n>', 'gcp: most nodes under load', wholeNumber(1))
    .option('--serving-image <uri>', 'gcp: prediction container (default: Vertex AI\'s prebuilt TensorFlow image of the trainer\'s version)')
    .action(async (o: CloudFlags & {
      exportDir: string; workDir?: string; modelName: string; port: number; host: string;
      machineType: string; minReplicas: number; maxReplicas?: number; servingImage?: string;
    }) => {
      const { backend, engine } = commandBackend(o);
      const d = await backend.deploy({ ...o, engine });
      if (o.dryRun) return;
      if (isVertexDeployment(d)) {
        process.stdout.write(
          `deployed model "${d.modelName}" version ${d.version} to ${d.endpoint} (deployed model ${d.deployedModelId})\n` +
            `predict: imgclass predict --backend gcp --project ${d.project} --region ${d.region} --endpoint ${d.endpoint.split('/').pop()} --image IMAGE\n` +
            `stop paying for it: imgclass undeploy --backend gcp --project ${d.project} --region ${d.region} --model_name ${d.modelName}\n`,
        );
        return;
      }
      process.stdout.write(
        `serving model "${d.modelName}" version ${d.version} at ${d.url} (pid ${d.pid}; log ${d.log})\n` +
          `predict: POST ${d.predictUrl}\npage: ${d.url}/\nstop it with: imgclass undeploy --work_dir ${o.workDir}\n`,
      );
    });

  withCloudOptions(
    program
      .command('undeploy')
      .description('take a deployment down: the local server recorded in WORK/deployment.json, or (--backend gcp) the models on endpoint --model_name'),
  )
    .option('--work-dir <dir>', 'local: the folder holding deployment.json; gcp: where deploy recorded the endpoint (when --model_name is not given)')
    .option('--model-name <name>', 'gcp: the endpoint\'s display name')
    .option('--delete', 'gcp: also delete the endpoint and the model imgclass uploaded', false)
    .action(async (o: CloudFlags & { workDir?: string; modelName?: string; delete: boolean }) => {
      const { backend } = commandBackend(o);
      if (backend.kind === 'local' && !o.workDir) throw new UserError('--work_dir is required: the folder holding deployment.json');
      process.stdout.write(`${await backend.undeploy({ workDir: o.workDir, modelName: o.modelName, delete: o.delete })}\n`);
    });

  program
    .command('setup-gcp')
    .description('section 2 on Google Cloud: check the project, APIs, bucket and the identities the jobs run as; fix what you allow')
    .requiredOption('--project <id>', 'the Google Cloud project id')
    .option('--region <region>', 'region of the bucket, jobs and endpoints', 'us-central1')
    .requiredOption('--bucket <gs://bucket>', 'the bucket for data, models and exports')
    .option('--service-account <email>', 'the service account the jobs run as (default: Vertex AI\'s custom code service agent, and the Compute Engine default account for Dataflow)')
    .option('--enable-apis', 'enable the APIs that are missing', false)
    .option('--grant', 'add the missing bucket role bindings (roles/storage.objectAdmin)', false)
    .option('--dry-run', 'print each request and its gcloud command; send nothing', false)
    .action(async (o: { project: string; region: string; bucket: string; serviceAccount?: string; enableApis: boolean; grant: boolean; dryRun: boolean }) => {
      const backend = backendFor({ backend: 'gcp', project: o.project, region: o.region, dryRun: o.dryRun, reporter: terminalReporter() });
      const r = await backend.access({ workDir: '.', bucket: o.bucket, serviceAccount: o.serviceAccount, enableApis: o.enableApis, grant: o.grant });
      process.stdout.write(r.text);
      if (!r.ready && !o.dryRun) process.exitCode = 3;
    });

  program
    .command('run-notebooks')
    .description('run notebooks/01-…08-*.ipynb in order on one work folder, headless; stop at the first failure; undeploy at the end')
    .usage('[--out DIR] [--work_dir DIR] [-p NAME VALUE]...')
    .argument('[args...]', '-p/-r NAME VALUE parameters, each given to the notebooks that declare it')
    .allowUnknownOption()
    .option('--notebooks <dir>', 'folder of the numbered notebooks', 'notebooks')
    .option('--out <dir>', 'where the executed notebooks go (default: runs/<time>)')
    .option('--work-dir <dir>', 'the shared work folder (default: OUT/work)')
    .option('--execution-timeout <s>', 'seconds a cell may run', positiveSeconds)
    .option('--log-output', 'echo cell outputs as they arrive', false)
    .action(async (args: string[], o: { notebooks: string; out?: string; workDir?: string; executionTimeout?: number; logOutput: boolean }) => {
      const split = splitParameterArgs(args);
      if (split.positionals.length > 0) throw new UserError(`run-notebooks takes no file arguments (got ${split.positionals.join(' ')}); use --out and -p NAME VALUE`);
      const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
      const out = o.out ?? `runs/${stamp}`;
      const r = await runNotebookSuite({
        notebooksDir: o.notebooks,
        outDir: out,
        workDir: o.workDir,
        parameters: await collectParameters(split),
        executionTimeout: o.executionTimeout,
        logOutput: o.logOutput,
        onStart: (nb) => process.stderr.write(`running ${nb} ...\n`),
        onDone: (nb, res) =>
          process.stderr.write(res.ok ? `  done in ${res.seconds.toFixed(1)} s → ${res.output}\n` : `  FAILED: ${res.error}\n  the executed notebook (with the error) is in ${res.output}\n`),
      });
      if (r.undeploy) process.stderr.write(`${r.undeploy}\n`);
      process.stdout.write(r.ok ? `all ${r.results.length} notebooks ran; executed copies in ${out}\n` : `stopped at ${r.failed}\n`);
      if (!r.ok) process.exitCode = 1;
    });

  program
    .command('strip-outputs')
    .description('remove outputs, execution counts and run metadata from notebooks, in place (as they are kept in git)')
    .argument('<files...>', 'notebook files')
    .action(async (files: string[]) => {
      const changed = await stripOutputFiles(files);
      process.stdout.write(changed.length ? changed.map((f) => `stripped ${f}\n`).join('') : 'nothing to strip\n');
    });

  program
    .command('run-notebook')
    .description('run a notebook headless, papermill-style: inject parameters, execute every cell, save the executed copy')
    .usage('IN.ipynb OUT.ipynb [-p NAME VALUE]... [-r NAME VALUE]... [-f params.json] [options]')
    .argument('[args...]', 'IN.ipynb OUT.ipynb (local or gs://) and -p/-r parameters')
    // -p/-r take two values, which commander can't express: they pass through and runNotebookCommand reads them.
    .allowUnknownOption()
    .option('-f, --parameters-file <file>', 'JSON file of parameters (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--cwd <dir>', "the kernel's working folder (default: the notebook's folder)")
    .option('--kernel <name>', 'kernelspec name (default: the notebook\'s, else tslab)')
    .option('--execution-timeout <s>', 'seconds a cell may run before it is interrupted and the run fails', positiveSeconds)
    .option('--start-timeout <s>', 'seconds to wait for the kernel to start', positiveSeconds, 60)
    .option('--prepare-only', 'write the parameterized notebook without running it', false)
    .option('--log-output', 'echo cell outputs to stdout/stderr as they arrive', false)
    .option('--progress-bar', 'show cells done/total (default on a terminal, unless --log_output)')
    .option('--no-progress-bar', 'no progress display')
    .addHelpText('after', RUN_NOTEBOOK_HELP)
    .action(async (args: string[], o: RunNotebookCommandOptions) => {
      const code = await runNotebookCommand(args, o);
      // main() maps only thrown errors to exit codes; a failed cell is a result, not an error.
      if (code !== 0) await new Promise<void>((r) => process.stderr.write('', () => r())).then(() => process.exit(code));
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(normalizeFlags(argv), { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Already printed by commander. --help and --version end here too, with their own code.
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version' ? err.exitCode : 2;
    }
    if (err instanceof UserError) {
      process.stderr.write(`imgclass: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`imgclass: internal error: ${(err as Error)?.stack ?? errorMessage(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    if (code !== 0) process.exitCode = code;
  });
}
