/**
 * Picks the tfjs backend that trains fastest on this machine and says which one it picked.
 *
 * Order: `tensorflow` (libtensorflow through `@tensorflow/tfjs-node`, when it is installed), else
 * `onednn` (tfjs's wasm backend with its convolutions and their gradients computed natively by oneDNN,
 * ./onednn, when our addon is built), else `wasm` (XNNPACK, with the training kernels from
 * ./wasm-kernels), else nothing: the pure-JS `cpu` backend is about 100x slower than wasm for conv
 * nets, so it is used only when asked for by name. `onednn` is the wasm backend underneath
 * (`tf.getBackend()` says 'wasm'): only four kernels differ.
 *
 * Choose the backend before creating tensors. tfjs moves tensors between backends on first use, but a
 * float32 tensor made on cpu by casting int32 (e.g. `tf.oneHot(labels).toFloat()`) keeps cpu's Int32Array,
 * and moving it to wasm reinterprets the bits: 1 becomes 1.4e-45 (tfjs 4.22, seen while testing this).
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as wasm from '@tensorflow/tfjs-backend-wasm';
import { UserError, errorMessage } from '../errors';
import { registerWasmTrainingKernels } from './wasm-kernels';
import { loadOneDnn, registerOneDnnKernels, unregisterOneDnnKernels, setOneDnnThreads, oneDnnThreads } from './onednn';

export type BackendName = 'tensorflow' | 'onednn' | 'wasm' | 'cpu';
export const BACKEND_NAMES: readonly BackendName[] = ['tensorflow', 'onednn', 'wasm', 'cpu'];

export interface BackendOptions {
  /** Threads for oneDNN in this thread (training replicas use 1 each); default: OpenMP's, all cores. */
  threads?: number;
}

export interface BackendChoice {
  /** The active tfjs backend, as `tf.getBackend()` reports it. */
  name: string;
  /** Which of our choices it is (`onednn` runs on tfjs's wasm backend, so `name` says 'wasm'). */
  engine: BackendName;
  /** One line for the user, e.g. "engine: wasm (XNNPACK SIMD, 1 thread; training kernels from imgclass)": `engine` is its first word. */
  note: string;
}

const NODE_PACKAGE = '@tensorflow/tfjs-node';

/**
 * Activates the fastest available backend, or `preferred` when given. Throws `UserError` when the
 * preferred backend cannot be used (never silently substitutes another one for an explicit choice).
 */
export async function chooseBackend(preferred?: BackendName, opts: BackendOptions = {}): Promise<BackendChoice> {
  if (preferred != null && !BACKEND_NAMES.includes(preferred)) {
    throw new UserError(`unknown backend '${String(preferred)}': use ${BACKEND_NAMES.map((b) => `'${b}'`).join(', ')}`);
  }
  let tensorflowNote = '';
  if (preferred == null || preferred === 'tensorflow') {
    const loaded = loadTfjsNode();
    if (loaded.ok && (await activate('tensorflow'))) {
      return { name: tf.getBackend(), engine: 'tensorflow', note: 'engine: tensorflow (libtensorflow via @tensorflow/tfjs-node)' };
    }
    const why = loaded.ok ? 'its backend failed to initialise' : loaded.reason;
    if (preferred === 'tensorflow') {
      throw new UserError(
        `backend 'tensorflow' requested but ${NODE_PACKAGE} is not usable (${why}); install it ` +
          `(npm install ${NODE_PACKAGE}) or choose backend 'wasm'`,
      );
    }
    tensorflowNote = `; ${NODE_PACKAGE} not used: ${why}`;
  }
  let onednnNote = '';
  if (preferred == null || preferred === 'onednn') {
    const loaded = loadOneDnn();
    if (loaded.ok) {
      const wasmNote = await activateWasm();
      registerOneDnnKernels();
      if (opts.threads != null) setOneDnnThreads(opts.threads);
      const threads = oneDnnThreads();
      return {
        name: 'wasm',
        engine: 'onednn',
        note: `engine: onednn (convolutions and their gradients on oneDNN ${loaded.version}, ${loaded.isa}, ` +
          `${threads} thread${threads === 1 ? '' : 's'}; the rest on ${wasmNote.replace(/^engine: /, '')})` + tensorflowNote,
      };
    }
    if (preferred === 'onednn') {
      throw new UserError(`backend 'onednn' requested but ${loaded.reason}; or choose backend 'wasm'`);
    }
    onednnNote = `; oneDNN not used: ${loaded.reason}`;
  }
  if (preferred === 'cpu') {
    // Registered on import; loaded only here so the default path never pulls it in by accident.
    require('@tensorflow/tfjs-backend-cpu');
    if (!(await activate('cpu'))) throw new Error("tfjs backend 'cpu' failed to initialise");
    return {
      name: tf.getBackend(),
      engine: 'cpu',
      note: 'engine: cpu (pure JavaScript, about 100x slower than wasm for conv nets; chosen explicitly)',
    };
  }
  // A thread that chose onednn before (tests, notebooks) gets XNNPACK's convolutions back.
  unregisterOneDnnKernels();
  return { name: 'wasm', engine: 'wasm', note: (await activateWasm()) + tensorflowNote + onednnNote };
}

