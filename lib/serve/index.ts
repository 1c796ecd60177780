/**
 * The local prediction server (`imgclass serve`): an exported model behind TensorFlow Serving's REST
 * API, taking the codelab's Cloud ML Engine requests ({"instances": [{"image_bytes": {"b64": ...}}]})
 * and answering {"predictions": [{"classes", "probabilities", "labels", "key"?}]}.
 *
 *   POST /v1/models/{name}[/versions/{v}]:predict
 *   GET  /v1/models/{name}[/versions/{v}]           TF Serving's model_version_status
 *   GET  /healthz                                   liveness, plus request and batching counters
 *   GET  /                                          a web page for the model (page.ts)
 *
 * Why fastify rather than node:http: it validates the body against a JSON schema (Ajv) before the
 * handler runs, enforces a body limit while streaming (a 1 GB upload is cut off, not buffered), has
 * one error handler through which every failure passes (so every error body is {"error": "..."}),
 * and its close() stops accepting, closes idle keep-alive sockets and waits for in-flight requests,
 * which is the graceful drain SIGTERM needs.
 *
 * Concurrency: images are decoded by sharp on libuv threads, concurrently with the model, which runs
 * on a worker thread (model-thread.ts); concurrent requests meet in the Batcher and share model calls.
 */
import type { AddressInfo } from 'node:net';
import Fastify, { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { loadExport, LoadedExport } from '../export';
import { chooseBackend, BackendName } from '../engine/backend';
import { UserError, errorMessage } from '../errors';
import { DEFAULT_MODEL_NAME } from '../predict';
import { Batcher, BatcherStats } from './batcher';
import { argmax, Classifier, makeClassifier } from './classifier';
import { ModelThread } from './model-thread';
import { registerPage } from './page';
import { predictBodySchema, PredictBody, readInstances, RequestError, schemaErrorMessage, SchemaError } from './request';

export { DEFAULT_MODEL_NAME };
export const DEFAULT_PORT = 8501;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_MAX_BODY = 10 * 1024 * 1024;
export const DEFAULT_MAX_BATCH = 64;
/**
 * How long a batch waits for images that requests have announced and sharp is still decoding. A lone
 * request never waits (its batch starts once its own image is ready). Measured, not derived: at 32
 * clients 20 ms served 189 req/s on average against 175 with 5 ms, with a lower p99 (bench:serve,
 * 4 runs each; the mean batch was 16 images in both).
 */
export const DEFAULT_BATCH_WAIT_MS = 20;

export interface ServeOptions {
  /** An export root (newest version folder is served) or one version folder. Ignored when `loaded` is given. */
  modelDir?: string;
  /** An export already in memory (the notebook's); the caller keeps ownership of its model. */
  loaded?: LoadedExport;
  modelName?: string;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Largest request body in bytes. */
  maxBody?: number;
  /** Most instances per request, and most images per model call. */
  maxBatch?: number;
  /** How long an image waits for others to share its model call when the server is idle. */
  batchWaitMs?: number;
  /** tfjs backend; default: the fastest available (see engine/backend). */
  backend?: BackendName;
  /**
   * A prediction whose top probability is below this comes back with "labels": null (besides its
   * classes and probabilities), so a caller can tell "don't know" from a guess. Default: none.
   */
  confidenceThreshold?: number;
}

export interface ServerStats {
  /** Predict requests received, being handled, answered 200, answered with an error. */
  requests: { received: number; inFlight: number; ok: number; failed: number };
  /** Model calls (`batches`) and the images they took (`items`). */
  batcher: BatcherStats;
}

export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:8501 */
  url: string;
  /** The predict URL of the served model. */
  predictUrl: string;
  modelName: string;
  version: string;
  labels: string[];
  /** Which tfjs backend runs the model. */
  backendNote: string;
  stats(): ServerStats;
  /** Stop accepting connections, finish in-flight requests, free the model. Idempotent. */
  close(): Promise<void>;
}

interface ModelParams {
  name: string;
  version?: string;
}

/** "10MB", "512kb", "1.5 MiB", "1048576" → bytes (K/M/G are powers of 1024). */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?\s*$/i.exec(text);
  if (!m) throw new UserError(`"${text}" is not a size: use bytes or a number with KB, MB or GB, e.g. 10MB`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  const bytes = Math.floor(Number(m[1]) * unit);
  if (bytes < 1) throw new UserError(`size "${text}" must be at least 1 byte`);
  return bytes;
}

