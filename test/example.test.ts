import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeExample,
  decodeExample,
  getBytes,
  getString,
  getInt64,
  type FeatureValue,
} from '../lib/example';
import { UserError } from '../lib/errors';

test('bytes match tf.train.Example(...).SerializeToString(), derived by hand from the wire format', () => {
  // Example{features{feature{key:"label" value{int64_list{value:[3]}}}}}:
  //   Int64List   0a 01 03                    field 1 packed, 1 byte, varint 3
  //   Feature     1a 03 <Int64List>           field 3 (int64_list), 3 bytes
  //   map entry   0a 05 "label" 12 05 <Feature>   key = field 1, value = field 2; 14 bytes
  //   Features    0a 0e <entry>               field 1 (feature), 14 bytes
  //   Example     0a 10 <Features>            field 1 (features), 16 bytes
  const cases: [Record<string, FeatureValue>, string][] = [
    [{ label: { int64: [3] } }, '0a10' + '0a0e' + '0a05' + Buffer.from('label').toString('hex') + '1205' + '1a03' + '0a0103'],
    // int64 -1 is a 10-byte two's-complement varint: ff x9, 01. Int64List 12 bytes, Feature 14, entry 19, Features 21.
    [{ n: { int64: [-1] } }, '0a15' + '0a13' + '0a016e' + '120e' + '1a0c' + '0a0a' + 'ff'.repeat(9) + '01'],
    // float_list is field 2 of Feature; 0.5f = 0x3f000000, little-endian.
    [{ x: { float: [0.5] } }, '0a0f' + '0a0d' + '0a0178' + '1208' + '1206' + '0a04' + '0000003f'],
    // bytes_list is field 1 of Feature; each value is its own length-delimited field 1.
    // BytesList 10 bytes, Feature 12, entry 17, Features 19.
    [{ s: { bytes: ['jpeg', new Uint8Array([0, 255])] } }, '0a13' + '0a11' + '0a0173' + '120c' + '0a0a' + '0a04' + Buffer.from('jpeg').toString('hex') + '0a0200ff'],
    // An empty list is still a set oneof: the Feature carries a zero-length Int64List (entry 7 bytes).
    [{ e: { int64: [] } }, '0a09' + '0a07' + '0a0165' + '1202' + '1a00'],
  ];
  for (const [features, hex] of cases) {
    assert.equal(Buffer.from(encodeExample(features)).toString('hex'), hex, JSON.stringify(Object.keys(features)));
  }
});

test('encode/decode round trip of every kind, with edge values', () => {
  const allBytes = new Uint8Array(256).map((_, i) => i);
  const floats = [0, -0, 0.5, -1.25, Math.fround(0.1), Math.fround(3.4e38), Infinity, -Infinity];
  const features: Record<string, FeatureValue> = {
    'image/encoded': { bytes: [allBytes, new Uint8Array(0)] },
    'image/class/text': { bytes: ['ñandú 🐦'] },
    'image/class/label': { int64: [0, 1, -1, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 2n ** 40n] },
    'image/score': { float: floats },
    'empty/bytes': { bytes: [] },
    'empty/float': { float: [] },
  };
  const ex = decodeExample(encodeExample(features));
  assert.deepEqual(Object.keys(ex).sort(), Object.keys(features).sort());
  assert.deepEqual(ex['image/encoded'], { bytes: [Buffer.from(allBytes), Buffer.alloc(0)] });
  assert.deepEqual(ex['image/class/text'], { bytes: [Buffer.from('ñandú 🐦', 'utf8')] });
  assert.deepEqual(ex['image/class/label'], { int64: [0, 1, -1, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 2 ** 40] });
  assert.deepEqual(ex['image/score'], { float: floats });
  assert.deepEqual(ex['empty/bytes'], { bytes: [] });
  assert.deepEqual(ex['empty/float'], { float: [] });
  // Non-float32 values are rounded, as TensorFlow stores them.
  assert.deepEqual(decodeExample(encodeExample({ f: { float: [0.1] } })).f, { float: [Math.fround(0.1)] });
  // A Uint8Array that is not a Buffer, at an offset inside a larger buffer, decodes the same.
  const enc = encodeExample({ k: { bytes: ['v'] } });
  const padded = new Uint8Array(enc.length + 3);
  padded.set(enc, 3);
  assert.equal(getString(decodeExample(padded.subarray(3)), 'k'), 'v');
});

test('encoding is deterministic and follows key order', () => {
  const a = { b: { int64: [1] }, a: { bytes: ['x'] } } satisfies Record<string, FeatureValue>;
  const b = { a: { bytes: ['x'] }, b: { int64: [1] } } satisfies Record<string, FeatureValue>;
  assert.deepEqual(encodeExample(a), encodeExample(a));
  assert.deepEqual(encodeExample(b), encodeExample({ a: { bytes: [Buffer.from('x')] }, b: { int64: [1n] } }));
  assert.notDeepEqual(encodeExample(a), encodeExample(b));
  assert.deepEqual(decodeExample(encodeExample(a)), decodeExample(encodeExample(b)));
});

test('int64 range: bigints beyond 2^53 encode, but decoding them is refused by name', () => {
  const big = encodeExample({ 'image/id': { int64: [2n ** 60n] } });
  assert.throws(() => decodeExample(big, 'train-00000 record 4'), (e: unknown) =>
    e instanceof UserError && e.message.includes('"image/id"') && e.message.includes('1152921504606846976') && e.message.includes('train-00000 record 4'));
  const minInt64 = encodeExample({ m: { int64: [-(2n ** 63n)] } });
  assert.throws(() => decodeExample(minInt64), /-9223372036854775808/);
  assert.throws(() => encodeExample({ k: { int64: [2n ** 63n] } }), (e: unknown) => e instanceof UserError && e.message.includes('"k"'));
  assert.throws(() => encodeExample({ k: { int64: [1.5] } }), UserError);
  assert.throws(() => encodeExample({ k: { int64: [2 ** 53] } }), UserError);
  assert.throws(() => encodeExample({ k: { int64: [1], float: [1] } as unknown as FeatureValue }), UserError);
});

