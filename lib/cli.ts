#!/usr/bin/env node
/**
 * `imgclass <command>`: parsing only; each command calls one library function and prints its result.
 * Flags are the tutorial's snake_case (`--train_csv`); kebab-case (`--train-csv`) works too.
 */
import { Command, InvalidArgumentError } from 'commander';
import { UserError, errorMessage } from './errors';
import { terminalProgress } from './progress';
import { preprocess } from './preprocess';
import { makeDataset, formatSummary } from './dataset';

/** `--train_csv=x` → `--train-csv=x`, so both spellings reach commander as one option. */
export function normalizeFlags(argv: string[]): string[] {
  return argv.map((a) => {
    if (!a.startsWith('--')) return a;
    const eq = a.indexOf('=');
    const name = eq < 0 ? a : a.slice(0, eq);
    return name.replace(/_/g, '-') + (eq < 0 ? '' : a.slice(eq));
  });
}

function wholeNumber(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected a whole number ≥ ${min}, got "${value}"`);
    return n;
  };
}

function fraction(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n < 1)) throw new InvalidArgumentError(`expected a number between 0 and 1 (exclusive), got "${value}"`);
  return n;
}

export function buildProgram(): Command {
  const program = new Command('imgclass')
    .description('From labelled JPEGs to a trained, deployed ResNet image classifier')
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

  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(normalizeFlags(argv), { from: 'user' });
    return 0;
  } catch (err) {
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
    process.exitCode = code;
  });
}
