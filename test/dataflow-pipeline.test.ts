/**
 * Section 5 on Dataflow, the parts that need no cloud: the pipeline's Python, read out of the
 * rendered YAML exactly as Dataflow's YAML template gets it, run under the machine's python3 with a
 * stand-in for Beam (test/fake-beam.ts) on real images; and the launch request, gcloud lines and
 * job helpers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import YAML from 'yaml';
import {
  renderPipeline,
  pipelinePython,
  pipelineTransformConfig,
  PIPELINE_TEMPLATE_FILE,
  PipelineSettings,
  launchRequest,
  launchParams,
  gcloudEquivalent,
  jobConsoleUrl,
  dataflowJobName,
  dataflowLocations,
  JOB_NAME_PATTERN,
  isTerminalJobState,
  jobStateLabel,
  formatJobMessage,
  parseRejects,
  dataflowReport,
  plannedShardCounts,
  DataflowLaunchOptions,
} from '../lib/cloud/dataflow';
import { preprocess, SkippedRow } from '../lib/preprocess';
import { imageToExample } from '../lib/preprocess/image';
import { readLabeledCsv } from '../lib/dataset-csv';
import { readRecordFile } from '../lib/tfrecord';
import { decodeExample, getString } from '../lib/example';
import { UserError } from '../lib/errors';
import { writeFakeBeam } from './fake-beam';
import { tempDir, removeDir, jpeg, photo, REPO_ROOT } from './helpers';

const PYTHON = '/usr/bin/python3';
const BUCKET = 'my-bucket';

interface Sandbox {
  dir: string;
  /** Local folder standing for gs:// (FAKE_GCS_ROOT). */
  gcs: string;
  driver: string;
}

function sandbox(): Sandbox {
  const dir = tempDir('imgclass-dataflow-');
  const gcs = path.join(dir, 'gcs');
  fs.mkdirSync(path.join(gcs, BUCKET), { recursive: true });
  return { dir, gcs, driver: writeFakeBeam(path.join(dir, 'py')) };
}

/** The local file behind a gs:// path of the sandbox. */
function local(sb: Sandbox, gs: string): string {
  assert.ok(gs.startsWith('gs://'), gs);
  return path.join(sb.gcs, gs.slice('gs://'.length));
}

