/**
 * A TensorFlow.js graph model (TF Hub / Kaggle format) as a frozen layer of a Layers model, so a
 * classifier built on a graph feature extractor trains, exports and serves like any other model.
 *
 * Graph models run inference only in tfjs (their weights are constants, not variables), so this
 * layer has no weights and is never trained; gradients never flow into it. In an export its graph
 * lives in the subfolder named by the layer's config (`backbone/`: model.json + weight files, as
 * the source had them), and `loadLayersModelWithBackbones` loads it before the Layers model that
 * refers to it.
 */
import * as tf from '@tensorflow/tfjs';
import * as crypto from 'node:crypto';
import * as storage from '../storage';
import { storageLoadHandler } from '../export';

/** The subfolder of an export holding a graph backbone. */
export const BACKBONE_FOLDER = 'backbone';

interface GraphBackboneArgs {
  /** Given when built for training; on load the graph comes from the registry through `key`. */
  graph?: tf.GraphModel;
  key?: string;
  /** Subfolder of the export holding the graph. */
  folder: string;
  /** Graph node whose output is the features ('' = the graph's own output). */
  node: string;
  /** Feature shape without the batch dimension. */
  dims: number[];
  name?: string;
}

/** Graphs loaded for a Layers model being deserialised, by a key written into its topology. */
const registry = new Map<string, tf.GraphModel>();

export class GraphBackbone extends tf.layers.Layer {
  static className = 'ImgclassGraphBackbone';
  readonly graph: tf.GraphModel;
  readonly folder: string;
  readonly node: string;
  readonly dims: number[];

  constructor(args: GraphBackboneArgs) {
    super({ name: args.name, trainable: false });
    const graph = args.graph ?? (args.key !== undefined ? registry.get(args.key) : undefined);
    if (!graph) {
      throw new Error(`${GraphBackbone.className}: its graph model (folder "${args.folder}") was not loaded; load the export with loadExport`);
    }
    if (args.key !== undefined) registry.delete(args.key);
    this.graph = graph;
    this.folder = args.folder;
    this.node = args.node;
    this.dims = args.dims;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    return [s[0] ?? null, ...this.dims];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? (inputs[0] as tf.Tensor) : inputs;
    return this.graph.execute(x, this.node === '' ? undefined : this.node) as tf.Tensor;
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), folder: this.folder, node: this.node, dims: this.dims };
  }
}
tf.serialization.registerClass(GraphBackbone);

interface LayerJson {
  class_name?: string;
  config?: Record<string, unknown> & { layers?: LayerJson[] };
}

/** Every GraphBackbone layer config in a Keras topology (nested models included). */
function backboneConfigs(node: unknown, out: Record<string, unknown>[] = []): Record<string, unknown>[] {
  if (Array.isArray(node)) node.forEach((n) => backboneConfigs(n, out));
  else if (node && typeof node === 'object') {
    const l = node as LayerJson;
    if (l.class_name === GraphBackbone.className && l.config) out.push(l.config);
    for (const v of Object.values(node)) if (v && typeof v === 'object') backboneConfigs(v, out);
  }
  return out;
}

/** tf.loadLayersModel of an export version folder, loading the graph backbones it refers to first. */
export async function loadLayersModelWithBackbones(versionDir: string): Promise<tf.LayersModel> {
  const inner = storageLoadHandler(versionDir);
  const keys: string[] = [];
  const handler: tf.io.IOHandler = {
    load: async () => {
      const artifacts = await inner.load!();
      for (const cfg of backboneConfigs(artifacts.modelTopology)) {
        const folder = storage.joinPath(versionDir, String(cfg.folder ?? BACKBONE_FOLDER));
        const graph = await tf.loadGraphModel(storageLoadHandler(folder));
        const key = crypto.randomUUID();
        registry.set(key, graph);
        keys.push(key);
        cfg.key = key;
      }
      return artifacts;
    },
  };
  try {
    return await tf.loadLayersModel(handler);
  } finally {
    // A failed load leaves no graph behind in the registry.
    for (const k of keys) registry.get(k)?.dispose();
    for (const k of keys) registry.delete(k);
  }
}
