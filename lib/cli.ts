#!/usr/bin/env node
/**
 * `imgclass <command>`: parsing only; each command calls one library function and prints its result.
 * Flags are the tutorial's snake_case (`--train_csv`); kebab-case (`--train-csv`) works too.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { normalizeFlags, snakeCaseFlags } from './cli-flags';
import { UserError, errorMessage } from './errors';
import { terminalProgress } from './progress';
import { preprocess } from './preprocess';
import { makeDataset, formatSummary } from './dataset';
import { runNotebookCommand, positiveSeconds, RUN_NOTEBOOK_HELP, type RunNotebookCommandOptions } from './runner/command';
import { runTrainCommand, TrainCommandOptions } from './train/command';
import type { ResNetConfig } from './model';
import type { BackendName } from './engine/backend';
import { runServeCommand } from './serve/command';
import { parseByteSize, type ServeOptions, DEFAULT_MODEL_NAME, DEFAULT_PORT, DEFAULT_HOST, DEFAULT_MAX_BATCH, DEFAULT_BATCH_WAIT_MS } from './serve';
import { predict } from './predict';
import { deployLocal, undeployLocal } from './serve/daemon';
import { runNotebookSuite, stripOutputFiles } from './notebook-suite';
import { collectParameters, splitParameterArgs } from './runner/command';

export { normalizeFlags };

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

function fraction(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n < 1)) throw new InvalidArgumentError(`expected a number between 0 and 1 (exclusive), got "${value}"`);
  return n;
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
    .option('--csv <file>', 'or: one CSV of path,label rows to split')
    .requiredOption('--output-dir <dir>', 'where to write train_set.csv, eval_set.csv, labels.txt')
    .option('--eval-fraction <f>', 'share of each class held out for evaluation', fraction, 0.1)
    .option('--seed <n>', 'seed of the split', wholeNumber(0), 42)
    .option('--overwrite', 'replace existing CSVs and labels.txt', false)
    .action(async (o: { imagesDir?: string; csv?: string; outputDir: string; evalFraction: number; seed: number; overwrite: boolean }) => {
      if (!o.imagesDir === !o.csv) throw new UserError('give exactly one of --images_dir or --csv');
      const r = await makeDataset(o);
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stdout.write(`${formatSummary(r.summary)}\nwrote ${r.trainCsv}, ${r.evalCsv}, ${r.labelsFile}\n`);
    });

  program
    .command('preprocess')
    .description('section 4: JPEGs listed in CSVs → TFRecord shards of tf.train.Example (all cores)')
    .requiredOption('--train-csv <file>', 'CSV of path,label rows for training')
    .requiredOption('--validation-csv <file>', 'CSV of path,label rows for evaluation')
    .requiredOption('--labels-file <file>', 'labels.txt, one class per line; its order defines the class index')
    .requiredOption('--output-dir <dir>', 'where train-*-of-* and validation-*-of-* shards go (local or gs://)')
    .option('--num-shards <n>', 'shards per split (default: about 1,024 images a shard)', wholeNumber(1))
    .option('--resize <px>', 'cap on the longest side; default 0 keeps the original JPEG bytes', wholeNumber(0), 0)
    .option('--workers <n>', 'worker threads (default: one per core)', wholeNumber(1))
    .option('--overwrite', 'replace earlier shards in the output folder', false)
    .option('--strict', 'fail on the first unreadable image instead of skipping it', false)
    .option('--project-id <id>', 'accepted for compatibility with jpeg_to_tf_record.py; unused locally')
    .action(async (o: {
      trainCsv: string; validationCsv: string; labelsFile: string; outputDir: string;
      numShards?: number; resize: number; workers?: number; overwrite: boolean; strict: boolean;
    }) => {
      let bar: ReturnType<typeof terminalProgress> | undefined;
      const r = await preprocess({
        ...o,
        onProgress: (p) => {
          bar ??= terminalProgress('preprocess', p.total);
          bar.update(p.done, { rate: `${p.imagesPerSecond.toFixed(0)} img/s`, skipped: p.skipped });
        },
      }).finally(() => bar?.stop());
      const rep = r.report;
      for (const w of rep.warnings) process.stderr.write(`warning: ${w}\n`);
      for (const s of rep.skipped) process.stderr.write(`skipped ${s.csv}:${s.line} ${s.path}: ${s.reason}\n`);
      const re = Object.entries(rep.reencoded).map(([k, v]) => `${v} ${k}`).join(', ');
      process.stdout.write(
        `train: ${rep.splits.train.records} records in ${rep.splits.train.shards.length} shard(s); ` +
          `validation: ${rep.splits.validation.records} records in ${rep.splits.validation.shards.length} shard(s); ` +
          `skipped ${rep.skipped.length}${re ? `; re-encoded ${re}` : ''}\n` +
          `${r.imagesPerSecond.toFixed(1)} images/s, ${r.seconds.toFixed(1)} s; report: ${r.reportFile}\n`,
      );
    });

  program
    .command('train')
    .description('section 6: train a ResNet from scratch on the TFRecord shards (local backend: TensorFlow.js on all cores)')
    .requiredOption('--data-dir <dir>', 'folder with train-* and validation-* shards (from imgclass preprocess)')
    .requiredOption('--model-dir <dir>', 'checkpoints, metrics.jsonl and TensorBoard logs; an existing one is resumed')
    .option('--resnet-depth <n>', 'ResNet depth: 18, 34, 50, 101, 152 or 200', depthArg, 18)
    .option('--image-size <px>', 'input size (224 in the tutorial; 64 is practical on a CPU)', wholeNumber(16), 64)
    .option('--train-batch-size <n>', 'images per training step', wholeNumber(1), 32)
    .option('--eval-batch-size <n>', 'images per evaluation batch', wholeNumber(1), 32)
    .requiredOption('--train-steps <n>', 'total training steps (a resumed run continues up to this)', wholeNumber(1))
    .option('--steps-per-eval <n>', 'evaluate on the whole validation set every n steps (and at the end)', wholeNumber(1))
    .option('--steps-per-checkpoint <n>', 'save a checkpoint every n steps (and at the end)', wholeNumber(1))
    .option('--export-dir <dir>', 'export the trained model to DIR/<unix time>/ for serving')
    .option('--num-train-images <n>', 'checked against the data when given', wholeNumber(1))
    .option('--num-eval-images <n>', 'checked against the data when given', wholeNumber(1))
    .option('--num-label-classes <n>', 'default: the largest label in the data', wholeNumber(2))
    .option('--label-smoothing <f>', 'label smoothing', Number, 0)
    .option('--min-crop-area <f>', 'smallest area of the training random crop, as a fraction of the image (default 0.08, as tensorflow/tpu; small images do better with more)', Number)
    .option('--weight-decay <f>', 'L2 weight decay (not on batch norm)', Number, 1e-4)
    .option('--base-learning-rate <f>', 'learning rate for a batch of 256', Number, 0.1)
    .option('--seed <n>', 'seed of initialisation, shuffling and augmentation', wholeNumber(0), 42)
    .option('--workers <n>', 'model replicas on worker threads (default: one per core)', wholeNumber(1))
    .option('--backend <name>', 'tensorflow (tfjs-node), onednn (wasm + oneDNN kernels), wasm (XNNPACK), or cpu (slow; only when asked); default: the fastest available')
    .action((o: TrainCommandOptions) => runTrainCommand(o));

  program
    .command('serve')
    .description('section 7, locally: serve an exported model over TensorFlow Serving\'s REST API until Ctrl-C / SIGTERM')
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
    .option('--backend <name>', 'tensorflow (tfjs-node), onednn, wasm, or cpu; default: the fastest available')
    .action((o: ServeOptions) => runServeCommand(o));

  program
    .command('predict')
    .description('section 8: classify images with a running server (imgclass serve) or another predict endpoint')
    .requiredOption('--endpoint <url>', 'predict URL (http://127.0.0.1:8501/v1/models/NAME:predict) or server URL')
    .requiredOption('--image <path>', 'image file, local or gs:// (repeat for more)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--model-name <name>', 'model to call when --endpoint is a server URL', DEFAULT_MODEL_NAME)
    .option('--timeout-ms <ms>', 'give up after this long', wholeNumber(1), 60_000)
    .option('--json', 'print the server\'s predictions as JSON', false)
    .action(async (o: { endpoint: string; image: string[]; modelName: string; timeoutMs: number; json: boolean }) => {
      const r = await predict(o.endpoint, o.image, { modelName: o.modelName, timeoutMs: o.timeoutMs });
      if (o.json) {
        process.stdout.write(JSON.stringify(r) + '\n');
        return;
      }
      r.predictions.forEach((p, i) => {
        const prob = p.probabilities[p.classes] ?? NaN;
        process.stdout.write(`${o.image[i]}\t${p.label ?? `class ${p.classes}`}\t${prob.toFixed(4)}\n`);
      });
    });

  program
    .command('deploy')
    .description('section 7, locally: start the prediction server in the background (it outlives this command); WORK/deployment.json records it')
    .requiredOption('--export-dir <dir>', 'export folder (its newest version is served) or one version folder')
    .requiredOption('--work-dir <dir>', 'where deployment.json and server.log go (a deployment recorded there is replaced)')
    .option('--model-name <name>', 'name in the URL: /v1/models/NAME:predict', DEFAULT_MODEL_NAME)
    .option('--port <n>', 'TCP port (0: any free port)', wholeNumber(0), DEFAULT_PORT)
    .option('--host <addr>', 'address to listen on', DEFAULT_HOST)
    .option('--backend <name>', 'tensorflow (tfjs-node), onednn, wasm, or cpu; default: the fastest available')
    .action(async (o: { exportDir: string; workDir: string; modelName: string; port: number; host: string; backend?: BackendName }) => {
      const d = await deployLocal(o);
      process.stdout.write(
        `serving model "${d.modelName}" version ${d.version} at ${d.url} (pid ${d.pid}; log ${d.log})\n` +
          `predict: POST ${d.predictUrl}\nstop it with: imgclass undeploy --work_dir ${o.workDir}\n`,
      );
    });

  program
    .command('undeploy')
    .description('stop the prediction server that `imgclass deploy` (or notebook 07) recorded in WORK/deployment.json')
    .requiredOption('--work-dir <dir>', 'the folder holding deployment.json')
    .action(async (o: { workDir: string }) => {
      process.stdout.write(`${(await undeployLocal(o.workDir)).message}\n`);
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
