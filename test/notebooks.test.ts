/**
 * The eight notebooks: as stored (no outputs, a parameters cell, the compiled library imported
 * first), run headless end to end by scripts/run-notebooks.sh on data-samples/, notebook 05 on
 * the gcp backend against the fake Google API (and in dry run), and one notebook through real
 * Jupyter (nbconvert) with the kernel kernel-setup.sh registers.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir, removeDir, REPO_ROOT, CLI } from './helpers';
import { listNotebooks, declaredParameters, stripOutputs } from '../lib/notebook-suite';
import { parseNotebook, serializeNotebook, type Notebook, type CodeCell, type Output } from '../lib/runner/notebook-io';
import { findDeclarations, hasTag } from '../lib/runner/parameterize';
import { processAlive } from '../lib/serve/daemon';
import { VEGA_LITE_MIME } from '../lib/charts';
import { dataflowFixture, runCli, cliEnv, BUCKET, PROJECT, type Run } from './dataflow-fixture';

const dir = tempDir('imgclass-notebooks-');
after(() => removeDir(dir));

const NOTEBOOKS_DIR = path.join(REPO_ROOT, 'notebooks');
const NAMES = [
  '01-data.ipynb',
  '02-service-account.ipynb',
  '03-trainer.ipynb',
  '04-preprocess-local.ipynb',
  '05-preprocess-at-scale.ipynb',
  '06-train.ipynb',
  '07-deploy.ipynb',
  '08-predict.ipynb',
];
const IMPORT = 'import * as ic from "../dist/lib/notebook";';

const read = (p: string): Notebook => parseNotebook(fs.readFileSync(p, 'utf8'), p);
const codeCells = (nb: Notebook): CodeCell[] => nb.cells.filter((c): c is CodeCell => c.cell_type === 'code');
const outputs = (nb: Notebook): Output[] => codeCells(nb).flatMap((c) => c.outputs);
const stdout = (nb: Notebook): string =>
  outputs(nb).map((o) => (o.output_type === 'stream' && o.name === 'stdout' ? o.text : '')).join('');
const displays = (nb: Notebook): Record<string, unknown>[] =>
  outputs(nb).flatMap((o) => (o.output_type === 'display_data' ? [o.data] : []));

/** nbformat's validation, and (for stored notebooks) nbformat's own layout, so diffs stay minimal. */
function nbformatCheck(files: string[], sameLayout: boolean): void {
  const script = [
    'import nbformat, sys',
    'for p in sys.argv[2:]:',
    '    text = open(p, encoding="utf-8").read()',
    '    nb = nbformat.reads(text, as_version=4)',
    '    nbformat.validate(nb)',
    '    if sys.argv[1] == "1" and nbformat.writes(nb) + "\\n" != text:',
    '        print("not in nbformat layout: " + p); sys.exit(3)',
  ].join('\n');
  const r = spawnSync('/usr/bin/python3', ['-c', script, sameLayout ? '1' : '0', ...files], { encoding: 'utf8' });
  assert.equal(r.status, 0, `nbformat: ${r.stdout}${r.stderr}`);
}

/** Entries of `{ … }` literals (innermost braces) that are a bare name rather than `key: value`. */
function shorthandProperties(src: string): string[] {
  return [...src.matchAll(/\{([^{}]*)\}/g)].flatMap((m) =>
    m[1]!.split(',').map((e) => e.trim()).filter((e) => /^[A-Za-z_$][\w$]*$/.test(e)),
  );
}