function runPython(sb: Sandbox, yamlText: string, mode: 'run' | 'parse-csv', ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const cfgFile = path.join(sb.dir, 'cfg.json');
  // Exactly what the template hands to Beam: the source string and the other kwargs, from the YAML text.
  fs.writeFileSync(cfgFile, JSON.stringify(pipelineTransformConfig(yamlText)));
  const r = spawnSync(PYTHON, [sb.driver, cfgFile, mode, ...args], {
    env: { ...process.env, FAKE_GCS_ROOT: sb.gcs, PYTHONPATH: path.join(sb.dir, 'py'), PYTHONDONTWRITEBYTECODE: '1' },
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function records(file: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const rec of readRecordFile(file)) out.push(rec);
  return out;
}

/** Every record of a split's shards (local folder), keyed by class and file name. */
async function recordsByName(dir: string, split: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const f of fs.readdirSync(dir).filter((n) => n.startsWith(`${split}-`)).sort()) {
    for (const rec of await records(path.join(dir, f))) {
      const ex = decodeExample(rec);
      const key = `${getString(ex, 'image/class/synset')}/${getString(ex, 'image/filename')}`;
      assert.ok(!out.has(key), `record ${key} written twice`);
      out.set(key, rec);
    }
  }
  return out;
}

function rejectsOf(sb: Sandbox, outputDir: string): SkippedRow[] {
  const dir = local(sb, `${outputDir}/_rejects`);
  const files = fs.readdirSync(dir);
  assert.deepEqual(files, ['rejects-00000-of-00001.jsonl']);
  return parseRejects(fs.readFileSync(path.join(dir, files[0]!), 'utf8'), files[0]!);
}

test('data-samples: the pipeline writes the same Example bytes as lib/preprocess, with Beam shard names', async () => {
  const sb = sandbox();
  try {
    const data = path.join(sb.gcs, BUCKET, 'data');
    fs.mkdirSync(data);
    for (const f of ['train_set.csv', 'eval_set.csv', 'labels.txt']) fs.copyFileSync(path.join(REPO_ROOT, 'data-samples', f), path.join(data, f));
    fs.cpSync(path.join(REPO_ROOT, 'data-samples/images'), path.join(data, 'images'), { recursive: true });
    const labels = fs.readFileSync(path.join(data, 'labels.txt'), 'utf8').trim().split('\n');

    const localOut = path.join(sb.dir, 'local-out');
    const localRun = await preprocess({
      trainCsv: path.join(REPO_ROOT, 'data-samples/train_set.csv'),
      validationCsv: path.join(REPO_ROOT, 'data-samples/eval_set.csv'),
      labelsFile: path.join(REPO_ROOT, 'data-samples/labels.txt'),
      outputDir: localOut,
      numShards: 3,
      workers: 2,
    });
    assert.equal(localRun.report.skipped.length, 0);

    const outputDir = `gs://${BUCKET}/out/flowers`;
    const yamlText = renderPipeline({
      trainCsv: `gs://${BUCKET}/data/train_set.csv`,
      validationCsv: `gs://${BUCKET}/data/eval_set.csv`,
      labels,
      outputDir,
      numShards: localRun.report.settings.numShards,
    });
    const r = runPython(sb, yamlText, 'run');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { transform: 'JpegCsvToTFRecord', rejects: 0 });

    const out = local(sb, outputDir);
    assert.deepEqual(
      fs.readdirSync(out).filter((f) => !f.startsWith('_')).sort(),
      [...localRun.report.splits.train.shards, ...localRun.report.splits.validation.shards].sort(),
    );
    for (const split of ['train', 'validation'] as const) {
      const mine = await recordsByName(out, split);
      const theirs = await recordsByName(localOut, split);
      assert.equal(mine.size, localRun.report.splits[split].records);
      assert.deepEqual([...mine.keys()].sort(), [...theirs.keys()].sort());
      for (const [key, rec] of mine) assert.ok(rec.equals(theirs.get(key)!), `${split} ${key}: Example bytes differ from lib/preprocess`);
    }
    assert.deepEqual(rejectsOf(sb, outputDir), []);
    assert.deepEqual(plannedShardCounts({ train: localRun.report.splits.train.rows, validation: localRun.report.splits.validation.rows }, 3), localRun.report.settings.numShards);
    assert.deepEqual(
      plannedShardCounts({ train: localRun.report.splits.train.rows, validation: localRun.report.splits.validation.rows }),
      { train: 1, validation: 1 },
    );

    // The report the CLI writes from the job's outputs matches the local one but for the settings.
    const perClass = { train: {} as Record<string, number>, validation: {} as Record<string, number> };
    for (const split of ['train', 'validation'] as const) {
      for (const key of (await recordsByName(out, split)).keys()) {
        const label = key.split('/')[0]!;
        perClass[split][label] = (perClass[split][label] ?? 0) + 1;
      }
    }
    const report = dataflowReport({
      labels,
      csv: { train: localRun.report.splits.train.csv, validation: localRun.report.splits.validation.csv },
      rows: { train: localRun.report.splits.train.rows, validation: localRun.report.splits.validation.rows },
      numShards: localRun.report.settings.numShards,
      shards: fs.readdirSync(out),
      perClass,
      skipped: [],
      warnings: localRun.report.warnings,
      seed: 42,
    });
    assert.deepEqual(report, localRun.report);
  } finally {
    removeDir(sb.dir);
  }
});