test('getters return single values and name the key when absent, of the wrong kind or not single', () => {
  const ex = decodeExample(
    encodeExample({
      'image/encoded': { bytes: [new Uint8Array([0xff, 0xd8])] },
      'image/class/text': { bytes: ['cat'] },
      'image/class/label': { int64: [7] },
      many: { int64: [1, 2] },
      score: { float: [1] },
    }),
  );
  assert.deepEqual(getBytes(ex, 'image/encoded'), Buffer.from([0xff, 0xd8]));
  assert.equal(getString(ex, 'image/class/text'), 'cat');
  assert.equal(getInt64(ex, 'image/class/label'), 7);
  assert.throws(() => getInt64(ex, 'label', 'shard-3 record 9'), (e: unknown) =>
    e instanceof UserError && e.message.includes('"label"') && e.message.includes('shard-3 record 9') && e.message.includes('"image/class/label"'));
  assert.throws(() => getBytes(ex, 'image/class/label'), (e: unknown) =>
    e instanceof UserError && /"image\/class\/label" holds int64 values, expected bytes/.test(e.message));
  assert.throws(() => getInt64(ex, 'score'), /"score" holds float values/);
  assert.throws(() => getInt64(ex, 'many'), /"many" holds 2 values/);
});

test('garbage is not a tf.train.Example', () => {
  assert.throws(() => decodeExample(Buffer.from([0x0a, 0x50, 0x01]), 'bad.tfrecord record 0'), (e: unknown) =>
    e instanceof UserError && e.message.includes('bad.tfrecord record 0'));
});

/**
 * @roboflow/tfrecords ships google-protobuf classes generated from TensorFlow's feature.proto. Its
 * top message (TFRecordsImageMessage) has `Features context = 1`, the same field number and type
 * as Example's `Features features = 1` (and SequenceExample's context), so Example bytes parse as it.
 */
interface JspbFeature {
  getKindCase(): number;
  getBytesList(): { getValueList_asU8(): Uint8Array[] } | undefined;
  getInt64List(): { getValueList(): number[] } | undefined;
  getFloatList(): { getValueList(): number[] } | undefined;
}
interface JspbMessage {
  getContext(): { getFeatureMap(): { get(k: string): JspbFeature | undefined; keys(): Iterable<string> } };
}
// eslint-disable-next-line @typescript-eslint/no-var-requires
const pb = require('@roboflow/tfrecords/src/tensorFlowRecordsProtoBuf_pb') as {
  TFRecordsImageMessage: { deserializeBinary(b: Uint8Array): JspbMessage };
};
// eslint-disable-next-line @typescript-eslint/no-var-requires
const builder = require('@roboflow/tfrecords') as {
  TFRecordsBuilder: new () => {
    addArrayFeature(key: string, type: number, values: (string | number | Uint8Array)[]): void;
    build(): Buffer;
  };
  FeatureType: { String: number; Binary: number; Int64: number; Float: number };
};

test('independent protobuf (google-protobuf, generated from TensorFlow protos) agrees both ways', () => {
  const jpeg = new Uint8Array(300).map((_, i) => (i * 7) & 0xff);
  const ours = encodeExample({
    'image/encoded': { bytes: [jpeg] },
    'image/class/label': { int64: [3, -2, 2 ** 40] },
    'image/class/text': { bytes: ['chien', 'hund'] },
    'image/score': { float: [0.25, -8] },
  });
  const msg = pb.TFRecordsImageMessage.deserializeBinary(ours);
  const fm = msg.getContext().getFeatureMap();
  assert.deepEqual([...fm.keys()].sort(), ['image/class/label', 'image/class/text', 'image/encoded', 'image/score']);
  assert.deepEqual(Buffer.from(fm.get('image/encoded')!.getBytesList()!.getValueList_asU8()[0]!), Buffer.from(jpeg));
  assert.deepEqual(fm.get('image/class/label')!.getInt64List()!.getValueList(), [3, -2, 2 ** 40]);
  assert.deepEqual(fm.get('image/class/text')!.getBytesList()!.getValueList_asU8().map((b) => Buffer.from(b).toString()), ['chien', 'hund']);
  assert.deepEqual(fm.get('image/score')!.getFloatList()!.getValueList(), [0.25, -8]);

  // And the other way: its builder's bytes decoded by us.
  const b = new builder.TFRecordsBuilder();
  b.addArrayFeature('image/encoded', builder.FeatureType.Binary, [jpeg]);
  b.addArrayFeature('image/class/label', builder.FeatureType.Int64, [5, -1]);
  b.addArrayFeature('image/class/text', builder.FeatureType.String, ['gato']);
  b.addArrayFeature('image/score', builder.FeatureType.Float, [1.5]);
  const theirs = decodeExample(b.build());
  assert.deepEqual(getBytes(theirs, 'image/encoded'), Buffer.from(jpeg));
  assert.deepEqual(theirs['image/class/label'], { int64: [5, -1] });
  assert.equal(getString(theirs, 'image/class/text'), 'gato');
  assert.deepEqual(theirs['image/score'], { float: [1.5] });
});
