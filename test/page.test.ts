/**
 * The model's web page (GET /) in real headless Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core; no browser is downloaded), against a real server on 127.0.0.1: an image from
 * data-samples/ uploaded, dropped and pasted, the page's label and probabilities compared with a
 * direct :predict call, then the model run in the page with TensorFlow.js and compared again; bad
 * input and a stopped server give visible messages. Also, without a browser: the export's files
 * are served read-only and nothing else is, whatever the path's spelling.
 *
 * One browser and one server for the whole file. A screenshot after a prediction is kept in
 * test-artifacts/page.png (git-ignored).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { chromium, Browser, Page } from 'playwright-core';
import { startServer, RunningServer } from '../lib/serve';
import { predict, predictRequest } from '../lib/predict';
import { exportFixture, ServingFixture } from './serve-fixture';
import { tempDir, removeDir, REPO_ROOT } from './helpers';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
const NO_BROWSER = !CHROMIUM && 'needs Debian\'s chromium (apt-get install chromium; scripts/setup.sh)';
const MAX_BODY = 200_000;
const ARTIFACTS = path.join(REPO_ROOT, 'test-artifacts');
const SECRET = 'not a file of the export';
const LABEL_COUNT = 5;

let dir: string;
let fx: ServingFixture;
let server: RunningServer;
let browser: Browser | undefined;
let page: Page;
/** One JPEG of each data-samples class. */
let samples: { file: string; cls: string; bytes: Buffer }[];
/** Requests the page made that did not go to the server (there must be none). */
const outside: string[] = [];
const pageErrors: string[] = [];

before(async () => {
  dir = tempDir('imgclass-page-');
  const root = path.join(REPO_ROOT, 'data-samples/images');
  samples = fs.readdirSync(root).sort().map((cls) => {
    const file = path.join(root, cls, fs.readdirSync(path.join(root, cls)).sort()[0]!);
    return { file, cls, bytes: fs.readFileSync(file) };
  });
  const labels = fs.readFileSync(path.join(REPO_ROOT, 'data-samples/labels.txt'), 'utf8').trim().split('\n');
  assert.equal(labels.length, LABEL_COUNT);
  fx = await exportFixture(path.join(dir, 'export'), samples.map((s) => s.bytes), labels);
  // Files beside and above the export's own, which must never be served.
  fs.writeFileSync(path.join(fx.versionDir, 'secret.txt'), SECRET);
  fs.writeFileSync(path.join(fx.exportDir, 'secret.txt'), SECRET);
  server = await startServer({ modelDir: fx.exportDir, port: 0, maxBody: MAX_BODY });
  if (CHROMIUM) {
    // Chromium's fake camera (a moving test pattern), granted without a prompt, for the photo test.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('request', (r) => {
      const url = r.url();
      if (!url.startsWith(`${server.url}/`) && !url.startsWith('blob:') && !url.startsWith('data:')) outside.push(url);
    });
    page.on('pageerror', (e) => pageErrors.push(e.message));
  }
});

after(async () => {
  await browser?.close();
  await server?.close();
  fx?.model.dispose();
  if (dir) removeDir(dir);
});

/** The page's globals the callbacks below use there (this project compiles without the DOM library). */
interface PageGlobals {
  document: { getElementById(id: string): { dataset: Record<string, string> }; dispatchEvent(event: unknown): boolean };
  DataTransfer: new () => { items: { add(file: File): void } };
  ClipboardEvent: new (type: string, init: { clipboardData: unknown }) => unknown;
}

