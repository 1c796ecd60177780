/**
 * The model a transfer-learning run trains: a pretrained backbone (the source model cut at a layer)
 * under a new classification head, or the source model whole when its head already fits (same
 * labels: "update the existing model"). Built the same way in the coordinator (to check the source
 * and count weights) and in every training replica, from a plan that crosses threads as JSON.
 *
 * Frozen layers (`trainable: 'head'`) are marked non-trainable, so they get no gradient and the
 * optimizer never sees them, and they always run in inference mode: batch norm keeps its moving
 * statistics (as Keras does for a frozen BatchNormalization) and dropout is off, so the backbone's
 * weights stay bit for bit what was loaded.
 */
import * as tf from '@tensorflow/tfjs';
import { storageLoadHandler } from '../export';
import { withFusedTrainingBatchNorm } from '../engine/batch-norm';
import { UserError, errorMessage } from '../errors';
import { GraphBackbone, BACKBONE_FOLDER } from './graph-backbone';
import type { SourceFormat } from './source';

export type Trainable = 'backbone' | 'head';
export const TRAINABLE_CHOICES: readonly Trainable[] = ['backbone', 'head'];

/** Everything a replica needs to build the model: JSON-safe. */
export interface TransferPlan {
  /** As the user gave it, for messages. */
  source: string;
  /** Local folder with model.json. */
  dir: string;
  format: SourceFormat;
  /** Layer (graph: node) whose output feeds the new head; default: below the source's own head. */
  cutAt?: string;
  /** Keep the source's head (same classes); no cut. */
  keepHead: boolean;
  trainable: Trainable;
  numClasses: number;
  /** Used when the source takes any input size. */
  imageSize: number;
  seed: number;
}

export interface TransferModel {
  model: tf.LayersModel;
  /** Names of the layers of the head (new or kept): trained in every mode, at the full learning rate. */
  headLayers: string[];
  /** Names (engine variable names) of the backbone's trainable weights (none when frozen). */
  backboneWeights: string[];
  /** The layer the head sits on. */
  cutAt: string;
  /** Input side in pixels. */
  imageSize: number;
  /** The graph backbone, for the export to carry (graph sources only). */
  graphDir?: string;
}

/** Layers that make up a classification head rather than features. */
const HEAD_CLASSES = new Set(['Dense', 'Dropout', 'Activation', 'Softmax', 'Flatten', 'Reshape', 'InputLayer']);
const DENSE_INIT_STDDEV = 0.01;

function isModel(l: tf.layers.Layer): l is tf.LayersModel {
  return l instanceof tf.LayersModel;
}

function isHeadLayer(l: tf.layers.Layer): boolean {
  if (isModel(l)) return l.layers.every(isHeadLayer);
  return HEAD_CLASSES.has(l.getClassName());
}

function layerNames(m: tf.LayersModel, out: string[] = []): string[] {
  for (const l of m.layers) {
    out.push(l.name);
    if (isModel(l)) layerNames(l, out);
  }
  return out;
}

function listSome(names: string[]): string {
  const shown = names.slice(-12);
  return `${names.length > shown.length ? '…, ' : ''}${shown.join(', ')}`;
}

/** A layer by name and the model whose graph holds it (the source, or a model nested in it). */
function findLayer(m: tf.LayersModel, name: string): { layer: tf.layers.Layer; owner: tf.LayersModel } | undefined {
  for (const l of m.layers) {
    if (l.name === name) return { layer: l, owner: m };
    if (isModel(l)) {
      const inner = findLayer(l, name);
      if (inner) return inner;
    }
  }
  return undefined;
}

/** The last layer below the source's head: the default cut. */
function defaultCut(m: tf.LayersModel, source: string): string {
  for (let i = m.layers.length - 1; i >= 0; i--) {
    const l = m.layers[i]!;
    if (!isHeadLayer(l)) {
      // A nested feature model whose own last layers are a head (Teachable Machine nests its MobileNet): cut inside it.
      if (isModel(l) && isHeadLayer(l.layers[l.layers.length - 1]!)) return defaultCut(l, source);
      return l.name;
    }
  }
  throw new UserError(`--init_from ${source}: every layer of the model looks like a classification head (Dense, Dropout, ...); name the layer to cut at with --init_cut_at`);
}

/** Runs the layer in inference mode whatever the caller asks (frozen batch norm keeps its statistics). */
function freeze(layer: tf.layers.Layer): void {
  layer.trainable = false;
  const target = layer as unknown as { call: (inputs: unknown, kwargs: Record<string, unknown>) => unknown };
  const original = target.call.bind(layer);
  target.call = (inputs, kwargs) => original(inputs, { ...(kwargs ?? {}), training: false });
}

