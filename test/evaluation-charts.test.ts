/** The evaluation's Vega-Lite specs: they compile without warnings, hold the figures given, and render. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { perClassTable, precisionRecallCurves, mistakesGallery, compileVegaLite, renderPng, VEGA_LITE_SCHEMA } from '../lib/charts';

const ROWS = [
  { label: 'cat', precision: 0.5, recall: 1, f1: 2 / 3, support: 3, average_precision: 0.8 },
  { label: 'dog', precision: 1, recall: 0.5, f1: 2 / 3, support: 4, average_precision: null },
];
const MEANS = { macro: { precision: 0.75, recall: 0.75, f1: 2 / 3 }, weighted: { precision: 0.79, recall: 0.71, f1: 2 / 3 } };

async function solidUrl(colour: string): Promise<string> {
  const png = await sharp({ create: { width: 40, height: 30, channels: 3, background: colour } }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

test('evaluation specs compile with vega-lite without warnings and hold the figures given', async () => {
  const url = await solidUrl('#c020b0');
  const specs = [
    perClassTable(ROWS, MEANS),
    precisionRecallCurves([{ label: 'cat', precision: [0.5, 1, 1], recall: [1, 0.5, 0], average_precision: 0.8 }, { label: 'dog', precision: [0, 1], recall: [1, 0], average_precision: null }]),
    mistakesGallery([0.9, 0.8, 0.7].map((p) => ({ url, true_label: 'cat', predicted_label: 'dog', probability: p }))),
  ];
  for (const spec of specs) {
    assert.equal(spec.$schema, VEGA_LITE_SCHEMA);
    const { warnings } = await compileVegaLite(spec);
    assert.deepEqual(warnings, [], String(spec.title));
  }
  const table = (specs[0]!.data as { values: { row: string; metric: string; text: string }[] }).values;
  assert.equal(table.find((v) => v.row === 'cat' && v.metric === 'F1')!.text, '0.667');
  assert.equal(table.find((v) => v.row === 'dog' && v.metric === 'AP')!.text, '–', 'no AP for a class without images');
  assert.equal(table.find((v) => v.row === 'weighted mean' && v.metric === 'support')!.text, '7');
  const curve = (specs[1]!.data as { values: { series: string; recall: number }[] }).values;
  assert.deepEqual([...new Set(curve.map((v) => v.series))], ['cat (AP 0.800)'], 'a class without images has no curve');
  assert.deepEqual(curve.map((v) => v.recall), [0, 0.5, 1], 'drawn by increasing recall');
  assert.throws(() => mistakesGallery([]), /no images given/);
  assert.throws(() => precisionRecallCurves([{ label: 'a', precision: [1], recall: [1, 0] }]), /class a has 1 precisions but 2 recalls/);
});

test('the gallery renders its images into the PNG fallback', async () => {
  const url = await solidUrl('#c020b0');
  const png = await renderPng(mistakesGallery([{ url, true_label: 'cat', predicted_label: 'dog', probability: 0.9 }]), { scale: 1 });
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  let n = 0;
  for (let i = 0; i < data.length; i += 3) if (Math.abs(data[i]! - 0xc0) < 8 && Math.abs(data[i + 1]! - 0x20) < 8 && Math.abs(data[i + 2]! - 0xb0) < 8) n++;
  // The 40×30 thumbnail is fitted into a 96 px cell: 96×72 pixels of its colour.
  assert.ok(n > 0.8 * 96 * 72, `${n} pixels of the image's colour in a ${info.width}×${info.height} PNG`);
});
