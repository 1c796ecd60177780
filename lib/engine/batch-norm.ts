/**
 * Batch normalisation layers that train through one native kernel when the oneDNN engine is active
 * (./onednn BATCH_NORM_TRAINING), and exactly as tfjs-layers' BatchNormalization otherwise.
 *
 * The layer stays a tfjs-layers BatchNormalization (same class name, weights, config and inference
 * path), so saved models and exports load anywhere tfjs does; only its training-mode `call` is
 * wrapped. That call computes what tfjs-layers computes (batch mean and biased variance, the
 * normalised output, the moving averages updated with the layer's momentum) in one kernel and its
 * gradient in one more, instead of ~30 small kernels per layer per step.
 */
import * as tf from '@tensorflow/tfjs';
import { BATCH_NORM_TRAINING } from './onednn';

/** The private fields of tfjs-layers' BatchNormalization that its training call reads. */
interface BatchNormInternals {
  axis: number;
  momentum: number;
  epsilon: number;
  center: boolean;
  scale: boolean;
  gamma: tf.LayerVariable;
  beta: tf.LayerVariable;
  movingMean: tf.LayerVariable;
  movingVariance: tf.LayerVariable;
}

type CallFn = (inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>) => tf.Tensor | tf.Tensor[];

const WRAPPED = Symbol('imgclass-fast-batch-norm');

/** Whether the fused training kernel is registered for the active backend (oneDNN engine). */
export function fusedBatchNormAvailable(): boolean {
  return tf.getKernel(BATCH_NORM_TRAINING, tf.getBackend()) != null;
}

/** Wraps a BatchNormalization layer's training-mode call (idempotent). Returns the layer. */
export function withFusedTrainingBatchNorm<L extends tf.layers.Layer>(layer: L): L {
  if (layer.getClassName() !== 'BatchNormalization') throw new Error(`not a BatchNormalization layer: ${layer.getClassName()}`);
  const target = layer as unknown as { call: CallFn; [WRAPPED]?: boolean };
  if (target[WRAPPED]) return layer;
  const original: CallFn = target.call.bind(layer);
  target.call = (inputs, kwargs) => {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const l = layer as unknown as BatchNormInternals;
    const lastAxis = x != null && (l.axis === -1 || l.axis === x.rank - 1);
    if (kwargs?.training !== true || x == null || x.rank < 2 || !lastAxis || !l.center || !l.scale || !fusedBatchNormAvailable()) {
      return original(inputs, kwargs);
    }
    return tf.tidy(() => {
      const [y, mean, variance] = tf.engine().runKernel(BATCH_NORM_TRAINING,
        { x, scale: l.gamma.read(), offset: l.beta.read() }, { varianceEpsilon: l.epsilon }) as tf.Tensor[];
      movingAverage(l.movingMean, mean as tf.Tensor, l.momentum);
      movingAverage(l.movingVariance, variance as tf.Tensor, l.momentum);
      return y as tf.Tensor;
    });
  };
  target[WRAPPED] = true;
  return layer;
}

/** tfjs-layers' doMovingAverage, the same ops: v - (v - value) * (1 - momentum). */
function movingAverage(variable: tf.LayerVariable, value: tf.Tensor, momentum: number): void {
  tf.tidy(() => {
    const orig = variable.read();
    variable.write(tf.sub(orig, tf.mul(tf.sub(orig, value), 1 - momentum)));
  });
}