function wrapBatchNorm(layer: tf.layers.Layer): void {
  if (isModel(layer)) layer.layers.forEach(wrapBatchNorm);
  else if (layer.getClassName() === 'BatchNormalization') withFusedTrainingBatchNorm(layer);
}

function uniqueName(wanted: string, taken: Set<string>): string {
  let name = wanted;
  for (let i = 1; taken.has(name); i++) name = `${wanted}_${i}`;
  taken.add(name);
  return name;
}

function imageInput(shape: (number | null)[] | undefined, source: string, plan: TransferPlan): number {
  if (!shape || shape.length !== 4 || shape[3] !== 3) {
    throw new UserError(
      `--init_from ${source} takes input ${JSON.stringify(shape)}, not RGB images: a model to start from must take [batch, height, width, 3]`,
    );
  }
  const [h, w] = [shape[1], shape[2]];
  if (h == null || h < 0 || w == null || w < 0) return plan.imageSize;
  if (h !== w) throw new UserError(`--init_from ${source} takes ${h}x${w} images; imgclass trains on square ones (height = width)`);
  return h;
}

function newHead(features: tf.SymbolicTensor, plan: TransferPlan, taken: Set<string>, source: string): { logits: tf.SymbolicTensor; names: string[] } {
  const names: string[] = [];
  let x = features;
  if (x.shape.length === 4) {
    const pool = tf.layers.globalAveragePooling2d({ name: uniqueName('head/pool', taken) });
    names.push(pool.name);
    x = pool.apply(x) as tf.SymbolicTensor;
  } else if (x.shape.length !== 2) {
    throw new UserError(
      `--init_from ${source}: the layer cut at gives ${JSON.stringify(x.shape)}; cut (--init_cut_at) at one giving feature maps [batch, h, w, c] or a feature vector [batch, n]`,
    );
  }
  const dense = tf.layers.dense({
    name: uniqueName('head/dense', taken),
    units: plan.numClasses,
    kernelInitializer: tf.initializers.randomNormal({ mean: 0, stddev: DENSE_INIT_STDDEV, seed: plan.seed }),
    biasInitializer: 'zeros',
  });
  names.push(dense.name);
  return { logits: dense.apply(x) as tf.SymbolicTensor, names };
}

async function buildFromLayers(plan: TransferPlan): Promise<TransferModel> {
  const src = plan.source;
  let loaded: tf.LayersModel;
  try {
    loaded = await tf.loadLayersModel(storageLoadHandler(plan.dir));
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`--init_from ${src}: TensorFlow.js cannot load it as a Layers model (${errorMessage(err).split('\n')[0]}); check that it is a tfjs Layers model.json with its weight files`);
  }
  if (loaded.inputs.length !== 1 || loaded.outputs.length !== 1) {
    throw new UserError(`--init_from ${src} has ${loaded.inputs.length} inputs and ${loaded.outputs.length} outputs; a model to start from has one image input and one output`);
  }
  const imageSize = imageInput(loaded.inputs[0]!.shape, src, plan);

  let model: tf.LayersModel;
  let headLayers: string[];
  let cutAt: string;
  if (plan.keepHead) {
    const last = loaded.layers[loaded.layers.length - 1]!;
    const units = loaded.outputs[0]!.shape[1];
    if (last.getClassName() !== 'Dense' || units !== plan.numClasses) {
      throw new UserError(`--init_from ${src}: its last layer is ${last.getClassName()} with ${units} outputs, so it cannot be kept for ${plan.numClasses} classes`);
    }
    model = loaded;
    headLayers = [last.name];
    cutAt = loaded.layers[loaded.layers.length - 2]?.name ?? last.name;
  } else {
    cutAt = plan.cutAt ?? defaultCut(loaded, src);
    const found = findLayer(loaded, cutAt);
    if (!found) {
      throw new UserError(`--init_from ${src} has no layer named "${cutAt}" to cut at (--init_cut_at); its layers end with: ${listSome(layerNames(loaded))}`);
    }
    const { layer, owner } = found;
    if (owner !== loaded && loaded.layers.indexOf(owner) > 1) {
      throw new UserError(`--init_from ${src}: layer "${cutAt}" is inside the nested model "${owner.name}", which does not take the model's input; cut at a layer of the outer model`);
    }
    let features: tf.SymbolicTensor;
    try {
      features = layer.output as tf.SymbolicTensor;
    } catch (err) {
      throw new UserError(`--init_from ${src}: layer "${cutAt}" is used more than once in the model (${errorMessage(err)}); cut at another layer`);
    }
    // The new head may take the names of the layers it replaces (head/pool, head/dense), not of those it keeps.
    const dropped = new Set<string>();
    for (const m of owner === loaded ? [loaded] : [loaded, owner]) {
      m.layers.slice(m.layers.indexOf(m === owner ? layer : owner) + 1).forEach((l) => {
        dropped.add(l.name);
        if (isModel(l)) layerNames(l).forEach((n) => dropped.add(n));
      });
    }
    const taken = new Set(layerNames(loaded).filter((n) => !dropped.has(n)));
    const head = newHead(features, plan, taken, src);
    model = tf.model({ inputs: owner.inputs, outputs: head.logits, name: 'transfer' });
    headLayers = head.names;
  }
  const head = new Set(headLayers);
  for (const l of model.layers) {
    if (head.has(l.name) || l.getClassName() === 'InputLayer') continue;
    if (plan.trainable === 'head') freeze(l);
    else wrapBatchNorm(l);
  }
  const headWeights = new Set(model.layers.filter((l) => head.has(l.name)).flatMap((l) => l.trainableWeights.map((w) => w.name)));
  return {
    model,
    headLayers,
    backboneWeights: model.trainableWeights.map((w) => w.name).filter((n) => !headWeights.has(n)),
    cutAt,
    imageSize,
  };
}

