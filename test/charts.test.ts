import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { UserError } from '../lib/errors';
import {
  VEGA_LITE_MIME,
  VEGA_LITE_SCHEMA,
  chartBundle,
  compileVegaLite,
  confusionMatrix,
  imagesPerClass,
  predictionProbabilities,
  renderPng,
  renderSvg,
  trainingCurves,
  type VegaLiteSpec,
} from '../lib/charts';

const run = promisify(execFile);
const REPO_ROOT = path.resolve(__dirname, '../..');
const CHARTS_MODULE = path.join(REPO_ROOT, 'dist/lib/charts');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'imgclass-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

// A run's metrics.jsonl: train every 10 steps, eval every 100, plus lines the chart must ignore.
const records: Record<string, unknown>[] = [];
for (let step = 10; step <= 300; step += 10) {
  records.push({ kind: 'train', step, loss: 2.3 * Math.exp(-step / 150) + 0.2, lr: 0.1, img_s: 40, wall_time: 1e9 + step });
}
for (let step = 100; step <= 300; step += 100) {
  records.push({ kind: 'eval', step, loss: 2.3 * Math.exp(-step / 150) + 0.3, top1: 0.3 + step / 600, top5: 0.7 + step / 1200, count: 40 });
}
records.push({ kind: 'train', step: 310, loss: Number.NaN }, { kind: 'checkpoint', step: 300, path: 'x' });

const labels = ['cat', 'dog', 'bird'];
const matrix = [
  [7, 1, 0],
  [2, 5, 0],
  [0, 0, 3],
];
const perClass = {
  perClass: [
    { label: 'cat', train: 72, eval: 8 },
    { label: 'dog', train: 60, eval: 7 },
    { label: 'bird', train: 30, eval: 3 },
  ],
};

type Row = Record<string, unknown>;
function valuesOf(spec: unknown): Row[] {
  return ((spec as { data: { values: Row[] } }).data.values);
}

test('every spec compiles with vega-lite without warnings and declares the v5 schema', async () => {
  const specs: [string, VegaLiteSpec][] = [
    ['trainingCurves', trainingCurves(records)],
    ['trainingCurves (empty)', trainingCurves([])],
    ['imagesPerClass', imagesPerClass(perClass)],
    ['confusionMatrix', confusionMatrix(labels, matrix)],
    ['confusionMatrix (40 classes)', confusionMatrix(Array.from({ length: 40 }, (_, i) => `c${i}`), Array.from({ length: 40 }, (_, i) => Array.from({ length: 40 }, (_, j) => (i === j ? 5 : 0))))],
    ['predictionProbabilities', predictionProbabilities(labels, [0.2, 0.7, 0.1])],
  ];
  for (const [name, spec] of specs) {
    assert.equal(spec.$schema, VEGA_LITE_SCHEMA, name);
    const { vegaSpec, warnings } = await compileVegaLite(spec);
    assert.deepEqual(warnings, [], `${name}: ${warnings.join('; ')}`);
    assert.ok(Array.isArray((vegaSpec as { marks?: unknown[] }).marks), `${name}: compiled to a Vega spec with marks`);
  }
  // And the checker can fail: a field that does not fit its channel is reported.
  const bad = { data: { values: [{ a: 1 }] }, mark: 'bar', encoding: { x: { field: 'a', type: 'quantitative' }, shape: { field: 'a', type: 'nominal' } } };
  assert.ok((await compileVegaLite(bad)).warnings.length > 0);
});

test('trainingCurves: two panels holding the train and eval losses and eval accuracies that went in', () => {
  const spec = trainingCurves(records);
  const panels = spec.hconcat as Row[];
  assert.equal(panels.length, 2);
  const loss = valuesOf(panels[0]);
  const train = loss.filter((r) => r.series === 'train');
  const evalLoss = loss.filter((r) => r.series === 'eval');
  const expectTrain = records.filter((r) => r.kind === 'train' && Number.isFinite(r.loss));
  assert.deepEqual(train.map((r) => [r.step, r.loss]), expectTrain.map((r) => [r.step, r.loss]));
  assert.deepEqual(evalLoss.map((r) => r.step), [100, 200, 300]);
  assert.ok(!loss.some((r) => r.step === 310), 'NaN loss is left out');
  const acc = valuesOf(panels[1]);
  assert.deepEqual(acc.filter((r) => r.series === 'top-1').map((r) => r.accuracy), [0.3 + 100 / 600, 0.3 + 200 / 600, 0.3 + 300 / 600]);
  assert.equal(acc.filter((r) => r.series === 'top-5').length, 3);
  const accY = (panels[1] as { encoding: { y: { scale: { domain: number[] }; axis: { format: string } } } }).encoding.y;
  assert.deepEqual(accY.scale.domain, [0, 1]);
  assert.equal(accY.axis.format, '.0%');

  // No top-5 in the log (fewer than 5 classes): only a top-1 series in the legend.
  const noTop5 = trainingCurves(records.map((r) => ({ ...r, top5: undefined })));
  const colour = ((noTop5.hconcat as Row[])[1] as { encoding: { color: { scale: { domain: string[] } } } }).encoding.color;
  assert.deepEqual(colour.scale.domain, ['top-1']);
});

