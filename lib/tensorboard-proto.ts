/**
 * The TensorBoard event protos, enough to write scalar curves into `events.out.tfevents.*` files
 * (one Event per TFRecord) and read them back.
 */
import * as protobuf from 'protobufjs';
import { UserError } from './errors';

/**
 * Subsets of TensorFlow's tensorflow/core/util/event.proto (Event) and
 * tensorflow/core/framework/summary.proto (Summary, SummaryMetadata), field numbers as upstream.
 * Fields left out (graph_def, histograms, images, ...) are skipped when decoding. Summary.Value.tensor
 * (tensorflow/core/framework/tensor.proto, the scalar fields only) is how TensorFlow 2's
 * tf.summary.scalar writes a point (Model Garden's trainer on the cloud backend), so it is read too.
 */
const EVENT_PROTO = `
syntax = "proto3";
package tensorflow;

message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    bytes graph_def = 4;
    Summary summary = 5;
  }
}
message SummaryMetadata {
  message PluginData {
    string plugin_name = 1;
    bytes content = 2;
  }
  PluginData plugin_data = 1;
  string display_name = 2;
  string summary_description = 3;
}
message Summary {
  message Value {
    string node_name = 7;
    string tag = 1;
    SummaryMetadata metadata = 9;
    oneof value {
      float simple_value = 2;
      TensorProto tensor = 8;
    }
  }
  repeated Value value = 1;
}
message TensorProto {
  int32 dtype = 1;
  bytes tensor_content = 4;
  repeated float float_val = 5;
  repeated double double_val = 6;
}
`;

/** tensorflow.DataType numbers of the scalar types a summary holds. */
const DT_FLOAT = 1;
const DT_DOUBLE = 2;

const EventType = protobuf.parse(EVENT_PROTO, { keepCase: true }).root.lookupType('tensorflow.Event');

/** The version string every event file starts with; TensorBoard checks the "brain.Event:" prefix. */
export const FILE_VERSION = 'brain.Event:2';

export interface SummaryValue {
  tag: string;
  /** The scalar: simple_value (a legacy scalar) or a scalar tensor (TensorFlow 2 summaries). */
  value?: number;
  /** metadata.plugin_data.plugin_name, when present (e.g. "scalars"). */
  pluginName?: string;
}

export interface DecodedEvent {
  /** Seconds since the epoch. */
  wallTime: number;
  step: number;
  fileVersion?: string;
  values: SummaryValue[];
}

function encode(obj: object): Uint8Array {
  // fromObject converts step numbers to int64; proto3 zero values (step 0) are omitted, as TensorFlow does.
  return EventType.encode(EventType.fromObject(obj)).finish();
}

/** The first event of every events file. `wallTime` in seconds since the epoch. */
export function encodeFileVersionEvent(wallTime: number): Uint8Array {
  return encode({ wall_time: wallTime, file_version: FILE_VERSION });
}

/**
 * One scalar point (`tag` at `step`), as a legacy simple_value summary, which TensorBoard's
 * scalars dashboard reads. The value is stored as float32.
 */
export function encodeScalarEvent(wallTime: number, step: number, tag: string, value: number): Uint8Array {
  if (!Number.isSafeInteger(step)) throw new Error(`TensorBoard step must be an integer, got ${step}`);
  return encode({ wall_time: wallTime, step, summary: { value: [{ tag, simple_value: value }] } });
}

interface EventMessage {
  wall_time: number;
  step: number | { low: number; high: number };
  file_version?: string;
  summary?: { value: { tag: string; simple_value?: number; tensor?: TensorMessage; value?: string; metadata?: { plugin_data?: { plugin_name: string } } }[] };
}

interface TensorMessage {
  dtype?: number;
  tensor_content?: Uint8Array;
  float_val?: number[];
  double_val?: number[];
}

/** The number a scalar TensorProto holds (float_val/double_val, or the raw little-endian content). */
function tensorScalar(t: TensorMessage): number | undefined {
  if (t.float_val?.length) return t.float_val[0];
  if (t.double_val?.length) return t.double_val[0];
  const c = t.tensor_content;
  if (!c || c.length === 0) return undefined;
  const view = new DataView(c.buffer, c.byteOffset, c.byteLength);
  if (t.dtype === DT_DOUBLE && c.length >= 8) return view.getFloat64(0, true);
  if (t.dtype === DT_FLOAT && c.length >= 4) return view.getFloat32(0, true);
  return undefined;
}

export function decodeEvent(bytes: Uint8Array, where = 'event record'): DecodedEvent {
  let msg: EventMessage;
  try {
    msg = EventType.decode(bytes) as unknown as EventMessage;
  } catch (err) {
    throw new UserError(`${where} is not a TensorBoard Event: ${(err as Error).message}`);
  }
  const step = typeof msg.step === 'number' ? msg.step : msg.step.high * 4294967296 + (msg.step.low >>> 0);
  const out: DecodedEvent = { wallTime: msg.wall_time, step, values: [] };
  if (msg.file_version) out.fileVersion = msg.file_version;
  for (const v of msg.summary?.value ?? []) {
    const sv: SummaryValue = { tag: v.tag };
    // `value` is protobufjs's virtual oneof name; simple_value 0 is only present if the oneof says so.
    if (v.value === 'simple_value') sv.value = v.simple_value ?? 0;
    else if (v.value === 'tensor' && v.tensor) {
      const x = tensorScalar(v.tensor);
      if (x !== undefined) sv.value = x;
    }
    const plugin = v.metadata?.plugin_data?.plugin_name;
    if (plugin) sv.pluginName = plugin;
    out.values.push(sv);
  }
  return out;
}
