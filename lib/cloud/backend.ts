/**
 * The gcp backend: the Backend interface on Google Cloud: section 2 (access), section 5 (a Dataflow
 * job, lib/cloud/dataflow/), sections 3 and 6 (a Vertex AI custom job on Cloud TPU,
 * lib/cloud/training/) and sections 7-8 (Vertex AI endpoints).
 */
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';
import { predictThrough, checkedRequest } from '../predict';
import { DEPLOYMENT_FILE } from '../serve/daemon';
import type { Backend, AnyDeployment } from '../backend';
import { CloudClient, CloudOptions } from './client';
import { checkAccess, formatAccessReport } from './access';
import { runDataflowPreprocess } from './dataflow/run';
import { trainOnVertex, trainStatusOnVertex, describeVertexTraining } from './training/job';
import { deployToVertex, resolveEndpoint, endpointLabels, predictOnVertex, undeployFromVertex, VertexDeployment } from './endpoints';


function deploymentFile(workDir: string): string {
  return storage.joinPath(workDir, DEPLOYMENT_FILE);
}

export function gcpBackend(o: CloudOptions): Backend {
  const c = new CloudClient(o);
  return {
    kind: 'gcp',
    async access(r) {
      if (!r.bucket) throw new UserError('no bucket given: pass --bucket gs://BUCKET (notebooks: the `bucket` parameter)');
      const report = await checkAccess(c, { bucket: r.bucket, serviceAccount: r.serviceAccount, enableApis: r.enableApis, grant: r.grant });
      return { ready: report.ready && !c.dryRun, text: formatAccessReport(report, c.dryRun) };
    },
    preprocess: (r) => runDataflowPreprocess(c, { ...r, pollMs: c.pollMs }),
    train: (o) => trainOnVertex(c, o),
    trainStatus: (r) => trainStatusOnVertex(c, r),
    describeTraining: (o) => describeVertexTraining(c, o),
    async deploy(r) {
      const d = await deployToVertex(c, {
        exportDir: r.exportDir, modelName: r.modelName, machineType: r.machineType,
        minReplicas: r.minReplicas, maxReplicas: r.maxReplicas, servingImage: r.servingImage,
      });
      if (r.workDir) {
        if (c.dryRun) c.reporter.line(`dry run: would record the deployment in ${deploymentFile(r.workDir)}`);
        else await storage.writeFile(deploymentFile(r.workDir), JSON.stringify(d, null, 2) + '\n', { overwrite: true });
      }
      return d;
    },
    async predict(call) {
      let endpoint: string;
      let labels: string[];
      if (typeof call.target === 'string') {
        const e = await resolveEndpoint(c, call.target);
        endpoint = e.name!;
        labels = await endpointLabels(c, e);
      } else if (call.target.backend === 'gcp') {
        endpoint = call.target.endpoint;
        labels = call.target.labels;
      } else {
        throw new UserError(`this deployment is a local server (${call.target.url}): predict with backend local`);
      }
      const where = `Vertex AI endpoint ${endpoint}`;
      if (c.dryRun) {
        // The request is printed, not sent: there is no answer to read.
        await predictOnVertex(c, endpoint, await checkedRequest(call.images, call.keys));
        return { predictions: [], labels, where };
      }
      const r = await predictThrough((body) => predictOnVertex(c, endpoint, body), where, call.images, { keys: call.keys, onResponse: call.onResponse });
      const named = r.predictions.map((p) => (p.label === undefined && labels[p.classes] !== undefined ? { ...p, label: labels[p.classes] } : p));
      return { predictions: named, labels, where };
    },
    async undeploy(r) {
      let name = r.modelName;
      if (!name && r.workDir) name = (await readVertexDeployment(r.workDir)).modelName;
      if (!name) throw new UserError('which endpoint? pass --model_name NAME (the display name deploy used)');
      return undeployFromVertex(c, { modelName: name, delete: r.delete });
    },
    currentDeployment: (workDir) => readVertexDeployment(workDir),
  };
}

/** The Vertex AI deployment recorded in `workDir` by deploy. */
export async function readVertexDeployment(workDir: string): Promise<VertexDeployment> {
  const file = deploymentFile(workDir);
  if (!(await storage.exists(file))) {
    throw new UserError(`no deployment in ${workDir} (${file} is missing): deploy the model first (notebook 07-deploy, or imgclass deploy --backend gcp --work_dir ${workDir})`);
  }
  let d: AnyDeployment;
  try {
    d = JSON.parse(await storage.readText(file)) as AnyDeployment;
  } catch (err) {
    throw new UserError(`${file} is not valid JSON (${errorMessage(err)}); deploy again to rewrite it`);
  }
  if ((d as VertexDeployment).backend !== 'gcp') throw new UserError(`${file} records a local deployment, not a Vertex AI one: use backend local, or deploy with backend gcp`);
  return d as VertexDeployment;
}
