/**
 * tf.train.Example, the record format of TensorFlow image datasets, encoded and decoded with
 * protobufjs so the bytes are what TensorFlow's own protobuf code produces and accepts.
 */
import * as protobuf from 'protobufjs';
import { UserError } from './errors';

/**
 * Message definitions from TensorFlow's tensorflow/core/example/feature.proto and
 * tensorflow/core/example/example.proto (field numbers checked against the upstream files).
 * Embedded as text because tsc does not copy .proto files into dist/.
 */
const EXAMPLE_PROTO = `
syntax = "proto3";
package tensorflow;

message BytesList {
  repeated bytes value = 1;
}
message FloatList {
  repeated float value = 1 [packed = true];
}
message Int64List {
  repeated int64 value = 1 [packed = true];
}
message Feature {
  oneof kind {
    BytesList bytes_list = 1;
    FloatList float_list = 2;
    Int64List int64_list = 3;
  }
}
message Features {
  map<string, Feature> feature = 1;
}
message Example {
  Features features = 1;
}
`;

const ExampleType = protobuf.parse(EXAMPLE_PROTO, { keepCase: true }).root.lookupType('tensorflow.Example');

/** A feature to encode. Strings in `bytes` are stored as UTF-8. */
export type FeatureValue = { bytes: (Uint8Array | string)[] } | { int64: (number | bigint)[] } | { float: number[] };

/** A decoded feature. int64 values are JS numbers (decoding fails beyond ±(2^53 - 1)). */
export type DecodedFeature = { bytes: Buffer[] } | { int64: number[] } | { float: number[] };

export type DecodedExample = Record<string, DecodedFeature>;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function featureToProto(key: string, value: FeatureValue): object {
  const kinds = value && typeof value === 'object' ? Object.keys(value) : [];
  if (kinds.length !== 1) {
    throw new UserError(`feature "${key}": expected exactly one of {bytes}, {int64}, {float}, got ${JSON.stringify(kinds)}`);
  }
  if ('bytes' in value) {
    // protobufjs would read a string in a bytes field as base64; TensorFlow strings are UTF-8 bytes.
    return { bytes_list: { value: value.bytes.map((b) => (typeof b === 'string' ? Buffer.from(b, 'utf8') : b)) } };
  }
  if ('int64' in value) {
    for (const v of value.int64) {
      const ok = typeof v === 'bigint' ? v >= INT64_MIN && v <= INT64_MAX : Number.isSafeInteger(v);
      if (!ok) throw new UserError(`feature "${key}": ${String(v)} is not an int64 (integer within ±2^53 as a number, or ±2^63 as a bigint)`);
    }
    return { int64_list: { value: value.int64 } };
  }
  if ('float' in value) {
    for (const v of value.float) {
      if (typeof v !== 'number') throw new UserError(`feature "${key}": ${String(v)} is not a number`);
    }
    return { float_list: { value: value.float } };
  }
  throw new UserError(`feature "${key}": expected one of {bytes}, {int64}, {float}, got ${JSON.stringify(kinds)}`);
}

/**
 * Serialize a tf.train.Example. Deterministic: map entries are written in the object's key order,
 * so the same input always gives the same bytes.
 */
export function encodeExample(features: Record<string, FeatureValue>): Uint8Array {
  const feature: Record<string, object> = {};
  for (const [key, value] of Object.entries(features)) feature[key] = featureToProto(key, value);
  // fromObject (not a plain object straight to encode) because encode silently writes bigints as 0.
  return ExampleType.encode(ExampleType.fromObject({ features: { feature } })).finish();
}

/** int64 as decoded by protobufjs: a Long when the `long` package is present, else a number. */
type DecodedInt64 = number | { low: number; high: number; toString(): string };

interface DecodedFeatureMessage {
  kind?: 'bytes_list' | 'float_list' | 'int64_list';
  bytes_list?: { value: Uint8Array[] };
  float_list?: { value: number[] };
  int64_list?: { value: DecodedInt64[] };
}

function int64ToNumber(v: DecodedInt64, key: string, where: string): number {
  const n = typeof v === 'number' ? v : v.high * 4294967296 + (v.low >>> 0);
  if (!Number.isSafeInteger(n)) {
    throw new UserError(`${where}: int64 feature "${key}" holds ${v.toString()}, beyond ±(2^53 - 1), which a JavaScript number cannot hold exactly`);
  }
  return n;
}

/**
 * Parse a serialized tf.train.Example. Bytes values are views into `bytes` (no copy). A feature
 * with no kind set carries no values and is left out. `where` names the record in errors.
 */
export function decodeExample(bytes: Uint8Array, where = 'tf.train.Example'): DecodedExample {
  // A Buffer input makes protobufjs hand out Buffer views for bytes fields.
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let msg: { features?: { feature?: Record<string, DecodedFeatureMessage> } };
  try {
    msg = ExampleType.decode(buf) as typeof msg;
  } catch (err) {
    throw new UserError(`${where} is not a valid tf.train.Example: ${(err as Error).message}`);
  }
  const out: DecodedExample = {};
  for (const [key, f] of Object.entries(msg.features?.feature ?? {})) {
    switch (f.kind) {
      case 'bytes_list':
        out[key] = { bytes: (f.bytes_list?.value ?? []).map((b) => (Buffer.isBuffer(b) ? b : Buffer.from(b))) };
        break;
      case 'int64_list':
        out[key] = { int64: (f.int64_list?.value ?? []).map((v) => int64ToNumber(v, key, where)) };
        break;
      case 'float_list':
        out[key] = { float: Array.from(f.float_list?.value ?? []) };
        break;
      default:
        break;
    }
  }
  return out;
}

type Kind = 'bytes' | 'int64' | 'float';

function kindOf(f: DecodedFeature): Kind {
  return 'bytes' in f ? 'bytes' : 'int64' in f ? 'int64' : 'float';
}

function single(ex: DecodedExample, key: string, kind: Kind, where: string): DecodedFeature {
  const f = ex[key];
  if (f === undefined) {
    const have = Object.keys(ex);
    throw new UserError(
      `${where} has no feature "${key}" (it has: ${have.length ? have.map((k) => `"${k}"`).join(', ') : 'none'}); ` +
        'was the file written by a different tool or with other feature names?',
    );
  }
  const actual = kindOf(f);
  if (actual !== kind) throw new UserError(`${where}: feature "${key}" holds ${actual} values, expected ${kind}`);
  const n = (f as Record<Kind, unknown[]>)[kind].length;
  if (n !== 1) throw new UserError(`${where}: feature "${key}" holds ${n} values, expected exactly 1`);
  return f;
}

/** The single bytes value of feature `key`. */
export function getBytes(ex: DecodedExample, key: string, where = 'tf.train.Example'): Buffer {
  return (single(ex, key, 'bytes', where) as { bytes: Buffer[] }).bytes[0]!;
}

/** The single bytes value of feature `key`, as UTF-8 text. */
export function getString(ex: DecodedExample, key: string, where = 'tf.train.Example'): string {
  return getBytes(ex, key, where).toString('utf8');
}

/** The single int64 value of feature `key`. */
export function getInt64(ex: DecodedExample, key: string, where = 'tf.train.Example'): number {
  return (single(ex, key, 'int64', where) as { int64: number[] }).int64[0]!;
}
