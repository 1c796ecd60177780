/**
 * The prediction client: images → {"instances": [{"image_bytes": {"b64": ...}}]} → a predict
 * endpoint → predictions. The endpoint is `imgclass serve` locally; the request and response are
 * the Cloud ML Engine / Vertex AI contract of the codelab, so the same call can target a cloud
 * endpoint given its URL and an `Authorization` header (see `headers`).
 */
import * as storage from './storage';
import { UserError, errorMessage } from './errors';

/** The model name `imgclass serve` uses unless told otherwise (TensorFlow Serving's default). */
export const DEFAULT_MODEL_NAME = 'default';

export interface PredictOptions {
  /** One key per image, sent as the instance's `key` and echoed back in its prediction. */
  keys?: string[];
  /** Per request; default 60 s. */
  timeoutMs?: number;
  /** When `endpoint` is a server's base URL: the model to call (default 'default'). */
  modelName?: string;
  /**
   * Extra request headers, or a function giving them per call. The seam for authenticated
   * endpoints: a cloud endpoint needs `{ Authorization: 'Bearer <token>' }`, refreshed as tokens expire.
   */
  headers?: Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);
  /** Sees the endpoint's answer as parsed JSON, before it is checked (a notebook shows it raw). */
  onResponse?: (status: number, body: unknown) => void;
}

/** One instance of the codelab's request: the image's encoded bytes, base64, and an optional key. */
export interface PredictInstance {
  image_bytes: { b64: string };
  key?: string;
}

/** The request body predict() sends: {"instances": [{"image_bytes": {"b64": ...}}, ...]}. */
export async function predictRequest(images: (string | Uint8Array)[], keys?: string[]): Promise<{ instances: PredictInstance[] }> {
  const instances = await Promise.all(
    images.map(async (img, i) => ({
      image_bytes: { b64: Buffer.from(await imageBytes(img, i)).toString('base64') },
      ...(keys ? { key: keys[i] } : {}),
    })),
  );
  return { instances };
}

export interface Prediction {
  /** Index of the most probable class, 0-based, in labels.txt order. */
  classes: number;
  /** Its name, when the server knows the labels. */
  label?: string;
  probabilities: number[];
  key?: string;
  /** The server (imgclass serve --confidence_threshold) sent "labels": null: too unsure to name a class. */
  belowThreshold?: true;
}

export interface PredictResult {
  predictions: Prediction[];
}

const DEFAULT_TIMEOUT_MS = 60_000;
const START_HINT = 'start a local one with `imgclass serve --model_dir EXPORT_DIR`';

/**
 * The predict URL for `endpoint`: a full ...:predict URL is used as is; a server's base URL
 * (http://127.0.0.1:8501) or a model URL (.../v1/models/NAME[/versions/V]) gets the rest appended.
 */
export function predictUrl(endpoint: string, modelName: string = DEFAULT_MODEL_NAME): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new UserError(`endpoint "${endpoint}" is not a URL; expected e.g. http://127.0.0.1:8501/v1/models/${modelName}:predict`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UserError(`endpoint "${endpoint}" must be an http:// or https:// URL`);
  }
  const p = url.pathname.replace(/\/+$/, '');
  if (p.endsWith(':predict')) return url.href;
  if (p === '') url.pathname = `/v1/models/${encodeURIComponent(modelName)}:predict`;
  else if (/^\/v1\/models\/[^/:]+(\/versions\/[^/:]+)?$/.test(p)) url.pathname = `${p}:predict`;
  else {
    throw new UserError(
      `endpoint "${endpoint}" is neither a server URL (http://HOST:PORT) nor a predict URL ending in ":predict" ` +
        `(e.g. http://127.0.0.1:8501/v1/models/${modelName}:predict)`,
    );
  }
  return url.href;
}

async function imageBytes(image: string | Uint8Array, index: number): Promise<Uint8Array> {
  if (typeof image !== 'string') return image;
  if (image === '') throw new UserError(`image ${index}: empty path`);
  return storage.readFile(image); // UserError "file not found: <path>" when missing
}

/** Why fetch failed, from the cause undici attaches ("fetch failed" alone says nothing). */
function networkCause(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? errorMessage(err);
}

