/**
 * Sections 7 and 8 on Vertex AI: an exported SavedModel uploaded as a Model on a prebuilt TensorFlow
 * prediction container, an Endpoint found by display name or created, the model deployed to it with
 * all the traffic, predictions in the codelab's request, and the way back (undeploy, delete).
 *
 * Re-running is cheap and safe: the Model's id is derived from the export's URI, so a second deploy of
 * the same export finds it instead of uploading again, and a model that already has all the traffic
 * is not deployed twice.
 */
import { createHash } from 'node:crypto';
import type { aiplatform_v1 } from 'googleapis/build/src/apis/aiplatform/v1';
import type { MethodOptions } from 'googleapis-common';
import * as storage from '../storage';
import { UserError } from '../errors';
import type { CloudClient } from './client';
import { waitForOperation, dryRunOperation, Operation } from './operations';

type Model = aiplatform_v1.Schema$GoogleCloudAiplatformV1Model;
type Endpoint = aiplatform_v1.Schema$GoogleCloudAiplatformV1Endpoint;
type DeployedModel = aiplatform_v1.Schema$GoogleCloudAiplatformV1DeployedModel;

/**
 * The TensorFlow of the trainer (the Model Garden image of the training issue pins the same), and so
 * of the prebuilt prediction container that serves its SavedModel.
 */
export const TENSORFLOW_VERSION = '2.15';
export const DEFAULT_MACHINE_TYPE = 'n1-standard-2';
/** Marks what imgclass made, so undeploy --delete removes only that. */
export const IMGCLASS_LABEL = 'imgclass';

/** Vertex AI's prebuilt TensorFlow prediction image nearest to `region` (us, europe or asia). */
export function predictionImage(region: string, tfVersion = TENSORFLOW_VERSION): string {
  const area = region.startsWith('europe') ? 'europe' : region.startsWith('asia') || region.startsWith('australia') ? 'asia' : 'us';
  return `${area}-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.${tfVersion.replace('.', '-')}:latest`;
}

/** The Model id for an export version: the same URI always gives the same id. */
export function modelIdFor(artifactUri: string): string {
  return `imgclass-${createHash('sha256').update(artifactUri.replace(/\/+$/, '')).digest('hex').slice(0, 20)}`;
}

/** Start a Vertex AI long-running operation and wait for it; `dryRun` is the response a dry run pretends. */
async function vertexOperation(
  c: CloudClient,
  spec: { what: string; gcloud?: string; retryPost?: boolean; dryRun: Record<string, unknown> },
  start: (options: MethodOptions) => Promise<{ data: Operation }>,
): Promise<Record<string, unknown>> {
  const op = await c.call<Operation>({ ...spec, dryRun: dryRunOperation(spec.dryRun) }, start);
  return waitForOperation(c, op, { what: spec.what, get: (n, o) => c.aiplatform().projects.locations.operations.get({ name: n }, o) });
}

/** The REST URL of an endpoint's :predict under the Vertex AI root `root`. */
export function endpointPredictUrl(root: string, endpointName: string): string {
  return `${root}v1/${endpointName}:predict`;
}

export function locationName(c: CloudClient): string {
  return `projects/${c.project}/locations/${c.region}`;
}

/** The last path segment of a resource name (its id). */
export function idOf(name: string | null | undefined): string {
  return (name ?? '').split('/').pop() ?? '';
}

