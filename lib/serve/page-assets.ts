/**
 * The files the model's web page loads, all from this machine: the page's own files
 * (lib/serve/web/), the browser builds of installed packages (vega, vega-lite, TensorFlow.js,
 * wasm-vips), and some of this library's own compiled modules (the chart spec, the crop window, the
 * normalisation), so the page draws notebook 08's chart and prepares images with the server's code
 * rather than with a copy of it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Asset {
  /** File on disk. */
  file: string;
  type: string;
  /** Wrap this CommonJS module (compiled by tsc) as an ES module for the browser. */
  commonJs?: boolean;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
};

/** The page's own files, in the source tree (tsc compiles .ts only; these are served as written). */
export const WEB_DIR = path.resolve(__dirname, '../../../lib/serve/web');
const PAGE_FILES = ['index.html', 'page.mjs', 'page.css', 'vips-preprocess.mjs'];

/** URL name → [package, file inside it]. vips.js starts its worker threads from its own URL and finds vips.wasm beside it. */
const VENDOR_FILES: Record<string, [string, string]> = {
  'vega.min.js': ['vega', 'build/vega.min.js'],
  'vega-lite.min.js': ['vega-lite', 'build/vega-lite.min.js'],
  'tf.min.js': ['@tensorflow/tfjs', 'dist/tf.min.js'],
  'vips.js': ['wasm-vips', 'lib/vips.js'],
  'vips.wasm': ['wasm-vips', 'lib/vips.wasm'],
};

/** This library's compiled modules the page imports, and what they may require. */
const LIBRARY_MODULES = ['errors', 'charts/specs', 'train/preprocessing', 'train/augment'];
const LIB_DIR = path.resolve(__dirname, '..');

/**
 * The folder of an installed package, found as Node's require would look for it (the
 * node_modules folders above this file). Not require.resolve: vega and vega-lite declare "exports"
 * that hide their browser builds from it.
 */
function packageDir(name: string): string {
  for (const dir of require.resolve.paths(name) ?? []) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
  }
  throw new Error(`package ${name} is not installed (it is a dependency of imgclass: run npm ci)`);
}

/** Every asset by its URL path under /page/, checked to exist (a missing one fails the server's start, not a page load). */
export function pageAssets(): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  const add = (url: string, file: string, commonJs = false): void => {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: the model's page needs it (reinstall with npm ci, then npm run build)`);
    assets.set(url, { file, type: TYPES[path.extname(file)] ?? 'application/octet-stream', ...(commonJs ? { commonJs } : {}) });
  };
  for (const f of PAGE_FILES) add(f, path.join(WEB_DIR, f));
  for (const [url, [pkg, rel]] of Object.entries(VENDOR_FILES)) add(`vendor/${url}`, path.join(packageDir(pkg), rel));
  for (const m of LIBRARY_MODULES) add(`lib/${m}.mjs`, path.join(LIB_DIR, `${m}.js`), true);
  return assets;
}

/**
 * A tsc-compiled CommonJS module as an ES module the browser can import: each require() of another
 * served library module becomes an import of its URL; `sharp` (imported by train/augment for the
 * functions the page does not call) becomes a stub that throws if used. Any other require is an
 * error here, when the page is built, rather than in the browser.
 */
export function commonJsAsModule(name: string, source: string): string {
  const dir = path.posix.dirname(name);
  const imports: string[] = [];
  const cases: string[] = [];
  const seen = new Set<string>();
  for (const m of source.matchAll(/require\("([^"]+)"\)/g)) {
    const spec = m[1]!;
    if (seen.has(spec)) continue;
    seen.add(spec);
    const id = `dep${seen.size}`;
    if (spec === 'sharp') {
      cases.push(`${JSON.stringify(spec)}: { __esModule: true, default: () => { throw new Error('sharp does not run in the browser'); } }`);
      continue;
    }
    const target = spec.startsWith('.') ? path.posix.normalize(path.posix.join(dir, spec)) : spec;
    if (!LIBRARY_MODULES.includes(target)) throw new Error(`lib/${name}.js requires "${spec}", which the page does not serve`);
    imports.push(`import ${id} from '/page/lib/${target}.mjs';`);
    cases.push(`${JSON.stringify(spec)}: ${id}`);
  }
  return [
    ...imports,
    `const deps = { ${cases.join(', ')} };`,
    'const module = { exports: {} };',
    'const require = (n) => { if (!(n in deps)) throw new Error(`cannot require ${n} in the browser`); return deps[n]; };',
    `(function (exports, require, module) {\n${source.replace(/^\/\/# sourceMappingURL=.*$/m, '')}\n})(module.exports, require, module);`,
    'export default module.exports;',
    '',
  ].join('\n');
}
