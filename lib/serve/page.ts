/**
 * The model's web page (GET /): pick, drop, paste or photograph an image, see the class
 * probabilities as notebook 08's chart, the model's name, version, classes and input size, and the
 * exact :predict request and response. The page is a client like any other: it POSTs the codelab's
 * body to /v1/models/{name}:predict. A switch also runs the exported model in the browser with
 * TensorFlow.js (its files under /v1/models/{name}/versions/{v}/files/, see export-files.ts) and
 * shows both answers side by side.
 *
 *   GET /                     the page
 *   GET /page/info.json       what the page shows about the model, and where its files are
 *   GET /page/...             the page's scripts and styles (page-assets.ts), none from the internet
 *
 * The page and its scripts are sent cross-origin isolated (COOP same-origin, COEP require-corp):
 * wasm-vips, which prepares images in the browser exactly as sharp does on the server, needs
 * SharedArrayBuffer for its threads, and browsers give that only to isolated pages.
 */
import * as fsp from 'node:fs/promises';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { PreprocessingSettings } from '../train/preprocessing';
import { registerExportFiles } from './export-files';
import { commonJsAsModule, pageAssets } from './page-assets';
import { RequestError } from './request';

export interface PageModel {
  modelName: string;
  version: string;
  labels: string[];
  settings: PreprocessingSettings;
  /** The served version folder (local or gs://). */
  versionDir: string;
  /** The server's --max_body, so the page refuses a file too large before sending it. */
  maxBody: number;
}

/** What GET /page/info.json answers. */
export interface PageInfo {
  modelName: string;
  version: string;
  labels: string[];
  imageSize: number;
  preprocessing: PreprocessingSettings;
  predictPath: string;
  statusPath: string;
  /** URL of model.json; the weight shards are beside it. */
  modelJsonPath: string;
  maxBody: number;
  /** The TensorFlow.js backend the page runs the model on. */
  browserBackend: 'cpu';
}

function isolate(reply: FastifyReply): FastifyReply {
  return reply.header('cross-origin-opener-policy', 'same-origin').header('cross-origin-embedder-policy', 'require-corp');
}

/** Registers the page, its assets and the export's files on `app`. */
export async function registerPage(app: FastifyInstance, m: PageModel): Promise<void> {
  const assets = pageAssets();
  const files = await registerExportFiles(app, { modelName: m.modelName, version: m.version, versionDir: m.versionDir });
  const info: PageInfo = {
    modelName: m.modelName,
    version: m.version,
    labels: m.labels,
    imageSize: m.settings.imageSize,
    preprocessing: m.settings,
    predictPath: `/v1/models/${m.modelName}:predict`,
    statusPath: `/v1/models/${m.modelName}`,
    modelJsonPath: `${files.base}model.json`,
    maxBody: m.maxBody,
    // 'cpu' rather than webgl (headless and remote-desktop browsers often have no GPU, and webgl's
    // float16 textures on some GPUs would not meet the 1e-4 agreement) or wasm (its SIMD and thread
    // builds would need four more files served); a small model answers in about a second.
    browserBackend: 'cpu',
  };
  const send = async (reply: FastifyReply, url: string): Promise<FastifyReply> => {
    const asset = assets.get(url);
    if (!asset) throw new RequestError(404, `no page file /page/${url}`);
    const data = await fsp.readFile(asset.file);
    const body = asset.commonJs ? commonJsAsModule(url.slice('lib/'.length, -'.mjs'.length), data.toString('utf8')) : data;
    return isolate(reply).type(asset.type).send(body);
  };
  app.get('/', async (_req, reply) => send(reply, 'index.html'));
  app.get('/page/info.json', async (_req, reply) => isolate(reply).send(info));
  app.get<{ Params: { '*': string } }>('/page/*', async (req, reply) => send(reply, req.params['*']));
}
