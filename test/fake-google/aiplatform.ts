/**
 * Vertex AI (aiplatform v1) in the fake: models, endpoints with deployed models and traffic
 * split, online prediction through a test-provided predictor, custom jobs, and the long-running
 * operations these return. Resource names carry the project NUMBER, as the real API returns them.
 */
import type { Core, Handler, HandlerContext } from './core';
import { vertexFilter } from './core';
import { GoogleError, badValue, failedPrecondition, notFound } from './errors';
import type { CustomJob, DeployedModel, Endpoint, Model } from './state';

const T = 'type.googleapis.com/google.cloud.aiplatform.v1.';

function genericMetadata(core: Core, type: string): Record<string, unknown> {
  const t = core.now();
  return { '@type': T + type, genericMetadata: { createTime: t, updateTime: t } };
}

function location(c: HandlerContext, param = 'parent'): string {
  return c.core.canonical(c.params[param] as string);
}

function getModel(core: Core, name: string): Model {
  const m = core.state.models.get(core.canonical(name));
  if (!m) throw notFound(`The Model "${name}" does not exist.`);
  return m;
}

function getEndpoint(core: Core, name: string): Endpoint {
  const e = core.state.endpoints.get(core.canonical(name));
  if (!e) throw notFound(`The Endpoint "${name}" does not exist.`);
  return e;
}

function checkTraffic(split: Record<string, number>, ids: string[], what: string): void {
  let sum = 0;
  for (const [id, pct] of Object.entries(split)) {
    if (!ids.includes(id)) throw badValue(`${what}: traffic split names DeployedModel "${id}", which is not on the Endpoint.`);
    if (!Number.isInteger(pct) || pct < 0 || pct > 100) throw badValue(`${what}: traffic percentage ${pct} for "${id}" is not an integer in 0..100.`);
    sum += pct;
  }
  if (Object.keys(split).length && sum !== 100) throw badValue(`${what}: traffic split percentages must add up to 100, got ${sum}.`);
}

function newestFirst<T extends { createTime?: string | null }>(a: T, b: T): number {
  return String(a.createTime ?? '').localeCompare(String(b.createTime ?? ''));
}

const upload: Handler = (c) => {
  const parent = location(c);
  const m = c.body.model as Model;
  const id = (c.body.modelId as string | undefined) ?? c.core.newId();
  const name = `${parent}/models/${id}`;
  if (c.core.state.models.has(name)) throw new GoogleError(409, 'ALREADY_EXISTS', `Model ${name} already exists.`);
  const opName = `${name}/operations/${c.core.newId()}`;
  return c.core.startOperation(opName, genericMetadata(c.core, 'UploadModelOperationMetadata'), () => {
    const t = c.core.now();
    const model: Model = {
      ...m,
      name,
      versionId: '1',
      versionAliases: ['default'],
      createTime: t,
      updateTime: t,
      versionCreateTime: t,
      versionUpdateTime: t,
      etag: `AMEw9yP${id.slice(-6)}=`,
      supportedDeploymentResourcesTypes: ['DEDICATED_RESOURCES'],
      supportedInputStorageFormats: ['jsonl', 'bigquery', 'csv', 'tf-record', 'tf-record-gzip', 'file-list'],
      supportedOutputStorageFormats: ['jsonl', 'bigquery'],
      modelSourceInfo: { sourceType: 'CUSTOM' },
    };
    c.core.state.models.set(name, model);
    return { response: { '@type': T + 'UploadModelResponse', model: name, modelVersionId: '1' } };
  });
};

const modelsList: Handler = (c) => {
  const parent = location(c);
  const keep = vertexFilter(c.query.filter as string | undefined, 'model');
  const all = [...c.core.state.models.values()].filter((m) => m.name?.startsWith(`${parent}/models/`) && keep(m)).sort(newestFirst);
  const page = c.core.page(all, c.query);
  return { models: page.items, ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}) };
};

const modelsDelete: Handler = (c) => {
  const model = getModel(c.core, c.params.name as string);
  if (model.deployedModels?.length) {
    throw failedPrecondition(
      `The Model "${model.name}" is deployed or being deployed at the following Endpoint(s): ${model.deployedModels.map((d) => d.endpoint).join(', ')}. Undeploy it first.`,
    );
  }
  const loc = (model.name as string).replace(/\/models\/[^/]+$/, '');
  return c.core.startOperation(`${loc}/operations/${c.core.newId()}`, genericMetadata(c.core, 'DeleteOperationMetadata'), () => {
    c.core.state.models.delete(model.name as string);
    return { response: { '@type': 'type.googleapis.com/google.protobuf.Empty' } };
  });
};