test('odd and broken files: the same verdicts as local preprocessing, rejects with reason and CSV line', async () => {
  const sb = sandbox();
  try {
    const data = path.join(sb.gcs, BUCKET, 'set');
    fs.mkdirSync(path.join(data, 'img'), { recursive: true });
    const good = await jpeg(48, 32, 1);
    const files: Record<string, Buffer | undefined> = {
      'good.jpg': good,
      'good2.jpg': await jpeg(20, 60, 2),
      'progressive.jpg': await (await photo(40, 30, 3)).jpeg({ quality: 85, progressive: true }).toBuffer(),
      'trailing-bytes.jpg': Buffer.concat([await jpeg(30, 30, 4), Buffer.from('camera junk after EOI')]),
      'gray.jpg': await (await photo(32, 32, 5)).toColourspace('b-w').jpeg().toBuffer(),
      'cmyk.jpg': await (await photo(32, 32, 6)).toColourspace('cmyk').jpeg().toBuffer(),
      'picture.png': await (await photo(24, 24, 7)).png().toBuffer(),
      'picture.webp': await (await photo(24, 24, 8)).webp().toBuffer(),
      'empty.jpg': Buffer.alloc(0),
      'truncated.jpg': good.subarray(0, Math.floor(good.length * 0.6)),
      'text.jpg': Buffer.from('this is not an image\n'),
      'missing.jpg': undefined,
    };
    for (const [name, bytes] of Object.entries(files)) if (bytes) fs.writeFileSync(path.join(data, 'img', name), bytes);
    const labels = ['cat', 'dog'];
    const names = Object.keys(files);
    // A header, blank lines and a CRLF line, so CSV lines and row numbers differ.
    const trainLines = ['path,label', ...names.map((n, i) => `img/${n},${labels[i % 2]}`)];
    trainLines.splice(3, 0, '');
    trainLines.splice(7, 0, '  ');
    trainLines[5] += '\r';
    fs.writeFileSync(path.join(data, 'train.csv'), trainLines.join('\n') + '\n');
    fs.writeFileSync(path.join(data, 'eval.csv'), 'img/good.jpg,cat\nimg/empty.jpg,dog\n');
    // The local copy of the same files, for the local verdicts and line numbers.
    const rows = (await readLabeledCsv(path.join(data, 'train.csv'))).rows;
    assert.equal(rows.length, names.length);

    const outputDir = `gs://${BUCKET}/out`;
    const yamlText = renderPipeline({
      trainCsv: `gs://${BUCKET}/set/train.csv`,
      validationCsv: `gs://${BUCKET}/set/eval.csv`,
      labels,
      outputDir,
      numShards: { train: 2, validation: 1 },
    });
    const r = runPython(sb, yamlText, 'run');
    assert.equal(r.status, 0, r.stderr);

    const written = await recordsByName(local(sb, outputDir), 'train');
    const rejects = rejectsOf(sb, outputDir);
    const rejectOf = new Map(rejects.filter((s) => s.split === 'train').map((s) => [path.posix.basename(s.path), s]));
    const verdicts: Record<string, string> = {};
    for (const row of rows) {
      const name = path.basename(row.path);
      const bytes = files[name];
      const mine = rejectOf.get(name);
      const key = `${row.label}/${name}`;
      const theirs = bytes
        ? await imageToExample({ bytes, filename: row.path, label: row.label, labelIndex: labels.indexOf(row.label) })
        : { ok: false as const, reason: `file not found: ${row.path}` };
      if (theirs.ok && !theirs.reencoded) {
        verdicts[name] = 'kept';
        assert.equal(mine, undefined, `${name}: rejected (${mine?.reason}) but kept locally`);
        assert.ok(written.get(key)?.equals(Buffer.from(theirs.example)), `${name}: Example bytes differ from lib/preprocess/image.ts`);
      } else {
        assert.ok(mine, `${name}: neither written nor rejected`);
        assert.ok(!written.has(key), `${name}: written and rejected`);
        assert.equal(mine.line, row.line, `${name}: CSV line`);
        assert.equal(mine.csv, `gs://${BUCKET}/set/train.csv`);
        assert.equal(mine.path, `gs://${BUCKET}/set/img/${name}`);
        if (theirs.ok) {
          // Re-encoded locally; the workers have no decoder, so the row is rejected and says why.
          verdicts[name] = `reencoded locally (${theirs.reencoded})`;
          assert.match(mine.reason, /needs an image decoder the Dataflow workers do not have; convert the file to an RGB JPEG, or preprocess locally$/);
        } else {
          verdicts[name] = `skipped locally`;
          // Same kind of reason as locally: the text before the first colon.
          assert.equal(mine.reason.split(':')[0], theirs.reason.split(':')[0], `${name}: "${mine.reason}" vs local "${theirs.reason}"`);
        }
      }
    }
    assert.deepEqual(verdicts, {
      'good.jpg': 'kept',
      'good2.jpg': 'kept',
      'progressive.jpg': 'kept',
      'trailing-bytes.jpg': 'kept',
      'gray.jpg': 'reencoded locally (grayscale)',
      'cmyk.jpg': 'reencoded locally (cmyk)',
      'picture.png': 'reencoded locally (png)',
      'picture.webp': 'reencoded locally (webp)',
      'empty.jpg': 'skipped locally',
      'truncated.jpg': 'skipped locally',
      'text.jpg': 'skipped locally',
      'missing.jpg': 'skipped locally',
    });
    assert.match(rejectOf.get('gray.jpg')!.reason, /^grayscale JPEG: /);
    assert.match(rejectOf.get('cmyk.jpg')!.reason, /^CMYK JPEG: /);
    assert.match(rejectOf.get('picture.png')!.reason, /^PNG image: /);
    assert.match(rejectOf.get('picture.webp')!.reason, /^WebP image: /);
    assert.equal(rejectOf.get('empty.jpg')!.reason, 'empty file (0 bytes)');
    assert.match(rejectOf.get('truncated.jpg')!.reason, /^truncated or corrupt image data: no end-of-image marker/);
    assert.equal(rejectOf.get('missing.jpg')!.reason, `file not found: gs://${BUCKET}/set/img/missing.jpg`);
    // The validation split: its own rejects, its own line numbers.
    assert.deepEqual(rejects.filter((s) => s.split === 'validation'), [
      { split: 'validation', csv: `gs://${BUCKET}/set/eval.csv`, line: 2, path: `gs://${BUCKET}/set/img/empty.jpg`, reason: 'empty file (0 bytes)' },
    ]);
    assert.equal((await recordsByName(local(sb, outputDir), 'validation')).size, 1);

    // Every row written or rejected: the report adds up without warnings; a lost row is reported.
    const count = async (split: string): Promise<Record<string, number>> => {
      const c: Record<string, number> = {};
      for (const key of (await recordsByName(local(sb, outputDir), split)).keys()) c[key.split('/')[0]!] = (c[key.split('/')[0]!] ?? 0) + 1;
      return c;
    };
    const input = {
      labels,
      csv: { train: `gs://${BUCKET}/set/train.csv`, validation: `gs://${BUCKET}/set/eval.csv` },
      rows: { train: rows.length, validation: 2 },
      numShards: { train: 2, validation: 1 },
      shards: fs.readdirSync(local(sb, outputDir)),
      perClass: { train: await count('train'), validation: await count('validation') },
      skipped: rejects,
      warnings: [],
      seed: 42,
    };
    const report = dataflowReport(input);
    assert.deepEqual(report.warnings, []);
    assert.equal(report.splits.train.records + report.splits.train.skipped, rows.length);
    assert.deepEqual(report.skipped.map((s) => `${s.split}:${s.line}`), [...rejects].sort((a, b) => (a.split === b.split ? a.line - b.line : a.split === 'train' ? -1 : 1)).map((s) => `${s.split}:${s.line}`));
    const lost = dataflowReport({ ...input, skipped: rejects.slice(1), shards: input.shards.filter((f) => f !== 'train-00001-of-00002') });
    assert.match(lost.warnings.join('\n'), /train: gs:\/\/my-bucket\/set\/train\.csv has 12 rows, but the job wrote 4 records and rejected 7; some rows are unaccounted for/);
    assert.match(lost.warnings.join('\n'), /train: expected shards train-00000-of-00002 … train-00001-of-00002, found train-00000-of-00002/);
  } finally {
    removeDir(sb.dir);
  }
});

