/** A small exported classifier for the serving tests: ResNet-18 at 32 px, 3 classes, untrained but decisive. */
import * as tf from '@tensorflow/tfjs';
import { buildResNet } from '../lib/model';
import { exportModel } from '../lib/export';
import { chooseBackend } from '../lib/engine/backend';
import { defaultPreprocessing, normalizeInto, PreprocessingSettings } from '../lib/train/preprocessing';
import { evalTransform } from '../lib/train/augment';

export const LABELS = ['daisy', 'roses', 'tulips'];
export const IMAGE_SIZE = 32;

export interface ServingFixture {
  model: tf.LayersModel;
  settings: PreprocessingSettings;
  /** The export root (one version folder inside). */
  exportDir: string;
  versionDir: string;
}

/**
 * An untrained ResNet answers about the same for every image: its pooled features share a large
 * positive mean, and the head starts at N(0, 0.01). The head is recalibrated on `probes` (centered on
 * their mean feature, scaled to logits of spread ~3) so that different images get clearly different
 * classes and argmax is well defined. Still no training: the weights are fixed by the seed and probes.
 * One output per label (LABELS unless given).
 */
export async function exportFixture(exportDir: string, probes: Uint8Array[], labels: string[] = LABELS): Promise<ServingFixture> {
  await chooseBackend();
  const model = buildResNet({ depth: 18, numClasses: labels.length, imageSize: IMAGE_SIZE, seed: 7 });
  const settings = defaultPreprocessing(IMAGE_SIZE);
  const inputs = await Promise.all(probes.map((p) => preparedInput(p, settings)));
  const head = model.getLayer('head/dense');
  const features = tf.model({ inputs: model.inputs, outputs: model.getLayer('head/pool').output as tf.SymbolicTensor });
  const [kernel, bias] = tf.tidy(() => {
    const f = features.predict(tf.stack(inputs.map((x) => tf.tensor3d(x, [IMAGE_SIZE, IMAGE_SIZE, 3])))) as tf.Tensor2D;
    const mean = tf.mean(f, 0, true);
    const w = head.getWeights()[0] as tf.Tensor2D;
    const logits = tf.matMul(tf.sub(f, mean), w);
    const k = tf.div(3, tf.add(tf.moments(logits).variance.sqrt(), 1e-12));
    const kw = tf.mul(w, k);
    return [kw, tf.neg(tf.matMul(mean, kw).reshape([labels.length]))];
  });
  head.setWeights([kernel!, bias!]);
  tf.dispose([kernel!, bias!]);
  const versionDir = await exportModel(model, exportDir, { labels, preprocessing: settings, meta: { test: true } });
  return { model, settings, exportDir, versionDir };
}

async function preparedInput(image: Uint8Array, settings: PreprocessingSettings): Promise<Float32Array> {
  const rgb = await evalTransform(image, settings);
  return normalizeInto(rgb, new Float32Array(rgb.length), settings);
}

/** What the served model should answer for one image, computed in process without the server. */
export async function inProcessProbabilities(f: ServingFixture, image: Uint8Array): Promise<number[]> {
  const x = await preparedInput(image, f.settings);
  const probs = tf.tidy(() => tf.softmax(f.model.predict(tf.tensor4d(x, [1, IMAGE_SIZE, IMAGE_SIZE, 3])) as tf.Tensor));
  const out = Array.from(probs.dataSync());
  probs.dispose();
  return out;
}
