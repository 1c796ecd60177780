/** The files of a graph backbone, as an export carries them in its backbone/ folder (lib/transfer/graph-backbone.ts). */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { weightFiles } from './cache';
import { BACKBONE_FOLDER } from './graph-backbone';

/** model.json and the weight files it names, from the local folder `dir`, named backbone/… */
export async function backboneFiles(dir: string): Promise<{ name: string; data: Uint8Array }[]> {
  const json = await fsp.readFile(path.join(dir, 'model.json'));
  const { files } = weightFiles(JSON.parse(json.toString('utf8')), path.join(dir, 'model.json'));
  const out = [{ name: `${BACKBONE_FOLDER}/model.json`, data: new Uint8Array(json) }];
  for (const f of files) out.push({ name: `${BACKBONE_FOLDER}/${f}`, data: new Uint8Array(await fsp.readFile(path.join(dir, f))) });
  return out;
}
