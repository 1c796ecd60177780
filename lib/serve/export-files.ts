/**
 * The served export's own files over HTTP, read-only, so a page can load the model with
 * TensorFlow.js (tf.loadLayersModel fetches model.json, then each weight shard it lists, relative
 * to model.json's URL):
 *
 *   GET /v1/models/{name}/versions/{v}/files/{file}
 *
 * Only the files an export is made of are served: model.json, the weight files its manifest names,
 * labels.txt, preprocessing.json and meta.json. The set is fixed when the server starts and a
 * request is answered by looking its name up in it, so no name (`..`, `%2e%2e%2f`, an absolute
 * path, a second path segment) can reach another file: nothing from the URL is ever joined to a
 * path.
 */
import type { FastifyInstance } from 'fastify';
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';
import { RequestError } from './request';

const FIXED_FILES = ['model.json', 'labels.txt', 'preprocessing.json', 'meta.json'];
const CONTENT_TYPES: Record<string, string> = {
  json: 'application/json; charset=utf-8',
  txt: 'text/plain; charset=utf-8',
  bin: 'application/octet-stream',
};

export interface ExportFiles {
  /** URL path of the folder, ending in '/': model.json is `${base}model.json`. */
  base: string;
  /** The served names, model.json first. */
  names: string[];
}

/** A weight file named in model.json, if it is a plain name inside the version folder. */
function plainName(p: unknown): p is string {
  return typeof p === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(p) && !p.includes('..');
}

/** The names to serve for the export in `versionDir`: the fixed ones that exist, and the weight shards. */
async function exportFileNames(versionDir: string): Promise<string[]> {
  const jsonPath = storage.joinPath(versionDir, 'model.json');
  let manifest: { paths?: unknown[] }[];
  try {
    manifest = (JSON.parse(await storage.readText(jsonPath)) as { weightsManifest?: { paths?: unknown[] }[] }).weightsManifest ?? [];
  } catch (err) {
    throw new UserError(`${jsonPath}: ${errorMessage(err)}; export the model again`);
  }
  const shards = manifest.flatMap((g) => g.paths ?? []);
  const odd = shards.find((p) => !plainName(p));
  // tfjs exports name shards group1-shard1of1.bin; one in a subfolder or elsewhere is not served
  // rather than resolved, and the page says why the model did not load.
  if (odd !== undefined) process.stderr.write(`imgclass serve: ${jsonPath} names weight file ${JSON.stringify(odd)}, which is not a plain file name; the page cannot load this model in the browser\n`);
  const names: string[] = [];
  for (const name of FIXED_FILES) if (name === 'model.json' || (await storage.exists(storage.joinPath(versionDir, name)))) names.push(name);
  for (const p of shards) if (plainName(p) && !names.includes(p)) names.push(p);
  return names;
}

/** Registers the files route of the export in `versionDir` on `app`. */
export async function registerExportFiles(app: FastifyInstance, o: { modelName: string; version: string; versionDir: string }): Promise<ExportFiles> {
  const names = await exportFileNames(o.versionDir);
  const served = new Set(names);
  const base = `/v1/models/${o.modelName}/versions/${o.version}/files/`;
  app.get<{ Params: { name: string; version: string; file: string } }>('/v1/models/:name/versions/:version/files/:file', async (req, reply) => {
    const { name, version, file } = req.params;
    if (name !== o.modelName || version !== o.version) {
      throw new RequestError(404, `no export files for model "${name}" version "${version}"; this server has ${base}{${names.join(',')}}`);
    }
    if (!served.has(file)) {
      throw new RequestError(404, `"${file}" is not a file of the served export; the files are ${names.join(', ')} under ${base}`);
    }
    const data = await storage.readFile(storage.joinPath(o.versionDir, file));
    const ext = file.slice(file.lastIndexOf('.') + 1);
    return reply.type(CONTENT_TYPES[ext] ?? 'application/octet-stream').send(data);
  });
  return { base, names };
}