/** The raw path is sent as given (fetch and URL would resolve "..", which is what is being tested). */
function rawGet(rawPath: string, method = 'GET'): Promise<{ status: number; body: Buffer }> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, path: rawPath, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the export\'s own files are served read-only under the model\'s route, and nothing else is', async () => {
  const base = `/v1/models/default/versions/${server.version}/files/`;
  const manifest = JSON.parse(fs.readFileSync(path.join(fx.versionDir, 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
  const names = ['model.json', 'labels.txt', 'preprocessing.json', 'meta.json', ...manifest.weightsManifest.flatMap((g) => g.paths)];
  for (const name of names) {
    const r = await rawGet(base + name);
    assert.equal(r.status, 200, name);
    assert.ok(r.body.equals(fs.readFileSync(path.join(fx.versionDir, name))), `${name} as on disk`);
  }
  const refused = [
    'secret.txt',
    '../secret.txt',
    '..%2Fsecret.txt',
    '..%2fsecret.txt',
    '%2e%2e%2fsecret.txt',
    '%2E%2E%2F%2E%2E%2Fsecret.txt',
    '%2e%2e/secret.txt',
    '..%5Csecret.txt',
    '%252e%252e%252fsecret.txt',
    '....//secret.txt',
    '.%2e/.%2e/secret.txt',
    '%2Fetc%2Fpasswd',
    `%2F${encodeURIComponent(fx.versionDir.slice(1))}%2Fsecret.txt`,
    'model.json%00',
    'model.json/..%2Fsecret.txt',
    '',
  ];
  for (const p of refused) {
    const r = await rawGet(base + p);
    assert.equal(r.status, 404, `${p}: HTTP ${r.status}`);
    assert.ok(!r.body.includes(SECRET) && !r.body.includes('root:'), `${p} leaked a file`);
  }
  for (const p of [`/v1/models/default/versions/${server.version}/../secret.txt`, `/v1/models/default/versions/1/files/model.json`, '/v1/models/other/versions/1/files/model.json', '/page/..%2F..%2Fpackage.json', '/page/../../package.json', '/page/%2e%2e/%2e%2e/package.json']) {
    const r = await rawGet(p);
    assert.equal(r.status, 404, `${p}: HTTP ${r.status}`);
    assert.ok(!r.body.includes(SECRET) && !r.body.includes('"devDependencies"'), `${p} leaked a file`);
  }
  const before = fs.readFileSync(path.join(fx.versionDir, 'model.json'));
  for (const method of ['PUT', 'POST', 'DELETE', 'PATCH']) {
    const r = await rawGet(`${base}model.json`, method);
    assert.ok(r.status === 404 || r.status === 405, `${method}: HTTP ${r.status}`);
  }
  assert.ok(fs.readFileSync(path.join(fx.versionDir, 'model.json')).equals(before));
});

test('GET / is the page, its scripts come from this server, and it names the model, version, classes and input size', { skip: NO_BROWSER }, async () => {
  const res = await page.goto(`${server.url}/`);
  assert.equal(res?.status(), 200);
  assert.equal(res?.headers()['cross-origin-embedder-policy'], 'require-corp');
  await page.waitForSelector('#status[data-state="ready"]');
  assert.equal(await page.textContent('#model-name'), 'default');
  assert.equal(await page.textContent('#model-version'), server.version);
  const facts = (await page.textContent('#model-facts')) ?? '';
  for (const label of server.labels) assert.ok(facts.includes(label), `${label} in "${facts}"`);
  assert.match(facts, /Input 32 × 32 RGB/);
  assert.equal(await page.isVisible('#error'), false);
});

/** Waits for the page to finish with the image it was given; the status it ended with. */
async function settled(): Promise<string> {
  await page.waitForSelector('#status[data-state="done"], #status[data-state="error"]', { timeout: 60_000 });
  return (await page.getAttribute('#status', 'data-state')) ?? '';
}

async function answerOf(which: 'server' | 'browser'): Promise<{ label: string; cls: number; probabilities: number[] }> {
  const el = page.locator(`#${which}-label`);
  return {
    label: (await el.getAttribute('data-label')) ?? '',
    cls: Number(await el.getAttribute('data-class')),
    probabilities: JSON.parse((await el.getAttribute('data-probabilities')) ?? '[]') as number[],
  };
}

async function upload(file: string | { name: string; mimeType: string; buffer: Buffer }): Promise<string> {
  await page.evaluate(() => ((globalThis as unknown as PageGlobals).document.getElementById('status').dataset.state = 'busy'));
  await page.setInputFiles('#file', file);
  return settled();
}

test('an uploaded JPEG gets the answer of a direct :predict call, and the page shows the exact request and response', { skip: NO_BROWSER }, async () => {
  const s = samples[1]!;
  assert.equal(await upload(s.file), 'done', (await page.textContent('#error')) ?? '');
  const shown = await answerOf('server');
  const direct = (await predict(server.predictUrl, [s.file])).predictions[0]!;
  assert.deepEqual(shown.probabilities, direct.probabilities);
  assert.equal(shown.cls, direct.classes);
  assert.equal(shown.label, direct.label);
  assert.match((await page.textContent('#server-label')) ?? '', new RegExp(`^${direct.label} \\(`));
  // The chart is drawn: one bar per class.
  assert.equal(await page.locator('#server-chart svg path[aria-roledescription="bar"]').count(), server.labels.length);

  const body = JSON.stringify(await predictRequest([s.bytes]));
  assert.equal(await page.textContent('#request'), body);
  assert.match((await page.textContent('#request-line')) ?? '', new RegExp(`^POST ${server.predictUrl.replace(/[.:/]/g, '\\$&')}`));
  const raw = await (await fetch(server.predictUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).text();
  assert.equal(await page.textContent('#response'), raw);
  assert.equal(await page.textContent('#response-status'), 'HTTP 200');
});

test('"run in this browser": TensorFlow.js in the page gives the server\'s class and probabilities within 1e-4', { skip: NO_BROWSER }, async () => {
  await page.check('#in-browser');
  // The image already shown is classified in the page as soon as the model has loaded.
  await page.waitForSelector('#agreement[data-max-difference]', { timeout: 60_000 });
  const compare = async (file: string): Promise<void> => {
    const direct = (await predict(server.predictUrl, [file])).predictions[0]!;
    const here = await answerOf('browser');
    assert.equal(here.cls, direct.classes, `${file}: class in the browser`);
    assert.equal(here.probabilities.length, direct.probabilities.length);
    here.probabilities.forEach((p, i) => assert.ok(Math.abs(p - direct.probabilities[i]!) <= 1e-4, `${file}[${i}]: ${p} in the browser, ${direct.probabilities[i]} on the server`));
    assert.deepEqual((await answerOf('server')).probabilities, direct.probabilities);
    assert.equal(await page.getAttribute('#agreement', 'class'), 'ok');
  };
  await compare(samples[1]!.file);
  assert.match((await page.textContent('#browser-state')) ?? '', /cpu backend/);
  const classes = new Set<number>();
  for (const s of samples) {
    assert.equal(await upload(s.file), 'done', (await page.textContent('#error')) ?? '');
    await compare(s.file);
    classes.add((await answerOf('browser')).cls);
  }
  // The fixture's classes differ between images, so agreement is not two constant answers.
  assert.ok(classes.size >= 2, `only classes ${[...classes]} over ${samples.length} images`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'page.png'), fullPage: true });
});

test('a dropped and a pasted image are classified like an uploaded one', { skip: NO_BROWSER }, async () => {
  const s = samples[3]!;
  const direct = (await predict(server.predictUrl, [s.file])).predictions[0]!;
  for (const how of ['drop', 'paste'] as const) {
    await page.evaluate(() => ((globalThis as unknown as PageGlobals).document.getElementById('status').dataset.state = 'busy'));
    const transfer = await page.evaluateHandle(({ b64, name }) => {
      const dt = new (globalThis as unknown as PageGlobals).DataTransfer();
      dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, { type: 'image/jpeg' }));
      return dt;
    }, { b64: s.bytes.toString('base64'), name: `${how}.jpg` });
    if (how === 'drop') await page.dispatchEvent('#drop', 'drop', { dataTransfer: transfer });
    else {
      await page.evaluate((dt) => {
        const g = globalThis as unknown as PageGlobals;
        g.document.dispatchEvent(new g.ClipboardEvent('paste', { clipboardData: dt }));
      }, transfer);
    }
    assert.equal(await settled(), 'done', `${how}: ${await page.textContent('#error')}`);
    assert.deepEqual((await answerOf('server')).probabilities, direct.probabilities, how);
    assert.match((await page.textContent('#image-caption')) ?? '', new RegExp(`^${how}\\.jpg`));
  }
});