const endpointsCreate: Handler = (c) => {
  const parent = location(c);
  const id = (c.query.endpointId as string | undefined) ?? c.core.newId();
  const name = `${parent}/endpoints/${id}`;
  if (c.core.state.endpoints.has(name)) throw new GoogleError(409, 'ALREADY_EXISTS', `Endpoint ${name} already exists.`);
  const e = c.body as Endpoint;
  return c.core.startOperation(`${name}/operations/${c.core.newId()}`, genericMetadata(c.core, 'CreateEndpointOperationMetadata'), () => {
    const t = c.core.now();
    const endpoint: Endpoint = { ...e, name, createTime: t, updateTime: t, etag: `AMEw9yN${id.slice(-6)}=` };
    delete endpoint.deployedModels;
    delete endpoint.trafficSplit;
    c.core.state.endpoints.set(name, endpoint);
    return { response: { '@type': T + 'Endpoint', ...endpoint } };
  });
};

const endpointsList: Handler = (c) => {
  const parent = location(c);
  const keep = vertexFilter(c.query.filter as string | undefined, 'endpoint');
  const all = [...c.core.state.endpoints.values()].filter((e) => e.name?.startsWith(`${parent}/endpoints/`) && keep(e)).sort(newestFirst);
  const page = c.core.page(all, c.query);
  return { endpoints: page.items, ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}) };
};

const endpointsDelete: Handler = (c) => {
  const e = getEndpoint(c.core, c.params.name as string);
  if (e.deployedModels?.length) {
    throw failedPrecondition(`Endpoint "${e.name}" has deployed models; undeploy them before deleting the Endpoint.`);
  }
  const loc = (e.name as string).replace(/\/endpoints\/[^/]+$/, '');
  return c.core.startOperation(`${loc}/operations/${c.core.newId()}`, genericMetadata(c.core, 'DeleteOperationMetadata'), () => {
    c.core.state.endpoints.delete(e.name as string);
    return { response: { '@type': 'type.googleapis.com/google.protobuf.Empty' } };
  });
};

const deployModel: Handler = (c) => {
  const e = getEndpoint(c.core, c.params.endpoint as string);
  const req = c.body.deployedModel as DeployedModel;
  const model = getModel(c.core, req.model as string);
  if (!req.dedicatedResources && !req.automaticResources) {
    throw badValue(`Model "${model.name}" supports only DEDICATED_RESOURCES; deployedModel.dedicatedResources must be set.`);
  }
  if (req.automaticResources && !model.supportedDeploymentResourcesTypes?.includes('AUTOMATIC_RESOURCES')) {
    throw badValue(`Model "${model.name}" does not support AUTOMATIC_RESOURCES.`);
  }
  const split = (c.body.trafficSplit ?? {}) as Record<string, number>;
  const existing = (e.deployedModels ?? []).map((d) => d.id as string);
  checkTraffic(split, [...existing, '0'], 'deployModel');
  const id = req.id ?? c.core.newId().slice(-19);
  return c.core.startOperation(`${e.name as string}/operations/${c.core.newId()}`, genericMetadata(c.core, 'DeployModelOperationMetadata'), () => {
    const t = c.core.now();
    const deployed: DeployedModel = {
      ...req,
      id,
      model: model.name,
      modelVersionId: model.versionId ?? '1',
      displayName: req.displayName ?? model.displayName,
      createTime: t,
    };
    e.deployedModels = [...(e.deployedModels ?? []), deployed];
    if (Object.keys(split).length) {
      e.trafficSplit = Object.fromEntries(Object.entries(split).map(([k, v]) => [k === '0' ? id : k, v]));
    } else if (!existing.length) {
      // The first model on an endpoint takes all traffic when the request sets no split.
      e.trafficSplit = { [id]: 100 };
    }
    e.updateTime = t;
    model.deployedModels = [...(model.deployedModels ?? []), { endpoint: e.name, deployedModelId: id }];
    return { response: { '@type': T + 'DeployModelResponse', deployedModel: deployed } };
  });
};

const undeployModel: Handler = (c) => {
  const e = getEndpoint(c.core, c.params.endpoint as string);
  const id = c.body.deployedModelId as string;
  const deployed = (e.deployedModels ?? []).find((d) => d.id === id);
  if (!deployed) throw notFound(`DeployedModel "${id}" does not exist on Endpoint "${e.name}".`);
  const split = c.body.trafficSplit as Record<string, number> | undefined;
  const others = (e.deployedModels ?? []).filter((d) => d.id !== id).map((d) => d.id as string);
  if (split && Object.keys(split).length) checkTraffic(split, others, 'undeployModel');
  const traffic = split && Object.keys(split).length ? split : e.trafficSplit ?? {};
  if (others.length && (traffic[id] ?? 0) > 0) {
    throw failedPrecondition(`DeployedModel "${id}" has ${traffic[id]}% of the Endpoint's traffic; pass a trafficSplit that moves it to other DeployedModels.`);
  }
  return c.core.startOperation(`${e.name as string}/operations/${c.core.newId()}`, genericMetadata(c.core, 'UndeployModelOperationMetadata'), () => {
    e.deployedModels = (e.deployedModels ?? []).filter((d) => d.id !== id);
    // An empty map is left out of the JSON, as proto3 does.
    if (others.length) e.trafficSplit = Object.fromEntries(Object.entries(traffic).filter(([k]) => k !== id));
    else delete e.trafficSplit;
    e.updateTime = c.core.now();
    const model = c.core.state.models.get(deployed.model as string);
    if (model) model.deployedModels = (model.deployedModels ?? []).filter((r) => !(r.endpoint === e.name && r.deployedModelId === id));
    return { response: { '@type': T + 'UndeployModelResponse' } };
  });
};

