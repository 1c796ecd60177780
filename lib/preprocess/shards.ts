/** Shard naming and row → shard planning, shared by preprocessing and the training input. */

/** The codelab's two splits (what the Dataflow job writes and training reads). */
export type Split = 'train' | 'validation';
/** With the held-out test split (local preprocessing of an AutoML CSV or a --test_csv): never trained on. */
export type ShardSplit = Split | 'test';

/** `train-00003-of-00016`, the name Beam's WriteToTFRecord gives (and our readers glob for). */
export function shardName(split: ShardSplit, index: number, count: number): string {
  return `${split}-${String(index).padStart(5, '0')}-of-${String(count).padStart(5, '0')}`;
}

/** Matches a shard name and captures split, index and count. */
export const SHARD_PATTERN = /^(train|validation|test)-(\d{5})-of-(\d{5})$/;

/** Default shard count: about 1,024 records per shard (as tensorflow/tpu's ImageNet scripts), at least 1. */
export function defaultShardCount(rows: number): number {
  return Math.max(1, Math.ceil(rows / 1024));
}

/**
 * Contiguous row ranges for `count` shards over `rows` rows, sizes differing by at most one.
 * Never more shards than rows (an empty shard helps nobody), but at least one.
 */
export function planShards(rows: number, count: number): { start: number; end: number }[] {
  const n = Math.max(1, Math.min(count, rows));
  const out: { start: number; end: number }[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ start: Math.floor((i * rows) / n), end: Math.floor(((i + 1) * rows) / n) });
  }
  return out;
}
