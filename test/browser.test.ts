/**
 * Browser smoke test: an executed notebook with a chart, opened in the classic Jupyter Notebook
 * server from Debian by Debian's headless Chromium. The screenshot must show the chart's PNG
 * (pixels of the chart's bar colour), not just an HTTP 200.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import sharp from 'sharp';
import { runNotebook } from '../lib/runner';
import { tempDir, removeDir, REPO_ROOT } from './helpers';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
const JUPYTER = fs.existsSync('/usr/bin/jupyter-notebook') ? '/usr/bin/jupyter-notebook' : undefined;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitForHttp(url: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > end) throw new Error(`${url} did not answer within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Run a notebook of `cells` (code sources) with tslab, open it in the classic notebook server in
 * headless Chromium, and return the screenshot's RGB pixels.
 */
async function screenshotOfNotebook(dir: string, name: string, cells: string[][], windowSize = '1200,1400'): Promise<{ data: Buffer; info: sharp.OutputInfo }> {
  let server: ChildProcess | undefined;
  try {
    const nb = {
      cells: [
        { cell_type: 'markdown', metadata: {}, source: ['# Chart smoke test'] },
        ...cells.map((source) => ({ cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source })),
      ],
      metadata: { kernelspec: { name: 'tslab', display_name: 'TypeScript', language: 'typescript' } },
      nbformat: 4,
      nbformat_minor: 5,
    };
    fs.writeFileSync(path.join(dir, 'in.ipynb'), JSON.stringify(nb));
    const run = await runNotebook({ input: path.join(dir, 'in.ipynb'), output: path.join(dir, name), progress: false });
    assert.ok(run.ok, run.error);

    // The notebook names the tslab kernel; without its spec the page opens a "Kernel not found"
    // dialog over the notebook.
    const setup = spawnSync('bash', [path.join(REPO_ROOT, 'kernel-setup.sh'), '--prefix', path.join(dir, 'prefix')], { encoding: 'utf8' });
    assert.equal(setup.status, 0, setup.stderr);
    const port = await freePort();
    server = spawn(
      JUPYTER as string,
      ['--no-browser', '--allow-root', `--port=${port}`, '--ip=127.0.0.1', `--notebook-dir=${dir}`, '--NotebookApp.token=', '--NotebookApp.password='],
      { stdio: 'ignore', env: { ...process.env, JUPYTER_PATH: path.join(dir, 'prefix/share/jupyter'), JUPYTER_RUNTIME_DIR: path.join(dir, 'runtime'), JUPYTER_CONFIG_DIR: path.join(dir, 'config') } },
    );
    await waitForHttp(`http://127.0.0.1:${port}/api`, 30_000);
    const shot = path.join(dir, 'shot.png');
    const profile = path.join(dir, 'chromium-profile');
    const r = spawnSync(
      CHROMIUM as string,
      [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, '--hide-scrollbars',
        `--window-size=${windowSize}`, '--virtual-time-budget=15000', `--screenshot=${shot}`,
        `http://127.0.0.1:${port}/notebooks/${name}`,
      ],
      { encoding: 'utf8', timeout: 90_000 },
    );
    assert.ok(fs.existsSync(shot), `no screenshot: ${r.stderr}`);
    // IMGCLASS_SCREENSHOT=file.png keeps the screenshot, to look at what the test saw.
    if (process.env.IMGCLASS_SCREENSHOT) fs.copyFileSync(shot, process.env.IMGCLASS_SCREENSHOT.replace(/\.png$/, `-${name}.png`));
    return await sharp(shot).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  } finally {
    server?.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** Share of the screenshot's pixels within 12 of the colour `rgb` in each channel. */
function colourShare(shot: { data: Buffer; info: sharp.OutputInfo }, rgb: number): number {
  const [r, g, b] = [(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255];
  let n = 0;
  for (let i = 0; i < shot.data.length; i += 3) {
    if (Math.abs(shot.data[i]! - r) < 12 && Math.abs(shot.data[i + 1]! - g) < 12 && Math.abs(shot.data[i + 2]! - b) < 12) n++;
  }
  return n / (shot.info.width * shot.info.height);
}

const NEEDS = (!CHROMIUM || !JUPYTER) && 'needs apt-get install chromium jupyter-notebook (scripts/setup.sh)';

test('the classic notebook in headless Chromium shows the chart of an executed notebook', { skip: NEEDS }, async () => {
  const dir = tempDir('imgclass-browser-');
  try {
    const charts = path.join(REPO_ROOT, 'dist/lib/charts');
    const shot = await screenshotOfNotebook(dir, 'chart.ipynb', [[
      `import { showChart, imagesPerClass } from ${JSON.stringify(charts)};\n`,
      `await showChart(imagesPerClass({ perClass: [{ label: "cat", train: 90, eval: 10 }, { label: "dog", train: 60, eval: 7 }] }));`,
    ]]);
    // The train bars are #4c78a8; count pixels of that colour (the page itself has none).
    const share = colourShare(shot, 0x4c78a8);
    assert.ok(share > 0.005, `chart bars cover ${(share * 100).toFixed(2)} % of the screenshot; expected the chart to be visible`);
  } finally {
    removeDir(dir);
  }
});

test('the evaluation charts of notebook 06 (per-class table, PR curves, gallery of mistakes) show in headless Chromium', { skip: NEEDS }, async () => {
  const dir = tempDir('imgclass-browser-');
  try {
    const charts = path.join(REPO_ROOT, 'dist/lib/charts');
    const sharpModule = path.join(REPO_ROOT, 'node_modules/sharp');
    // A gallery of solid #c020b0 thumbnails (a colour no chart or page uses), then the table and the curves.
    const shot = await screenshotOfNotebook(dir, 'evaluation.ipynb', [[
      `import { showChart, mistakesGallery, perClassTable, precisionRecallCurves } from ${JSON.stringify(charts)};\n`,
      `import sharp from ${JSON.stringify(sharpModule)};\n`,
      `const png = await sharp({ create: { width: 96, height: 96, channels: 3, background: "#c020b0" } }).png().toBuffer();\n`,
      `const url = "data:image/png;base64," + png.toString("base64");\n`,
      `await showChart(mistakesGallery([0.9, 0.8, 0.7].map((p) => ({ url, true_label: "cat", predicted_label: "dog", probability: p }))));\n`,
      `await showChart(perClassTable([{ label: "cat", precision: 0.5, recall: 1, f1: 0.667, support: 3, average_precision: 0.8 }, { label: "dog", precision: 1, recall: 0.5, f1: 0.667, support: 4, average_precision: 0.9 }], { macro: { precision: 0.75, recall: 0.75, f1: 0.667 }, weighted: { precision: 0.79, recall: 0.71, f1: 0.667 } }));\n`,
      `await showChart(precisionRecallCurves([{ label: "cat", precision: [0.5, 1, 1], recall: [1, 0.5, 0], average_precision: 0.8 }]));`,
    ]], '1200,2000');
    const gallery = colourShare(shot, 0xc020b0);
    assert.ok(gallery > 0.005, `the gallery's images cover ${(gallery * 100).toFixed(2)} % of the screenshot; expected them to be visible`);
    // The table's top scores are the deep green of the redyellowgreen scheme (#006837 at 1.0).
    const table = colourShare(shot, 0x006837);
    assert.ok(table > 0.0005, `the per-class table's green cells cover ${(table * 100).toFixed(3)} %`);
  } finally {
    removeDir(dir);
  }
});