test('CSV rows: the Python reads the lines and labels lib/dataset-csv.ts reads; bad lines fail the job naming file:line', async () => {
  const sb = sandbox();
  try {
    const data = path.join(sb.gcs, BUCKET, 'csv');
    fs.mkdirSync(data, { recursive: true });
    const messy = '\ufeffFilename , Label\r\n\r\na/1.jpg,cat\n a/2.jpg , dog \n\n../up/3.jpg,cat\na/1.jpg,cat\ngs://other-bucket/x/4.jpg,dog\n"a/5.jpg",cat\n';
    fs.writeFileSync(path.join(data, 'messy.csv'), messy);
    const settings: PipelineSettings = {
      trainCsv: `gs://${BUCKET}/csv/messy.csv`,
      validationCsv: `gs://${BUCKET}/csv/messy.csv`,
      labels: ['cat', 'dog'],
      outputDir: `gs://${BUCKET}/o`,
      numShards: { train: 1, validation: 1 },
    };
    const r = runPython(sb, renderPipeline(settings), 'parse-csv', settings.trainCsv);
    assert.equal(r.status, 0, r.stderr);
    const mine = JSON.parse(r.stdout) as [number, string, string][];
    const theirs = (await readLabeledCsv(path.join(data, 'messy.csv'))).rows;
    // Same rows, lines and labels; paths resolved against the CSV's folder, in gs:// instead of locally.
    assert.deepEqual(
      mine.map(([line, p, label]) => [line, p.startsWith(`gs://${BUCKET}/`) ? path.join(sb.gcs, p.slice(5)) : p, label]),
      theirs.map((row) => [row.line, row.path, row.label]),
    );
    assert.deepEqual(mine.map((m) => m[1]), [
      `gs://${BUCKET}/csv/a/1.jpg`, `gs://${BUCKET}/csv/ a/2.jpg `, `gs://${BUCKET}/up/3.jpg`, 'gs://other-bucket/x/4.jpg', `gs://${BUCKET}/csv/a/5.jpg`,
    ]);

    // The CLI checks the CSVs locally first; if one changes before the job reads it, the job stops.
    const cases: [string, RegExp][] = [
      ['a/1.jpg,cat\na/2.jpg,zebra\n', /ValueError: gs:\/\/my-bucket\/csv\/bad\.csv:2: label "zebra" is not in labels\.txt/],
      ['a/1.jpg,cat\n\na/2.jpg,dog,extra\n', /ValueError: gs:\/\/my-bucket\/csv\/bad\.csv:3: expected 2 fields \(path,label\), got 3/],
      ['a/1.jpg,cat\na/1.jpg,dog\n', /ValueError: gs:\/\/my-bucket\/csv\/bad\.csv:2: a\/1\.jpg has a second label "dog"/],
      ['\n\n', /ValueError: gs:\/\/my-bucket\/csv\/bad\.csv has no rows/],
    ];
    for (const [text, expected] of cases) {
      fs.writeFileSync(path.join(data, 'bad.csv'), text);
      await assert.rejects(readLabeledCsv(path.join(data, 'bad.csv')).then(({ rows }) => {
        if (rows.some((row) => !settings.labels.includes(row.label))) throw new UserError('unknown label');
      }), UserError, `local run accepts ${JSON.stringify(text)}`);
      const bad = runPython(sb, renderPipeline({ ...settings, trainCsv: `gs://${BUCKET}/csv/bad.csv` }), 'run');
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, expected);
      assert.ok(!fs.existsSync(path.join(sb.gcs, BUCKET, 'o', 'train-00000-of-00001')), 'a failed job wrote shards');
    }
  } finally {
    removeDir(sb.dir);
  }
});

