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

test('decodes a TensorFlow 2 scalar event (its tensor_content value read, plugin name kept)', () => {
  const ev = decodeEvent(TF_SCALAR_EVENT);
  assert.equal(ev.step, 77);
  assert.equal(ev.wallTime, TF_SCALAR_EVENT.readDoubleLE(1));
  assert.ok(ev.wallTime > 1.5e9 && ev.wallTime < 1.7e9);
  // TensorFlow wrote the float32 0.99 as tensor_content (a4 70 7d 3f, little-endian).
  assert.deepEqual(ev.values, [{ tag: 'accuracy', value: Math.fround(0.99), pluginName: 'scalars' }]);
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

/** Protobuf wire format written by hand (not by our proto definitions), as TensorFlow 2 writes a scalar. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
const field = (num: number, wire: number): number[] => varint(num * 8 + wire);
const lenDelim = (num: number, bytes: number[]): number[] => [...field(num, 2), ...varint(bytes.length), ...bytes];
const f32 = (x: number): number[] => [...Buffer.from(new Float32Array([x]).buffer)];
const f64 = (x: number): number[] => [...Buffer.from(new Float64Array([x]).buffer)];

function tensorEvent(step: number, tag: string, tensor: number[]): Uint8Array {
  const value = [...lenDelim(1, [...Buffer.from(tag)]), ...lenDelim(8, tensor)];
  const summary = lenDelim(1, value);
  return Uint8Array.from([...field(1, 1), ...f64(1700000000.5), ...field(2, 0), ...varint(step), ...lenDelim(5, summary)]);
}

test('TensorFlow 2 scalar summaries (Summary.Value.tensor) decode: float_val, double_val, tensor_content', () => {
  // dtype DT_FLOAT (1), packed float_val [0.75]: what tf.summary.scalar writes from Python.
  const a = decodeEvent(tensorEvent(300, 'accuracy', [...field(1, 0), 1, ...lenDelim(5, f32(0.75))]));
  assert.equal(a.step, 300);
  assert.deepEqual(a.values, [{ tag: 'accuracy', value: 0.75 }]);
  // DT_DOUBLE (2) in double_val, and DT_FLOAT as raw tensor_content (the C++ summary writer's form).
  assert.equal(decodeEvent(tensorEvent(1, 'learning_rate', [...field(1, 0), 2, ...lenDelim(6, f64(0.05))])).values[0]!.value, 0.05);
  assert.equal(decodeEvent(tensorEvent(2, 'training_loss', [...field(1, 0), 1, ...lenDelim(4, f32(1.25))])).values[0]!.value, 1.25);
  // A tensor that is not a scalar number (a string tensor: no float data) carries no value.
  assert.deepEqual(decodeEvent(tensorEvent(3, 'text', [...field(1, 0), 7])).values, [{ tag: 'text' }]);
});