test('imagesPerClass and confusionMatrix hold their input counts; bad shapes are UserErrors', () => {
  const bars = valuesOf(imagesPerClass(perClass));
  for (const c of perClass.perClass) {
    assert.equal(bars.find((r) => r.label === c.label && r.split === 'train')?.images, c.train);
    assert.equal(bars.find((r) => r.label === c.label && r.split === 'eval')?.images, c.eval);
  }
  const cells = valuesOf(confusionMatrix(labels, matrix));
  assert.equal(cells.length, 9);
  labels.forEach((actual, i) =>
    labels.forEach((predicted, j) => {
      assert.equal(cells.find((c) => c.actual === actual && c.predicted === predicted)?.count, matrix[i]![j], `${actual} -> ${predicted}`);
    }),
  );
  assert.throws(() => confusionMatrix(labels, matrix.slice(0, 2)), UserError);
  assert.throws(() => confusionMatrix(labels, [[1, 2, 3], [1, 2], [1, 2, 3]]), /row 1 \(dog\) has 2 columns/);
});

test('predictionProbabilities: sorted, limited to top, the argmax highlighted', () => {
  const spec = predictionProbabilities(['a', 'b', 'c', 'd'], Float32Array.from([0.1, 0.25, 0.6, 0.05]), 3);
  const rows = valuesOf(spec);
  assert.deepEqual(rows.map((r) => r.label), ['c', 'b', 'a']);
  assert.deepEqual(rows.map((r) => r.role), ['predicted', 'other', 'other']);
  assert.match(String(spec.title), /Prediction: c \(60\.0 %\)/);
  assert.throws(() => predictionProbabilities(['a', 'b'], [1]), UserError);
});

test('renderSvg: axis titles, class labels and counts are text in the SVG', async () => {
  const svg = await renderSvg(confusionMatrix(labels, matrix));
  assert.match(svg, /^<svg/);
  for (const t of ['true class', 'predicted class', 'Confusion matrix', 'cat', 'dog', 'bird', '7', '5']) {
    assert.ok(svg.includes(`>${t}</text>`), `text "${t}" in the SVG`);
  }
  const curves = await renderSvg(trainingCurves(records));
  for (const t of ['step', 'cross-entropy loss', 'accuracy', '100%', 'train', 'eval', 'top-5']) {
    assert.ok(curves.includes(`>${t}</text>`), `text "${t}" in the curves SVG`);
  }
});

/** RGB pixels of a PNG. */
async function pixels(png: Buffer): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

test('renderPng: a real, non-blank PNG at 2x with the bar colours', async () => {
  const spec = imagesPerClass(perClass);
  const png = await renderPng(spec);
  const meta = await sharp(png).metadata();
  assert.equal(meta.format, 'png');
  const svg = await renderSvg(spec);
  const svgWidth = Number(/width="(\d+)"/.exec(svg)![1]);
  assert.equal(meta.width, 2 * svgWidth);
  assert.ok(meta.height! > 200 && meta.height! < 1000, `height ${meta.height}`);

  const { data, width, height } = await pixels(png);
  const n = width * height;
  let white = 0;
  let trainBlue = 0; // #4c78a8
  let evalOrange = 0; // #f58518
  const colours = new Set<number>();
  for (let i = 0; i < data.length; i += 3) {
    const [r, g, b] = [data[i]!, data[i + 1]!, data[i + 2]!];
    colours.add((r << 16) | (g << 8) | b);
    if (r > 245 && g > 245 && b > 245) white++;
    if (Math.abs(r - 0x4c) < 6 && Math.abs(g - 0x78) < 6 && Math.abs(b - 0xa8) < 6) trainBlue++;
    if (Math.abs(r - 0xf5) < 6 && Math.abs(g - 0x85) < 6 && Math.abs(b - 0x18) < 6) evalOrange++;
  }
  const ink = 1 - white / n;
  assert.ok(ink > 0.1 && ink < 0.7, `non-white share ${ink.toFixed(3)}`);
  assert.ok(trainBlue / n > 0.1, `train bars ${(trainBlue / n).toFixed(3)}`);
  assert.ok(evalOrange / n > 0.005, `eval bars ${(evalOrange / n).toFixed(4)}`);
  assert.ok(trainBlue > 5 * evalOrange, 'train bars are longer than eval bars');
  assert.ok(colours.size > 50, `${colours.size} distinct colours (anti-aliased text and lines)`);
});

