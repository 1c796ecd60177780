/**
 * The trainer image's recipe: a Dockerfile pinned to one TensorFlow (the serving container's), the one
 * Python script (compiled by a real Python), a tag that is the hash of both, and the Cloud Build request
 * that carries them inline.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { dockerfile, EXPORT_SCRIPT, imageTag, buildRequest, VERSIONS } from '../lib/cloud/training/image';
import { TENSORFLOW_VERSION } from '../lib/cloud/endpoints';

test('the Dockerfile pins TensorFlow for TPU, its libtpu and Model Garden of the serving TensorFlow', () => {
  const d = dockerfile();
  assert.ok(VERSIONS.tensorflow.startsWith(`${TENSORFLOW_VERSION}.`), 'trainer and prediction container share the TensorFlow minor');
  assert.match(d, /^FROM python:3\.10-slim-bookworm$/m);
  assert.match(d, /cloud-tpu-tpuvm-artifacts\/tensorflow\/tf-2\.15\.0\/tensorflow-2\.15\.0-cp310-cp310-manylinux_2_17_x86_64\.manylinux2014_x86_64\.whl$/m);
  assert.match(d, /cloud-tpu-tpuvm-artifacts\/libtpu\/1\.9\.0\/libtpu\.so', '\/lib\/libtpu\.so'/);
  assert.match(d, /pip install --no-cache-dir tf-models-official==2\.15\.0$/m);
  assert.match(d, /^COPY export_imgclass\.py \/imgclass\/export_imgclass\.py$/m);
  // Nothing unpinned: every pip install names an exact version or a versioned wheel.
  for (const line of d.split('\n').filter((l) => l.includes('pip install'))) assert.match(line, /==\d|\.whl$/, line);
});

test('the export script is valid Python that writes the codelab\'s signature', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-export-'));
  const file = path.join(dir, 'export_imgclass.py');
  fs.writeFileSync(file, EXPORT_SCRIPT);
  execFileSync('/usr/bin/python3', ['-m', 'py_compile', file]);
  // Its argv and outputs, read by Python's own parser.
  const names = execFileSync('/usr/bin/python3', ['-c', [
    'import ast, sys',
    'tree = ast.parse(open(sys.argv[1]).read())',
    'main = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main"][0]',
    'print(",".join(a.arg for a in main.args.args))',
    'print(",".join(sorted(k.value for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if isinstance(k, ast.Constant))))',
  ].join('\n'), file], { encoding: 'utf8' }).trim().split('\n');
  assert.equal(names[0], 'experiment,config_file,model_dir,export_root,labels_file');
  assert.equal(names[1], 'classes,probabilities,serving_default');
  assert.match(EXPORT_SCRIPT, /tf\.TensorSpec\(\[None\], tf\.string, name='image_bytes'\)/);
  assert.match(EXPORT_SCRIPT, /\[:, 1:\]/, 'output 0 (the unused label 0) is dropped');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the image tag is the hash of the Dockerfile and the script', () => {
  const want = createHash('sha256').update(dockerfile()).update('\0').update(EXPORT_SCRIPT).digest('hex').slice(0, 16);
  assert.equal(imageTag(), want);
  assert.match(imageTag(), /^[0-9a-f]{16}$/);
});

test('the Cloud Build request carries both files inline and pushes the tagged image', () => {
  const uri = 'us-central1-docker.pkg.dev/p/imgclass/trainer:' + imageTag();
  const b = buildRequest(uri);
  assert.deepEqual(b.images, [uri]);
  assert.equal(b.steps?.length, 1);
  const script = b.steps![0]!.args![1]!;
  assert.ok(!script.includes('$'), 'no Cloud Build substitution can touch it');
  const files = [...script.matchAll(/echo ([A-Za-z0-9+/=]+) \| base64 -d > (\S+)/g)].map((m) => [m[2], Buffer.from(m[1]!, 'base64').toString('utf8')]);
  assert.deepEqual(files, [['Dockerfile', dockerfile()], ['export_imgclass.py', EXPORT_SCRIPT]]);
  assert.match(script, new RegExp(`docker build -t ${uri.replace(/[.]/g, '\\.')} \\.$`));
});
