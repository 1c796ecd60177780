import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batcher } from '../lib/serve/batcher';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('items submitted together share one call, each gets its own output in order', async () => {
  const calls: number[][] = [];
  const b = new Batcher<number, number>((xs) => {
    calls.push(xs);
    return xs.map((x) => x * 10);
  }, { maxBatch: 8, maxWaitMs: 20 });
  const out = await Promise.all([1, 2, 3, 4, 5].map((x) => b.submit(x)));
  assert.deepEqual(out, [10, 20, 30, 40, 50]);
  assert.deepEqual(calls, [[1, 2, 3, 4, 5]]);
  assert.deepEqual(b.stats(), { batches: 1, items: 5, largestBatch: 5, pending: 0 });
});

test('never more than maxBatch per call; a full queue runs without waiting out maxWaitMs', async () => {
  const sizes: number[] = [];
  const b = new Batcher<number, number>((xs) => {
    sizes.push(xs.length);
    return xs;
  }, { maxBatch: 4, maxWaitMs: 10_000 });
  const t0 = Date.now();
  const out = await Promise.all(Array.from({ length: 8 }, (_, i) => b.submit(i)));
  assert.deepEqual(out, [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(sizes, [4, 4]);
  assert.ok(Date.now() - t0 < 5_000, 'full batches must not wait for the timer');
});

test('a lone item waits at most about maxWaitMs', async () => {
  const b = new Batcher<number, number>((xs) => xs, { maxBatch: 64, maxWaitMs: 30 });
  const t0 = Date.now();
  assert.equal(await b.submit(7), 7);
  const waited = Date.now() - t0;
  assert.ok(waited >= 25 && waited < 1_000, `waited ${waited} ms`);
});

test('items arriving while a batch runs go together into the next call', async () => {
  const calls: number[][] = [];
  let release!: () => void;
  const b = new Batcher<number, number>(async (xs) => {
    calls.push(xs);
    if (calls.length === 1) await new Promise<void>((r) => (release = r));
    return xs;
  }, { maxBatch: 16, maxWaitMs: 1 });
  const first = b.submit(0);
  await sleep(20); // the first call is now running and blocked
  const rest = [1, 2, 3].map((x) => b.submit(x));
  await sleep(20);
  assert.equal(calls.length, 1, 'nothing else runs while a batch is running');
  assert.equal(b.stats().pending, 4);
  release();
  assert.deepEqual(await Promise.all([first, ...rest]), [0, 1, 2, 3]);
  assert.deepEqual(calls, [[0], [1, 2, 3]]);
});

test('a failing batch rejects its own items only; the batcher keeps working', async () => {
  const b = new Batcher<number, number>((xs) => {
    if (xs.includes(13)) throw new Error('unlucky');
    return xs.map((x) => -x);
  }, { maxBatch: 2, maxWaitMs: 1 });
  const results = await Promise.allSettled([b.submit(12), b.submit(13), b.submit(14)]);
  assert.equal(results[0]!.status, 'rejected');
  assert.equal(results[1]!.status, 'rejected');
  assert.deepEqual(results[2], { status: 'fulfilled', value: -14 });
  assert.equal(await b.submit(1), -1);
});

test('a batch function returning the wrong number of outputs is an error, not a hang', async () => {
  const b = new Batcher<number, number>((xs) => xs.slice(1), { maxBatch: 4, maxWaitMs: 1 });
  await assert.rejects(Promise.all([b.submit(1), b.submit(2)]), /returned 1 outputs for 2 inputs/);
});

test('idle() resolves once queued and running work is done', async () => {
  let done = 0;
  const b = new Batcher<number, number>(async (xs) => {
    await sleep(10);
    done += xs.length;
    return xs;
  }, { maxBatch: 2, maxWaitMs: 1 });
  for (let i = 0; i < 5; i++) void b.submit(i);
  await b.idle();
  assert.equal(done, 5);
  assert.equal(b.stats().pending, 0);
  await b.idle(); // already idle
});

test('items announced with expect() while a batch runs join the next batch instead of trailing it', async () => {
  const sizes: number[] = [];
  const b = new Batcher<number, number>(async (xs) => {
    sizes.push(xs.length);
    await sleep(30);
    return xs;
  }, { maxBatch: 16, maxWaitMs: 100 });
  const first = b.submit(0);
  await sleep(110); // the lone first item waited 100 ms; its batch now runs for 30 ms
  // Three images arrive and start "decoding"; two are ready during the batch, one 25 ms after it.
  const releases = [1, 2, 3].map(() => b.expect());
  const later = [5, 15, 45].map(async (ms, i) => {
    await sleep(ms);
    const p = b.submit(i + 1);
    releases[i]!();
    return p;
  });
  assert.deepEqual(await Promise.all([first, ...later]), [0, 1, 2, 3]);
  assert.deepEqual(sizes, [1, 3], 'the three announced items shared one call');
});

test('a withdrawn announcement (an image that failed to decode) does not hold the batch back', async () => {
  const b = new Batcher<number, number>((xs) => xs, { maxBatch: 16, maxWaitMs: 5_000 });
  const release = b.expect();
  const t0 = Date.now();
  const p = b.submit(1);
  release();
  assert.equal(await p, 1);
  assert.ok(Date.now() - t0 < 1_000, 'ran as soon as nothing more was expected');
});