test('renderPng draws text with a real font: glyphs in the title region', async () => {
  // Same layout three times; only the title's ink differs. Missing fonts give no ink or equal boxes.
  const withTitle = (text: string, color = 'black'): VegaLiteSpec => ({ ...imagesPerClass(perClass), title: { text, color, fontSize: 16 } });
  const titleInk = async (spec: VegaLiteSpec): Promise<number> => {
    const { data, width } = await pixels(await renderPng(spec));
    let dark = 0;
    for (let i = 0; i < width * 40 * 3; i += 3) if (data[i]! + data[i + 1]! + data[i + 2]! < 384) dark++;
    return dark;
  };
  const wide = await titleInk(withTitle('WWWWWWWW'));
  const narrow = await titleInk(withTitle('iiiiiiii'));
  const hidden = await titleInk(withTitle('WWWWWWWW', 'white'));
  assert.ok(hidden < 20, `white title leaves the region blank (${hidden})`);
  assert.ok(narrow > 50, `narrow glyphs drawn (${narrow})`);
  assert.ok(wide > 2 * narrow, `W has more ink than i (${wide} vs ${narrow})`);
});

test('chartBundle: Vega-Lite spec, base64 PNG and a text line', async () => {
  const spec = confusionMatrix(labels, matrix);
  const bundle = await chartBundle(spec);
  assert.deepEqual(Object.keys(bundle).sort(), [VEGA_LITE_MIME, 'image/png', 'text/plain'].sort());
  assert.equal(bundle[VEGA_LITE_MIME], spec);
  assert.equal((await sharp(Buffer.from(bundle['image/png'] as string, 'base64')).metadata()).format, 'png');
  assert.match(bundle['text/plain'] as string, /Confusion matrix/);
  const withSvg = await chartBundle(spec, { png: false, svg: true });
  assert.deepEqual(Object.keys(withSvg).sort(), [VEGA_LITE_MIME, 'image/svg+xml', 'text/plain'].sort());
});

test('outside a kernel, showChart and liveChart write nothing to stdout and do not throw', async () => {
  const script = `
    const c = require(${JSON.stringify(CHARTS_MODULE)});
    (async () => {
      await c.showChart(c.confusionMatrix(['a', 'b'], [[1, 0], [0, 1]]));
      const live = c.liveChart();
      await live.update(c.confusionMatrix(['a', 'b'], [[1, 0], [0, 1]]));
      await live.update(c.confusionMatrix(['a', 'b'], [[2, 0], [0, 2]]));
      await live.close();
    })().then(() => process.stderr.write('done\\n'));`;
  const { stdout, stderr } = await run(process.execPath, ['-e', script], { timeout: 20_000 });
  assert.equal(stdout, '');
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 2, stderr);
  assert.match(lines[0]!, /not running in a tslab kernel/);
  assert.equal(lines[1], 'done');
});

// Runs one cell in a real tslab kernel through Debian's jupyter_client and prints its iopub messages.
const KERNEL_CLIENT = `
import json, sys
from jupyter_client import KernelManager
km = KernelManager(kernel_name='imgclass-tslab-test')
km.start_kernel(cwd=sys.argv[2])
kc = km.client()
kc.start_channels()
try:
    kc.wait_for_ready(timeout=60)
    msg_id = kc.execute(open(sys.argv[1]).read())
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg['parent_header'].get('msg_id') != msg_id:
            continue
        print(json.dumps({'msg_type': msg['msg_type'], 'content': msg['content']}), flush=True)
        if msg['msg_type'] == 'status' and msg['content']['execution_state'] == 'idle':
            break
    reply = kc.get_shell_msg(timeout=60)
    while reply['parent_header'].get('msg_id') != msg_id:
        reply = kc.get_shell_msg(timeout=60)
    print(json.dumps({'msg_type': 'execute_reply', 'content': reply['content']}), flush=True)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
`;

interface IopubMessage {
  msg_type: string;
  content: { data?: Record<string, unknown>; metadata?: Record<string, unknown>; transient?: { display_id?: string }; status?: string; text?: string };
}