test('the notebooks are stored without outputs, tagged parameters, importing the compiled library first', () => {
  const files = listNotebooks(NOTEBOOKS_DIR);
  assert.deepEqual(files.map((f) => path.basename(f)), NAMES);
  nbformatCheck(files, true);
  const defaults = new Map<string, Map<string, string | undefined>>();
  for (const f of files) {
    const nb = read(f);
    const name = path.basename(f);
    assert.equal(nb.metadata.papermill, undefined, `${name}: no run metadata`);
    assert.deepEqual((nb.metadata.kernelspec as { name?: string }).name, 'tslab');
    for (const c of codeCells(nb)) {
      assert.deepEqual([c.execution_count, c.outputs], [null, []], `${name}: a cell has outputs: ${c.source.slice(0, 40)}`);
      assert.equal(c.metadata.papermill, undefined);
      assert.ok(!hasTag(c, 'injected-parameters'), `${name}: an injected-parameters cell was committed`);
    }
    assert.equal(nb.cells[0]!.cell_type, 'markdown');
    assert.match(nb.cells[0]!.source, new RegExp(`^# ${Number(name.slice(0, 2))}\\. `), `${name} opens with its section`);
    assert.equal(codeCells(nb)[0]!.source, IMPORT, `${name}: the first code cell imports the library`);
    const params = nb.cells.filter((c) => hasTag(c, 'parameters'));
    assert.equal(params.length, 1, `${name}: one parameters cell`);
    const decls = findDeclarations(params[0]!.source);
    assert.ok(decls.every((d) => d.kind === 'let'), `${name}: parameters are declared with let`);
    defaults.set(name, new Map(decls.map((d) => [d.name, d.initializer])));
    for (const p of ['backend', 'work_dir', 'project', 'bucket', 'region']) assert.ok(declaredParameters(nb).includes(p), `${name} declares ${p}`);
    assert.equal(defaults.get(name)!.get('backend'), '"local"');
    assert.equal(defaults.get(name)!.get('work_dir'), '"../runs/work"');
    // tslab: a shorthand property naming a top-level variable fails at run time ("x is not defined").
    for (const c of codeCells(nb)) assert.deepEqual(shorthandProperties(c.source), [], `${name}: shorthand property in ${c.source}`);
  }
  // 03 shows the command 06 runs: their training defaults must be the same.
  const shared = ['resnet_depth', 'image_size', 'train_batch_size', 'train_steps', 'steps_per_eval', 'base_learning_rate'];
  for (const p of shared) assert.equal(defaults.get('03-trainer.ipynb')!.get(p), defaults.get('06-train.ipynb')!.get(p), p);
});

