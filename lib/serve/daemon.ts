/**
 * Section 7 on the local backend, "deploy": the prediction server as a background process that
 * outlives whoever started it (a notebook's kernel, a shell script), the way a model deployed to the
 * cloud stays up after the deploying notebook closes. The work folder records it in
 * deployment.json (URL, pid, model, version), which the predict step reads and undeploy removes;
 * the server's output goes to server.log beside it.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as storage from '../storage';
import { UserError, errorMessage } from '../errors';
import { lockFolder, withLock } from '../folder-lock';
import { DEFAULT_MODEL_NAME } from '../predict';
import type { BackendName } from '../engine/backend';

export const DEPLOYMENT_FILE = 'deployment.json';
export const SERVER_LOG = 'server.log';

export interface Deployment {
  /** Base URL, e.g. http://127.0.0.1:8501 */
  url: string;
  predictUrl: string;
  pid: number;
  modelName: string;
  /** The served export version (its folder name). */
  version: string;
  labels: string[];
  exportDir: string;
  log: string;
  startedAt: string;
}

export interface DeployLocalOptions {
  /** Local folder for deployment.json and server.log. */
  workDir: string;
  /** Export root (its newest version is served) or one version folder. */
  exportDir: string;
  /** Default 8501 (TensorFlow Serving's REST port); 0 picks a free port. */
  port?: number;
  host?: string;
  modelName?: string;
  backend?: BackendName;
  /** How long the server may take to load the model and answer /healthz; default 120 s. */
  startTimeoutMs?: number;
}

function localWorkDir(workDir: string): string {
  if (storage.isGcsPath(workDir)) {
    throw new UserError(`work folder ${workDir} is on Cloud Storage; a local deployment needs a local folder for ${DEPLOYMENT_FILE} and ${SERVER_LOG}`);
  }
  return path.resolve(workDir);
}

/**
 * Whether `pid` runs and is not a zombie: a server that exited but that its parent (the process that
 * deployed it, still running) has not reaped yet still answers kill(pid, 0).
 */
export function processAlive(pid: number): boolean {
  if (!storage.processAlive(pid)) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true; // no /proc (not Linux): kill(0) is all we know
  }
}

/**
 * Whether `pid` is an `imgclass serve` process, so a pid recorded long ago and since reused by an
 * unrelated program is never signalled. Without /proc the recorded pid is trusted.
 */
function isServeProcess(pid: number): boolean {
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return !fs.existsSync('/proc/self');
  }
  const args = cmdline.split('\0');
  return args.some((a) => /cli\.js$/.test(a)) && args.includes('serve');
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!processAlive(pid)) return true;
    await sleep(50);
  }
  return !processAlive(pid);
}

function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

async function readLog(log: string): Promise<string> {
  try {
    return await fsp.readFile(log, 'utf8');
  } catch {
    return '';
  }
}

/** The deployment recorded in `workDir`; a UserError saying to deploy first when there is none. */
export async function readDeployment(workDir: string): Promise<Deployment> {
  const file = path.join(localWorkDir(workDir), DEPLOYMENT_FILE);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    throw new UserError(`no deployment in ${workDir} (${file} is missing): deploy the model first (notebook 07-deploy, or imgclass deploy)`);
  }
  try {
    return JSON.parse(text) as Deployment;
  } catch (err) {
    throw new UserError(`${file} is not valid JSON (${errorMessage(err)}); deploy again to rewrite it`);
  }
}

async function labelsOf(exportDir: string, version: string): Promise<string[]> {
  for (const p of [storage.joinPath(exportDir, 'labels.txt'), storage.joinPath(exportDir, version, 'labels.txt')]) {
    if (await storage.exists(p)) return (await storage.readText(p)).split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l !== '');
  }
  return [];
}

/**
 * Start `imgclass serve` in the background for `exportDir`, wait until it answers /healthz, and
 * record it in workDir/deployment.json. A deployment already recorded there is stopped first, so
 * deploying again replaces it.
 */
export async function deployLocal(opts: DeployLocalOptions): Promise<Deployment> {
  // One deploy per work folder at a time: two would each stop the other's server and race on deployment.json.
  const lock = lockFolder(localWorkDir(opts.workDir), { command: 'imgclass deploy', what: 'work folder' });
  return withLock(lock, () => deployLocked(opts));
}