/**
 * The engine chooseBackend(preferred) will pick, found without activating anything (the training
 * coordinator sizes its replica pool before the replicas choose): tensorflow when tfjs-node is
 * installed, else onednn when our addon loads, else wasm.
 */
export function likelyEngine(preferred: BackendName | undefined): BackendName {
  if (preferred != null) return preferred;
  try {
    require.resolve(NODE_PACKAGE);
    return 'tensorflow';
  } catch {
    // not installed
  }
  return loadOneDnn().ok ? 'onednn' : 'wasm';
}

/** Directory holding the wasm binaries, found through module resolution so any cwd / worker thread works. */
export function wasmBinaryDir(): string {
  // The package's `main` is dist/tf-backend-wasm.node.js, next to the .wasm files.
  return path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep;
}

async function activateWasm(): Promise<string> {
  wasm.setWasmPaths(wasmBinaryDir());
  registerWasmTrainingKernels();
  if (!(await activate('wasm'))) {
    throw new Error(
      `tfjs backend 'wasm' failed to initialise (wasm binaries looked up in ${wasmBinaryDir()}); ` +
        `see the warning tfjs printed above`,
    );
  }
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  const threads = wasm.getThreadsCount();
  return `engine: wasm (XNNPACK${simd ? ' SIMD' : ' without SIMD'}, ${threads} thread${threads === 1 ? '' : 's'}; ` +
    'training kernels from imgclass)';
}

async function activate(name: string): Promise<boolean> {
  if (tf.findBackendFactory(name) == null) return false;
  try {
    return await tf.setBackend(name);
  } catch {
    return false;
  }
}

type LoadResult = { ok: true } | { ok: false; reason: string };

function loadTfjsNode(): LoadResult {
  try {
    require.resolve(NODE_PACKAGE);
  } catch {
    return { ok: false, reason: 'not installed' };
  }
  try {
    require(NODE_PACKAGE);
  } catch (err) {
    // Installed but its native libtensorflow binding did not load (wrong platform, missing .so, ...).
    return { ok: false, reason: `failed to load: ${errorMessage(err).split('\n')[0]}` };
  }
  if (tf.findBackendFactory('tensorflow') == null) {
    // It registered its backend with a different copy of @tensorflow/tfjs-core than ours.
    return { ok: false, reason: 'it uses a different @tensorflow/tfjs-core copy than imgclass' };
  }
  return { ok: true };
}

/**
 * Copies a float32 tensor's values into `dst` at `offset`. On wasm it reads the heap in place (one copy;
 * `dataSync` would make a second, temporary one: 44 MB per ResNet-18 gradient).
 */
export function copyInto(t: tf.Tensor, dst: Float32Array, offset: number): void {
  if (t.dtype !== 'float32') throw new Error(`copyInto: ${t.dtype} tensor, expected float32`);
  const b = tf.backend() as tf.KernelBackend & { typedArrayFromHeap?: (info: tf.TensorInfo) => tf.backend_util.TypedArray };
  if (tf.getBackend() === 'wasm' && typeof b.typedArrayFromHeap === 'function') {
    dst.set(b.typedArrayFromHeap({ dataId: t.dataId, shape: t.shape, dtype: t.dtype }) as Float32Array, offset);
  } else {
    dst.set(t.dataSync() as Float32Array, offset);
  }
}
