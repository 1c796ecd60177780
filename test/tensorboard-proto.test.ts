import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeFileVersionEvent, encodeScalarEvent, decodeEvent, FILE_VERSION } from '../lib/tensorboard-proto';
import { TFRecordWriter, readRecordFile } from '../lib/tfrecord';
import { UserError } from '../lib/errors';

// Records of a real events file written by TensorFlow for tf.summary.scalar("accuracy", 0.99, step=77),
// as dumped with xxd in TensorBoard's rustboard tf_record.rs tests.
const TF_FILE_VERSION_EVENT = Buffer.concat([Buffer.from('090000803899d6d741', 'hex'), Buffer.from('\x1a\x0dbrain.Event:2', 'latin1')]);
const TF_SCALAR_EVENT = Buffer.concat([
  Buffer.from('09c405b73d99d6d741' + '104d' + '2a25' + '0a23' + '0a08', 'hex'),
  Buffer.from('accuracy'),
  Buffer.from('420a0801120022' + '04a4707d3f' + '4a0b0a090a07', 'hex'),
  Buffer.from('scalars'),
]);

test('file_version event is byte-identical to the one TensorFlow wrote', () => {
  const wallTime = TF_FILE_VERSION_EVENT.readDoubleLE(1);
  assert.deepEqual(Buffer.from(encodeFileVersionEvent(wallTime)), TF_FILE_VERSION_EVENT);
  const ev = decodeEvent(TF_FILE_VERSION_EVENT);
  assert.deepEqual(ev, { wallTime, step: 0, fileVersion: FILE_VERSION, values: [] });
});

test('decodes a TensorFlow 2 scalar event (tensor value skipped, plugin name kept)', () => {
  const ev = decodeEvent(TF_SCALAR_EVENT);
  assert.equal(ev.step, 77);
  assert.equal(ev.wallTime, TF_SCALAR_EVENT.readDoubleLE(1));
  assert.ok(ev.wallTime > 1.5e9 && ev.wallTime < 1.7e9);
  assert.deepEqual(ev.values, [{ tag: 'accuracy', pluginName: 'scalars' }]);
});

test('scalar event bytes follow the wire format (derived by hand)', () => {
  // wall_time 1.5: 09 + double LE; step 3: 10 03; summary (field 5): 2a 0d;
  // Summary.value (field 1): 0a 0b; tag: 0a 04 "loss"; simple_value 0.25f (field 2, fixed32): 15 0000803e.
  const hex = '09' + '000000000000f83f' + '1003' + '2a0d' + '0a0b' + '0a04' + Buffer.from('loss').toString('hex') + '15' + '0000803e';
  assert.equal(Buffer.from(encodeScalarEvent(1.5, 3, 'loss', 0.25)).toString('hex'), hex);
});

test('scalar events round-trip, including value 0, step 0 and large steps', () => {
  const cases: [number, number, string, number][] = [
    [1700000000.123, 0, 'loss', 0],
    [1700000001.5, 1, 'accuracy/top1', Math.fround(0.987)],
    [1700000002, 2 ** 40 + 3, 'lr', Math.fround(1e-4)],
    [1700000003, 12, 'loss', -2.5],
  ];
  for (const [wallTime, step, tag, value] of cases) {
    const ev = decodeEvent(encodeScalarEvent(wallTime, step, tag, value));
    assert.deepEqual(ev, { wallTime, step, values: [{ tag, value }] });
  }
  assert.throws(() => decodeEvent(Buffer.from([0x2a, 0x10, 0x0a])), UserError);
});

test('an events file written with TFRecordWriter reads back', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-'));
  try {
    const file = path.join(dir, 'events.out.tfevents.1700000000.host');
    const w = await TFRecordWriter.create(file);
    await w.write(encodeFileVersionEvent(1700000000));
    for (let step = 1; step <= 50; step++) await w.write(encodeScalarEvent(1700000000 + step, step, 'loss', Math.fround(1 / step)));
    await w.close();
    const events = [];
    for await (const r of readRecordFile(file)) events.push(decodeEvent(r));
    assert.equal(events.length, 51);
    assert.equal(events[0]!.fileVersion, 'brain.Event:2');
    for (let step = 1; step <= 50; step++) {
      assert.deepEqual(events[step], { wallTime: 1700000000 + step, step, values: [{ tag: 'loss', value: Math.fround(1 / step) }] });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
