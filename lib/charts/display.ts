/**
 * Showing charts in a tslab notebook cell, as one display bundle: Vega-Lite (interactive in
 * JupyterLab), PNG (classic notebook, nbconvert, GitHub, which do not render Vega-Lite) and text.
 *
 * Why tslab internals: tslab's public API (`display.raw(type, data)`, `newDisplay()`) sends one MIME
 * type per message, so a multi-type bundle is only possible through the function tslab itself calls,
 * `require('tslab/dist/jupyter').lastWriteDisplayData(content, update)`, which sends `content` as a
 * display_data (or, with update=true, update_display_data) message on the current cell. All use of
 * tslab internals is in this file. If a tslab version lacks that function we fall back to the public
 * `newDisplay().png()` (PNG only). Outside a tslab kernel nothing is shown and nothing throws.
 */
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import { renderPng, renderSvg } from './render';
import type { VegaLiteSpec } from './specs';

export const VEGA_LITE_MIME = 'application/vnd.vegalite.v5+json';

export interface ChartBundleOptions {
  /** Include image/png (default true). */
  png?: boolean;
  /** Include image/svg+xml (default false: JupyterLab would prefer it over PNG but not over Vega-Lite; it doubles the size). */
  svg?: boolean;
  /** PNG pixel scale (default 2). */
  scale?: number;
}

/** A Jupyter display bundle: MIME type -> data, plus per-type metadata. */
export interface DisplayBundle {
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
}

/** Content of a display_data / update_display_data message, as tslab's writer takes it. */
interface DisplayContent {
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  transient?: { display_id: string };
}
type WriteDisplayData = (content: DisplayContent, update: boolean) => void;
interface TslabPublicDisplay {
  png(b: Uint8Array): void;
}

/** One line saying what the chart is, for text-only front ends and logs. */
export function describeChart(spec: VegaLiteSpec): string {
  const titleOf = (s: unknown): string | undefined => {
    if (!s || typeof s !== 'object') return undefined;
    const t = (s as { title?: unknown }).title;
    if (typeof t === 'string') return t;
    if (t && typeof t === 'object' && typeof (t as { text?: unknown }).text === 'string') return (t as { text: string }).text;
    return undefined;
  };
  const panels = ['hconcat', 'vconcat', 'concat']
    .map((k) => spec[k])
    .find((v): v is unknown[] => Array.isArray(v));
  const titles = [titleOf(spec), ...(panels ?? []).map(titleOf)].filter((t): t is string => !!t);
  const what = titles.length > 0 ? titles.join(' / ') : 'untitled';
  return `<Vega-Lite chart: ${what}${panels ? ` (${panels.length} panels)` : ''}>`;
}

/**
 * The display bundle of a chart, MIME type -> data: the spec itself for Vega-Lite renderers, a PNG
 * (base64), optionally SVG, and a text line.
 */
export async function chartBundle(spec: VegaLiteSpec, options: ChartBundleOptions = {}): Promise<Record<string, unknown>> {
  return (await chartDisplay(spec, options)).data;
}

/** chartBundle plus display metadata: the PNG's CSS size, so a 2x PNG is shown at the chart's size. */
export async function chartDisplay(spec: VegaLiteSpec, options: ChartBundleOptions = {}): Promise<DisplayBundle> {
  const data: Record<string, unknown> = { [VEGA_LITE_MIME]: spec };
  const metadata: Record<string, unknown> = {};
  if (options.png ?? true) {
    const scale = options.scale ?? 2;
    const png = await renderPng(spec, { scale });
    const meta = await sharp(png).metadata();
    data['image/png'] = png.toString('base64');
    if (meta.width && meta.height) {
      metadata['image/png'] = { width: Math.round(meta.width / scale), height: Math.round(meta.height / scale) };
    }
  }
  if (options.svg ?? false) data['image/svg+xml'] = await renderSvg(spec);
  data['text/plain'] = describeChart(spec);
  return { data, metadata };
}

type Kernel =
  | { kind: 'bundle'; write: WriteDisplayData }
  | { kind: 'png-only'; newDisplay: () => TslabPublicDisplay };

/**
 * The running tslab kernel's display writer, or undefined outside a kernel. Looked up in the module
 * cache rather than with require('tslab/...') so that it is the kernel's own copy of tslab even when
 * the kernel is installed elsewhere than this package's node_modules.
 */
function findKernel(): Kernel | undefined {
  const file = Object.keys(require.cache).find((f) => /[\\/]tslab[\\/]dist[\\/]jupyter\.js$/.test(f));
  if (file === undefined) return undefined;
  const exportsOf = require.cache[file]?.exports as Record<string, unknown> | undefined;
  if (exportsOf && 'lastWriteDisplayData' in exportsOf) {
    const write = exportsOf.lastWriteDisplayData;
    // null until the kernel executes its first cell: tslab is loaded but not serving a notebook.
    return typeof write === 'function' ? { kind: 'bundle', write: write as WriteDisplayData } : undefined;
  }
  // The internal API changed: use tslab's public display (PNG only).
  try {
    const pub = require(path.join(path.dirname(file), 'public.js')) as { newDisplay?: () => TslabPublicDisplay };
    return typeof pub.newDisplay === 'function' ? { kind: 'png-only', newDisplay: pub.newDisplay } : undefined;
  } catch {
    return undefined;
  }
}

let notedNoKernel = false;
function noteNoKernel(): void {
  if (notedNoKernel) return;
  notedNoKernel = true;
  process.stderr.write('imgclass charts: not running in a tslab kernel; charts are not displayed (use renderPng/renderSvg to save them).\n');
}

