import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SummaryWriter } from '../lib/train/summary-writer';
import { readRecordFile } from '../lib/tfrecord';
import { decodeEvent, DecodedEvent, FILE_VERSION } from '../lib/tensorboard-proto';
import * as storage from '../lib/storage';
import { tempDir, removeDir } from './helpers';
import { useFakeGcs } from './fake-gcs';
import { crc32cBitwise, splitRecords, protocDecodeEventFile, protocSkip } from './tensorboard-protoc';

function eventFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('events.out.tfevents.')).map((n) => path.join(dir, n));
}

async function readEvents(file: string): Promise<DecodedEvent[]> {
  const out: DecodedEvent[] = [];
  for await (const rec of readRecordFile(file)) out.push(decodeEvent(rec, file));
  return out;
}

test('writes a TensorBoard event file: file_version first, then one event per scalar', async () => {
  const dir = tempDir();
  try {
    const before = Date.now() / 1000;
    const w = await SummaryWriter.create(dir);
    w.scalar('loss', 2.5, 0, 1700000000.25);
    w.scalar('loss', 1.75, 10, 1700000010.5);
    w.scalar('learning_rate', 0.1, 10, 1700000010.5);
    w.scalar('accuracy/top1', 0.3, 2 ** 33);
    await w.close();
    const after = Date.now() / 1000;

    const files = eventFiles(dir);
    assert.equal(files.length, 1);
    assert.equal(w.path, files[0]);
    const host = os.hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    assert.match(path.basename(files[0]!), new RegExp(`^events\\.out\\.tfevents\\.\\d{10}\\.${host}\\.${process.pid}\\.\\d+$`));
    const secs = Number(path.basename(files[0]!).split('.')[3]);
    assert.ok(secs >= Math.floor(before) && secs <= after, `file name time ${secs} not in [${before}, ${after}]`);

    const events = await readEvents(files[0]!);
    assert.equal(events.length, 5);
    assert.equal(events[0]!.fileVersion, FILE_VERSION);
    assert.ok(events[0]!.wallTime >= before && events[0]!.wallTime <= after);
    assert.deepEqual(events.slice(1, 4), [
      { wallTime: 1700000000.25, step: 0, values: [{ tag: 'loss', value: 2.5 }] },
      { wallTime: 1700000010.5, step: 10, values: [{ tag: 'loss', value: 1.75 }] },
      { wallTime: 1700000010.5, step: 10, values: [{ tag: 'learning_rate', value: Math.fround(0.1) }] },
    ]);
    const last = events[4]!;
    assert.equal(last.step, 2 ** 33);
    assert.deepEqual(last.values, [{ tag: 'accuracy/top1', value: Math.fround(0.3) }]);
    assert.ok(last.wallTime >= before && last.wallTime <= after, 'default wall time is now');
    assert.throws(() => w.scalar('loss', 1, 11), /closed/);
  } finally {
    removeDir(dir);
  }
});

// --- Independent readers: CRC-32C and framing written out by hand (./tensorboard-protoc), the protobuf
// wire format derived by hand here, and protoc with TensorFlow's own event.proto.

test('event file bytes match a hand-derived encoding (independent CRC-32C and protobuf wire format)', async () => {
  assert.equal(crc32cBitwise(Buffer.from('123456789')), 0xe3069283, 'CRC-32C check value (RFC 3720)');
  const dir = tempDir();
  try {
    const w = await SummaryWriter.create(dir);
    w.scalar('loss', 0.25, 3, 1.5);
    await w.close();
    const records = splitRecords(fs.readFileSync(w.path));
    assert.equal(records.length, 2);

    // Event{wall_time (field 1, fixed64 double) = now, file_version (field 3, string) = "brain.Event:2"}
    const first = records[0]!;
    assert.equal(first[0], 0x09);
    const wall = first.readDoubleLE(1);
    assert.ok(Math.abs(wall - Date.now() / 1000) < 60);
    assert.equal(first.subarray(9).toString('hex'), '1a0d' + Buffer.from('brain.Event:2').toString('hex'));

    // Event{wall_time 1.5, step (field 2, varint) 3, summary (field 5) {value (field 1) {tag (1) "loss",
    // simple_value (field 2, fixed32 float) 0.25}}}
    const want =
      '09' + '000000000000f83f' + '1003' + '2a0d' + '0a0b' + '0a04' + Buffer.from('loss').toString('hex') + '15' + '0000803e';
    assert.equal(records[1]!.toString('hex'), want);
  } finally {
    removeDir(dir);
  }
});

