/**
 * preprocess_report.json for a Dataflow run, in the shape the local run writes, so notebooks and
 * the trainer read one format whichever backend preprocessed. The CLI counts the records of the
 * written shards and reads the rejects file; this puts the numbers together and checks that every
 * CSV row was either written or rejected.
 */
import type { PreprocessReport, SkippedRow, SplitReport } from '../../preprocess';
import { planShards, defaultShardCount, shardName, SHARD_PATTERN, Split } from '../../preprocess/shards';
import { sortSkipped } from './job';

const SPLITS: readonly Split[] = ['train', 'validation'];

/** Shards per split as the local run plans them: about 1,024 rows a shard by default, never more shards than rows. */
export function plannedShardCounts(rows: Record<Split, number>, numShards?: number): Record<Split, number> {
  const count = (n: number): number => planShards(n, numShards ?? defaultShardCount(n)).length;
  return { train: count(rows.train), validation: count(rows.validation) };
}

export interface DataflowReportInput {
  /** labels.txt's lines. */
  labels: string[];
  /** The CSV of each split, as given. */
  csv: Record<Split, string>;
  /** Rows of each CSV after the local checks (duplicates dropped): what the job was given. */
  rows: Record<Split, number>;
  numShards: Record<Split, number>;
  /** Base names of the shard files found in the output folder. */
  shards: string[];
  /** Records per class counted in each split's shards (image/class/synset). */
  perClass: Record<Split, Record<string, number>>;
  /** The rejects file(s), parsed with parseRejects. */
  skipped: SkippedRow[];
  /** Warnings of the local CSV checks. */
  warnings: string[];
  /** The CLI's --seed, recorded as the local report does (the Dataflow job does not shuffle by it). */
  seed: number;
}

/**
 * The report, with a warning for each split whose written + rejected rows differ from its CSV rows
 * (a row lost without a trace) or whose shard files are not the planned ones.
 */
export function dataflowReport(input: DataflowReportInput): PreprocessReport {
  const warnings = [...input.warnings];
  const splits = {} as Record<Split, SplitReport>;
  for (const split of SPLITS) {
    const perClass: Record<string, number> = Object.fromEntries(input.labels.map((l) => [l, 0]));
    for (const [label, n] of Object.entries(input.perClass[split])) {
      if (!(label in perClass)) warnings.push(`${split} shards hold ${n} record${n === 1 ? '' : 's'} of class "${label}", which labels.txt does not list`);
      perClass[label] = (perClass[label] ?? 0) + n;
    }
    const records = Object.values(perClass).reduce((a, b) => a + b, 0);
    const skipped = input.skipped.filter((s) => s.split === split).length;
    if (records + skipped !== input.rows[split]) {
      warnings.push(
        `${split}: ${input.csv[split]} has ${input.rows[split]} rows, but the job wrote ${records} records and rejected ${skipped}; ` +
          'some rows are unaccounted for (was the CSV changed while the job ran?)',
      );
    }
    const shards = input.shards
      .filter((name) => SHARD_PATTERN.exec(name)?.[1] === split)
      .sort();
    const expected = Array.from({ length: input.numShards[split] }, (_, i) => shardName(split, i, input.numShards[split]));
    if (shards.join() !== expected.join()) warnings.push(`${split}: expected shards ${expected[0]} … ${expected.at(-1)}, found ${shards.length ? shards.join(', ') : 'none'}`);
    splits[split] = { csv: input.csv[split], rows: input.rows[split], records, skipped, perClass, shards };
  }
  for (const label of input.labels) {
    if (!splits.train.perClass[label]) warnings.push(`class "${label}" has no training records left after skipping unreadable images`);
  }
  return {
    labels: input.labels,
    settings: { resize: 0, seed: input.seed, numShards: input.numShards },
    splits,
    reencoded: {},
    skipped: sortSkipped(input.skipped),
    warnings,
  };
}