/** Sends one bundle; `displayId` makes it updatable, `update` replaces the display with that id. */
async function send(
  kernel: Kernel,
  spec: VegaLiteSpec,
  options: ChartBundleOptions,
  target: { displayId?: string; update?: boolean; pngDisplay?: TslabPublicDisplay },
): Promise<void> {
  if (kernel.kind === 'bundle') {
    const bundle = await chartDisplay(spec, options);
    const content: DisplayContent = { data: bundle.data, metadata: bundle.metadata };
    if (target.displayId) content.transient = { display_id: target.displayId };
    kernel.write(content, target.update ?? false);
  } else {
    const png = await renderPng(spec, { scale: options.scale ?? 2 });
    try {
      (target.pngDisplay ?? kernel.newDisplay()).png(png);
    } catch {
      noteNoKernel(); // tslab's public display throws "Not ready" outside a kernel
    }
  }
}

/**
 * Send any display bundle (MIME type -> data) to the current tslab cell; the seam the other notebook
 * displays (image grids, progress, prediction views) use, so tslab internals stay in this file.
 * `displayId` makes the display updatable; `update` replaces the display with that id. With a tslab
 * that lacks the internal writer, the richest of image/png, text/html and text/plain is sent alone.
 * Returns false (and sends nothing) outside a tslab kernel.
 */
export function sendDisplay(
  bundle: DisplayBundle,
  target: { displayId?: string; update?: boolean } = {},
): boolean {
  const kernel = findKernel();
  if (!kernel) return false;
  if (kernel.kind === 'bundle') {
    const content: DisplayContent = { data: bundle.data, metadata: bundle.metadata };
    if (target.displayId) content.transient = { display_id: target.displayId };
    kernel.write(content, target.update ?? false);
    return true;
  }
  const display = kernel.newDisplay() as TslabPublicDisplay & { raw?(type: string, data: string | Uint8Array): void };
  const mime = ['image/png', 'text/html', 'text/plain'].find((m) => bundle.data[m] !== undefined);
  if (!mime || typeof display.raw !== 'function') return false;
  try {
    display.raw(mime, bundle.data[mime] as string);
    return true;
  } catch {
    return false; // tslab's public display throws "Not ready" outside a kernel
  }
}

/** Display a chart in the current tslab cell. Outside a kernel: a one-line note on stderr, no error. */
export async function showChart(spec: VegaLiteSpec, options: ChartBundleOptions = {}): Promise<void> {
  const kernel = findKernel();
  if (!kernel) return noteNoKernel();
  await send(kernel, spec, options, {});
}

export interface LiveChart {
  /** The Jupyter display_id of the chart's display. */
  readonly displayId: string;
  /**
   * Show `spec`, replacing the previous one. At most one render per interval: an update arriving
   * sooner is held (a newer one replaces it) and sent when the interval ends. An update sent at once
   * resolves after it is shown and throws if it fails; a failure of a held update is thrown by the
   * next update() or by close().
   */
  update(spec: VegaLiteSpec): Promise<void>;
  /** Send the held update, if any, and stop. */
  close(): Promise<void>;
}

/**
 * A chart displayed once and then redrawn in place (update_display_data on one display_id), e.g. for
 * training curves while training runs. Throttled to one update per `intervalMs` (default 500 ms); the
 * last update always lands, at the latest on close().
 */
export function liveChart(options: ChartBundleOptions & { intervalMs?: number } = {}): LiveChart {
  const interval = options.intervalMs ?? 500;
  const displayId = randomBytes(8).toString('hex');
  let shown = false;
  let pngDisplay: TslabPublicDisplay | undefined;
  let lastSend = -Infinity;
  let pending: VegaLiteSpec | undefined;
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<void> = Promise.resolve();
  let busy = false;
  let failure: unknown;
  let closed = false;

  const sendOne = async (spec: VegaLiteSpec): Promise<void> => {
    const kernel = findKernel();
    if (!kernel) return noteNoKernel();
    if (kernel.kind === 'png-only') pngDisplay ??= kernel.newDisplay();
    await send(kernel, spec, options, { displayId, update: shown, pngDisplay });
    shown = true;
  };
  // Sends whatever is pending, one send at a time, in order.
  const drain = (): Promise<void> => {
    const run = chain.then(async () => {
      const spec = pending;
      pending = undefined;
      if (spec === undefined) return;
      lastSend = Date.now();
      busy = true;
      try {
        await sendOne(spec);
      } finally {
        busy = false;
      }
    });
    chain = run.catch(() => undefined);
    return run;
  };
  const rethrow = (): void => {
    if (failure !== undefined) {
      const err = failure;
      failure = undefined;
      throw err;
    }
  };

  return {
    displayId,
    async update(spec: VegaLiteSpec): Promise<void> {
      if (closed) throw new Error('liveChart: update() after close()');
      rethrow();
      pending = spec;
      if (timer) return; // a held send is scheduled and will take this spec
      const wait = lastSend + interval - Date.now();
      if (wait <= 0 && !busy) return drain();
      timer = setTimeout(() => {
        timer = undefined;
        drain().catch((err: unknown) => (failure ??= err));
      }, Math.max(0, wait));
      timer.unref(); // a held chart must not keep a plain-node script alive
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      if (timer) {
        clearTimeout(timer);
        timer = undefined;
      }
      await drain();
      rethrow();
    },
  };
}
