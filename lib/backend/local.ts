/** The local backend: this machine, no account, no network (what imgclass did before the seam). */
import { preprocess } from '../preprocess';
import { train } from '../train';
import { deployLocal, undeployLocal, readDeployment } from '../serve/daemon';
import { predict } from '../predict';
import { checkLocalPrerequisites, formatChecks } from '../prerequisites';
import { UserError } from '../errors';
import type { Backend } from '.';

export function localBackend(): Backend {
  return {
    kind: 'local',
    async access(r) {
      const checks = await checkLocalPrerequisites(r.workDir);
      return { ready: checks.every((c) => c.ok), text: formatChecks(checks) };
    },
    preprocess,
    train,
    async describeTraining(o) {
      const replicas = o.workers ?? (await import('node:os')).availableParallelism();
      return `runs on this machine: TensorFlow.js, ${replicas} model replica(s) on worker threads; checkpoints and TensorBoard logs in ${o.modelDir}`;
    },
    async trainStatus() {
      throw new UserError('train-status follows Vertex AI training jobs (--backend gcp); a local run shows its progress where it runs, and its metrics are in MODEL_DIR/metrics.jsonl');
    },
    async deploy(r) {
      if (!r.workDir) throw new UserError('--work_dir is required for a local deployment (deployment.json and server.log go there)');
      return deployLocal({ workDir: r.workDir, exportDir: r.exportDir, port: r.port, host: r.host, modelName: r.modelName, backend: r.engine });
    },
    async predict(c) {
      let url: string;
      let labels: string[] = [];
      if (typeof c.target === 'string') url = c.target;
      else if (c.target.backend === 'gcp') throw new UserError('this deployment is on Vertex AI: predict with backend gcp');
      else {
        url = c.target.predictUrl;
        labels = c.target.labels;
      }
      const r = await predict(url, c.images, { keys: c.keys, timeoutMs: c.timeoutMs, modelName: c.modelName, onResponse: c.onResponse });
      return { ...r, labels, where: url };
    },
    async undeploy(r) {
      if (!r.workDir) throw new UserError('--work_dir is required: the folder holding deployment.json');
      return (await undeployLocal(r.workDir)).message;
    },
    currentDeployment: (workDir) => readDeployment(workDir),
  };
}