test('in a tslab kernel: showChart sends one display_data bundle; liveChart updates it in place, throttled', { timeout: 90_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(root, 'kernel-'));
  const specDir = path.join(dir, 'kernels', 'imgclass-tslab-test');
  fs.mkdirSync(specDir, { recursive: true });
  fs.writeFileSync(
    path.join(specDir, 'kernel.json'),
    JSON.stringify({ argv: [path.join(REPO_ROOT, 'node_modules/.bin/tslab'), 'kernel', '--config-path', '{connection_file}'], display_name: 'TypeScript (test)', language: 'typescript' }),
  );
  // Cell 1: showChart. live1: five quick updates -> shown once, then only the last lands (on close).
  // live2: a held update sent by the timer, then one after the interval, sent at once.
  const cell = `
import { showChart, liveChart, confusionMatrix } from ${JSON.stringify(CHARTS_MODULE)};
const m = (k: number) => confusionMatrix(["a", "b"], [[k, 0], [0, k]], { title: "k=" + k });
await showChart(m(0));
const live1 = liveChart();
for (let k = 1; k <= 5; k++) await live1.update(m(k));
await live1.close();
const live2 = liveChart({ png: false });
await live2.update(m(10));
await live2.update(m(11));
await new Promise((r) => setTimeout(r, 1000));
await live2.update(m(12));
await live2.close();
console.log("ids " + live1.displayId + " " + live2.displayId);
`;
  const cellFile = path.join(dir, 'cell.ts');
  const clientFile = path.join(dir, 'client.py');
  fs.writeFileSync(cellFile, cell);
  fs.writeFileSync(clientFile, KERNEL_CLIENT);
  const env = { ...process.env, JUPYTER_PATH: dir, JUPYTER_RUNTIME_DIR: path.join(dir, 'runtime'), JUPYTER_DATA_DIR: path.join(dir, 'data') };
  const { stdout } = await run('/usr/bin/python3', [clientFile, cellFile, dir], { env, timeout: 80_000, maxBuffer: 64 << 20 });
  const msgs = stdout.trim().split('\n').map((l) => JSON.parse(l) as IopubMessage);
  const reply = msgs.find((m) => m.msg_type === 'execute_reply');
  const streams = msgs.filter((m) => m.msg_type === 'stream').map((m) => m.content.text).join('');
  assert.equal(reply?.content.status, 'ok', `cell failed; stream output: ${streams}`);
  const [, id1, id2] = /ids (\w+) (\w+)/.exec(streams) ?? [];
  assert.ok(id1 && id2 && id1 !== id2, streams);

  const displays = msgs.filter((m) => m.msg_type === 'display_data' || m.msg_type === 'update_display_data');
  const title = (m: IopubMessage): unknown => (m.content.data?.[VEGA_LITE_MIME] as { title?: unknown } | undefined)?.title;

  // showChart: Vega-Lite + PNG + text, no display_id.
  const shown = displays.filter((m) => title(m) === 'k=0');
  assert.equal(shown.length, 1);
  assert.equal(shown[0]!.msg_type, 'display_data');
  assert.deepEqual(Object.keys(shown[0]!.content.data!).sort(), [VEGA_LITE_MIME, 'image/png', 'text/plain'].sort());
  const png = Buffer.from(shown[0]!.content.data!['image/png'] as string, 'base64');
  const meta = await sharp(png).metadata();
  assert.equal(meta.format, 'png');
  assert.deepEqual(shown[0]!.content.metadata?.['image/png'], { width: meta.width! / 2, height: meta.height! / 2 });
  assert.match(shown[0]!.content.data!['text/plain'] as string, /k=0/);

  // live1: display_data of k=1, then one update_display_data of k=5, both on id1.
  const of1 = displays.filter((m) => m.content.transient?.display_id === id1);
  assert.deepEqual(of1.map((m) => [m.msg_type, title(m)]), [['display_data', 'k=1'], ['update_display_data', 'k=5']]);
  assert.ok(of1.every((m) => typeof m.content.data?.['image/png'] === 'string'));

  // live2: k=10 at once, k=11 by the timer (not lost), k=12 at once after the interval.
  const of2 = displays.filter((m) => m.content.transient?.display_id === id2);
  assert.deepEqual(of2.map((m) => [m.msg_type, title(m)]), [['display_data', 'k=10'], ['update_display_data', 'k=11'], ['update_display_data', 'k=12']]);
  assert.ok(of2.every((m) => m.content.data?.['image/png'] === undefined && m.content.data?.[VEGA_LITE_MIME] !== undefined));
});
