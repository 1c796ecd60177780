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

test(
  'the classic notebook in headless Chromium shows the chart of an executed notebook',
  { skip: (!CHROMIUM || !JUPYTER) && 'needs apt-get install chromium jupyter-notebook (scripts/setup.sh)' },
  async () => {
    const dir = tempDir('imgclass-browser-');
    let server: ChildProcess | undefined;
    try {
      const charts = path.join(REPO_ROOT, 'dist/lib/charts');
      const nb = {
        cells: [
          { cell_type: 'markdown', metadata: {}, source: ['# Chart smoke test'] },
          {
            cell_type: 'code',
            execution_count: null,
            metadata: {},
            outputs: [],
            source: [
              `import { showChart, imagesPerClass } from ${JSON.stringify(charts)};\n`,
              `await showChart(imagesPerClass({ perClass: [{ label: "cat", train: 90, eval: 10 }, { label: "dog", train: 60, eval: 7 }] }));`,
            ],
          },
        ],
        metadata: { kernelspec: { name: 'tslab', display_name: 'TypeScript', language: 'typescript' } },
        nbformat: 4,
        nbformat_minor: 5,
      };
      fs.writeFileSync(path.join(dir, 'in.ipynb'), JSON.stringify(nb));
      const run = await runNotebook({ input: path.join(dir, 'in.ipynb'), output: path.join(dir, 'chart.ipynb'), progress: false });
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
          '--window-size=1200,1400', '--virtual-time-budget=15000', `--screenshot=${shot}`,
          `http://127.0.0.1:${port}/notebooks/chart.ipynb`,
        ],
        { encoding: 'utf8', timeout: 90_000 },
      );
      assert.ok(fs.existsSync(shot), `no screenshot: ${r.stderr}`);
      // IMGCLASS_SCREENSHOT=file.png keeps the screenshot, to look at what the test saw.
      if (process.env.IMGCLASS_SCREENSHOT) fs.copyFileSync(shot, process.env.IMGCLASS_SCREENSHOT);
      const { data, info } = await sharp(shot).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      // The train bars are #4c78a8; count pixels of that colour (the page itself has none).
      let bar = 0;
      for (let i = 0; i < data.length; i += 3) {
        if (Math.abs(data[i]! - 0x4c) < 12 && Math.abs(data[i + 1]! - 0x78) < 12 && Math.abs(data[i + 2]! - 0xa8) < 12) bar++;
      }
      const share = bar / (info.width * info.height);
      assert.ok(share > 0.005, `chart bars cover ${(share * 100).toFixed(2)} % of the screenshot; expected the chart to be visible`);
    } finally {
      server?.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      removeDir(dir);
    }
  },
);