test('buffered points reach the file on the periodic flush, appended to the same file', async () => {
  const dir = tempDir();
  try {
    const w = await SummaryWriter.create(dir, { flushIntervalMs: 40, filenameSuffix: '.v2' });
    assert.ok(w.path.endsWith('.v2'));
    const ino = fs.statSync(w.path).ino;
    assert.equal((await readEvents(w.path)).length, 1, 'file_version is on disk at once');
    w.scalar('loss', 1, 1, 100);
    const deadline = Date.now() + 3000;
    while ((await readEvents(w.path)).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await readEvents(w.path)).length, 2, 'flushed without flush()');
    const size = fs.statSync(w.path).size;
    w.scalar('loss', 0.5, 2, 101);
    await w.flush();
    assert.equal(fs.statSync(w.path).ino, ino, 'appended in place, not replaced');
    assert.ok(fs.statSync(w.path).size > size);
    // A second writer in the same logdir gets its own file.
    const w2 = await SummaryWriter.create(dir);
    assert.notEqual(w2.path, w.path);
    await Promise.all([w.close(), w2.close()]);
    assert.deepEqual((await readEvents(w.path)).slice(1).map((e) => [e.step, e.values[0]!.value]), [[1, 1], [2, 0.5]]);
    assert.equal(eventFiles(dir).length, 2);
  } finally {
    removeDir(dir);
  }
});

test('gs:// logdir: written in a local cache and uploaded on flush', async () => {
  const gcs = await useFakeGcs('bucket');
  try {
    const w = await SummaryWriter.create('gs://bucket/run1/eval');
    assert.match(w.path, /^gs:\/\/bucket\/run1\/eval\/events\.out\.tfevents\./);
    w.scalar('top_1_accuracy', 0.5, 100, 5);
    await w.flush();
    const key = w.path.slice('gs://bucket/'.length);
    const events = splitRecords(gcs.get('bucket', key)!).map((r) => decodeEvent(r));
    assert.deepEqual(events[1], { wallTime: 5, step: 100, values: [{ tag: 'top_1_accuracy', value: 0.5 }] });
    w.scalar('top_1_accuracy', 0.75, 200, 6);
    await w.close();
    assert.equal(splitRecords(gcs.get('bucket', key)!).length, 3);
    const cache = path.join(os.tmpdir(), 'imgclass-tfevents');
    const leftovers = (await storage.list(cache)).filter((f) => path.basename(f) === path.basename(w.path));
    assert.deepEqual(leftovers, [], 'local cache copy removed after close');
  } finally {
    await gcs.done();
  }
});

test('protoc, with TensorFlow\'s event.proto, decodes the file: file_version, then step, wall_time, tag and value of each point', { skip: protocSkip }, async () => {
  const dir = tempDir();
  try {
    const before = Date.now() / 1000;
    const w = await SummaryWriter.create(dir);
    w.scalar('loss', 0.25, 3, 1.5);
    w.scalar('loss', 0.125, 4, 1700000000.125);
    w.scalar('accuracy/top_1', 0.1, 2 ** 40, 1700000001.75);
    w.scalar('learning_rate', 1e-7, 0, 1700000002);
    await w.close();
    const events = protocDecodeEventFile(w.path);
    assert.equal(events.length, 5);
    const [version, ...points] = events;
    assert.equal(version!.file_version, 'brain.Event:2');
    assert.deepEqual(version!.fields, ['file_version', 'wall_time']);
    assert.ok(version!.wall_time >= before && version!.wall_time <= Date.now() / 1000, `file_version wall_time ${version!.wall_time}`);
    // simple_value is a float32: protoc prints the shortest text that reads back as that float.
    assert.deepEqual(
      points.map((e) => [e.step, e.wall_time, e.values.map((v) => [v.tag, Math.fround(v.simple_value)])]),
      [
        [3, 1.5, [['loss', 0.25]]],
        [4, 1700000000.125, [['loss', 0.125]]],
        [2 ** 40, 1700000001.75, [['accuracy/top_1', Math.fround(0.1)]]],
        [0, 1700000002, [['learning_rate', Math.fround(1e-7)]]],
      ],
    );
    assert.ok(points.every((e) => e.fields.join() === (e.step === 0 ? 'summary,wall_time' : 'step,summary,wall_time')), 'nothing but step, wall_time and summary');
  } finally {
    removeDir(dir);
  }
});