async function buildFromGraph(plan: TransferPlan): Promise<TransferModel> {
  const src = plan.source;
  if (plan.trainable !== 'head') {
    throw new UserError(
      `--init_from ${src} is a graph model, which TensorFlow.js runs for inference only: it can serve as a frozen feature extractor (--trainable head), not be fine-tuned`,
    );
  }
  if (plan.keepHead) throw new Error('a graph model has no head to keep');
  let graph: tf.GraphModel;
  try {
    graph = await tf.loadGraphModel(storageLoadHandler(plan.dir));
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`--init_from ${src}: TensorFlow.js cannot load it as a graph model (${errorMessage(err).split('\n')[0]})`);
  }
  const inShape = graph.inputs.length === 1 ? (graph.inputs[0]!.shape ?? undefined) : undefined;
  if (graph.inputs.length !== 1) {
    throw new UserError(`--init_from ${src} has ${graph.inputs.length} inputs; a model to start from has one image input`);
  }
  const imageSize = imageInput(inShape?.map((d) => (d < 0 ? null : d)), src, plan);
  const node = plan.cutAt ?? '';
  let dims: number[];
  try {
    dims = tf.tidy(() => (graph.execute(tf.zeros([1, imageSize, imageSize, 3]), node === '' ? undefined : node) as tf.Tensor).shape.slice(1));
  } catch (err) {
    const nodes = Object.keys((graph as unknown as { executor?: { graph?: { nodes?: Record<string, unknown> } } }).executor?.graph?.nodes ?? {});
    const missing = node !== '' && !nodes.includes(node);
    throw new UserError(
      missing
        ? `--init_from ${src} has no node named "${node}" to cut at (--init_cut_at); its nodes end with: ${listSome(nodes)}`
        : `--init_from ${src} does not run on a ${imageSize}x${imageSize} RGB image (${errorMessage(err).split('\n')[0]})`,
    );
  }
  const input = tf.input({ shape: [imageSize, imageSize, 3], name: 'images' });
  const backbone = new GraphBackbone({ graph, folder: BACKBONE_FOLDER, node, dims, name: 'backbone' });
  const features = backbone.apply(input) as tf.SymbolicTensor;
  const head = newHead(features, plan, new Set(['images', 'backbone']), src);
  const model = tf.model({ inputs: input, outputs: head.logits, name: 'transfer' });
  return { model, headLayers: head.names, backboneWeights: [], cutAt: node || 'output', imageSize, graphDir: plan.dir };
}

/** Builds the model to train from a plan (on the active backend). */
export async function buildTransferModel(plan: TransferPlan): Promise<TransferModel> {
  return plan.format === 'graph' ? buildFromGraph(plan) : buildFromLayers(plan);
}

/** Frees the model's weights, and a graph backbone's (a LayersModel does not own that graph). */
export function disposeTransferModel(t: TransferModel): void {
  for (const l of t.model.layers) if (l instanceof GraphBackbone) l.graph.dispose();
  t.model.dispose();
}
