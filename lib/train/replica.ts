/**
 * One model replica in a worker thread (its own wasm instance, so its own core: tfjs-wasm cannot use
 * threads under Node). Replicas start from the same seed, apply the same averaged gradient each
 * step, and so stay identical; only batch-norm moving statistics differ, and the coordinator
 * averages those before evaluating, checkpointing or exporting.
 */
import { parentPort } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { chooseBackend } from '../engine/backend';
import { buildResNet } from '../model';
import { crossEntropyGradients, weightDecayLoss, createOptimizer, evaluateBatch, flatEntries, metricsFromLogits } from './recipe';
import { compileNativeForward, NativeForward } from '../engine/native-forward';
import { decayedWeightNames, inPlaceUpdatableWeightNames } from '../model';
import { copyInto } from '../engine/backend';
import { normalizeInto } from './preprocessing';
import { weightsFromModel, setModelWeights, optimizerWeights, setOptimizerWeights } from './checkpoint';
import { exportModel } from '../export';
import { buildTransferModel } from '../transfer/model';
import { backboneFiles } from '../transfer/export-files';
import { UserError } from '../errors';
import type { ToReplica, FromReplica, ReplicaInit } from './protocol';
import { compileNativeTraining, NativeTrainStep } from '../engine/native-train';
import { bfloat16Support } from '../engine/onednn';

interface Replica {
  init: ReplicaInit;
  model: tf.LayersModel;
  optimizer: ReturnType<typeof createOptimizer>;
  trainable: { name: string; shape: number[]; size: number; offset: number }[];
  gradSlot: Float32Array;
  avgGrad: Float32Array;
  /** Names of the weights with weight decay (conv and dense kernels). */
  decayed: Set<string>;
  /** Names of the weights the optimizer may update in place (see inPlaceUpdatableWeightNames). */
  inPlace: Set<string>;
  /** Replica 0's weight-decay term for the step in progress, computed while the coordinator averages. */
  decayLoss?: number;
  /** --init_from: learning-rate multipliers of the backbone's weights; the graph backbone an export carries. */
  lrScale?: Map<string, number>;
  graphDir?: string;
  /** The whole step as one native graph, when the engine and the model allow it. */
  native?: NativeTrainStep;
  /**
   * Evaluation's native forward (the server's), compiled from the current weights at the first eval
   * batch after they change; null when the model does not compile (tfjs evaluates).
   */
  evalForward?: NativeForward | null;
  engine: string;
}

/** The weights or statistics changed: the next evaluation compiles the forward again. */
function weightsChanged(r: Replica): void {
  r.evalForward?.dispose();
  r.evalForward = undefined;
}

/**
 * The native training step for this replica's model, or undefined with the reason for the engine line.
 * bfloat16 exists only on the native step: asking for it where that step cannot run is an error.
 */
function nativeStep(init: ReplicaInit, engine: string, model: tf.LayersModel): { step?: NativeTrainStep; note: string } {
  const precision = init.precision ?? 'float32';
  const choice = init.trainingStep ?? 'auto';
  if (precision === 'bfloat16') {
    if (engine !== 'onednn') throw new UserError(`--precision bfloat16 needs the onednn engine (this run uses ${engine}): build the oneDNN addon or use --precision float32`);
    const support = bfloat16Support();
    if (!support.ok) throw new UserError(`--precision bfloat16: ${support.reason}; use --precision float32`);
    if (choice === 'tfjs') throw new UserError('--precision bfloat16 runs only on the native training step, not on tfjs ops');
  }
  if (choice === 'tfjs') return { note: 'training step: tfjs ops (asked for)' };
  if (engine !== 'onednn') return { note: `training step: tfjs ops on the ${engine} engine` };
  const r = compileNativeTraining(model, { precision });
  if (r.ok) return { step: r.step, note: `training step: one native oneDNN graph (${r.step.ops} ops, ${precision})` };
  if (choice === 'native' || precision === 'bfloat16') throw new UserError(`the native training step cannot run this model: ${r.reason}`);
  return { note: `training step: tfjs ops (native graph not used: ${r.reason})` };
}

