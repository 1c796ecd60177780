import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import {
  crc32c,
  maskCrc,
  maskedCrc32c,
  frameRecord,
  readRecords,
  readRecordFile,
  countRecords,
  TFRecordWriter,
  TFRecordError,
  HEADER_BYTES,
  FOOTER_BYTES,
} from '../lib/tfrecord';
import { encodeExample } from '../lib/example';
import { UserError } from '../lib/errors';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-'));
}

async function collect(gen: AsyncGenerator<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const r of gen) out.push(Buffer.from(r));
  return out;
}

async function writeFileOfRecords(p: string, records: Uint8Array[]): Promise<TFRecordWriter> {
  const w = await TFRecordWriter.create(p);
  for (const r of records) await w.write(r);
  await w.close();
  return w;
}

test('crc32c matches the RFC 3720 B.4 vectors and the standard check value', () => {
  const zeros = Buffer.alloc(32, 0x00);
  const ones = Buffer.alloc(32, 0xff);
  const up = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  const down = Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i));
  // iSCSI SCSI Read (10) command PDU, 48 bytes. The RFC lists CRCs in wire byte order
  // ("aa 36 91 8a" for the zeros); these are the same values as 32-bit numbers.
  const pdu = Buffer.from(
    '01c00000' + '00000000' + '00000000' + '00000000' + '14000000' + '00000400' +
      '00000014' + '00000018' + '28000000' + '00000000' + '02000000' + '00000000',
    'hex',
  );
  assert.equal(pdu.length, 48);
  assert.equal(crc32c(zeros), 0x8a9136aa);
  assert.equal(crc32c(ones), 0x62a8ab43);
  assert.equal(crc32c(up), 0x46dd794e);
  assert.equal(crc32c(down), 0x113fdb5c);
  assert.equal(crc32c(pdu), 0xd9963a56);
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  // A view at a non-zero offset must be hashed from its own start, not its ArrayBuffer's.
  const padded = Buffer.concat([Buffer.from('xxxxx'), Buffer.from('123456789')]);
  assert.equal(crc32c(padded.subarray(5)), 0xe3069283);
});

test('masked CRCs equal those in an events file written by TensorFlow', () => {
  // From TensorBoard's rustboard tf_record.rs tests (an `xxd` of a real events file):
  // length 24 as uint64 LE has masked CRC 0x224b7fa3; the file_version event's data, 0xab364b12.
  const len24 = Buffer.from('1800000000000000', 'hex');
  assert.equal(maskedCrc32c(len24), 0x224b7fa3);
  const event = Buffer.concat([Buffer.from('090000803899d6d741', 'hex'), Buffer.from('\x1a\x0dbrain.Event:2', 'latin1')]);
  assert.equal(maskedCrc32c(event), 0xab364b12);
  // The mask is a rotation plus a constant: it must change the value and be undoable.
  const crc = crc32c(event);
  assert.notEqual(maskCrc(crc), crc);
  const rot = (maskCrc(crc) - 0xa282ead8) >>> 0;
  assert.equal(((rot >>> 17) | (rot << 15)) >>> 0, crc);
});

test('framing reproduces a TensorFlow-written events file byte for byte', () => {
  // Two records from the same real events file (tf.summary.scalar("accuracy", 0.99, step=77)).
  const rec1 = Buffer.concat([Buffer.from('090000803899d6d741', 'hex'), Buffer.from('\x1a\x0dbrain.Event:2', 'latin1')]);
  const rec2 = Buffer.concat([
    Buffer.from('09c405b73d99d6d741' + '104d' + '2a25' + '0a23' + '0a08', 'hex'),
    Buffer.from('accuracy'),
    Buffer.from('420a0801120022' + '04a4707d3f' + '4a0b0a090a07', 'hex'),
    Buffer.from('scalars'),
  ]);
  assert.equal(rec2.length, 0x32);
  const expected = Buffer.concat([
    Buffer.from('1800000000000000a37f4b22', 'hex'),
    rec1,
    Buffer.from('124b36ab', 'hex'),
    Buffer.from('32000000000000002419 56ec'.replace(/ /g, ''), 'hex'),
    rec2,
    Buffer.from('a55b6433', 'hex'),
  ]);
  assert.deepEqual(Buffer.concat([frameRecord(rec1), frameRecord(rec2)]), expected);
  const back = [...readRecords(expected, 'golden.tfevents')];
  assert.deepEqual(back, [rec1, rec2]);
});