test('all eight notebooks run headless on data-samples (local backend); the server is stopped afterwards', { timeout: 600_000 }, () => {
  const out = path.join(dir, 'run');
  const t0 = Date.now();
  const r = spawnSync('bash', [path.join(REPO_ROOT, 'scripts/run-notebooks.sh'), '--out', out], { encoding: 'utf8', timeout: 540_000 });
  console.log(`# run-notebooks.sh: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /all 8 notebooks ran/);
  // Notebook 08 undeployed; the runner's own undeploy at the end then has nothing to say.
  assert.doesNotMatch(r.stderr, /no deployment recorded/);
  const files = NAMES.map((n) => path.join(out, n));
  nbformatCheck(files, false);
  const nbs = new Map(NAMES.map((n, i) => [n, read(files[i]!)]));
  for (const [name, nb] of nbs) {
    assert.deepEqual(outputs(nb).filter((o) => o.output_type === 'error'), [], `${name} has no errors`);
    assert.ok(codeCells(nb).every((c) => c.metadata.papermill?.status === 'completed'), `${name}: every cell completed`);
    assert.match(stdout(nb), new RegExp(`work folder: ${path.join(out, 'work').replace(/[.]/g, '\\.')}`), `${name} used the shared work folder`);
    const injected = codeCells(nb).filter((c) => hasTag(c, 'injected-parameters'));
    assert.equal(injected.length, 1, `${name}: one injected-parameters cell`);
    assert.deepEqual(injected[0]!.outputs, [], `${name}: the injected-parameters cell shows nothing, as papermill's`);
  }
  for (const name of ['01-data.ipynb', '06-train.ipynb', '08-predict.ipynb']) {
    const charts = displays(nbs.get(name)!).filter((d) => typeof d['image/png'] === 'string' && d[VEGA_LITE_MIME]);
    assert.ok(charts.length > 0, `${name} has a chart with PNG and Vega-Lite`);
  }
  // 06: the live chart, the final curves, the confusion matrix.
  const titles = displays(nbs.get('06-train.ipynb')!).map((d) => String(d['text/plain']));
  assert.ok(titles.some((t) => t.includes('Loss / Eval accuracy')) && titles.some((t) => t.includes('Training')), titles.join(' | '));
  assert.ok(titles.some((t) => t.includes('Confusion matrix')));
  // 06: the evaluation of the export on the validation split (the sample data has no test split).
  for (const t of ['Per class (validation', 'Precision–recall per class (validation']) assert.ok(titles.some((x) => x.includes(t)), `${t} in ${titles.join(' | ')}`);
  const nb06 = stdout(nbs.get('06-train.ipynb')!);
  assert.match(nb06, /validation: \d+ images, export version \d+\ntop-1 [\d.]+ %, top-5 [\d.]+ %/);
  assert.ok(/no mistakes to show/.test(nb06) || titles.some((t) => t.includes('Most confidently wrong')), 'the gallery of mistakes');
  assert.match(nb06, /no evaluation: no test split in /);
  const evaluation = JSON.parse(fs.readFileSync(/saved: (\S+evaluation\.json),/.exec(nb06)![1]!, 'utf8')) as { threshold: number; splits: Record<string, { top1: number }> };
  assert.equal(evaluation.threshold, 0.5);
  assert.ok(evaluation.splits.validation!.top1 >= 0);
  assert.match(stdout(nbs.get('06-train.ipynb')!), /trained to step 80 .* top-1 \d+\.\d %/);
  // One name for the engine: the line at the start and the summary at the end.
  const engine = /^engine: (\w+) /m.exec(stdout(nbs.get('06-train.ipynb')!))?.[1];
  assert.ok(engine, 'notebook 06 names its engine');
  assert.match(stdout(nbs.get('06-train.ipynb')!), new RegExp(`trained to step 80 in [\\d.]+ s \\([\\d.]+ images/s, ${engine} x\\d+\\)`));
  if (process.env.IMGCLASS_REQUIRE_ONEDNN === '1') assert.equal(engine, 'onednn');
  // 01 and 04: image grids.
  assert.ok(displays(nbs.get('01-data.ipynb')!).some((d) => d['text/plain'] === 'sample training images' && d['image/png']));
  assert.match(stdout(nbs.get('04-preprocess-local.ipynb')!), /feature keys: image\/channels, image\/class\/label, .*image\/encoded/);

  const labels = fs.readFileSync(path.join(out, 'work/dataset/labels.txt'), 'utf8').trim().split('\n');
  const predicted = /prediction: (\S+) \((\d+\.\d) %\)/.exec(stdout(nbs.get('08-predict.ipynb')!));
  assert.ok(predicted, 'notebook 08 shows the prediction');
  assert.ok(labels.includes(predicted[1]!), `a class name: ${predicted[1]}`);
  assert.ok(Number(predicted[2]) > 100 / labels.length && Number(predicted[2]) <= 100, `its probability: ${predicted[2]} %`);
  assert.ok(displays(nbs.get('08-predict.ipynb')!).some((d) => String(d['text/html']).includes('data:image/png;base64,')), 'image beside chart');
  assert.match(stdout(nbs.get('08-predict.ipynb')!), /"image_bytes": \{\s*"b64": "\/9j\/[^"]*… \(\d+ characters\)"/, 'the request, a JPEG in base64');

  const pid = Number(/\(pid (\d+)\)/.exec(stdout(nbs.get('07-deploy.ipynb')!))?.[1]);
  assert.ok(pid > 0, 'notebook 07 shows the server pid');
  assert.equal(processAlive(pid), false, 'the server is stopped');
  assert.equal(fs.existsSync(path.join(out, 'work/deployment.json')), false);
  assert.match(stdout(nbs.get('08-predict.ipynb')!), new RegExp(`stopped the prediction server \\(pid ${pid}\\)`));

  // Stripped, an executed notebook is the stored one again.
  for (const name of ['01-data.ipynb', '08-predict.ipynb']) {
    const nb = nbs.get(name)!;
    stripOutputs(nb);
    assert.equal(serializeNotebook(nb), fs.readFileSync(path.join(NOTEBOOKS_DIR, name), 'utf8'), name);
  }
});

test('notebook 05 with backend = "gcp": a Dataflow job against the fake Google API, followed to its report; in dry run, no request at all', { timeout: 300_000 }, async () => {
  const fx = await dataflowFixture('work/dataset');
  try {
    const run = async (name: string, ...params: string[]): Promise<{ r: Run; nb: Notebook }> => {
      const out = path.join(dir, name);
      const r = await runCli(
        ['run-notebook', path.join(NOTEBOOKS_DIR, '05-preprocess-at-scale.ipynb'), out,
          '-p', 'backend', 'gcp', '-p', 'work_dir', `gs://${BUCKET}/work`, '-p', 'project', PROJECT, '-p', 'bucket', BUCKET, '-p', 'max_workers', '2', ...params],
        cliEnv(fx),
      );
      return { r, nb: read(out) };
    };
    const real = await run('gcp-05.ipynb');
    assert.equal(real.r.code, 0, real.r.stderr);
    assert.deepEqual(outputs(real.nb).filter((o) => o.output_type === 'error'), []);
    const text = stdout(real.nb);
    const [entry] = [...fx.fake.state.dataflowJobs.values()];
    assert.match(text, new RegExp(`Dataflow job imgclass-preprocess-work-tfrecords-\\d{8}-\\d{6}: id ${entry!.job.id}\\n  console: https://console\\.cloud\\.google\\.com/dataflow/jobs/`));
    assert.match(text, /: running\n[\s\S]*: done\n/);
    assert.match(text, /^total +4 +2$/m, text);
    assert.match(text, new RegExp(`skipped: 1\\n  ${fx.trainCsv}:4 ${fx.broken.path}: truncated or corrupt image data`));
    const launch = fx.fake.requests.find((q) => q.methodId === 'dataflow.projects.locations.flexTemplates.launch')!;
    assert.equal((launch.body as { launchParameter: { environment: { maxWorkers: number } } }).launchParameter.environment.maxWorkers, 2);
    assert.ok(fx.fake.gcs.get(BUCKET, 'work/tfrecords/preprocess_report.json'), 'the report is beside the shards');
    assert.ok(displays(real.nb).some((d) => typeof d['image/png'] === 'string' && d[VEGA_LITE_MIME]), 'the records-per-class chart');
    assert.deepEqual(fx.fake.rejected(), [], 'every request fits the API');

    const before = fx.fake.requests.length;
    const dry = await run('gcp-05-dry.ipynb', '-p', 'dry_run', 'true');
    assert.equal(dry.r.code, 0, dry.r.stderr);
    assert.equal(fx.fake.requests.length, before, 'a dry run sends nothing, Cloud Storage included');
    const dryText = stdout(dry.nb);
    assert.match(dryText, /not read and not checked \(a dry run sends no request, Cloud Storage reads included\)/);
    assert.match(dryText, /dry run: the pipeline \(gs:\/\/imgclass-data\/imgclass-staging\/dataflow\/\S+\/pipeline\.yaml\):\n# Section 5 of the codelab/);
    assert.match(dryText, /\n  POST \S+\/v1b3\/projects\/imgclass-test\/locations\/us-central1\/flexTemplates:launch\n/);
    assert.match(dryText, /\n  gcloud dataflow yaml run imgclass-preprocess-work-tfrecords-/);
    assert.match(dryText, /dry run: nothing was sent; the job would be imgclass-preprocess-work-tfrecords-\S+, writing into gs:\/\/imgclass-data\/work\/tfrecords/);
    assert.match(dryText, /no records to chart yet/);
  } finally {
    await fx.close();
  }
});

test('Jupyter (nbconvert) runs notebook 03 with the kernel kernel-setup.sh registers, with the outputs our runner gives', { timeout: 300_000 }, () => {
  const prefix = path.join(dir, 'jupyter');
  const setup = spawnSync('bash', [path.join(REPO_ROOT, 'kernel-setup.sh'), '--prefix', prefix], { encoding: 'utf8' });
  assert.equal(setup.status, 0, setup.stderr + setup.stdout);
  // nbconvert takes no parameters: our runner injects them (--prepare-only); the copy sits in a
  // notebooks/ folder beside a link to dist/, so its "../dist/lib/notebook" import resolves.
  const root = path.join(dir, 'checkout');
  fs.mkdirSync(path.join(root, 'notebooks'), { recursive: true });
  fs.symlinkSync(path.join(REPO_ROOT, 'dist'), path.join(root, 'dist'));
  const prepared = path.join(root, 'notebooks', '03-trainer.ipynb');
  const prep = spawnSync(
    process.execPath,
    [CLI, 'run-notebook', path.join(NOTEBOOKS_DIR, '03-trainer.ipynb'), prepared, '--prepare-only', '-p', 'work_dir', path.join(dir, 'jw'), '-p', 'num_classes', '5', '-p', 'train_steps', '120'],
    { encoding: 'utf8' },
  );
  assert.equal(prep.status, 0, prep.stderr);
  const env = { ...process.env, JUPYTER_PATH: path.join(prefix, 'share/jupyter'), PYDEVD_DISABLE_FILE_VALIDATION: '1' };
  const viaJupyter = path.join(root, 'notebooks', 'via-jupyter.ipynb');
  const nbc = spawnSync(
    '/usr/bin/python3',
    ['-m', 'nbconvert', '--to', 'notebook', '--execute', '--ExecutePreprocessor.kernel_name=tslab', '--ExecutePreprocessor.timeout=120', prepared, '--output', viaJupyter],
    { env, encoding: 'utf8' },
  );
  assert.equal(nbc.status, 0, nbc.stderr);
  const ours = path.join(root, 'notebooks', 'ours.ipynb');
  const run = spawnSync(process.execPath, [CLI, 'run-notebook', prepared, ours], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  nbformatCheck([viaJupyter, ours], false);

  const summary = (nb: Notebook): unknown[] =>
    codeCells(nb).map((c) => ({
      stdout: c.outputs.map((o) => (o.output_type === 'stream' && o.name === 'stdout' ? o.text : '')).join(''),
      displays: c.outputs.flatMap((o) => (o.output_type === 'display_data' ? [{ mimes: Object.keys(o.data).sort(), text: o.data['text/plain'], spec: o.data[VEGA_LITE_MIME] }] : [])),
      errors: c.outputs.filter((o) => o.output_type === 'error').length,
    }));
  const a = summary(read(viaJupyter));
  assert.deepEqual(a, summary(read(ours)));
  for (const nb of [read(viaJupyter), read(ours)]) {
    assert.deepEqual(codeCells(nb).filter((c) => hasTag(c, 'injected-parameters')).map((c) => c.outputs), [[]], 'Jupyter shows nothing for the injected cell either');
  }
  const all = JSON.stringify(a);
  assert.match(all, /ResNet-18, 32x32x3 -> 5 classes/);
  assert.match(all, /--train_steps=120/, 'the injected parameter reached the kernel');
  assert.match(all, /Learning rate: 120 steps/);
});
