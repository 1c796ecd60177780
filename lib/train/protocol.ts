/**
 * Messages between the training coordinator (main thread) and its replicas (worker threads).
 * Gradients travel through SharedArrayBuffers, not messages: each replica writes its flat gradient
 * into its own slot, the coordinator averages them into one shared buffer, and every replica applies
 * that same average, so the replicas stay identical without copying the weights around each step.
 */
import type { ResNetConfig } from '../model';
import type { PreprocessingSettings } from './preprocessing';
import type { BackendName } from '../engine/backend';
import type { TransferPlan } from '../transfer/model';
import type { Precision } from '../engine/native-train';

export interface TensorData {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32';
  data: Float32Array | Int32Array;
}

export interface ReplicaInit {
  model: ResNetConfig;
  preprocessing: PreprocessingSettings;
  backend?: BackendName;
  /** Position in the pool; replica 0 also computes the weight-decay term of the loss. */
  index: number;
  /** oneDNN threads in this replica: the cores left to each replica (replicas x threads = cores). */
  threads?: number;
  labelSmoothing: number;
  weightDecay: number;
  /** Shared slot this replica writes its gradient into. */
  gradSlot: SharedArrayBuffer;
  /** Shared buffer the coordinator writes the averaged gradient into. */
  avgGrad: SharedArrayBuffer;
  /** --init_from: build the model from this pretrained source instead of a fresh ResNet. */
  transfer?: TransferPlan;
  /** Learning-rate multiplier of the transferred backbone's trainable weights. */
  backboneLrScale?: number;
  /** Arithmetic of convolutions and matrix products (tensorflow/tpu's --precision); default float32. */
  precision?: Precision;
  /**
   * How a step computes its gradients: the whole step as one native oneDNN graph (lib/engine/native-train.ts),
   * tfjs ops, or (default) the native graph when the engine and the model allow it.
   */
  trainingStep?: TrainingStepChoice;
}

export type TrainingStepChoice = 'auto' | 'native' | 'tfjs';

export type ToReplica =
  | { kind: 'init'; init: ReplicaInit }
  | { kind: 'grads'; id: number; images: Uint8Array; labels: Int32Array; size: number }
  | { kind: 'apply'; id: number; lr: number }
  | { kind: 'eval'; id: number; images: Uint8Array; labels: Int32Array; size: number }
  | { kind: 'get-state'; id: number; nonTrainableOnly?: boolean }
  | { kind: 'set-state'; id: number; weights: TensorData[]; optimizer?: TensorData[] }
  | { kind: 'export'; id: number; exportDir: string; labels: string[]; meta: Record<string, unknown> }
  | { kind: 'close' };

export type FromReplica =
  | { kind: 'ready'; backend: string; engine: BackendName; note: string; gradLength: number; trainable: { name: string; shape: number[] }[];
      /** Which kernels compute the step, for the engine line: "training step: ..." */
      stepNote: string }
  | { kind: 'grads-done'; id: number; crossEntropy: number }
  /** decayLoss: weightDecay x sum(w^2)/2 before this update (replica 0 only). */
  | { kind: 'applied'; id: number; decayLoss?: number }
  | { kind: 'eval-done'; id: number; loss: number; top1: number; top5: number; count: number }
  | { kind: 'state'; id: number; weights: TensorData[]; optimizer: TensorData[] }
  | { kind: 'state-set'; id: number }
  | { kind: 'exported'; id: number; path: string }
  | { kind: 'error'; id?: number; message: string; stack?: string; user: boolean };