const predict: Handler = async (c) => {
  const e = getEndpoint(c.core, c.params.endpoint as string);
  const split = e.trafficSplit ?? {};
  const serving = (e.deployedModels ?? [])
    .filter((d) => (split[d.id as string] ?? 0) > 0)
    .sort((a, b) => (split[b.id as string] ?? 0) - (split[a.id as string] ?? 0))[0];
  if (!serving) {
    // Not verified against the live service: the message text is ours; the status is the one
    // Google's error model prescribes for a resource not in the state the call needs.
    throw failedPrecondition(`Endpoint ${e.name as string} has no deployed model that receives traffic.`);
  }
  if (!c.core.predictor) throw new GoogleError(500, 'INTERNAL', 'fake-google: no predictor set; call fake.setPredictor() first', [], true);
  const predictions = await c.core.predictor(e.name as string, c.body.instances as unknown[], c.body.parameters);
  const model = c.core.state.models.get(serving.model as string);
  return {
    predictions,
    deployedModelId: serving.id,
    model: serving.model,
    modelDisplayName: model?.displayName ?? serving.displayName,
    modelVersionId: serving.modelVersionId ?? '1',
  };
};

function getCustomJob(core: Core, name: string): CustomJob & { plan?: string[] } {
  const j = core.state.customJobs.get(core.canonical(name));
  if (!j) throw notFound(`The CustomJob "${name}" does not exist.`);
  return j;
}

/** The job as the API shows it (without the fake's plan of states to come). */
function publicJob(j: CustomJob & { plan?: string[] }): CustomJob {
  const { plan: _plan, ...job } = j;
  return job;
}

const customJobsCreate: Handler = (c) => {
  const parent = location(c);
  const name = `${parent}/customJobs/${c.core.newId()}`;
  const t = c.core.now();
  const job: CustomJob & { plan?: string[] } = { ...(c.body as CustomJob), name, state: c.core.state.customJobPlan[0], createTime: t, updateTime: t };
  job.plan = c.core.state.customJobPlan.slice(1);
  c.core.state.customJobs.set(name, job);
  return publicJob(job);
};

const customJobsGet: Handler = (c) => {
  const job = getCustomJob(c.core, c.params.name as string);
  const next = job.plan?.shift();
  if (next) {
    const t = c.core.now();
    job.state = next;
    job.updateTime = t;
    if (next === 'JOB_STATE_RUNNING') job.startTime = t;
    if (/SUCCEEDED|FAILED|CANCELLED/.test(next)) job.endTime = t;
    if (next === 'JOB_STATE_FAILED') job.error = { code: 3, message: 'The replica workerpool0-0 exited with a non-zero status of 1.' };
  }
  return publicJob(job);
};

const customJobsCancel: Handler = (c) => {
  const job = getCustomJob(c.core, c.params.name as string);
  if (/SUCCEEDED|FAILED|CANCELLED/.test(job.state ?? '')) throw failedPrecondition(`Cannot cancel CustomJob "${job.name}" in state ${job.state}.`);
  job.state = 'JOB_STATE_CANCELLING';
  job.plan = ['JOB_STATE_CANCELLED'];
  return {};
};

const operationsGet: Handler = (c) => c.core.pollOperation(c.params.name as string);

export const aiplatformHandlers: Record<string, Handler> = {
  'aiplatform.projects.locations.models.upload': upload,
  'aiplatform.projects.locations.models.list': modelsList,
  'aiplatform.projects.locations.models.get': (c) => getModel(c.core, c.params.name as string),
  'aiplatform.projects.locations.models.delete': modelsDelete,
  'aiplatform.projects.locations.models.operations.get': operationsGet,
  'aiplatform.projects.locations.endpoints.create': endpointsCreate,
  'aiplatform.projects.locations.endpoints.list': endpointsList,
  'aiplatform.projects.locations.endpoints.get': (c) => getEndpoint(c.core, c.params.name as string),
  'aiplatform.projects.locations.endpoints.delete': endpointsDelete,
  'aiplatform.projects.locations.endpoints.deployModel': deployModel,
  'aiplatform.projects.locations.endpoints.undeployModel': undeployModel,
  'aiplatform.projects.locations.endpoints.predict': predict,
  'aiplatform.projects.locations.endpoints.operations.get': operationsGet,
  'aiplatform.projects.locations.operations.get': operationsGet,
  'aiplatform.projects.locations.customJobs.create': customJobsCreate,
  'aiplatform.projects.locations.customJobs.get': customJobsGet,
  'aiplatform.projects.locations.customJobs.cancel': customJobsCancel,
  'aiplatform.projects.locations.customJobs.operations.get': operationsGet,
};