async function deployLocked(opts: DeployLocalOptions): Promise<Deployment> {
  const workDir = localWorkDir(opts.workDir);
  const modelName = opts.modelName ?? DEFAULT_MODEL_NAME;
  const port = opts.port ?? 8501;
  const timeoutMs = opts.startTimeoutMs ?? 120_000;
  if (!(await storage.exists(opts.exportDir))) {
    throw new UserError(`export folder ${opts.exportDir} does not exist: train with an export folder first (notebook 06-train, or imgclass train --export_dir)`);
  }
  await fsp.mkdir(workDir, { recursive: true });
  await undeployLocal(workDir);

  // The server runs in workDir: a relative export path must not change meaning on the way.
  const exportDir = storage.isGcsPath(opts.exportDir) ? opts.exportDir : path.resolve(opts.exportDir);
  const log = path.join(workDir, SERVER_LOG);
  const cli = path.join(__dirname, '..', 'cli.js');
  const args = [cli, 'serve', '--model_dir', exportDir, '--port', String(port), '--model_name', modelName];
  if (opts.host) args.push('--host', opts.host);
  if (opts.backend) args.push('--backend', opts.backend);
  let fd: number;
  try {
    fd = fs.openSync(log, 'w');
  } catch (err) {
    throw storage.writeError(err, log);
  }
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let child: ReturnType<typeof spawn>;
  try {
    // detached: its own process group and session, so stopping the notebook kernel (or Ctrl-C in
    // the shell that ran the script) does not take the server down with it.
    child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd], cwd: workDir });
  } finally {
    fs.closeSync(fd);
  }
  child.on('exit', (code, signal) => (exited = { code, signal }));
  child.on('error', () => (exited = { code: null, signal: null }));
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${process.execPath} ${args.join(' ')}`);

  const failed = async (why: string): Promise<never> => {
    if (!exited && processAlive(pid)) {
      process.kill(pid, 'SIGKILL');
      await waitForExit(pid, 2000);
    }
    throw new UserError(`the prediction server ${why}; its log (${log}) ends with:\n${tail(await readLog(log))}`);
  };

  // The server prints its URL once it listens (port 0 means only it knows the port).
  const until = Date.now() + timeoutMs;
  let url: string | undefined;
  let version = '';
  while (!url) {
    const m = /^serving model "[^"]*" version (\S+) .* at (http:\/\/\S+)$/m.exec(await readLog(log));
    if (m) {
      version = m[1]!;
      url = m[2]!;
      break;
    }
    if (exited || !processAlive(pid)) return failed(`exited before it was ready (exit code ${exited?.code ?? '?'})`);
    if (Date.now() > until) return failed(`did not start within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
  let health: { status?: string; version?: string } | undefined;
  while (!health) {
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
      if (res.ok) health = (await res.json()) as typeof health;
    } catch {
      // not answering yet
    }
    if (health) break;
    if (exited || !processAlive(pid)) return failed(`exited before answering ${url}/healthz`);
    if (Date.now() > until) return failed(`did not answer ${url}/healthz within ${timeoutMs / 1000} s`);
    await sleep(100);
  }

  const deployment: Deployment = {
    url,
    predictUrl: `${url}/v1/models/${modelName}:predict`,
    pid,
    modelName,
    version: health.version ?? version,
    labels: await labelsOf(exportDir, health.version ?? version),
    exportDir,
    log,
    startedAt: new Date().toISOString(),
  };
  await storage.writeFile(path.join(workDir, DEPLOYMENT_FILE), JSON.stringify(deployment, null, 2) + '\n', { overwrite: true });
  return deployment;
}

export interface UndeployResult {
  /** True when workDir held a deployment record (whether or not its server was still running). */
  recorded: boolean;
  /** True when a running server was stopped. */
  stopped: boolean;
  pid?: number;
  /** What happened, one line. */
  message: string;
}

/**
 * Stop the server recorded in workDir/deployment.json (SIGTERM, which lets it finish requests in
 * flight; SIGKILL if it is still there after `timeoutMs`) and remove the file. Nothing recorded:
 * nothing to do. Safe to call any number of times.
 */
export async function undeployLocal(workDir: string, opts: { timeoutMs?: number } = {}): Promise<UndeployResult> {
  const dir = localWorkDir(workDir);
  const file = path.join(dir, DEPLOYMENT_FILE);
  if (!fs.existsSync(file)) return { recorded: false, stopped: false, message: `no deployment recorded in ${dir}` };
  let pid: number | undefined;
  try {
    pid = (JSON.parse(await fsp.readFile(file, 'utf8')) as Partial<Deployment>).pid;
  } catch {
    pid = undefined; // unreadable: nothing we can safely stop; the file goes
  }
  let stopped = false;
  let message: string;
  if (typeof pid === 'number' && Number.isInteger(pid) && pid > 0 && processAlive(pid) && isServeProcess(pid)) {
    process.kill(pid, 'SIGTERM');
    if (!(await waitForExit(pid, opts.timeoutMs ?? 10_000))) {
      process.kill(pid, 'SIGKILL');
      await waitForExit(pid, 2000);
    }
    stopped = !processAlive(pid);
    if (!stopped) throw new Error(`the prediction server (pid ${pid}) did not stop after SIGKILL`);
    message = `stopped the prediction server (pid ${pid})`;
  } else {
    message = `the recorded server${pid ? ` (pid ${pid})` : ''} was not running`;
  }
  await fsp.rm(file, { force: true });
  return { recorded: true, stopped, pid, message };
}