test('writer and both readers round-trip empty, tiny, 1 MB and many records', async () => {
  const dir = tmpDir();
  try {
    const rnd = (n: number): Buffer => crypto.randomBytes(n);
    const records: Buffer[] = [Buffer.alloc(0), Buffer.from([0x42]), rnd(1 << 20)];
    for (let i = 0; i < 500; i++) records.push(rnd(i % 7 === 0 ? 0 : (i * 37) % 300));
    records.push(rnd(3 * 1024 * 1024 + 5)); // bigger than the writer's batch and the reader's chunk
    const file = path.join(dir, 'sub', 'train-00000-of-00001');
    const w = await writeFileOfRecords(file, records);

    const size = fs.statSync(file).size;
    const expectedSize = records.reduce((s, r) => s + HEADER_BYTES + r.length + FOOTER_BYTES, 0);
    assert.equal(size, expectedSize);
    assert.equal(w.records, records.length);
    assert.equal(w.bytes, expectedSize);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['train-00000-of-00001'], 'no temporary file left behind');

    const whole = fs.readFileSync(file);
    assert.deepEqual([...readRecords(whole, file)], records);
    assert.deepEqual(Buffer.concat(records.map(frameRecord)), whole);
    // Small chunks make headers, data and footers straddle chunk boundaries.
    for (const chunkSize of [1, 7, 4096]) {
      assert.deepEqual(await collect(readRecordFile(file, { chunkSize })), records, `chunkSize ${chunkSize}`);
    }
    assert.deepEqual(await collect(readRecordFile(file)), records);
    assert.equal(await countRecords(file), records.length);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an empty file has no records', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'empty.tfrecord');
    await writeFileOfRecords(file, []);
    assert.equal(fs.statSync(file).size, 0);
    assert.deepEqual(await collect(readRecordFile(file)), []);
    assert.equal(await countRecords(file), 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writer: abort leaves nothing, existing files need overwrite, closed writers refuse writes', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'a.tfrecord');
    const w = await TFRecordWriter.create(file);
    await w.write(Buffer.from('abc'));
    await w.abort();
    assert.deepEqual(fs.readdirSync(dir), []);

    await writeFileOfRecords(file, [Buffer.from('first')]);
    await assert.rejects(TFRecordWriter.create(file), (e: unknown) => e instanceof UserError && /already exists/.test(e.message));
    const w2 = await TFRecordWriter.create(file, { overwrite: true });
    await w2.write(Buffer.from('second'));
    assert.deepEqual(await collect(readRecordFile(file)), [Buffer.from('first')], 'old file intact until close');
    await w2.close();
    assert.deepEqual(await collect(readRecordFile(file)), [Buffer.from('second')]);
    await assert.rejects(w2.write(Buffer.from('late')), /already closed/);
    assert.deepEqual(fs.readdirSync(dir), ['a.tfrecord']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writer copies data, so callers may reuse their buffer', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'reuse.tfrecord');
    const w = await TFRecordWriter.create(file);
    const buf = Buffer.alloc(10);
    for (let i = 0; i < 5; i++) {
      buf.fill(i);
      await w.write(buf);
    }
    await w.close();
    const back = await collect(readRecordFile(file));
    assert.deepEqual(back, [0, 1, 2, 3, 4].map((i) => Buffer.alloc(10, i)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Both readers must fail the same way on `bytes`; returns the error of the streaming one. */
async function expectBothFail(file: string, bytes: Buffer, check: (e: TFRecordError) => void): Promise<void> {
  fs.writeFileSync(file, bytes);
  let caught: unknown;
  try {
    for (const _ of readRecords(bytes, file)) void _;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof TFRecordError, `in-memory reader should throw TFRecordError, got ${String(caught)}`);
  check(caught);
  for (const chunkSize of [5, 1 << 20]) {
    await assert.rejects(collect(readRecordFile(file, { chunkSize })), (e: unknown) => {
      assert.ok(e instanceof TFRecordError, String(e));
      assert.ok(e instanceof UserError);
      check(e);
      return true;
    });
  }
}

test('corruption in the length, its CRC, the data or its CRC names file, record and offset', async () => {
  const dir = tmpDir();
  try {
    const records = [Buffer.from('hello'), Buffer.from('0123456789'), Buffer.from('the third record, twenty')];
    const good = Buffer.concat(records.map(frameRecord));
    const rec1 = HEADER_BYTES + 5 + FOOTER_BYTES; // offset of record 1
    assert.equal(rec1, 21);
    const cases: [string, number, RegExp][] = [
      ['length', rec1 + 0, /length checksum/],
      ['length CRC', rec1 + 9, /length checksum/],
      ['data', rec1 + HEADER_BYTES + 3, /data checksum/],
      ['data CRC', rec1 + HEADER_BYTES + 10 + 1, /data checksum/],
    ];
    for (const [what, at, re] of cases) {
      const bad = Buffer.from(good);
      bad[at] ^= 0x01;
      const file = path.join(dir, `bad-${what.replace(/ /g, '-')}.tfrecord`);
      await expectBothFail(file, bad, (e) => {
        assert.equal(e.kind, 'corrupt', what);
        assert.equal(e.recordIndex, 1, what);
        assert.equal(e.offset, rec1, what);
        assert.equal(e.file, file);
        assert.match(e.message, re, what);
        assert.ok(e.message.includes(file) && e.message.includes('record 1') && e.message.includes('byte offset 21'), e.message);
        assert.match(e.message, /corrupt/);
      });
      if (/data/.test(what)) {
        // Skipping data CRCs reads past it; the length CRC is still checked (and fine here).
        const n = [...readRecords(bad, file, { verify: false })].length;
        assert.equal(n, 3, what);
        assert.equal((await collect(readRecordFile(file, { verify: false }))).length, 3);
        assert.equal(await countRecords(file), 3);
      } else {
        await assert.rejects(countRecords(file), (e: unknown) => e instanceof TFRecordError && e.kind === 'corrupt' && e.offset === rec1);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a file cut short anywhere in a record is reported as truncated at that record', async () => {
  const dir = tmpDir();
  try {
    const records = [Buffer.from('a'), Buffer.from('bb'), Buffer.alloc(100, 7)];
    const good = Buffer.concat(records.map(frameRecord));
    const rec2 = 2 * HEADER_BYTES + 3 + 2 * FOOTER_BYTES;
    // Cut inside the header, right after it, inside the data and one byte before the end.
    for (const cut of [rec2 + 1, rec2 + HEADER_BYTES, rec2 + HEADER_BYTES + 50, good.length - 1]) {
      const file = path.join(dir, `cut-${cut}.tfrecord`);
      await expectBothFail(file, good.subarray(0, cut), (e) => {
        assert.equal(e.kind, 'truncated', `cut at ${cut}`);
        assert.equal(e.recordIndex, 2);
        assert.equal(e.offset, rec2);
        assert.ok(e.message.includes(file) && e.message.includes(`byte offset ${rec2}`) && /truncated/.test(e.message), e.message);
      });
      await assert.rejects(countRecords(file), (e: unknown) => e instanceof TFRecordError && e.kind === 'truncated' && e.offset === rec2);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing file is a UserError naming it', async () => {
  const missing = path.join(os.tmpdir(), 'imgclass-does-not-exist', 'x.tfrecord');
  await assert.rejects(collect(readRecordFile(missing)), (e: unknown) => e instanceof UserError && e.message.includes(missing));
  await assert.rejects(countRecords(missing), (e: unknown) => e instanceof UserError && e.message.includes(missing));
});

/**
 * The parts of @roboflow/tfrecords used here. It ships no usable typings (its "types" file is
 * missing), so it is loaded with require. Its reader checks both CRCs with its own pure-JS CRC-32C
 * and parses each record with google-protobuf classes generated from TensorFlow's feature.proto.
 */
interface JspbFeature {
  getKindCase(): number;
  getBytesList(): { getValueList_asU8(): Uint8Array[] } | undefined;
  getInt64List(): { getValueList(): number[] } | undefined;
  getFloatList(): { getValueList(): number[] } | undefined;
}
interface RoboflowReader {
  readonly length: number;
  // Private in its TypeScript source; read directly because its getFeature() indexes
  // google-protobuf internals (`.array[0]`) that google-protobuf 3.21 no longer has, and throws.
  imageMessages: { getContext(): { getFeatureMap(): { get(k: string): JspbFeature | undefined; keys(): Iterable<string> } } }[];
}
// eslint-disable-next-line @typescript-eslint/no-var-requires
const roboflow = require('@roboflow/tfrecords/src/tensorFlowReader') as { TFRecordsReader: new (b: Buffer) => RoboflowReader };
// eslint-disable-next-line @typescript-eslint/no-var-requires
const roboflowHelpers = require('@roboflow/tfrecords/src/tensorFlowHelpers') as { crc32c(b: Buffer): number };

/** Runs `fn` with console.log captured (the roboflow reader reports CRC failures there). */
function captureLog<T>(fn: () => T): { result: T; logged: string[] } {
  const logged: string[] = [];
  const orig = console.log;
  console.log = (...args: unknown[]) => void logged.push(args.map(String).join(' '));
  try {
    return { result: fn(), logged };
  } finally {
    console.log = orig;
  }
}

test('independent reader (@roboflow/tfrecords) reads our files and rejects our corrupted ones', async () => {
  const dir = tmpDir();
  try {
    // Its CRC-32C is an independent pure-JS table implementation: compare on random inputs.
    for (const n of [1, 9, 100, 4097]) {
      const b = crypto.randomBytes(n);
      assert.equal(crc32c(b), roboflowHelpers.crc32c(b), `crc32c of ${n} random bytes`);
    }
    // No 0-byte record here: its maskCrc() rejects a CRC of 0 (the CRC of empty data) as "null".
    const examples = Array.from({ length: 20 }, (_, i) =>
      encodeExample({
        'image/encoded': { bytes: [crypto.randomBytes(1000 + i * 10)] },
        'image/class/label': { int64: [i] },
        'image/class/text': { bytes: [`class-${i}`] },
        score: { float: [i / 4] },
      }),
    );
    const file = path.join(dir, 'ex.tfrecord');
    await writeFileOfRecords(file, examples);
    const bytes = fs.readFileSync(file);

    const { result: reader, logged } = captureLog(() => new roboflow.TFRecordsReader(bytes));
    assert.deepEqual(logged, []);
    assert.equal(reader.length, examples.length);
    reader.imageMessages.forEach((m, i) => {
      const fm = m.getContext().getFeatureMap();
      assert.deepEqual([...fm.keys()].sort(), ['image/class/label', 'image/class/text', 'image/encoded', 'score']);
      assert.deepEqual(fm.get('image/class/label')!.getInt64List()!.getValueList(), [i]);
      assert.equal(Buffer.from(fm.get('image/class/text')!.getBytesList()!.getValueList_asU8()[0]!).toString(), `class-${i}`);
      assert.equal(fm.get('image/encoded')!.getBytesList()!.getValueList_asU8()[0]!.length, 1000 + i * 10);
      assert.deepEqual(fm.get('score')!.getFloatList()!.getValueList(), [i / 4]);
    });

    // Flip one data byte of record 3: it must stop there (it logs instead of throwing).
    const bad = Buffer.from(bytes);
    let off = 0;
    for (let i = 0; i < 3; i++) off += HEADER_BYTES + examples[i]!.length + FOOTER_BYTES;
    bad[off + HEADER_BYTES + 40] ^= 0xff;
    const { result: badReader, logged: badLog } = captureLog(() => new roboflow.TFRecordsReader(bad));
    assert.equal(badReader.length, 3);
    assert.deepEqual(badLog, ['Wrong Data CRC']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