test('a photo from the camera is classified by the server and in the browser alike', { skip: NO_BROWSER }, async () => {
  assert.equal(await page.isVisible('#camera'), true);
  await page.click('#camera');
  await page.waitForFunction(() => ((globalThis as unknown as PageGlobals).document.getElementById('video') as unknown as { videoWidth: number }).videoWidth > 0);
  await page.evaluate(() => ((globalThis as unknown as PageGlobals).document.getElementById('status').dataset.state = 'busy'));
  await page.click('#capture');
  assert.equal(await settled(), 'done', (await page.textContent('#error')) ?? '');
  assert.match((await page.textContent('#image-caption')) ?? '', /^camera photo, \d+ bytes/);
  const server = await answerOf('server');
  const here = await answerOf('browser');
  assert.equal(server.probabilities.length, LABEL_COUNT);
  assert.equal(here.cls, server.cls);
  here.probabilities.forEach((p, i) => assert.ok(Math.abs(p - server.probabilities[i]!) <= 1e-4, `[${i}]: ${p} in the browser, ${server.probabilities[i]} on the server`));
  await page.click('#camera-close');
  assert.equal(await page.isVisible('#camera-view'), false);
});

test('bad input gives a visible message: a text file, text named .jpg, a file over --max_body', { skip: NO_BROWSER }, async () => {
  const text = Buffer.from('name,label\nbag.jpg,bag\n');
  const cases = [
    { file: { name: 'notes.txt', mimeType: 'text/plain', buffer: text }, error: /notes\.txt is not an image \(its type is text\/plain\)/ },
    { file: { name: 'fake.jpg', mimeType: 'image/jpeg', buffer: text }, error: /server answered HTTP 400: instance 0: the bytes are not an image/ },
    { file: { name: 'huge.jpg', mimeType: 'image/jpeg', buffer: Buffer.alloc(MAX_BODY, 0xff) }, error: /huge\.jpg is 0\.19 MB.*over this server's limit of 0\.19 MB \(--max_body\)/ },
  ];
  for (const c of cases) {
    assert.equal(await upload(c.file), 'error', c.file.name);
    assert.equal(await page.isVisible('#error'), true, c.file.name);
    assert.match((await page.textContent('#error')) ?? '', c.error);
  }
  // The server's refusal is shown as it came.
  assert.equal(await page.textContent('#response-status'), 'HTTP 400');
  // After an error the next good image clears the message.
  assert.equal(await upload(samples[0]!.file), 'done');
  assert.equal(await page.isVisible('#error'), false);
});

test('with the server gone the page says so, and still answers from the model loaded in the browser', { skip: NO_BROWSER }, async () => {
  await server.close();
  const s = samples[2]!;
  assert.equal(await upload(s.file), 'error');
  assert.match((await page.textContent('#error')) ?? '', /Cannot reach the server at http:\/\/127\.0\.0\.1:\d+ .*is imgclass serve still running\?/);
  assert.equal((await answerOf('server')).probabilities.length, 0);
  assert.equal((await answerOf('browser')).probabilities.length, server.labels.length);
  assert.match((await page.textContent('#agreement')) ?? '', /No server answer/);
  assert.deepEqual(outside, [], 'requests that left the server');
  assert.deepEqual(pageErrors, []);
});