test('rendered pipeline: plain YAML the template reads back unchanged, labels stay strings, no Jinja', () => {
  const settings: PipelineSettings = {
    trainCsv: `gs://${BUCKET}/d/train.csv`,
    validationCsv: `gs://${BUCKET}/d/eval set.csv`,
    labels: ['no', 'on', '1e3', 'null', 'daisy: white', "it's", 'ünïcode'],
    outputDir: `gs://${BUCKET}/out/run 1/`,
    numShards: { train: 4, validation: 2 },
  };
  const text = renderPipeline(settings);
  const spec = YAML.parse(text, { version: '1.1' }) as { pipeline: { transforms: { type: string; name: string; input: object; config: { constructor: string } }[] } };
  assert.equal(spec.pipeline.transforms.length, 1);
  assert.deepEqual({ ...spec.pipeline.transforms[0], config: undefined }, { type: 'PyTransform', name: 'JpegCsvToTFRecord', input: {}, config: undefined });
  const cfg = pipelineTransformConfig(text);
  assert.equal(cfg.constructor, '__constructor__');
  assert.deepEqual(cfg.kwargs, {
    train_csv: settings.trainCsv,
    validation_csv: settings.validationCsv,
    labels: settings.labels,
    output_dir: `gs://${BUCKET}/out/run 1`,
    num_shards: { train: 4, validation: 2 },
  });
  // The Python is the project file's, unchanged by rendering.
  const template = YAML.parse(fs.readFileSync(PIPELINE_TEMPLATE_FILE, 'utf8'), { version: '1.1' }) as { pipeline: { transforms: { config: { kwargs: { source: string } } }[] } };
  assert.equal(pipelinePython(text), template.pipeline.transforms[0]!.config.kwargs.source);
  assert.match(pipelinePython(text), /\nclass JpegCsvToTFRecord\(beam\.PTransform\):\n(?: {4}.*\n|\n)*$/, 'the constructor must be the last top-level statement');
  assert.doesNotMatch(text, /\{\{|\{%|\{#/);

  assert.throws(() => renderPipeline({ ...settings, outputDir: `gs://${BUCKET}/out/{{x}}` }), /would read as Jinja/);
  assert.throws(() => renderPipeline({ ...settings, labels: ['cat', 'a{#b'] }), /labels\.txt:2: label "a\{#b" contains/);
  assert.throws(() => renderPipeline({ ...settings, trainCsv: '/home/me/train.csv' }), /--train_csv "\/home\/me\/train\.csv" is not a gs:\/\/ path/);
  assert.throws(() => renderPipeline({ ...settings, numShards: { train: 0, validation: 1 } }), /--num_shards: train needs a whole number of shards ≥ 1, got 0/);
  assert.throws(() => pipelinePython('pipeline:\n  transforms:\n    - type: PyTransform\n      config: {constructor: "{{ x }}"}\n'), /Jinja syntax/);
});

const LAUNCH: DataflowLaunchOptions = {
  project: 'my-project-123',
  region: 'europe-west4',
  bucket: BUCKET,
  jobName: 'imgclass-preprocess-out-flowers-20261201-210509',
  pipelineFile: `gs://${BUCKET}/imgclass-staging/dataflow/imgclass-preprocess-out-flowers-20261201-210509/pipeline.yaml`,
};

test('launch request: the YAML template, the pipeline file, staging and temp in the bucket', () => {
  assert.deepEqual(launchRequest(LAUNCH), {
    launchParameter: {
      jobName: LAUNCH.jobName,
      containerSpecGcsPath: 'gs://dataflow-templates-europe-west4/latest/flex/Yaml_Template',
      parameters: { yaml_pipeline_file: LAUNCH.pipelineFile },
      environment: {
        tempLocation: `gs://${BUCKET}/imgclass-staging/dataflow/temp`,
        stagingLocation: `gs://${BUCKET}/imgclass-staging/dataflow/staging`,
        additionalUserLabels: { 'imgclass-step': 'preprocess' },
      },
    },
  });
  const full = launchRequest({ ...LAUNCH, maxWorkers: 8, serviceAccountEmail: 'df@my-project-123.iam.gserviceaccount.com', machineType: 'n1-standard-2', validateOnly: true });
  assert.equal(full.validateOnly, true);
  assert.deepEqual(
    { maxWorkers: full.launchParameter?.environment?.maxWorkers, sa: full.launchParameter?.environment?.serviceAccountEmail, mt: full.launchParameter?.environment?.machineType },
    { maxWorkers: 8, sa: 'df@my-project-123.iam.gserviceaccount.com', mt: 'n1-standard-2' },
  );
  const params = launchParams(LAUNCH);
  assert.equal(params.projectId, 'my-project-123');
  assert.equal(params.location, 'europe-west4');
  assert.deepEqual(params.requestBody, launchRequest(LAUNCH));
  assert.deepEqual(dataflowLocations(`gs://${BUCKET}/`, 'j').pipelineFile, `gs://${BUCKET}/imgclass-staging/dataflow/j/pipeline.yaml`);

  assert.throws(() => launchRequest({ ...LAUNCH, maxWorkers: 0 }), /--max_workers must be a whole number from 1 to 1000, got 0/);
  assert.throws(() => launchRequest({ ...LAUNCH, jobName: 'Bad_Name' }), /not a Dataflow job name/);
  assert.throws(() => launchRequest({ ...LAUNCH, region: 'Europe' }), /not a Google Cloud region/);
  assert.throws(() => launchRequest({ ...LAUNCH, serviceAccountEmail: 'nobody' }), /not a service account email/);
  assert.throws(() => launchRequest({ ...LAUNCH, pipelineFile: '/tmp/p.yaml' }), /not a gs:\/\/ file path/);
});

test('gcloud equivalents and the console URL', () => {
  const g = gcloudEquivalent({ ...LAUNCH, maxWorkers: 4, serviceAccountEmail: 'df@my-project-123.iam.gserviceaccount.com' });
  const common =
    `--project=my-project-123 --region=europe-west4 --temp-location=gs://${BUCKET}/imgclass-staging/dataflow/temp ` +
    `--staging-location=gs://${BUCKET}/imgclass-staging/dataflow/staging --max-workers=4 ` +
    '--service-account-email=df@my-project-123.iam.gserviceaccount.com --additional-user-labels=imgclass-step=preprocess';
  assert.equal(g.yamlRun, `gcloud dataflow yaml run ${LAUNCH.jobName} --yaml-pipeline-file=${LAUNCH.pipelineFile} ${common}`);
  assert.equal(
    g.flexTemplateRun,
    `gcloud dataflow flex-template run ${LAUNCH.jobName} --template-file-gcs-location=gs://dataflow-templates-europe-west4/latest/flex/Yaml_Template ` +
      `--parameters=yaml_pipeline_file=${LAUNCH.pipelineFile} ${common}`,
  );
  assert.equal(
    jobConsoleUrl('my-project-123', 'europe-west4', '2026-12-01_13_05_09-123456789'),
    'https://console.cloud.google.com/dataflow/jobs/europe-west4/2026-12-01_13_05_09-123456789?project=my-project-123',
  );
});

test('job names follow Dataflow\'s pattern for odd output folders', () => {
  const when = new Date('2026-12-01T21:05:09.123Z');
  const cases: [string, string][] = [
    ['gs://b/out/flowers', 'imgclass-preprocess-out-flowers-20261201-210509'],
    ['gs://b/Out Dir/Résumé_v2/', 'imgclass-preprocess-out-dir-resume-v2-20261201-210509'],
    ['gs://b', 'imgclass-preprocess-b-20261201-210509'],
    ['gs://b/___/---', 'imgclass-preprocess-20261201-210509'],
    ['gs://b/日本/データ', 'imgclass-preprocess-20261201-210509'],
    [`gs://b/${'x'.repeat(300)}/${'y'.repeat(300)}`, `imgclass-preprocess-${'y'.repeat(40)}-20261201-210509`],
    ['gs://b/runs/-2026-', 'imgclass-preprocess-runs-2026-20261201-210509'],
  ];
  for (const [dir, expected] of cases) {
    const name = dataflowJobName(dir, when);
    assert.equal(name, expected, dir);
    assert.match(name, JOB_NAME_PATTERN);
  }
});

test('job helpers: terminal states, state labels, message lines, rejects files', () => {
  for (const s of ['JOB_STATE_DONE', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED', 'JOB_STATE_UPDATED', 'JOB_STATE_DRAINED']) assert.ok(isTerminalJobState(s), s);
  for (const s of ['JOB_STATE_RUNNING', 'JOB_STATE_PENDING', 'JOB_STATE_QUEUED', 'JOB_STATE_CANCELLING', 'JOB_STATE_DRAINING', 'JOB_STATE_RESOURCE_CLEANING_UP', undefined, null]) {
    assert.ok(!isTerminalJobState(s), String(s));
  }
  assert.equal(jobStateLabel('JOB_STATE_RESOURCE_CLEANING_UP'), 'resource cleaning up');
  assert.equal(
    formatJobMessage({ time: '2026-12-01T21:05:09.456Z', messageImportance: 'JOB_MESSAGE_ERROR', messageText: 'Traceback ...\nValueError: x\n' }),
    '2026-12-01T21:05:09Z ERROR Traceback ...\nValueError: x',
  );
  const text =
    '{"split": "validation", "csv": "gs://b/e.csv", "line": 2, "path": "gs://b/a.jpg", "reason": "empty file (0 bytes)"}\n' +
    '{"split": "train", "csv": "gs://b/t.csv", "line": 9, "path": "gs://b/c.png", "reason": "PNG image: …"}\n' +
    '{"split": "train", "csv": "gs://b/t.csv", "line": 3, "path": "gs://b/d.jpg", "reason": "file not found: gs://b/d.jpg"}\n';
  assert.deepEqual(parseRejects(text, 'r.jsonl').map((s) => `${s.split}:${s.line}`), ['train:3', 'train:9', 'validation:2']);
  assert.throws(() => parseRejects('{"split": "train"}\n', 'r.jsonl'), /r\.jsonl:1: expected \{split, csv, line, path, reason\}/);
  assert.throws(() => parseRejects('\nnot json\n', 'r.jsonl'), /r\.jsonl:2: not a JSON line/);
});
