/**
 * The page's in-browser preprocessing (lib/serve/web/vips-preprocess.mjs on wasm-vips) against the
 * server's (lib/train/augment.ts on sharp): the same file, run here on wasm-vips's Node build, must
 * give the same bytes for every kind of image the server takes. This is what makes the browser's
 * probabilities match the server's; the browser test (page.test.ts) then checks it end to end.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { centerCropWindow, evalTransform } from '../lib/train/augment';
import { defaultPreprocessing, PreprocessingSettings } from '../lib/train/preprocessing';
import { WEB_DIR } from '../lib/serve/page-assets';
import { jpeg, photo, REPO_ROOT } from './helpers';

type Vips = { shutdown(): void };
interface BrowserPreprocess {
  evalTransform(vips: Vips, bytes: Uint8Array, s: PreprocessingSettings, crop: typeof centerCropWindow): Uint8Array;
}

let vips: Vips;
let page: BrowserPreprocess;

before(async () => {
  const Vips = (await import('wasm-vips')).default as unknown as (opts?: object) => Promise<Vips>;
  vips = await Vips({ dynamicLibraries: [] });
  page = (await import(pathToFileURL(path.join(WEB_DIR, 'vips-preprocess.mjs')).href)) as BrowserPreprocess;
});

after(() => vips?.shutdown());

async function images(): Promise<{ name: string; bytes: Uint8Array }[]> {
  const samples = path.join(REPO_ROOT, 'data-samples/images');
  const out: { name: string; bytes: Uint8Array }[] = [];
  for (const cls of fs.readdirSync(samples).sort()) {
    const f = fs.readdirSync(path.join(samples, cls)).sort()[0]!;
    out.push({ name: `data-samples ${cls}/${f}`, bytes: fs.readFileSync(path.join(samples, cls, f)) });
  }
  const noise = await (await photo(90, 70, 5)).raw().toBuffer();
  out.push(
    { name: '500x333 JPEG (downscale)', bytes: await jpeg(500, 333, 1) },
    { name: '40x30 JPEG (upscale)', bytes: await jpeg(40, 30, 2) },
    { name: 'PNG with alpha', bytes: await sharp(Buffer.concat([noise, Buffer.alloc(90 * 70, 128)]), { raw: { width: 90, height: 70, channels: 4 } }).png().toBuffer() },
    { name: 'grey PNG', bytes: await (await photo(64, 80, 3)).greyscale().png().toBuffer() },
    { name: 'grey JPEG', bytes: await (await photo(300, 200, 4)).greyscale().jpeg().toBuffer() },
    { name: 'WebP', bytes: await (await photo(120, 240, 6)).webp().toBuffer() },
    { name: 'JPEG with a Display P3 ICC profile', bytes: await (await photo(100, 100, 7)).withIccProfile('p3').jpeg().toBuffer() },
  );
  return out;
}

test('wasm-vips in the page gives the server sharp\'s bytes: every image kind, sizes 32/64/224, bicubic and bilinear', async () => {
  const all = await images();
  let compared = 0;
  for (const size of [32, 64, 224]) {
    for (const resize of ['bicubic', 'bilinear'] as const) {
      const settings: PreprocessingSettings = { ...defaultPreprocessing(size), resize };
      for (const img of all) {
        const expected = await evalTransform(img.bytes, settings);
        const actual = page.evalTransform(vips, img.bytes, settings, centerCropWindow);
        assert.equal(actual.length, size * size * 3, `${img.name} at ${size} px ${resize}`);
        const differ = actual.findIndex((v, i) => v !== expected[i]);
        assert.equal(differ, -1, `${img.name} at ${size} px ${resize}: byte ${differ} is ${actual[differ]} in the page, ${expected[differ]} on the server`);
        compared++;
      }
    }
  }
  assert.equal(compared, 6 * all.length);
});

test('wasm-vips in the page refuses what the server refuses: not an image, a truncated JPEG', async () => {
  const text = new TextEncoder().encode('hello, not an image\n');
  await assert.rejects(() => evalTransform(text, defaultPreprocessing(32)));
  assert.throws(() => page.evalTransform(vips, text, defaultPreprocessing(32), centerCropWindow), /not in a known format|unable to load/i);
  const whole = await jpeg(200, 150, 9);
  const cut = whole.subarray(0, Math.floor(whole.length / 2));
  await assert.rejects(() => evalTransform(cut, defaultPreprocessing(32)));
  assert.throws(() => page.evalTransform(vips, cut, defaultPreprocessing(32), centerCropWindow));
});
