/**
 * An independent reader of TensorBoard event files, for the tests: TFRecord framing split by hand
 * (CRC-32C written out bit by bit here, not lib/tfrecord.ts with @node-rs/crc32), and each record
 * decoded by protoc (Debian's protobuf-compiler) with TensorFlow's own event.proto / summary.proto
 * (copies in test/fixtures/tensorflow/, their source named in each), not by lib/tensorboard-proto.ts.
 * So an event file is checked by something that shares no code or schema text with our writer.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { REPO_ROOT } from './helpers';

const PROTO_ROOT = path.join(REPO_ROOT, 'test', 'fixtures');
const EVENT_PROTO = 'tensorflow/core/util/event.proto';

const haveProtoc = spawnSync('protoc', ['--version'], { stdio: 'ignore' }).status === 0;
/**
 * Skip reason for tests that need protoc, or false. CI (CI=true) never skips: scripts/setup.sh
 * installs protobuf-compiler there, and a missing protoc must fail the run, not hide the check.
 */
export const protocSkip: string | false =
  !haveProtoc && process.env.CI !== 'true' ? 'needs protoc: apt-get install protobuf-compiler (scripts/setup.sh)' : false;

export function crc32cBitwise(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

export function maskedCrc(crc: number): number {
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** Split a TFRecord file by hand, checking both masked CRCs of every record. */
export function splitRecords(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off < buf.length) {
    const len = Number(buf.readBigUInt64LE(off));
    assert.equal(buf.readUInt32LE(off + 8), maskedCrc(crc32cBitwise(buf.subarray(off, off + 8))), `length CRC at ${off}`);
    const data = buf.subarray(off + 12, off + 12 + len);
    assert.equal(buf.readUInt32LE(off + 12 + len), maskedCrc(crc32cBitwise(data)), `data CRC at ${off}`);
    out.push(data);
    off += 12 + len + 4;
  }
  assert.equal(off, buf.length);
  return out;
}

/** A message in protobuf text format: every field as a list (text format repeats a field's name). */
export interface TextMessage {
  [field: string]: (string | number | TextMessage)[];
}

/** protoc's C-style string escapes (\n, \", \\, \ooo octal bytes) back to a UTF-8 string. */
function unescapeText(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '\\') {
      bytes.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const n = s[++i]!;
    const simple: Record<string, number> = { n: 10, r: 13, t: 9, '"': 34, "'": 39, '\\': 92 };
    if (n in simple) bytes.push(simple[n]!);
    else if (/[0-7]/.test(n)) {
      const oct = /^[0-7]{1,3}/.exec(s.slice(i))![0];
      bytes.push(parseInt(oct, 8));
      i += oct.length - 1;
    } else throw new Error(`unknown escape \\${n} in ${s}`);
  }
  return Buffer.from(bytes).toString('utf8');
}

/** protoc --decode's output (text format) as nested TextMessages; scalars are numbers or strings. */
export function parseTextFormat(text: string): TextMessage {
  const root: TextMessage = {};
  const stack: TextMessage[] = [root];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const top = stack[stack.length - 1]!;
    if (line === '}') {
      assert.ok(stack.length > 1, 'unbalanced } in protoc output');
      stack.pop();
      continue;
    }
    const open = /^(\w+) \{$/.exec(line);
    if (open) {
      const child: TextMessage = {};
      (top[open[1]!] ??= []).push(child);
      stack.push(child);
      continue;
    }
    const field = /^(\w+): (.*)$/.exec(line);
    assert.ok(field, `unexpected protoc output line: ${line}`);
    const v = field[2]!;
    const value = v.startsWith('"') ? unescapeText(v.slice(1, -1)) : /^-?[\d.e+-]+$|^-?inf$|^nan$/i.test(v) ? Number(v.replace(/inf/i, 'Infinity')) : v;
    (top[field[1]!] ??= []).push(value);
  }
  assert.equal(stack.length, 1, 'unbalanced { in protoc output');
  return root;
}

export interface ProtocEvent {
  wall_time: number;
  step: number;
  file_version?: string;
  /** summary.value[]: tag and simple_value (a float32, as protoc prints it). */
  values: { tag: string; simple_value: number }[];
  /** Every field protoc found, for asserting there is nothing else. */
  fields: string[];
}

/** One Event record decoded by `protoc --decode tensorflow.Event` with TensorFlow's event.proto. */
export function protocDecodeEvent(record: Uint8Array): ProtocEvent {
  const r = spawnSync('protoc', ['-I', PROTO_ROOT, '--decode', 'tensorflow.Event', EVENT_PROTO], { input: record, encoding: 'utf8' });
  assert.ifError(r.error);
  assert.equal(r.status, 0, `protoc --decode tensorflow.Event: ${r.stderr}`);
  const m = parseTextFormat(r.stdout);
  const one = <T>(name: string, msg: TextMessage = m): T | undefined => {
    const v = msg[name];
    assert.ok(v === undefined || v.length === 1, `${name} appears ${v?.length} times`);
    return v?.[0] as T | undefined;
  };
  const summary = one<TextMessage>('summary');
  const values = ((summary?.value ?? []) as TextMessage[]).map((v) => {
    assert.deepEqual(Object.keys(v).sort(), ['simple_value', 'tag'], `summary value fields: ${r.stdout}`);
    return { tag: one<string>('tag', v)!, simple_value: one<number>('simple_value', v)! };
  });
  return {
    // proto3 leaves zero-valued scalars out of the text.
    wall_time: one<number>('wall_time') ?? 0,
    step: one<number>('step') ?? 0,
    ...(m.file_version ? { file_version: one<string>('file_version') } : {}),
    values,
    fields: Object.keys(m).sort(),
  };
}

/** Every event of an event file, framing split by hand and each record decoded by protoc. */
export function protocDecodeEventFile(file: string): ProtocEvent[] {
  return splitRecords(fs.readFileSync(file)).map((rec) => protocDecodeEvent(rec));
}
