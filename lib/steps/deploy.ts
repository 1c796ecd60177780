/**
 * Notebooks 07 and 08 (section 7, deploying): put the exported model behind a prediction endpoint
 * that stays up after the notebook's kernel stops (local: a background `imgclass serve`; gcp: a
 * Vertex AI endpoint), find it again from the next notebook, and take it down.
 */
import { UserError, errorMessage } from '../errors';
import { isVertexDeployment, AnyDeployment } from '../backend';
import { endpointPredictUrl, type VertexDeployment } from '../cloud/endpoints';
import { apiRoot } from '../cloud/apis';
import { backendOf, Settings } from './settings';

export interface DeployParameters {
  model_name: string;
  /** local: 0 is any free port. */
  port?: number;
  /** gcp: the serving machine (billed per node-hour while deployed). */
  machine_type?: string;
  min_replicas?: number;
  max_replicas?: number;
}

/** Serve the newest model in WORK/export and record the deployment in the work folder. */
export async function deploy(s: Settings, p: DeployParameters): Promise<AnyDeployment> {
  return backendOf(s).deploy({
    exportDir: s.paths.export,
    modelName: p.model_name,
    workDir: s.workDir,
    port: p.port,
    machineType: p.machine_type?.trim() || undefined,
    minReplicas: p.min_replicas,
    maxReplicas: p.max_replicas,
  });
}

/**
 * The deployment the last 07-deploy run recorded in the work folder. A gcp dry run reads nothing
 * (reading is a request too), so it stands in the endpoint named `modelName`.
 */
export async function currentDeployment(s: Settings, modelName = 'imgclass'): Promise<AnyDeployment> {
  if (s.backend === 'gcp' && s.dryRun) {
    const endpoint = `projects/${s.project}/locations/${s.region}/endpoints/ENDPOINT_ID`;
    const d: VertexDeployment = {
      backend: 'gcp', project: s.project, region: s.region, modelName,
      endpoint, model: 'MODEL', deployedModelId: 'DEPLOYED_MODEL_ID',
      version: 'NEWEST_VERSION', exportDir: s.paths.export, artifactUri: `${s.paths.export}/NEWEST_VERSION`, labels: [],
      predictUrl: endpointPredictUrl(apiRoot('AIPLATFORM', s.region), endpoint),
      machineType: '', deployedAt: '',
    };
    return d;
  }
  return backendOf(s).currentDeployment(s.workDir);
}

export function formatDeployment(d: AnyDeployment): string {
  if (isVertexDeployment(d)) {
    return (
      `model "${d.modelName}" version ${d.version} is deployed to Vertex AI endpoint ${d.endpoint}\n` +
      `  model ${d.model}, deployed model ${d.deployedModelId}, on ${d.machineType || 'its machine type'}\n` +
      `predict: POST ${d.predictUrl} (with a bearer token)\n` +
      `classes: ${d.labels.length ? d.labels.join(', ') : '(no labels.txt beside the export)'}\n` +
      `export: ${d.artifactUri}\n`
    );
  }
  return (
    `model "${d.modelName}" version ${d.version} is served at ${d.url} (pid ${d.pid})\n` +
    `predict: POST ${d.predictUrl}\n` +
    `page: ${d.url}/ (drop an image, see the probabilities, run the model in the browser)\n` +
    `classes: ${d.labels.join(', ')}\n` +
    `export: ${d.exportDir}\n` +
    `server log: ${d.log}\n`
  );
}

/** local: TensorFlow Serving's model status route, GET /v1/models/NAME. gcp: the endpoint and model the record names. */
export async function modelStatus(d: AnyDeployment): Promise<unknown> {
  if (isVertexDeployment(d)) {
    return { endpoint: d.endpoint, deployedModelId: d.deployedModelId, model: d.model };
  }
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
 * running and say how to stop it. Returns what happened.
 */
export async function undeploy(s: Settings, when: boolean, modelName?: string): Promise<string> {
  if (!when) {
    return s.backend === 'gcp'
      ? `the endpoint is still deployed (billed per node-hour): undeploy = true here, or: imgclass undeploy --backend gcp --project ${s.project} --region ${s.region} --model_name ${modelName ?? 'NAME'}\n`
      : `the server is still running; stop it with undeploy = true here, or: node dist/lib/cli.js undeploy --work_dir ${s.workDir}\n`;
  }
  const msg = await backendOf(s).undeploy({ workDir: s.workDir, modelName: s.dryRun ? modelName ?? 'imgclass' : modelName });
  return `${msg}\n`;
}
