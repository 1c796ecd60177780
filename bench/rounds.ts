/**
 * Interleaved benchmark rounds: contestants take turns within each round, the one that goes first
 * alternating from round to round, so a load that drifts during the run (this machine is shared)
 * falls on each side alike; figures are summarised by their median and min–max over the rounds.
 */

/** The contestants in the order they run in round `round` (0-based): rotated by one each round. */
export function roundOrder<T>(round: number, contestants: readonly T[]): T[] {
  if (!Number.isInteger(round) || round < 0) throw new RangeError(`round must be a whole number >= 0, got ${round}`);
  const n = contestants.length;
  if (n === 0) return [];
  const k = round % n;
  return [...contestants.slice(k), ...contestants.slice(0, k)];
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

/** Median (mean of the middle two for an even count), smallest and largest value. */
export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new RangeError('spread of no values');
  if (values.some((v) => !Number.isFinite(v))) throw new RangeError(`spread of non-finite values: ${values.join(', ')}`);
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { median, min: sorted[0] as number, max: sorted[sorted.length - 1] as number };
}

/** Mean of each key over a list of records with the same keys (per-step phase times), rounded to whole units. */
export function meanByKey(records: readonly Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  if (records.length === 0) return out;
  for (const key of Object.keys(records[0] as Record<string, number>)) {
    out[key] = Math.round(records.reduce((a, r) => a + (r[key] ?? 0), 0) / records.length);
  }
  return out;
}