function q(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface ExportVersion {
  /** gs:// folder of the SavedModel (saved_model.pb inside). */
  uri: string;
  version: string;
  labels: string[];
}

/**
 * The newest version folder under `exportDir` (or `exportDir` itself when it is one) that holds a
 * SavedModel. A TensorFlow.js export (model.json) is refused with what to do instead.
 */
export async function findSavedModel(exportDir: string): Promise<ExportVersion> {
  if (!storage.isGcsPath(exportDir)) {
    throw new UserError(`export_dir ${exportDir} is not on Cloud Storage: Vertex AI reads models from gs://; copy the export to a bucket (gcloud storage cp -r) or train with backend gcp`);
  }
  const root = exportDir.replace(/\/+$/, '');
  const files = await storage.list(root);
  if (files.length === 0) throw new UserError(`export_dir ${root} is empty or does not exist: train first (section 6), or check the path`);
  const versions = new Map<string, Set<string>>();
  for (const f of files) {
    const rel = f.slice(root.length + 1);
    const parts = rel.split('/');
    const top = parts.length > 1 ? parts[0]! : '';
    const rest = parts.length > 1 ? parts.slice(1).join('/') : rel;
    if (!versions.has(top)) versions.set(top, new Set());
    versions.get(top)!.add(rest);
  }
  const pick = (version: string, set: Set<string>): string | undefined => (set.has('saved_model.pb') ? version : undefined);
  let chosen: string | undefined = versions.has('') ? pick('', versions.get('')!) : undefined;
  if (chosen === undefined) {
    const numeric = [...versions.keys()].filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    chosen = numeric.find((v) => versions.get(v)!.has('saved_model.pb'));
    if (chosen === undefined) {
      const tfjs = numeric.find((v) => versions.get(v)!.has('model.json')) ?? (versions.get('')?.has('model.json') ? '' : undefined);
      if (tfjs !== undefined) {
        throw new UserError(
          `${root}${tfjs ? `/${tfjs}` : ''} is a TensorFlow.js export (model.json), which Vertex AI's TensorFlow container cannot serve: ` +
            'train with backend gcp for a SavedModel, or serve this one locally (imgclass deploy --backend local)',
        );
      }
      throw new UserError(`no SavedModel (saved_model.pb) under ${root}: expected ${root}/<unix time>/saved_model.pb as the training writes it`);
    }
  }
  const uri = chosen ? `${root}/${chosen}` : root;
  return { uri, version: chosen || idOf(root), labels: await labelsBeside(uri) };
}

/** The class names in the labels.txt of a model folder, or [] when it has none. */
async function labelsBeside(modelUri: string): Promise<string[]> {
  const file = `${modelUri.replace(/\/+$/, '')}/labels.txt`;
  if (!(await storage.exists(file))) return [];
  return (await storage.readText(file)).split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

export interface VertexDeployOptions {
  exportDir: string;
  /** The endpoint's display name (and the model's). */
  modelName: string;
  machineType?: string;
  minReplicas?: number;
  maxReplicas?: number;
  /** Default: predictionImage(region). */
  servingImage?: string;
}

export interface VertexDeployment {
  backend: 'gcp';
  project: string;
  region: string;
  modelName: string;
  /** projects/…/locations/…/endpoints/ID */
  endpoint: string;
  /** projects/…/locations/…/models/ID */
  model: string;
  deployedModelId: string;
  version: string;
  exportDir: string;
  artifactUri: string;
  labels: string[];
  /** The REST URL of :predict (needs a bearer token). */
  predictUrl: string;
  machineType: string;
  deployedAt: string;
}

function checkModelName(name: string): void {
  if (!name || name.length > 128 || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) {
    throw new UserError(`model_name "${name}" is not usable as a Vertex AI display name: up to 128 letters, digits, '_', '.' or '-', starting with a letter or digit (--model_name)`);
  }
}

async function getModel(c: CloudClient, name: string): Promise<Model | undefined> {
  try {
    return await c.call<Model>(
      { what: `looking up model ${idOf(name)}`, gcloud: `gcloud ai models describe ${idOf(name)} --project=${c.project} --region=${c.region}`, dryRun: undefined },
      (o) => c.aiplatform().projects.locations.models.get({ name }, o),
    );
  } catch (err) {
    if (err instanceof UserError && /: not found:/.test(err.message)) return undefined;
    throw err;
  }
}

/** The Model for `exp`, uploaded unless a model with its derived id exists. */
async function ensureModel(c: CloudClient, exp: ExportVersion, o: VertexDeployOptions): Promise<string> {
  const modelId = modelIdFor(exp.uri);
  const name = `${locationName(c)}/models/${modelId}`;
  const existing = c.dryRun ? undefined : await getModel(c, name);
  if (existing?.name) {
    c.reporter.line(`model ${modelId} (${exp.uri}) is already uploaded; not uploading again`);
    return existing.name;
  }
  const image = o.servingImage ?? predictionImage(c.region);
  const body: aiplatform_v1.Schema$GoogleCloudAiplatformV1UploadModelRequest = {
    modelId,
    model: {
      displayName: o.modelName,
      description: `imgclass export ${exp.uri}`,
      artifactUri: exp.uri,
      containerSpec: { imageUri: image },
      labels: { [IMGCLASS_LABEL]: 'model' },
    },
  };
  const what = `uploading model ${o.modelName} from ${exp.uri}`;
  const res = await vertexOperation(
    c,
    {
      what,
      gcloud: `gcloud ai models upload --project=${c.project} --region=${c.region} --model-id=${modelId} --display-name=${q(o.modelName)} --artifact-uri=${exp.uri} --container-image-uri=${image}`,
      // The id is ours, so a repeated upload cannot make a second model.
      retryPost: true,
      dryRun: { model: name },
    },
    (opts) => c.aiplatform().projects.locations.models.upload({ parent: locationName(c), requestBody: body }, opts),
  );
  return (res.model as string | undefined) ?? name;
}

/** Endpoints whose display name is `displayName`. */
export async function endpointsNamed(c: CloudClient, displayName: string): Promise<Endpoint[]> {
  const res = await c.call<aiplatform_v1.Schema$GoogleCloudAiplatformV1ListEndpointsResponse>(
    {
      what: `looking for endpoint "${displayName}" in ${c.region}`,
      gcloud: `gcloud ai endpoints list --project=${c.project} --region=${c.region} --filter=display_name=${q(displayName)}`,
      dryRun: { endpoints: [] },
    },
    (o) => c.aiplatform().projects.locations.endpoints.list({ parent: locationName(c), filter: `display_name="${displayName}"` }, o),
  );
  return (res.endpoints ?? []).filter((e) => e.displayName === displayName);
}

async function ensureEndpoint(c: CloudClient, displayName: string): Promise<Endpoint> {
  const found = await endpointsNamed(c, displayName);
  if (found.length > 1) {
    c.reporter.line(`note: ${found.length} endpoints are named "${displayName}"; using ${idOf(found[0]!.name)}`);
  }
  if (found[0]) {
    c.reporter.line(`endpoint "${displayName}" exists: ${found[0].name}`);
    return found[0];
  }
  const what = `creating endpoint "${displayName}" in ${c.region}`;
  const body: Endpoint = { displayName, labels: { [IMGCLASS_LABEL]: 'endpoint' } };
  const res = await vertexOperation(
    c,
    {
      what,
      gcloud: `gcloud ai endpoints create --project=${c.project} --region=${c.region} --display-name=${q(displayName)}`,
      dryRun: { name: `${locationName(c)}/endpoints/ENDPOINT_ID`, displayName },
    },
    (o) => c.aiplatform().projects.locations.endpoints.create({ parent: locationName(c), requestBody: body }, o),
  );
  return res as Endpoint;
}

function sameModel(a: string | null | undefined, b: string): boolean {
  // Names come back with the project number where we sent the id: compare location and id.
  return idOf(a) === idOf(b);
}

/** Upload (once), find or create the endpoint, deploy with 100 % of the traffic (once). */
export async function deployToVertex(c: CloudClient, o: VertexDeployOptions): Promise<VertexDeployment> {
  checkModelName(o.modelName);
  const machineType = o.machineType ?? DEFAULT_MACHINE_TYPE;
  const minReplicas = o.minReplicas ?? 1;
  const maxReplicas = o.maxReplicas ?? Math.max(1, minReplicas);
  if (!Number.isInteger(minReplicas) || minReplicas < 1) throw new UserError(`min_replicas must be a whole number ≥ 1, got ${minReplicas}`);
  if (!Number.isInteger(maxReplicas) || maxReplicas < minReplicas) throw new UserError(`max_replicas (${maxReplicas}) must be a whole number ≥ min_replicas (${minReplicas})`);

  // A dry run reads nothing either, so the version is shown as the placeholder it would look up.
  const exp: ExportVersion = c.dryRun
    ? { uri: `${o.exportDir.replace(/\/+$/, '')}/NEWEST_VERSION`, version: 'NEWEST_VERSION', labels: [] }
    : await findSavedModel(o.exportDir);
  if (c.dryRun) c.reporter.line(`dry run: would deploy the newest SavedModel under ${o.exportDir} (listing it is a request too, so it is not read)`);
  else c.reporter.line(`export: ${exp.uri} (version ${exp.version}${exp.labels.length ? `, ${exp.labels.length} classes` : ', no labels.txt'})`);

  const model = await ensureModel(c, exp, o);
  const endpoint = await ensureEndpoint(c, o.modelName);
  const endpointName = endpoint.name!;
  const deployed = endpoint.deployedModels ?? [];
  const split = endpoint.trafficSplit ?? {};
  let current = deployed.find((d) => sameModel(d.model, model) && (split[d.id ?? ''] ?? 0) === 100);

  if (current) {
    c.reporter.line(`model ${idOf(model)} already serves all traffic of ${endpointName} (deployed model ${current.id}); not deploying again`);
  } else {
    const what = `deploying model ${idOf(model)} to endpoint "${o.modelName}" on ${machineType} (a few minutes to half an hour)`;
    const body: aiplatform_v1.Schema$GoogleCloudAiplatformV1DeployModelRequest = {
      deployedModel: {
        model,
        displayName: `${o.modelName}-${exp.version}`,
        dedicatedResources: { machineSpec: { machineType }, minReplicaCount: minReplicas, maxReplicaCount: maxReplicas },
      },
      // "0" is the model being deployed by this request.
      trafficSplit: { '0': 100 },
    };
    const res = await vertexOperation(
    c,
      {
        what,
        gcloud:
          `gcloud ai endpoints deploy-model ${idOf(endpointName)} --project=${c.project} --region=${c.region} --model=${idOf(model)} ` +
          `--display-name=${q(`${o.modelName}-${exp.version}`)} --machine-type=${machineType} --min-replica-count=${minReplicas} ` +
          `--max-replica-count=${maxReplicas} --traffic-split=0=100`,
        dryRun: { deployedModel: { id: 'DEPLOYED_MODEL_ID', model } },
      },
      (opts) => c.aiplatform().projects.locations.endpoints.deployModel({ endpoint: endpointName, requestBody: body }, opts),
    );
    current = (res.deployedModel as DeployedModel | undefined) ?? { id: 'DEPLOYED_MODEL_ID', model };
    // The models deployed before now get no traffic but would still bill node-hours.
    for (const old of deployed.filter((d) => d.id && d.id !== current!.id)) {
      await undeployModel(c, endpointName, old.id!, {});
    }
  }

  return {
    backend: 'gcp',
    project: c.project,
    region: c.region,
    modelName: o.modelName,
    endpoint: endpointName,
    model,
    deployedModelId: current.id ?? '',
    version: exp.version,
    exportDir: o.exportDir,
    artifactUri: exp.uri,
    labels: exp.labels,
    predictUrl: endpointPredictUrl(c.root('AIPLATFORM'), endpointName),
    machineType,
    deployedAt: new Date().toISOString(),
  };
}

async function undeployModel(c: CloudClient, endpointName: string, deployedModelId: string, trafficSplit: Record<string, number>): Promise<void> {
  const what = `undeploying deployed model ${deployedModelId} from ${idOf(endpointName)}`;
  const body: aiplatform_v1.Schema$GoogleCloudAiplatformV1UndeployModelRequest = {
    deployedModelId,
    ...(Object.keys(trafficSplit).length ? { trafficSplit } : {}),
  };
  await vertexOperation(
    c,
    {
      what,
      gcloud: `gcloud ai endpoints undeploy-model ${idOf(endpointName)} --project=${c.project} --region=${c.region} --deployed-model-id=${deployedModelId}`,
      retryPost: true,
      dryRun: {},
    },
    (o) => c.aiplatform().projects.locations.endpoints.undeployModel({ endpoint: endpointName, requestBody: body }, o),
  );
}

/**
 * The endpoint meant by `ref`: a full resource name, a numeric id in this client's region, or a
 * display name.
 */
export async function resolveEndpoint(c: CloudClient, ref: string): Promise<Endpoint> {
  const r = ref.trim();
  if (r === '') throw new UserError('no endpoint given: pass --endpoint with the endpoint\'s id, display name or resource name');
  let name: string | undefined;
  if (/^projects\/[^/]+\/locations\/[^/]+\/endpoints\/[^/]+$/.test(r)) {
    const region = r.split('/')[3];
    if (region !== c.region) throw new UserError(`endpoint ${r} is in ${region}, not ${c.region}: pass --region ${region}`);
    name = r;
  } else if (/^\d+$/.test(r)) {
    name = `${locationName(c)}/endpoints/${r}`;
  }
  if (name) {
    const n = name;
    return c.call<Endpoint>(
      { what: `looking up endpoint ${r}`, gcloud: `gcloud ai endpoints describe ${idOf(n)} --project=${c.project} --region=${c.region}`, dryRun: { name: n, deployedModels: [] } },
      (o) => c.aiplatform().projects.locations.endpoints.get({ name: n }, o),
    );
  }
  const found = await endpointsNamed(c, r);
  if (found.length === 0) {
    if (c.dryRun) return { name: `${locationName(c)}/endpoints/ENDPOINT_ID`, displayName: r, deployedModels: [] };
    throw new UserError(`no endpoint named "${r}" in project ${c.project}, region ${c.region}: deploy first (imgclass deploy --backend gcp), or check --region`);
  }
  if (found.length > 1) throw new UserError(`${found.length} endpoints are named "${r}" in ${c.region}: pass --endpoint with one's id (${found.map((e) => idOf(e.name)).join(', ')})`);
  return found[0]!;
}

/** The labels.txt beside the SavedModel the endpoint serves (most traffic), or [] when unknown. */
export async function endpointLabels(c: CloudClient, endpoint: Endpoint): Promise<string[]> {
  if (c.dryRun) return [];
  const split = endpoint.trafficSplit ?? {};
  const main = [...(endpoint.deployedModels ?? [])].sort((a, b) => (split[b.id ?? ''] ?? 0) - (split[a.id ?? ''] ?? 0))[0];
  if (!main?.model) return [];
  const model = await getModel(c, main.model);
  return model?.artifactUri ? labelsBeside(model.artifactUri) : [];
}

/** endpoints.predict with the codelab's body; the raw answer (checked by lib/predict). */
export async function predictOnVertex(c: CloudClient, endpointName: string, body: { instances: unknown[] }): Promise<aiplatform_v1.Schema$GoogleCloudAiplatformV1PredictResponse> {
  const requestBody: aiplatform_v1.Schema$GoogleCloudAiplatformV1PredictRequest = { instances: body.instances };
  return c.call<aiplatform_v1.Schema$GoogleCloudAiplatformV1PredictResponse>(
    {
      what: `predicting with endpoint ${idOf(endpointName)}`,
      gcloud: `gcloud ai endpoints predict ${idOf(endpointName)} --project=${c.project} --region=${c.region} --json-request=request.json`,
      // A prediction changes nothing: safe to repeat.
      retryPost: true,
      dryRun: { predictions: [] },
    },
    (o) => c.aiplatform().projects.locations.endpoints.predict({ endpoint: endpointName, requestBody }, o),
  );
}

export interface VertexUndeployOptions {
  /** The endpoint's display name. */
  modelName: string;
  /** Also delete the endpoint and the models imgclass uploaded to it. */
  delete?: boolean;
}

/** Undeploy every model of endpoint `modelName` (no more node-hours); with `delete`, remove it all. */
export async function undeployFromVertex(c: CloudClient, o: VertexUndeployOptions): Promise<string> {
  const found = await endpointsNamed(c, o.modelName);
  if (found.length === 0) {
    return c.dryRun ? `dry run: nothing more would be sent` : `no endpoint named "${o.modelName}" in ${c.region}: nothing to undeploy`;
  }
  const lines: string[] = [];
  for (const e of found) {
    const name = e.name!;
    const deployed = e.deployedModels ?? [];
    const split = e.trafficSplit ?? {};
    // Zero-traffic models first: the last one may take its traffic with it.
    const order = [...deployed].sort((a, b) => (split[a.id ?? ''] ?? 0) - (split[b.id ?? ''] ?? 0));
    for (const d of order) {
      await undeployModel(c, name, d.id!, {});
      lines.push(`undeployed ${d.id} (model ${idOf(d.model)}) from ${name}`);
    }
    if (deployed.length === 0) lines.push(`endpoint ${name} had no deployed model`);
    if (o.delete) {
      const what = `deleting endpoint ${name}`;
      await vertexOperation(
    c,
        { what, gcloud: `gcloud ai endpoints delete ${idOf(name)} --project=${c.project} --region=${c.region} --quiet`, retryPost: true, dryRun: {} },
        (opts) => c.aiplatform().projects.locations.endpoints.delete({ name }, opts),
      );
      lines.push(`deleted endpoint ${name}`);
    }
  }
  if (o.delete) lines.push(...(await deleteModels(c, o.modelName, found.flatMap((e) => e.deployedModels ?? []))));
  return lines.join('\n');
}

/**
 * The models imgclass uploaded under `displayName` (found by our label, so a model someone else
 * uploaded is never touched), plus those the endpoint served; each deleted.
 */
async function deleteModels(c: CloudClient, displayName: string, deployed: DeployedModel[]): Promise<string[]> {
  const listed = await c.call<aiplatform_v1.Schema$GoogleCloudAiplatformV1ListModelsResponse>(
    {
      what: `looking for the models imgclass uploaded as "${displayName}"`,
      gcloud: `gcloud ai models list --project=${c.project} --region=${c.region} --filter=labels.${IMGCLASS_LABEL}=model`,
      dryRun: { models: [] },
    },
    (o) => c.aiplatform().projects.locations.models.list({ parent: locationName(c), filter: `labels.${IMGCLASS_LABEL}="model"` }, o),
  );
  const names = new Set((listed.models ?? []).filter((m) => m.displayName === displayName && m.name).map((m) => m.name!));
  for (const d of deployed) {
    if (!d.model || [...names].some((n) => idOf(n) === idOf(d.model))) continue;
    const m = await getModel(c, d.model);
    if (m?.name && m.labels?.[IMGCLASS_LABEL] === 'model') names.add(m.name);
  }
  const lines: string[] = [];
  for (const name of names) {
    const what = `deleting model ${name}`;
    await vertexOperation(
    c,
      { what, gcloud: `gcloud ai models delete ${idOf(name)} --project=${c.project} --region=${c.region} --quiet`, retryPost: true, dryRun: {} },
      (opts) => c.aiplatform().projects.locations.models.delete({ name }, opts),
    );
    lines.push(`deleted model ${name}`);
  }
  return lines;
}
