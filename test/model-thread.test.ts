import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { ModelThread } from '../lib/serve/model-thread';
import { makeClassifier, Classifier } from '../lib/serve/classifier';
import { loadExport } from '../lib/export';
import { UserError } from '../lib/errors';
import { exportFixture, ServingFixture } from './serve-fixture';
import { tempDir, removeDir, jpeg } from './helpers';

let dir: string;
let fx: ServingFixture;
let local: Classifier;
let thread: ModelThread;
let inputs: Float32Array[];

before(async () => {
  dir = tempDir();
  const images = await Promise.all([jpeg(200, 150, 1), jpeg(90, 120, 2), jpeg(64, 64, 3), jpeg(300, 200, 4)]);
  fx = await exportFixture(path.join(dir, 'export'), images);
  local = makeClassifier(await loadExport(fx.versionDir));
  inputs = await Promise.all(images.map((b) => local.prepare(b)));
  thread = await ModelThread.start(fx.versionDir);
});

after(async () => {
  await thread?.dispose();
  local?.dispose();
  fx?.model.dispose();
  if (dir) removeDir(dir);
});

test('the model thread answers exactly what the same model answers on this thread', async () => {
  const expected = local.classify(inputs);
  const got = await thread.classify(inputs);
  assert.equal(got.length, inputs.length);
  got.forEach((p, i) => assert.deepEqual(Array.from(p), Array.from(expected[i]!), `image ${i}`));
  assert.match(thread.backendNote, /^engine: /);
});

test('the event loop runs while the model thread classifies (on this thread it could not)', async () => {
  const batch = Array.from({ length: 64 }, (_, i) => inputs[i % inputs.length]!);
  let ticks = 0;
  let done = false;
  const spin = (): void => {
    if (done) return;
    ticks++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const out = await thread.classify(batch);
  done = true;
  assert.equal(out.length, 64);
  assert.ok(ticks > 1, `only ${ticks} event-loop turns during a 64-image model call`);
});

test('a bad export folder is a clear error; a disposed thread refuses work', async () => {
  await assert.rejects(ModelThread.start(path.join(dir, 'nowhere')), (err: unknown) => err instanceof UserError && /nowhere/.test((err as Error).message));
  const t = await ModelThread.start(fx.versionDir);
  const pending = t.classify(inputs);
  await pending; // answered before dispose
  await t.dispose();
  await assert.rejects(t.classify(inputs), /disposed/);
  await t.dispose(); // idempotent
});
