/**
 * Notebooks 07 and 08 (section 7, deploying): put the exported model behind a prediction endpoint
 * that stays up after the notebook's kernel stops (local: a background `imgclass serve`; gcp: a
 * Vertex AI endpoint), find it again from the next notebook, and take it down.
 */
import * as cloud from '../cloud';
import { deployLocal, readDeployment, undeployLocal, Deployment } from '../serve/daemon';
import { UserError, errorMessage } from '../errors';
import type { Settings } from './settings';

export interface DeployParameters {
  model_name: string;
  /** 0: any free port. */
  port: number;
}

/** local: start the server for WORK/export (replacing one this work folder started before). */
export async function deploy(s: Settings, p: DeployParameters): Promise<Deployment> {
  if (s.backend === 'gcp') {
    await cloud.deployToVertex({ project: s.project, bucket: s.bucket, region: s.region, exportDir: s.paths.export, modelName: p.model_name });
    throw new Error('deployToVertex returned without a deployment'); // unreachable until the cloud issue lands
  }
  return deployLocal({ workDir: s.workDir, exportDir: s.paths.export, port: p.port, modelName: p.model_name });
}

/** The deployment the last 07-deploy run recorded in the work folder. */
export async function currentDeployment(s: Settings): Promise<Deployment> {
  if (s.backend === 'gcp') {
    cloud.vertexPredictUrl({ project: s.project, bucket: s.bucket, region: s.region, endpoint: '' });
  }
  return readDeployment(s.workDir);
}

export function formatDeployment(d: Deployment): string {
  return (
    `model "${d.modelName}" version ${d.version} is served at ${d.url} (pid ${d.pid})\n` +
    `predict: POST ${d.predictUrl}\n` +
    `classes: ${d.labels.join(', ')}\n` +
    `export: ${d.exportDir}\n` +
    `server log: ${d.log}\n`
  );
}

/** TensorFlow Serving's model status route, GET /v1/models/NAME, as the server answers it. */
export async function modelStatus(d: Deployment): Promise<unknown> {
  const url = `${d.url}/v1/models/${encodeURIComponent(d.modelName)}`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new UserError(`cannot reach ${url} (${errorMessage(err)}): is the server still running? deploy again (07-deploy)`);
  }
  const body = (await res.json()) as unknown;
  if (!res.ok) throw new UserError(`${url} answered HTTP ${res.status}: ${JSON.stringify(body)}`);
  return body;
}

/**
 * Take the deployment down when `when` is true (the run-all script passes true); otherwise leave it
 * running and say how to stop it. Returns what happened, one line.
 */
export async function undeploy(s: Settings, when: boolean): Promise<string> {
  if (!when) {
    return `the server is still running; stop it with undeploy = true here, or: node dist/lib/cli.js undeploy --work_dir ${s.workDir}\n`;
  }
  if (s.backend === 'gcp') {
    await cloud.undeployFromVertex({ project: s.project, bucket: s.bucket, region: s.region, endpoint: '' });
  }
  return `${(await undeployLocal(s.workDir)).message}\n`;
}