let replica: Replica | undefined;

function post(msg: FromReplica): void {
  parentPort?.postMessage(msg);
}

function inputTensor(r: Replica, images: Uint8Array, size: number): tf.Tensor4D {
  const s = r.init.model.imageSize;
  const x = new Float32Array(size * s * s * 3);
  normalizeInto(images.subarray(0, size * s * s * 3), x, r.init.preprocessing);
  return tf.tensor4d(x, [size, s, s, 3]);
}

async function handle(msg: ToReplica): Promise<void> {
  switch (msg.kind) {
    case 'init': {
      const choice = await chooseBackend(msg.init.backend, { threads: msg.init.threads });
      const transfer = msg.init.transfer ? await buildTransferModel(msg.init.transfer) : undefined;
      const model = transfer?.model ?? buildResNet(msg.init.model);
      const scale = msg.init.backboneLrScale ?? 1;
      const lrScale = transfer && scale !== 1 ? new Map(transfer.backboneWeights.map((n) => [n, scale])) : undefined;
      const trainable: Replica['trainable'] = [];
      let offset = 0;
      for (const w of model.trainableWeights) {
        const size = (w.shape as number[]).reduce((a, b) => a * b, 1);
        trainable.push({ name: w.name, shape: w.shape as number[], size, offset });
        offset += size;
      }
      if (msg.init.gradSlot.byteLength !== offset * 4) {
        throw new Error(`gradient slot holds ${msg.init.gradSlot.byteLength / 4} floats, model has ${offset} trainable`);
      }
      const native = nativeStep(msg.init, choice.engine, model);
      replica = {
        engine: choice.engine,
        native: native.step,
        init: msg.init,
        model,
        optimizer: createOptimizer(),
        trainable,
        gradSlot: new Float32Array(msg.init.gradSlot),
        avgGrad: new Float32Array(msg.init.avgGrad),
        decayed: new Set(decayedWeightNames(model)),
        inPlace: new Set(inPlaceUpdatableWeightNames(model)),
        lrScale,
        graphDir: transfer?.graphDir,
      };
      post({ kind: 'ready', backend: choice.name, engine: choice.engine, note: choice.note, gradLength: offset, trainable: trainable.map(({ name, shape }) => ({ name, shape })), stepNote: native.note });
      return;
    }
    case 'close':
      process.exit(0);
  }
  const r = replica;
  if (!r) throw new Error(`replica got "${msg.kind}" before "init"`);
  switch (msg.kind) {
    case 'grads': {
      weightsChanged(r);
      if (r.native) {
        const s = r.init.model.imageSize;
        const x = new Float32Array(msg.size * s * s * 3);
        normalizeInto(msg.images.subarray(0, msg.size * s * s * 3), x, r.init.preprocessing);
        const out = r.native.run(x, msg.labels.subarray(0, msg.size), msg.size, r.gradSlot, r.init.labelSmoothing);
        post({ kind: 'grads-done', id: msg.id, crossEntropy: out.crossEntropy });
        if (r.init.index === 0) r.decayLoss = 0.5 * r.init.weightDecay * out.sumSquares;
        return;
      }
      const x = inputTensor(r, msg.images, msg.size);
      const y = tf.tensor1d(msg.labels.subarray(0, msg.size), 'int32');
      try {
        const out = crossEntropyGradients(r.model, x, y, {
          numClasses: r.init.model.numClasses,
          labelSmoothing: r.init.labelSmoothing,
        });
        for (const t of r.trainable) {
          const g = out.grads[t.name];
          if (!g) throw new Error(`no gradient for ${t.name}`);
          copyInto(g, r.gradSlot, t.offset);
        }
        tf.dispose(out.grads);
        post({ kind: 'grads-done', id: msg.id, crossEntropy: out.crossEntropy });
        // The weights are identical in every replica and unchanged until 'apply': one replica computes
        // the loss's decay term, while the coordinator is busy averaging the gradients.
        if (r.init.index === 0) r.decayLoss = weightDecayLoss(r.model, r.init.weightDecay);
      } finally {
        tf.dispose([x, y]);
      }
      return;
    }
    case 'apply': {
      weightsChanged(r);
      r.optimizer.setLearningRate(msg.lr);
      // Read the variables now: restoring a checkpoint may have replaced them since the last step.
      r.optimizer.applyFlat(flatEntries(r.model).entries, r.avgGrad, r.init.weightDecay, r.decayed, r.inPlace, r.lrScale);
      post({ kind: 'applied', id: msg.id, ...(r.decayLoss !== undefined ? { decayLoss: r.decayLoss } : {}) });
      r.decayLoss = undefined;
      return;
    }
    case 'eval': {
      if (r.engine === 'onednn') {
        // On the oneDNN engine, evaluation runs the forward the server runs (3-4x tfjs's on a ResNet).
        if (r.evalForward === undefined) {
          const c = compileNativeForward(r.model);
          r.evalForward = c.ok ? c.forward : null;
        }
        if (r.evalForward) {
          const s = r.init.model.imageSize;
          const x = new Float32Array(msg.size * s * s * 3);
          normalizeInto(msg.images.subarray(0, msg.size * s * s * 3), x, r.init.preprocessing);
          const m = metricsFromLogits(r.evalForward.logits(x, msg.size), msg.labels.subarray(0, msg.size), r.init.model.numClasses);
          post({ kind: 'eval-done', id: msg.id, loss: m.loss, top1: m.top1, top5: m.top5, count: m.count });
          return;
        }
      }
      const x = inputTensor(r, msg.images, msg.size);
      const y = tf.tensor1d(msg.labels.subarray(0, msg.size), 'int32');
      try {
        const m = evaluateBatch(r.model, x, y, r.init.model.numClasses);
        post({ kind: 'eval-done', id: msg.id, loss: m.loss, top1: m.top1, top5: m.top5, count: m.count });
      } finally {
        tf.dispose([x, y]);
      }
      return;
    }
    case 'get-state': {
      const weights = weightsFromModel(r.model);
      const trainableNames = new Set(r.trainable.map((t) => t.name));
      post({
        kind: 'state',
        id: msg.id,
        weights: msg.nonTrainableOnly ? weights.filter((w) => !trainableNames.has(w.name)) : weights,
        optimizer: msg.nonTrainableOnly ? [] : await optimizerWeights(r.optimizer),
      });
      return;
    }
    case 'set-state': {
      weightsChanged(r);
      setModelWeights(r.model, msg.weights, { partial: msg.optimizer === undefined });
      if (msg.optimizer) await setOptimizerWeights(r.optimizer, msg.optimizer);
      post({ kind: 'state-set', id: msg.id });
      return;
    }
    case 'export': {
      const p = await exportModel(r.model, msg.exportDir, {
        labels: msg.labels,
        preprocessing: r.init.preprocessing,
        meta: msg.meta,
        ...(r.graphDir ? { extraFiles: await backboneFiles(r.graphDir) } : {}),
      });
      post({ kind: 'exported', id: msg.id, path: p });
      return;
    }
  }
}

// One message at a time, in order: each step depends on the previous one.
let queue: Promise<void> = Promise.resolve();
parentPort?.on('message', (msg: ToReplica) => {
  queue = queue.then(() =>
    handle(msg).catch((err: unknown) => {
      const e = err as Error;
      post({ kind: 'error', id: (msg as { id?: number }).id, message: e?.message ?? String(err), stack: e?.stack, user: err instanceof UserError });
    }),
  );
});