/** The request body for `images`, after the checks every endpoint shares (images given, one key each). */
export async function checkedRequest(images: (string | Uint8Array)[], keys?: string[]): Promise<{ instances: PredictInstance[] }> {
  if (images.length === 0) throw new UserError('no images given: pass at least one image path');
  if (keys && keys.length !== images.length) {
    throw new UserError(`${keys.length} keys given for ${images.length} images; give one key per image or none`);
  }
  return predictRequest(images, keys);
}

/**
 * Send the images (paths, local or gs://, or encoded bytes) to `endpoint` in one request and return
 * one prediction per image, in order.
 */
export async function predict(endpoint: string, images: (string | Uint8Array)[], opts: PredictOptions = {}): Promise<PredictResult> {
  const url = predictUrl(endpoint, opts.modelName);
  const body = await checkedRequest(images, opts.keys);
  const extra = typeof opts.headers === 'function' ? await opts.headers() : (opts.headers ?? {});
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  let res: Response;
  let text: string;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...extra },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await res.text();
  } catch (err) {
    if ((err as Error)?.name === 'TimeoutError') throw new UserError(`no answer from ${url} within ${timeoutMs} ms; is the server overloaded? (timeoutMs raises the limit)`);
    throw new UserError(`cannot reach ${url} (${networkCause(err)}): is the server running? ${START_HINT}`);
  }

  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    const head = text.slice(0, 200).replace(/\s+/g, ' ');
    throw new UserError(`${url} answered HTTP ${res.status} with a body that is not JSON: "${head}"; is this a prediction endpoint?`);
  }
  opts.onResponse?.(res.status, answer);
  const errorText = (answer as { error?: unknown })?.error;
  if (!res.ok) {
    const why = typeof errorText === 'string' ? errorText : typeof errorText === 'object' && errorText ? JSON.stringify(errorText) : text.slice(0, 200);
    throw new UserError(`${url} answered HTTP ${res.status}: ${why}`);
  }
  return parsePredictions(answer, images.length, url);
}

/**
 * The same request through another transport (Vertex AI's endpoints.predict, which has its own
 * client, credentials and retries): `send` gets the codelab's body and returns the parsed answer.
 */
export async function predictThrough(
  send: (body: { instances: PredictInstance[] }) => Promise<unknown>,
  where: string,
  images: (string | Uint8Array)[],
  opts: Pick<PredictOptions, 'keys' | 'onResponse'> = {},
): Promise<PredictResult> {
  const answer = await send(await checkedRequest(images, opts.keys));
  opts.onResponse?.(200, answer);
  return parsePredictions(answer, images.length, where);
}

/** The predictions of an answer, one per image, checked. */
export function parsePredictions(answer: unknown, count: number, where: string): PredictResult {
  const raw = (answer as { predictions?: unknown })?.predictions;
  if (!Array.isArray(raw) || raw.length !== count) {
    throw new UserError(`${where} answered without one prediction per image (sent ${count}, got ${Array.isArray(raw) ? raw.length : 'none'}); is this an imgclass model?`);
  }
  return { predictions: raw.map((p, i) => toPrediction(p, i, where)) };
}

function argmax(v: number[]): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

function toPrediction(p: unknown, i: number, url: string): Prediction {
  const o = (p ?? {}) as Record<string, unknown>;
  const isNumbers = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');
  let out: Prediction;
  if (typeof o.classes === 'number' && isNumbers(o.probabilities)) {
    out = { classes: o.classes, probabilities: o.probabilities };
  } else if (o.classes === undefined && isNumbers(o.probs)) {
    // TensorFlow Model Garden's export: `probs` over num_classes + 1, where label 0 is never used
    // (our labels are 1-based, as tensorflow/tpu's 1,001 ImageNet classes). Drop it and renormalise,
    // so `classes` is 0-based in labels.txt order as the codelab's contract says.
    const rest = o.probs.slice(1);
    const sum = rest.reduce((a, b) => a + b, 0);
    const probabilities = sum > 0 ? rest.map((x) => x / sum) : rest;
    out = { classes: argmax(probabilities), probabilities };
  } else {
    throw new UserError(`${url}: prediction ${i} lacks "classes" and "probabilities" (or Model Garden's "probs"); is this an imgclass model?`);
  }
  // The server sends the class name as "labels" (one string, as the codelab's output names it).
  const label = o.labels ?? o.label;
  if (typeof label === 'string') out.label = label;
  if (o.labels === null) out.belowThreshold = true;
  if (o.key !== undefined) out.key = String(o.key);
  return out;
}
