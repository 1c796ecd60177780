/** bench/rounds.ts: the interleaving and summaries the training benchmark reports (no timing here). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { meanByKey, roundOrder, spread } from '../bench/rounds';

test('roundOrder: contestants take turns going first, each round holds each contestant once', () => {
  const two = [0, 1, 2, 3].map((r) => roundOrder(r, ['ours', 'torch']));
  assert.deepEqual(two, [['ours', 'torch'], ['torch', 'ours'], ['ours', 'torch'], ['torch', 'ours']]);
  const three = [0, 1, 2].map((r) => roundOrder(r, ['a', 'b', 'c']));
  assert.deepEqual(three.map((o) => o[0]), ['a', 'b', 'c']);
  for (const o of three) assert.deepEqual([...o].sort(), ['a', 'b', 'c']);
  assert.deepEqual(roundOrder(5, []), []);
  assert.throws(() => roundOrder(-1, ['a']), RangeError);
  assert.throws(() => roundOrder(1.5, ['a']), RangeError);
});

test('spread: median of odd and even counts, min and max, whatever the input order', () => {
  assert.deepEqual(spread([0.7, 0.5, 0.6]), { median: 0.6, min: 0.5, max: 0.7 });
  assert.deepEqual(spread([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4 });
  assert.deepEqual(spread([9]), { median: 9, min: 9, max: 9 });
  const input = [3, 1, 2];
  spread(input);
  assert.deepEqual(input, [3, 1, 2], 'the caller\'s array is left as it was');
  assert.throws(() => spread([]), RangeError);
  assert.throws(() => spread([1, NaN]), RangeError);
});

test('meanByKey: per-key means of phase records, rounded; empty in, empty out', () => {
  assert.deepEqual(meanByKey([{ grads: 270, apply: 20 }, { grads: 280, apply: 23 }]), { grads: 275, apply: 22 });
  assert.deepEqual(meanByKey([]), {});
});
