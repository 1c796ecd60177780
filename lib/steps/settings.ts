/**
 * The notebooks' shared settings: which backend, and the one work folder the eight notebooks pass
 * their results through (01 writes dataset/, 05 tfrecords/, 06 model/ and export/, 07
 * deployment.json, 08 reads it). The layout is defined here once, so no notebook spells a path.
 */
import * as path from 'node:path';
import { UserError } from '../errors';
import * as storage from '../storage';
import { TRAIN_CSV, EVAL_CSV, LABELS_FILE } from '../dataset';
import { DEPLOYMENT_FILE, SERVER_LOG } from '../serve/daemon';
import { backendFor, type Backend, type BackendKind } from '../backend';

/** local | gcp, under the name the notebooks' library has always exported it by. */
export type { BackendKind as Backend } from '../backend';

/** The parameters every notebook declares (snake_case, as papermill passes them). */
export interface NotebookParameters {
  backend: string;
  work_dir: string;
  project?: string;
  bucket?: string;
  region?: string;
  /** gcp: print every request (and its gcloud command) instead of sending it. */
  dry_run?: boolean;
}

export interface WorkPaths {
  dataset: string;
  trainCsv: string;
  evalCsv: string;
  labels: string;
  datasetSample: string;
  tfrecordsSample: string;
  tfrecords: string;
  model: string;
  metrics: string;
  export: string;
  deployment: string;
  serverLog: string;
}

export interface Settings {
  backend: BackendKind;
  /** Absolute local path or gs:// URL. */
  workDir: string;
  project: string;
  bucket: string;
  region: string;
  paths: WorkPaths;
  /** gcp: print the requests instead of sending them. */
  dryRun: boolean;
  /** Things worth saying about these settings (shown by formatSettings). */
  notes: string[];
}

export function workPaths(workDir: string): WorkPaths {
  const j = (...p: string[]): string => storage.joinPath(workDir, ...p);
  return {
    dataset: j('dataset'),
    trainCsv: j('dataset', TRAIN_CSV),
    evalCsv: j('dataset', EVAL_CSV),
    labels: j('dataset', LABELS_FILE),
    datasetSample: j('dataset-sample'),
    tfrecordsSample: j('tfrecords-sample'),
    tfrecords: j('tfrecords'),
    model: j('model'),
    metrics: j('model', 'metrics.jsonl'),
    export: j('export'),
    deployment: j(DEPLOYMENT_FILE),
    serverLog: j(SERVER_LOG),
  };
}

/**
 * Check the common parameters and lay out the work folder. A relative work_dir is taken from the
 * kernel's folder (the notebooks' folder), as a path typed into the notebook would be.
 */
export function notebookSettings(p: NotebookParameters): Settings {
  if (p.backend !== 'local' && p.backend !== 'gcp') {
    throw new UserError(`backend "${p.backend}" is not known: set the parameter backend to "local" or "gcp"`);
  }
  const raw = (p.work_dir ?? '').trim();
  if (raw === '') throw new UserError('work_dir is empty: set it to a folder for the notebooks\' outputs, e.g. "../runs/work"');
  const workDir = storage.isGcsPath(raw) ? raw.replace(/\/+$/, '') : path.resolve(raw);
  const notes: string[] = [];
  if (p.backend === 'gcp' && !storage.isGcsPath(workDir)) {
    notes.push('the gcp backend reads and writes Cloud Storage: set work_dir to a gs:// folder, e.g. gs://BUCKET/imgclass');
  }
  if (p.backend === 'local' && storage.isGcsPath(workDir)) {
    notes.push('work_dir is on Cloud Storage: the local backend reads and writes it through the network, which is slow');
  }
  return {
    backend: p.backend,
    workDir,
    project: (p.project ?? '').trim(),
    bucket: (p.bucket ?? '').trim().replace(/^gs:\/\//, '').replace(/\/+$/, ''),
    region: (p.region ?? '').trim() || 'us-central1',
    paths: workPaths(workDir),
    dryRun: p.dry_run === true,
    notes,
  };
}

/** Two or three lines for the top of a notebook: backend, work folder, cloud project. */
export function formatSettings(s: Settings): string {
  const lines = [`backend: ${s.backend}`, `work folder: ${s.workDir}`];
  if (s.backend === 'gcp') lines.push(`project: ${s.project || '(not set)'}, bucket: ${s.bucket || '(not set)'}, region: ${s.region}${s.dryRun ? ' (dry run: requests are printed, not sent)' : ''}`);
  for (const n of s.notes) lines.push(`note: ${n}`);
  return lines.join('\n') + '\n';
}

/** The backend of the notebook's settings, its cloud lines drawn in the cell. */
export function backendOf(s: Settings): Backend {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { notebookReporter } = require('../cloud/report') as typeof import('../cloud/report');
  return backendFor({ backend: s.backend, project: s.project, region: s.region, dryRun: s.dryRun, reporter: notebookReporter() });
}