function checkWhole(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new UserError(`${name} must be a whole number >= ${min}, got ${value}`);
}

function formatHostPort(addr: AddressInfo): string {
  const host = addr.family === 'IPv6' || addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return `http://${host}:${addr.port}`;
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const modelName = opts.modelName ?? DEFAULT_MODEL_NAME;
  const maxBody = opts.maxBody ?? DEFAULT_MAX_BODY;
  const maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
  const batchWaitMs = opts.batchWaitMs ?? DEFAULT_BATCH_WAIT_MS;
  const port = opts.port ?? DEFAULT_PORT;
  if (!/^[A-Za-z0-9._-]+$/.test(modelName)) throw new UserError(`model name "${modelName}" may hold only letters, digits, '.', '_' and '-'`);
  checkWhole('--max_batch', maxBatch, 1);
  checkWhole('--max_body', maxBody, 1);
  checkWhole('--port', port, 0);
  if (!(batchWaitMs >= 0 && batchWaitMs <= 10_000)) throw new UserError(`--batch_wait_ms must be between 0 and 10000, got ${batchWaitMs}`);
  if (!opts.loaded && !opts.modelDir) throw new UserError('give the export folder to serve (--model_dir)');
  const threshold = opts.confidenceThreshold;
  if (threshold !== undefined && !(threshold >= 0 && threshold <= 1)) throw new UserError(`--confidence_threshold must be between 0 and 1, got ${threshold}`);

  const backend = await chooseBackend(opts.backend);
  const loaded = opts.loaded ?? (await loadExport(opts.modelDir!));
  let classifier: Classifier;
  try {
    // A model this server loaded is checked here and run on the model thread, which compiles its own
    // native forward: this copy stays on tfjs.
    classifier = makeClassifier(loaded, opts.loaded ? {} : { forward: 'tfjs' });
  } catch (err) {
    if (!opts.loaded) loaded.model.dispose();
    throw err;
  }
  // A model this server loaded runs on a thread of its own (see model-thread.ts); the main thread
  // keeps its copy only for the checks above and the preprocessing settings. A model the caller
  // passed in (`loaded`, the notebook's) stays on this thread: it is theirs.
  let thread: ModelThread | undefined;
  let backendNote = `${backend.note}; ${classifier.forwardNote}`;
  if (!opts.loaded) {
    try {
      thread = await ModelThread.start(loaded.path, opts.backend);
    } finally {
      classifier.dispose();
    }
    backendNote = `${thread.backendNote}; the model runs on its own thread`;
  }
  const runModel = (xs: Float32Array[]): Float32Array[] | Promise<Float32Array[]> => (thread ? thread.classify(xs) : classifier.classify(xs));
  const freeModel = async (): Promise<void> => {
    if (thread) await thread.dispose();
  };
  // Warm up: the first call compiles kernels and allocates; a first client should not pay for it.
  try {
    await runModel([new Float32Array(classifier.settings.imageSize ** 2 * 3)]);
  } catch (err) {
    await freeModel();
    throw err;
  }

  const batcher = new Batcher<Float32Array, Float32Array>(runModel, { maxBatch, maxWaitMs: batchWaitMs });
  const requests = { received: 0, inFlight: 0, ok: 0, failed: 0 };
  const state = { closing: false };
  const handlers = new HandlerCount();
  const app = buildApp({ modelName, maxBody, maxBatch, classifier, batcher, requests, state, handlers, threshold });

  try {
    // GET /: the model's web page (page.ts).
    await registerPage(app, { modelName, version: classifier.version, labels: classifier.labels, settings: classifier.settings, versionDir: classifier.path, maxBody });
    await app.listen({ port, host: opts.host ?? DEFAULT_HOST });
  } catch (err) {
    await app.close();
    await freeModel();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new UserError(`port ${port} is already in use: stop the other server or pick another --port`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new UserError(`cannot listen on host "${opts.host}": not an address of this machine (${code})`);
    throw err;
  }
  const url = formatHostPort(app.server.address() as AddressInfo);
  let closing: Promise<void> | undefined;
  return {
    url,
    predictUrl: `${url}/v1/models/${modelName}:predict`,
    modelName,
    version: classifier.version,
    labels: classifier.labels,
    backendNote,
    stats: () => ({ requests: { ...requests }, batcher: batcher.stats() }),
    close: () =>
      (closing ??= (async () => {
        state.closing = true;
        // server.close() drops only the connections idle at that moment; one busy then would idle on
        // after its response until the keep-alive timeout (72 s) and hold close() up that long. The
        // responses carry Connection: close from now on (see onSend), and this sweeps stragglers.
        const sweep = setInterval(() => app.server.closeIdleConnections(), 50);
        try {
          await app.close();
        } finally {
          clearInterval(sweep);
        }
        // app.close() waits for sockets, not handlers: a client that hangs up mid-request (a load
        // generator ending its run) leaves a handler still decoding, which must finish before the
        // model is freed.
        await handlers.idle();
        await batcher.idle();
        await freeModel();
      })()),
  };
}

interface AppDeps {
  modelName: string;
  maxBody: number;
  maxBatch: number;
  threshold?: number;
  classifier: Classifier;
  batcher: Batcher<Float32Array, Float32Array>;
  requests: ServerStats['requests'];
  /** Set when close() begins. */
  state: { closing: boolean };
  handlers: HandlerCount;
}

/** Predict handlers still running, whether or not their client is still there. */
class HandlerCount {
  private active = 0;
  private waiters: (() => void)[] = [];

  async track<T>(work: () => Promise<T>): Promise<T> {
    this.active++;
    try {
      return await work();
    } finally {
      if (--this.active === 0) for (const w of this.waiters.splice(0)) w();
    }
  }

  idle(): Promise<void> {
    return this.active === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

function buildApp(d: AppDeps): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: d.maxBody,
    // In-flight and already-arriving requests are served during the drain (with Connection: close)
    // instead of fastify's own 503 body; close() still refuses new connections at once.
    return503OnClosing: false,
    // Bodies are taken as sent: no "5" → 5 coercion, so a wrong type is reported, not guessed at.
    ajv: { customOptions: { coerceTypes: false, allErrors: false } },
  });

  // curl -d (the TF Serving docs' example) sends application/x-www-form-urlencoded; TensorFlow
  // Serving ignores the content type, so that one is read as JSON too. Anything else is refused.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'ignore'));

  app.addHook('onSend', async (_req, reply, payload) => {
    if (d.state.closing) void reply.header('connection', 'close');
    return payload;
  });

  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const { status, message } = describeError(err, req, d);
    if (status >= 500) process.stderr.write(`imgclass serve: ${req.method} ${req.url}: ${err.stack ?? message}\n`);
    void reply.code(status).type('application/json').send({ error: message });
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({
      error: `no route ${req.method} ${req.url}; this server answers POST /v1/models/${d.modelName}:predict, GET /v1/models/${d.modelName}, GET /healthz and GET / (a web page)`,
    });
  });

  const countRequest = async (): Promise<void> => {
    d.requests.received++;
    d.requests.inFlight++;
  };
  const countResponse = async (_req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    d.requests.inFlight--;
    if (reply.statusCode === 200) d.requests.ok++;
    else d.requests.failed++;
  };

  /** 404 unless the URL names this model (and version, and the :predict verb when `verb`). */
  const checkModel = (p: ModelParams, verb: boolean): void => {
    let name = p.name;
    let version = p.version;
    let method: string | undefined;
    const target = version !== undefined ? 'version' : 'name';
    const spec = target === 'version' ? version! : name;
    if (verb) {
      const colon = spec.lastIndexOf(':');
      method = colon < 0 ? '' : spec.slice(colon + 1);
      if (target === 'version') version = spec.slice(0, colon < 0 ? undefined : colon);
      else name = spec.slice(0, colon < 0 ? undefined : colon);
    }
    if (name !== d.modelName) {
      throw new RequestError(404, `model "${name}" is not served here; this server serves "${d.modelName}" (POST /v1/models/${d.modelName}:predict)`);
    }
    if (version !== undefined && version !== d.classifier.version) {
      throw new RequestError(404, `model "${name}" has no version "${version}"; the served version is ${d.classifier.version}`);
    }
    if (verb && method !== 'predict') {
      throw new RequestError(404, `${method ? `":${method}" is not supported` : 'no verb given'}; use POST /v1/models/${d.modelName}:predict`);
    }
  };

  const predictRoute = {
    schema: { body: predictBodySchema(d.maxBatch) },
    onRequest: countRequest,
    onResponse: countResponse,
  };
  const predict = (req: FastifyRequest): Promise<object> => d.handlers.track(() => classifyRequest(req));
  const classifyRequest = async (req: FastifyRequest): Promise<object> => {
    const instances = readInstances(req.body as PredictBody);
    // Decode every image before failing on one, so no sharp job outlives the request.
    const releases = instances.map(() => d.batcher.expect());
    const inputs = await Promise.allSettled(instances.map((inst) => d.classifier.prepare(inst.bytes)));
    const bad = inputs.findIndex((r) => r.status === 'rejected');
    if (bad >= 0) {
      for (const release of releases) release();
      const reason = errorMessage((inputs[bad] as PromiseRejectedResult).reason).split('\n')[0];
      throw new RequestError(400, `instance ${bad}: the bytes are not an image this server can read (JPEG, PNG, WebP, ...): ${reason}`);
    }
    const probs = await Promise.all(
      inputs.map((r, i) => {
        const p = d.batcher.submit((r as PromiseFulfilledResult<Float32Array>).value);
        (releases[i] as () => void)();
        return p;
      }),
    );
    return {
      predictions: probs.map((p, i) => {
        const k = argmax(p);
        const key = instances[i]!.key;
        const sure = d.threshold === undefined || p[k]! >= d.threshold;
        return { classes: k, probabilities: Array.from(p), labels: sure ? d.classifier.labels[k] : null, ...(key !== undefined ? { key } : {}) };
      }),
    };
  };

  app.post<{ Params: { spec: string } }>('/v1/models/:spec', {
    ...predictRoute,
    preValidation: async (req) => checkModel({ name: req.params.spec }, true),
  }, predict);
  app.post<{ Params: { name: string; spec: string } }>('/v1/models/:name/versions/:spec', {
    ...predictRoute,
    preValidation: async (req) => checkModel({ name: req.params.name, version: req.params.spec }, true),
  }, predict);

  const status = () => ({
    model_version_status: [{ version: d.classifier.version, state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } }],
  });
  app.get<{ Params: { name: string } }>('/v1/models/:name', async (req) => {
    checkModel({ name: req.params.name }, false);
    return status();
  });
  app.get<{ Params: { name: string; version: string } }>('/v1/models/:name/versions/:version', async (req) => {
    checkModel({ name: req.params.name, version: req.params.version }, false);
    return status();
  });
  app.get('/healthz', async () => ({
    status: 'ok',
    model: d.modelName,
    version: d.classifier.version,
    requests: { ...d.requests },
    batcher: d.batcher.stats(),
  }));
  return app;
}

function describeError(err: FastifyError, req: FastifyRequest, d: AppDeps): { status: number; message: string } {
  if (err instanceof RequestError) return { status: err.status, message: err.message };
  if (err.validation) return { status: 400, message: schemaErrorMessage(err.validation as SchemaError[], d.maxBatch) };
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        status: 413,
        message: `request body is larger than the server's limit of ${d.maxBody} bytes (--max_body); send fewer or smaller images per request`,
      };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': {
      const type = req.headers['content-type'];
      return {
        status: 400,
        message: `${type ? `content-type "${type}" is not accepted` : 'no content-type given'}; send the JSON body with "Content-Type: application/json"`,
      };
    }
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, message: 'request body is not valid JSON; expected {"instances": [{"image_bytes": {"b64": "<base64 JPEG>"}}]}' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, message: 'request body is empty; expected {"instances": [{"image_bytes": {"b64": "<base64 JPEG>"}}]}' };
  }
  if (err instanceof SyntaxError) return { status: 400, message: `request body is not valid JSON: ${err.message}` };
  const code = err.statusCode ?? 500;
  if (code >= 400 && code < 500) return { status: code, message: err.message };
  return { status: 500, message: `internal error: ${err.message}` };
}
