/**
 * An exported model as the server uses it: image bytes → model input (the training eval
 * preprocessing, exactly), and a batch of inputs → class probabilities (softmax over the logits the
 * ResNet produces). The forward pass runs natively on oneDNN as one call when the oneDNN engine is
 * active and the model compiles (lib/engine/native-forward.ts), and through tfjs otherwise.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedExport } from '../export';
import { evalTransform } from '../train/augment';
import { checkSettings, normalizeInto, PreprocessingSettings } from '../train/preprocessing';
import { UserError, errorMessage } from '../errors';
import { compileNativeForward, NativeForward } from '../engine/native-forward';
import { oneDnnKernelsActive } from '../engine/onednn';

export interface Classifier {
  labels: string[];
  settings: PreprocessingSettings;
  version: string;
  /** The version folder the model came from. */
  path: string;
  /** Decoded, center-cropped, resized and normalized: one model input, S*S*3 float32 (HWC). */
  prepare(imageBytes: Uint8Array): Promise<Float32Array>;
  /** Class probabilities, one array per input, in labels order. Synchronous on the tfjs backends used here. */
  classify(inputs: Float32Array[]): Float32Array[];
  /** Which forward pass runs, for the engine line: "forward: native oneDNN (...)" or "forward: tfjs (why)". */
  forwardNote: string;
  dispose(): void;
}

/** The preprocessing.json of an export, checked, as settings. */
export function exportSettings(loaded: LoadedExport): PreprocessingSettings {
  const where = `${loaded.path}/preprocessing.json`;
  const p = loaded.preprocessing as Partial<PreprocessingSettings> | null;
  if (p == null || typeof p !== 'object') throw new UserError(`${where} must hold an object with imageSize, cropPadding, meanRgb, stddevRgb and resize`);
  const settings = {
    imageSize: p.imageSize,
    cropPadding: p.cropPadding,
    meanRgb: p.meanRgb,
    stddevRgb: p.stddevRgb,
    resize: p.resize,
    // Set by a model fine-tuned from a BGR source (lib/transfer); absent means RGB.
    ...(p.channelOrder !== undefined ? { channelOrder: p.channelOrder } : {}),
  } as PreprocessingSettings;
  try {
    if (!Array.isArray(settings.meanRgb) || !Array.isArray(settings.stddevRgb)) throw new RangeError('meanRgb and stddevRgb must be lists of 3 numbers');
    checkSettings(settings);
  } catch (err) {
    throw new UserError(`${where}: ${errorMessage(err)}; export the model again`);
  }
  const shape = loaded.model.inputs[0]?.shape;
  const s = settings.imageSize;
  if (!shape || shape.length !== 4 || shape[1] !== s || shape[2] !== s || shape[3] !== 3) {
    throw new UserError(`${where} says imageSize ${s} but the model's input is ${JSON.stringify(shape)}; expected [null, ${s}, ${s}, 3] (export again)`);
  }
  return settings;
}

export interface ClassifierOptions {
  /**
   * 'auto' (default): the native oneDNN forward when the oneDNN engine is the active backend and the
   * model compiles to it, tfjs otherwise. 'tfjs': always tfjs's predict (benchmarks compare the two).
   */
  forward?: 'auto' | 'tfjs';
}

/** The native forward for this model, or why tfjs runs it. */
function chooseForward(loaded: LoadedExport, opts: ClassifierOptions): { native?: NativeForward; note: string } {
  if (opts.forward === 'tfjs') return { note: 'forward: tfjs (asked for)' };
  // Only on the engine that was chosen: asking for 'wasm' or 'cpu' means their kernels, not ours.
  if (tf.getBackend() !== 'wasm' || !oneDnnKernelsActive()) return { note: 'forward: tfjs (the oneDNN engine is not the active backend)' };
  const compiled = compileNativeForward(loaded.model);
  if (!compiled.ok) return { note: `forward: tfjs (not compiled natively: ${compiled.reason})` };
  if (compiled.forward.classes !== loaded.labels.length) {
    compiled.forward.dispose();
    return { note: `forward: tfjs (the model has ${compiled.forward.classes} outputs for ${loaded.labels.length} labels)` };
  }
  return { native: compiled.forward, note: `forward: native oneDNN (${compiled.forward.ops} fused ops)` };
}

/** Softmax of each row of `logits` ([n, classes]), in double: one array per row. */
function softmaxRows(logits: Float32Array, n: number, classes: number): Float32Array[] {
  return Array.from({ length: n }, (_, i) => {
    const row = logits.subarray(i * classes, (i + 1) * classes);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    const e = Array.from(row, (v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return Float32Array.from(e, (v) => v / sum);
  });
}

export function makeClassifier(loaded: LoadedExport, opts: ClassifierOptions = {}): Classifier {
  const settings = exportSettings(loaded);
  const pixels = settings.imageSize * settings.imageSize * 3;
  const numClasses = loaded.labels.length;
  const { native, note } = chooseForward(loaded, opts);
  return {
    forwardNote: note,
    labels: loaded.labels,
    settings,
    version: loaded.version,
    path: loaded.path,
    async prepare(imageBytes: Uint8Array): Promise<Float32Array> {
      const rgb = await evalTransform(imageBytes, settings);
      return normalizeInto(rgb, new Float32Array(rgb.length), settings);
    },
    classify(inputs: Float32Array[]): Float32Array[] {
      const n = inputs.length;
      const batch = new Float32Array(n * pixels);
      inputs.forEach((x, i) => {
        if (x.length !== pixels) throw new RangeError(`input ${i} holds ${x.length} values, expected ${pixels}`);
        batch.set(x, i * pixels);
      });
      if (native) return n === 0 ? [] : softmaxRows(native.logits(batch, n), n, numClasses);
      const probs = tf.tidy(() => {
        const x = tf.tensor4d(batch, [n, settings.imageSize, settings.imageSize, 3]);
        const logits = loaded.model.predict(x) as tf.Tensor;
        return tf.softmax(logits);
      });
      const flat = probs.dataSync() as Float32Array;
      probs.dispose();
      return inputs.map((_, i) => flat.slice(i * numClasses, (i + 1) * numClasses));
    },
    dispose(): void {
      native?.dispose();
      loaded.model.dispose();
    },
  };
}

/** Index of the largest value (the first one on ties), as tf.argmax. */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
