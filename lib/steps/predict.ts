/**
 * Notebook 08 (section 8, predicting): one JPEG, base64 in the codelab's request, sent to the
 * deployed endpoint; the image shown beside the class probabilities, and the answer as it came.
 */
import * as path from 'node:path';
import sharp from 'sharp';
import * as storage from '../storage';
import { UserError } from '../errors';
import { readLabeledCsv } from '../dataset';
import { predictRequest, Prediction, PredictInstance } from '../predict';
import { predictionProbabilities, VegaLiteSpec } from '../charts/specs';
import { renderPng } from '../charts/render';
import { VEGA_LITE_MIME, describeChart } from '../charts/display';
import { backendOf, Settings } from './settings';
import type { AnyDeployment } from '../backend';
import { showHtml } from './show';

export interface PickedImage {
  path: string;
  /** The true class, when the image came from the data set. */
  label?: string;
}

/** `image` when given (relative to the notebook's folder), else the first image of WORK/dataset/eval_set.csv. */
export async function pickImage(s: Settings, image = ''): Promise<PickedImage> {
  if (image.trim() !== '') {
    const p = storage.isGcsPath(image) ? image.trim() : path.resolve(image.trim());
    if (!(await storage.exists(p))) throw new UserError(`image ${p} does not exist: set the image parameter to a JPEG file`);
    return { path: p };
  }
  if (!(await storage.exists(s.paths.evalCsv))) {
    throw new UserError(`${s.paths.evalCsv} does not exist: set the image parameter, or run 01-data first`);
  }
  const first = (await readLabeledCsv(s.paths.evalCsv)).rows[0];
  if (!first) throw new UserError(`${s.paths.evalCsv} has no rows: set the image parameter to a JPEG file`);
  return { path: first.path, label: first.label };
}

export interface PredictionOutcome {
  image: PickedImage;
  request: { instances: PredictInstance[] };
  /** Undefined after a dry run (nothing was sent). */
  prediction?: Prediction;
  /** The endpoint's JSON answer, as received. */
  response: unknown;
  labels: string[];
}

/**
 * Send the image to the deployment (local server or Vertex AI endpoint) in the codelab's request.
 * A gcp dry run prints the request and returns no prediction.
 */
export async function predictImage(s: Settings, d: AnyDeployment, image: PickedImage): Promise<PredictionOutcome> {
  const request = await predictRequest([image.path]);
  let response: unknown;
  const r = await backendOf(s).predict({ target: d, images: [image.path], onResponse: (_status, body) => (response = body) });
  const prediction = r.predictions[0];
  const known = r.labels.length ? r.labels : d.labels;
  const labels = prediction && known.length !== prediction.probabilities.length
    ? prediction.probabilities.map((_, i) => (i === prediction.classes && prediction.label) || `class ${i}`)
    : known;
  return { image, request, prediction, response, labels };
}

/** The request as JSON with each base64 string cut to its first `keep` characters (and its length). */
export function formatRequest(request: { instances: PredictInstance[] }, keep = 48): string {
  const short = {
    instances: request.instances.map((inst) => ({
      ...inst,
      image_bytes: { b64: `${inst.image_bytes.b64.slice(0, keep)}… (${inst.image_bytes.b64.length} characters)` },
    })),
  };
  return JSON.stringify(short, null, 2) + '\n';
}

/** The predicted class and its probability, and whether it matches the image's true class. */
export function formatPrediction(o: PredictionOutcome): string {
  const p = o.prediction;
  if (!p) return `dry run: no request was sent, so there is no prediction for ${o.image.path}\n`;
  const name = p.label ?? o.labels[p.classes] ?? `class ${p.classes}`;
  const prob = p.probabilities[p.classes] ?? NaN;
  const truth = o.image.label ? ` (true class: ${o.image.label}${o.image.label === name ? ', right' : ', wrong'})` : '';
  return `prediction: ${name} (${(100 * prob).toFixed(1)} %)${truth} for ${o.image.path}\n`;
}

async function previewPng(file: string, size: number): Promise<Buffer> {
  const img = sharp(await storage.readFile(file));
  const meta = await img.metadata();
  const small = Math.max(meta.width ?? 0, meta.height ?? 0) * 2 <= size;
  return img.resize(size, size, { fit: 'inside', kernel: small ? 'nearest' : 'lanczos3' }).png().toBuffer();
}

/**
 * The image beside the probability chart, as one display: HTML with both pictures side by side,
 * with the chart's PNG and Vega-Lite spec as its other forms (front ends without HTML show the chart).
 */
export async function showPrediction(o: PredictionOutcome): Promise<VegaLiteSpec | undefined> {
  if (!o.prediction) return undefined;
  const spec = predictionProbabilities(o.labels, o.prediction.probabilities);
  const [chart, picture] = await Promise.all([renderPng(spec, { scale: 2 }), previewPng(o.image.path, 160)]);
  const chartMeta = await sharp(chart).metadata();
  const b64 = (b: Buffer): string => b.toString('base64');
  const html =
    '<div style="display:flex;align-items:center;gap:24px">' +
    `<figure style="margin:0;text-align:center"><img src="data:image/png;base64,${b64(picture)}" width="160" style="image-rendering:pixelated"/>` +
    `<figcaption style="font-family:sans-serif;font-size:12px">${path.basename(o.image.path)}</figcaption></figure>` +
    `<img src="data:image/png;base64,${b64(chart)}" width="${Math.round((chartMeta.width ?? 0) / 2)}"/></div>`;
  showHtml(html, `${path.basename(o.image.path)}: ${describeChart(spec)}`, { 'image/png': b64(chart), [VEGA_LITE_MIME]: spec });
  return spec;
}
