/**
 * Benchmark of issue 5: wall time of the eight notebooks with our runner and with
 * `jupyter nbconvert --execute` (Debian's, on the tslab kernelspec kernel-setup.sh registers), in one
 * run, on the same parameters (data-samples/, local backend). Goal: ours ≤ 0.5x nbconvert.
 *   npm run bench:notebooks
 * nbconvert cannot inject parameters, so our runner's --prepare-only writes parameterized copies that
 * nbconvert then executes one by one, as papermill users do with nbconvert.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { runNotebookSuite, listNotebooks, declaredParameters } from '../lib/notebook-suite';
import { runNotebook } from '../lib/runner';
import { readNotebook } from '../lib/runner/notebook-io';
import { undeployLocal } from '../lib/serve/daemon';

const ROOT = path.resolve(__dirname, '../..');

async function main(): Promise<void> {
  const notebooksDir = path.join(ROOT, 'notebooks');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-bench-nb-'));
  // The notebooks import "../dist/lib/notebook": nbconvert runs each in its own folder, so the
  // prepared copies must sit one level below the repository root, like notebooks/ itself.
  const prepared = fs.mkdtempSync(path.join(ROOT, '.bench-nbconvert-'));
  try {
    const t0 = Date.now();
    const ours = await runNotebookSuite({ notebooksDir, outDir: path.join(tmp, 'ours'), parameters: { port: 0, undeploy: true } });
    const oursSeconds = (Date.now() - t0) / 1000;
    if (!ours.ok) throw new Error(`our runner failed on ${ours.failed}`);

    const prefix = path.join(tmp, 'jupyter');
    const setup = spawnSync('bash', [path.join(ROOT, 'kernel-setup.sh'), '--prefix', prefix], { encoding: 'utf8' });
    if (setup.status !== 0) throw new Error(`kernel-setup.sh failed: ${setup.stderr}`);
    const workDir = path.join(tmp, 'nbconvert-work');
    const inputs: string[] = [];
    for (const nb of listNotebooks(notebooksDir)) {
      const declared = new Set(declaredParameters(await readNotebook(nb)));
      const params = Object.fromEntries(Object.entries({ work_dir: workDir, port: 0, undeploy: true }).filter(([k]) => declared.has(k)));
      const out = path.join(prepared, path.basename(nb));
      await runNotebook({ input: nb, output: out, parameters: params, prepareOnly: true, progress: false });
      inputs.push(out);
    }
    const t1 = Date.now();
    for (const input of inputs) {
      const r = spawnSync(
        'jupyter',
        ['nbconvert', '--to', 'notebook', '--execute', '--ExecutePreprocessor.kernel_name=tslab', '--ExecutePreprocessor.timeout=-1', '--output', `${path.basename(input, '.ipynb')}.out.ipynb`, input],
        { encoding: 'utf8', env: { ...process.env, JUPYTER_PATH: path.join(prefix, 'share/jupyter') } },
      );
      if (r.status !== 0) throw new Error(`nbconvert failed on ${input}: ${r.stderr.slice(-2000)}`);
    }
    const nbconvertSeconds = (Date.now() - t1) / 1000;
    await undeployLocal(workDir);
    process.stdout.write(
      JSON.stringify({
        bench: 'notebooks',
        notebooks: inputs.length,
        ours_seconds: Number(oursSeconds.toFixed(1)),
        nbconvert_seconds: Number(nbconvertSeconds.toFixed(1)),
        ratio: Number((oursSeconds / nbconvertSeconds).toFixed(3)),
        goal: '<= 0.5',
        ours_per_notebook_s: Object.fromEntries(ours.results.map((r) => [path.basename(r.notebook, '.ipynb'), Number(r.result.seconds.toFixed(1))])),
      }) + '\n',
    );
  } finally {
    fs.rmSync(prepared, { recursive: true, force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
