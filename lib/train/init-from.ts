/**
 * `train --init_from SOURCE`: turns the flags into the plan every replica builds its model from
 * (lib/transfer/model.ts), after checking, in the coordinator, that the source loads and fits, so a
 * bad source fails once, with its name, before any worker starts.
 */
import { chooseBackend, type BackendName } from '../engine/backend';
import { UserError } from '../errors';
import { modelSummary, type ModelSummary } from '../model';
import { resolveSource, sourcePreprocessing, type InputRange } from '../transfer/source';
import { buildTransferModel, disposeTransferModel, TRAINABLE_CHOICES, type Trainable, type TransferPlan } from '../transfer/model';
import type { DownloadProgress } from '../transfer/cache';
import type { PreprocessingSettings } from './preprocessing';

export interface InitFromOptions {
  /** An imgclass export (local or gs://), a tfjs model.json or its folder, or an http(s) URL of one. */
  initFrom?: string;
  /** 'head': the backbone frozen; 'backbone': the whole network (default for Layers models; graph models: head). */
  trainable?: Trainable;
  /** The backbone's learning rate as a fraction of the head's when the whole network trains (default 0.1). */
  fineTuneLrScale?: number;
  /** Layer (graph: node) to put the new head on; default: the layer below the source's own head. */
  initCutAt?: string;
  /** For a source that does not say how its inputs are scaled. */
  initInputRange?: InputRange;
  /** Where downloaded models are cached (default: see lib/transfer/cache.ts). */
  cacheDir?: string;
}

export const DEFAULT_FINE_TUNE_LR_SCALE = 0.1;

export interface InitFromPlan {
  plan: TransferPlan;
  preprocessing: PreprocessingSettings;
  /** Where the preprocessing came from, for the start message. */
  preprocessingWhy: string;
  /** Learning-rate multiplier of the backbone's weights (1 when frozen). */
  lrScale: number;
  summary: ModelSummary;
  /** One line: what is trained from what. */
  describe: string;
}

export interface InitFromContext {
  numClasses: number;
  labels: string[];
  /** --image_size as given (undefined: take the source's). */
  imageSize?: number;
  seed: number;
  /** The engine the replicas use; the check runs on it too (and never on the slow cpu backend unasked). */
  backend?: BackendName;
  onDownload?: (p: DownloadProgress) => void;
  onNotice?: (message: string) => void;
}

function sameLabels(a: string[] | undefined, b: string[]): boolean {
  return a !== undefined && a.length === b.length && a.every((l, i) => l === b[i]);
}

export async function planInitFrom(o: InitFromOptions & { initFrom: string }, ctx: InitFromContext): Promise<InitFromPlan> {
  if (o.trainable !== undefined && !TRAINABLE_CHOICES.includes(o.trainable)) {
    throw new UserError(`--trainable must be ${TRAINABLE_CHOICES.join(' or ')}, got ${String(o.trainable)}`);
  }
  const scale = o.fineTuneLrScale ?? DEFAULT_FINE_TUNE_LR_SCALE;
  if (!(scale > 0 && Number.isFinite(scale))) throw new UserError(`--fine_tune_lr_scale must be a number > 0 (0.1 trains the backbone at a tenth of the head's rate), got ${scale}`);
  const src = await resolveSource(o.initFrom, { cacheDir: o.cacheDir, onProgress: ctx.onDownload, onNotice: ctx.onNotice });
  const trainable: Trainable = o.trainable ?? (src.format === 'graph' ? 'head' : 'backbone');
  if (o.fineTuneLrScale !== undefined && trainable === 'head') {
    throw new UserError('--fine_tune_lr_scale applies to --trainable backbone (with --trainable head the backbone does not train)');
  }
  const keepHead = o.initCutAt === undefined && src.isExport && sameLabels(src.labels, ctx.labels);
  const plan: TransferPlan = {
    source: o.initFrom,
    dir: src.dir,
    format: src.format,
    ...(o.initCutAt !== undefined ? { cutAt: o.initCutAt } : {}),
    keepHead,
    trainable,
    numClasses: ctx.numClasses,
    imageSize: ctx.imageSize ?? 224,
    seed: ctx.seed,
  };
  await chooseBackend(ctx.backend);
  const built = await buildTransferModel(plan);
  try {
    if (ctx.imageSize !== undefined && ctx.imageSize !== built.imageSize) {
      throw new UserError(`--image_size is ${ctx.imageSize} but --init_from ${o.initFrom} takes ${built.imageSize}x${built.imageSize} images: omit --image_size (or pass ${built.imageSize})`);
    }
    plan.imageSize = built.imageSize;
    const prep = sourcePreprocessing(src, built.imageSize, o.initInputRange);
    const summary = modelSummary(built.model);
    const what = keepHead
      ? `its head kept (same ${ctx.numClasses} labels)`
      : `a new ${ctx.numClasses}-class head on "${built.cutAt}"`;
    const how = trainable === 'head' ? 'backbone frozen, head trained' : `whole network trained, backbone at ${scale} x the learning rate`;
    return {
      plan,
      preprocessing: prep.settings,
      preprocessingWhy: prep.why,
      lrScale: trainable === 'head' ? 1 : scale,
      summary,
      describe: `from ${o.initFrom} (${src.format} model, ${built.imageSize} px): ${what}; ${how}; input normalisation from ${prep.why}`,
    };
  } finally {
    disposeTransferModel(built);
  }
}

/**
 * The gcp backend trains with TensorFlow Model Garden on a Cloud TPU, which cannot read TensorFlow.js
 * models; it starts from a TensorFlow checkpoint instead (--init_checkpoint).
 */
export function refuseInitFromOnGcp(o: InitFromOptions): void {
  const given = (['initFrom', 'trainable', 'fineTuneLrScale', 'initCutAt', 'initInputRange'] as const).filter((k) => o[k] !== undefined);
  if (given.length === 0) return;
  const flag = given[0]!.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  throw new UserError(
    `--${flag} is for the local backend: a Cloud TPU job (Model Garden) cannot start from a TensorFlow.js model; ` +
      'on gcp pass --init_checkpoint with a TensorFlow checkpoint (gs://), or train locally with --backend local',
  );
}
