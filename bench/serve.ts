/**
 * Benchmark: `imgclass serve` requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients
 * (autocannon, one 500x375 JPEG per request, against 127.0.0.1), beside the raw in-process rate of
 * the same model and preprocessing without HTTP (images/s at the same max batch, decoding the next
 * batch while the model runs this one), measured in the same run.
 *
 * The server runs as a child process (`imgclass serve`) and the load generator as another
 * (bench/serve-load.ts, one per level), so the clients' work shares neither the server's process nor
 * this one, which measured the in-process rate. Default model: an untrained ResNet-18 at 64 px with
 * 5 classes, exported here (speed does not depend on the weights); or --model_dir EXPORT_DIR.
 *
 * Run: npm run bench:serve -- [--seconds 10] [--max_batch 64] [--batch_wait_ms N] [--model_dir DIR]
 * Prints one JSON line; goal: ratio_at_32 >= 0.8.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import sharp from 'sharp';
import { buildResNet } from '../lib/model';
import { exportModel, loadExport } from '../lib/export';
import { chooseBackend } from '../lib/engine/backend';
import { defaultPreprocessing } from '../lib/train/preprocessing';
import { makeClassifier } from '../lib/serve/classifier';
import { numberArg, stringArg } from './args';
import type { LoadRequest, LoadResult } from './serve-load';


const SECONDS = numberArg('seconds', 10);
const MAX_BATCH = numberArg('max_batch', 64);
/** The server's --batch_wait_ms; 0 here means its default. */
const BATCH_WAIT_MS = numberArg('batch_wait_ms', 0);
const MODEL_DIR = stringArg('model_dir', '') || undefined;
const CLIENTS = [1, 8, 32];
const IMAGE_SIZE = 64;
const CLI = path.resolve(__dirname, '../lib/cli.js');
const LOAD = path.join(__dirname, 'serve-load.js');

/** A photo-like 500x375 JPEG: textured noise under a colour wash, quality 85. */
async function sampleJpeg(): Promise<Buffer> {
  const w = 500;
  const h = 375;
  const noise = await sharp({ create: { width: w, height: h, channels: 3, background: '#000', noise: { type: 'gaussian', mean: 128, sigma: 60 } } })
    .blur(2)
    .raw()
    .toBuffer();
  return sharp(noise, { raw: { width: w, height: h, channels: 3 } })
    .composite([{ input: { create: { width: w, height: h, channels: 4, background: { r: 200, g: 90, b: 40, alpha: 0.5 } } } }])
    .jpeg({ quality: 85 })
    .toBuffer();
}

/** Images/s through preprocessing + model in this process: the next batch decodes while the model runs. */
async function inProcessRate(modelDir: string, jpeg: Buffer, seconds: number): Promise<number> {
  const c = makeClassifier(await loadExport(modelDir));
  const decodeBatch = () => Promise.all(Array.from({ length: MAX_BATCH }, () => c.prepare(jpeg)));
  c.classify(await decodeBatch()); // warm-up
  let images = 0;
  let next = decodeBatch();
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const batch = await next;
    next = decodeBatch();
    c.classify(batch);
    images += batch.length;
  }
  const rate = images / ((performance.now() - t0) / 1000);
  await next;
  c.dispose();
  return rate;
}

async function startCliServer(modelDir: string): Promise<{ url: string; stop: () => Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--model_dir', modelDir, '--port', '0', '--max_batch', String(MAX_BATCH), ...(BATCH_WAIT_MS > 0 ? ['--batch_wait_ms', String(BATCH_WAIT_MS)] : [])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /predict: POST (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`imgclass serve exited ${code} before listening`)));
  });
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** One level of load from a child process of its own (bench/serve-load.ts). */
async function load(req: LoadRequest): Promise<LoadResult> {
  const child = spawn(process.execPath, [LOAD, JSON.stringify(req)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (code !== 0) throw new Error(`the load generator (${LOAD}) exited ${code}`);
  return JSON.parse(out.trim().split('\n').pop() as string) as LoadResult;
}

async function batcherCounts(url: string): Promise<{ batches: number; items: number }> {
  const h = (await (await fetch(`${new URL(url).origin}/healthz`)).json()) as { batcher: { batches: number; items: number } };
  return h.batcher;
}

async function main(): Promise<void> {
  const backend = await chooseBackend();
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'imgclass-bench-serve-'));
  try {
    let modelDir = MODEL_DIR;
    if (!modelDir) {
      const model = buildResNet({ depth: 18, numClasses: 5, imageSize: IMAGE_SIZE, seed: 1 });
      modelDir = path.join(work, 'export');
      await exportModel(model, modelDir, { labels: ['a', 'b', 'c', 'd', 'e'], preprocessing: defaultPreprocessing(IMAGE_SIZE), meta: { bench: true } });
      model.dispose();
    }
    const jpeg = await sampleJpeg();
    const inProcess = await inProcessRate(modelDir, jpeg, SECONDS);

    const server = await startCliServer(modelDir);
    const bodyFile = path.join(work, 'request.json');
    await fsp.writeFile(bodyFile, JSON.stringify({ instances: [{ image_bytes: { b64: jpeg.toString('base64') } }] }));
    const level = (connections: number, seconds: number) => load({ url: server.url, bodyFile, connections, seconds });
    const runs = [];
    try {
      await level(CLIENTS[CLIENTS.length - 1]!, Math.min(2, SECONDS)); // warm-up
      for (const connections of CLIENTS) {
        const before = await batcherCounts(server.url);
        const r = await level(connections, SECONDS);
        const after = await batcherCounts(server.url);
        runs.push({
          clients: connections,
          req_s: Number(r.requests.average.toFixed(1)),
          p50_ms: r.latency.p50,
          p99_ms: r.latency.p99,
          p99_over_p50: Number((r.latency.p99 / Math.max(r.latency.p50, 1e-9)).toFixed(2)),
          avg_batch: Number(((after.items - before.items) / Math.max(1, after.batches - before.batches)).toFixed(1)),
          errors: r.errors + r.timeouts + r.non2xx,
        });
      }
    } finally {
      const code = await server.stop();
      if (code !== 0) process.stderr.write(`warning: imgclass serve exited ${code} on SIGTERM\n`);
    }
    const at32 = runs[runs.length - 1]!;
    process.stdout.write(
      JSON.stringify({
        bench: 'serve',
        model: MODEL_DIR ? modelDir : `resnet18 ${IMAGE_SIZE}px 5 classes (untrained)`,
        image: `500x375 JPEG, ${Math.round(jpeg.length / 1024)} KB`,
        backend: backend.name,
        cores: os.availableParallelism(),
        max_batch: MAX_BATCH,
        seconds_per_level: SECONDS,
        in_process_img_s: Number(inProcess.toFixed(1)),
        runs,
        ratio_at_32: Number((at32.req_s / inProcess).toFixed(3)),
        p99_over_p50_at_32: at32.p99_over_p50,
        load_generator: 'autocannon in a child process of its own',
        goal: 'ratio_at_32 >= 0.8',
        node: process.version,
      }) + '\n',
    );
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
