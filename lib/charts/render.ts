/**
 * Vega-Lite spec -> SVG (vega's headless renderer) -> PNG (sharp), in Node.
 *
 * vega@6 and vega-lite@6 are ESM-only and their module graphs use top-level await, so require()
 * fails (ERR_REQUIRE_ASYNC_MODULE). This file compiles to CommonJS, where TypeScript would turn
 * `import()` into require() too, and tslab does the same to notebook cells; hence a real dynamic
 * import built with Function, which TypeScript leaves alone. The module paths are resolved with
 * require.resolve first, so the import does not depend on where the calling code lives.
 */
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import type { VegaLiteSpec } from './specs';

const importEsm = new Function('m', 'return import(m)') as (m: string) => Promise<unknown>;

/** The parts of vega-lite and vega this file uses (their own types are ESM-only). */
interface VegaLiteLogger {
  level(): number;
  level(_: number): VegaLiteLogger;
  error(...args: unknown[]): VegaLiteLogger;
  warn(...args: unknown[]): VegaLiteLogger;
  info(...args: unknown[]): VegaLiteLogger;
  debug(...args: unknown[]): VegaLiteLogger;
}
interface VegaLiteModule {
  compile(spec: unknown, options?: { logger?: VegaLiteLogger }): { spec: object };
}
interface VegaView {
  toSVG(scaleFactor?: number): Promise<string>;
  finalize(): void;
}
interface VegaModule {
  parse(spec: object): object;
  View: new (runtime: object, options: { renderer: 'none'; logger?: VegaLiteLogger }) => VegaView;
}

let modules: Promise<{ vega: VegaModule; vegaLite: VegaLiteModule }> | undefined;

/** vega and vega-lite, loaded once per process. */
function load(): Promise<{ vega: VegaModule; vegaLite: VegaLiteModule }> {
  modules ??= (async () => {
    const [vega, vegaLite] = await Promise.all([
      importEsm(pathToFileURL(require.resolve('vega')).href),
      importEsm(pathToFileURL(require.resolve('vega-lite')).href),
    ]);
    return { vega: vega as VegaModule, vegaLite: vegaLite as VegaLiteModule };
  })();
  // A failed load (e.g. missing package) should not stick: the next call tries again.
  modules.catch(() => (modules = undefined));
  return modules;
}

/** A vega logger that collects warnings instead of printing them; errors still throw where vega throws. */
function collectingLogger(warnings: string[]): VegaLiteLogger {
  let lvl = 2; // vega's Warn
  const text = (args: unknown[]): string => args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ');
  const logger = {
    level(l?: number) {
      if (l === undefined) return lvl;
      lvl = l;
      return logger;
    },
    error: (...args: unknown[]) => (warnings.push(`error: ${text(args)}`), logger),
    warn: (...args: unknown[]) => (warnings.push(text(args)), logger),
    info: () => logger,
    debug: () => logger,
  };
  return logger as VegaLiteLogger;
}

/**
 * Compile a Vega-Lite spec to a Vega spec. Throws on an invalid spec; vega-lite's warnings (a field
 * that does not fit its channel, a dropped encoding...) are returned rather than printed.
 */
export async function compileVegaLite(spec: VegaLiteSpec): Promise<{ vegaSpec: object; warnings: string[] }> {
  const { vegaLite } = await load();
  const warnings: string[] = [];
  const { spec: vegaSpec } = vegaLite.compile(spec, { logger: collectingLogger(warnings) });
  return { vegaSpec, warnings };
}

/** Render a Vega-Lite spec to an SVG document (text as <text> elements, fonts resolved by the viewer). */
export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  const { vega, vegaLite } = await load();
  const warnings: string[] = [];
  const logger = collectingLogger(warnings);
  const view = new vega.View(vega.parse(vegaLite.compile(spec, { logger }).spec), { renderer: 'none', logger });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/**
 * Render a Vega-Lite spec to PNG. `scale` (default 2) multiplies the chart's pixel size; the SVG is
 * rasterised at that density rather than upscaled, so text and lines stay sharp on high-DPI screens.
 * Text needs a system font (Debian: fonts-dejavu-core).
 */
export async function renderPng(spec: VegaLiteSpec, options: { scale?: number } = {}): Promise<Buffer> {
  const scale = options.scale ?? 2;
  if (!(scale > 0 && scale <= 8)) throw new RangeError(`renderPng: scale must be in (0, 8], got ${scale}`);
  const svg = await renderSvg(spec);
  return sharp(Buffer.from(svg), { density: 72 * scale }).png().toBuffer();
}
