/**
 * What the two native compilers (native-forward.ts for inference, native-train.ts for the training
 * step) share while walking a tfjs layer graph: how a layer's output is referred to, the private
 * batch-norm fields they read, the refusal that names the layer, and tfjs's window geometry as
 * oneDNN's explicit padding.
 */
import * as tf from '@tensorflow/tfjs';

/** What a layer's output is in the compiled network: the images, an op's output, or zero padding of one of those. */
export type Ref =
  | { kind: 'input' }
  | { kind: 'op'; index: number }
  | { kind: 'pad'; of: Ref; pads: [number, number, number, number] };

/** The private fields of tfjs-layers' BatchNormalization that the compilers read. */
export interface BatchNormFields {
  axis: number;
  momentum: number;
  epsilon: number;
  center: boolean;
  scale: boolean;
  gamma?: tf.LayerVariable;
  beta?: tf.LayerVariable;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
}

/** A layer the native network has no op for: the caller runs tfjs and reports the message. */
export class Unsupported extends Error {}

export function unsupported(layer: tf.layers.Layer, why: string): never {
  throw new Unsupported(`layer "${layer.name}" (${layer.getClassName()}): ${why}`);
}

/** A kernel size, stride or dilation as [h, w]. */
export function pair(v: unknown, layer: tf.layers.Layer, what: string): [number, number] {
  const a = Array.isArray(v) ? v : [v, v];
  if (a.length !== 2 || !a.every((x) => Number.isInteger(x))) unsupported(layer, `${what} ${JSON.stringify(v)}`);
  return a as [number, number];
}

/** The explicit padding [top, left, bottom, right] of a tfjs convolution or pool window (effH x effW after dilation). */
export function windowPads(info: { padInfo: { top: number; left: number }; inHeight: number; inWidth: number; outHeight: number; outWidth: number;
  strideHeight: number; strideWidth: number }, effH: number, effW: number): [number, number, number, number] {
  const p = info.padInfo;
  // What makes the output size exact: tfjs's own bottom/right can include rows no window reads ('valid' leftovers).
  const bottom = (info.outHeight - 1) * info.strideHeight + effH - info.inHeight - p.top;
  const right = (info.outWidth - 1) * info.strideWidth + effW - info.inWidth - p.left;
  return [p.top, p.left, Math.max(bottom, 0), Math.max(right, 0)];
}
