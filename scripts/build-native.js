#!/usr/bin/env node
// Builds native/onednn (oneDNN convolutions for training, see lib/engine/onednn.ts) when oneDNN is
// installed; otherwise says why and succeeds, because the addon is an accelerator: without it training
// runs on the XNNPACK kernels. Set IMGCLASS_REQUIRE_ONEDNN=1 (CI does) to make a failed build an error.
// Plain JavaScript: it runs before the TypeScript compiler, from `npm run build` and `npm ci`.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dir = path.join(root, 'native', 'onednn');
const output = path.join(dir, 'build', 'Release', 'imgclass_onednn.node');
const sources = ['onednn.cc', 'train-network.cc', 'binding.gyp'].map((f) => path.join(dir, f));
const required = process.env.IMGCLASS_REQUIRE_ONEDNN === '1';

function fail(message) {
  if (required) {
    console.error(`build-native: ${message}`);
    process.exit(1);
  }
  console.error(`build-native: ${message}\nbuild-native: training will use the XNNPACK kernels (slower); ` +
    'see README "Training engine".');
  process.exit(0);
}

if (process.env.IMGCLASS_SKIP_NATIVE === '1' && !required) process.exit(0);

// Up to date: nothing to do (tsc runs on every test command; this must cost nothing then).
if (fs.existsSync(output)) {
  const built = fs.statSync(output).mtimeMs;
  if (sources.every((s) => fs.statSync(s).mtimeMs <= built)) process.exit(0);
}

const headers = ['/usr/include/oneapi/dnnl/dnnl.hpp', '/usr/local/include/oneapi/dnnl/dnnl.hpp'];
if (!headers.some((h) => fs.existsSync(h)) && !process.env.CPATH) {
  fail('oneDNN headers not found (Debian/Ubuntu: apt-get install libdnnl-dev)');
}

function findNodeGyp() {
  const candidates = [];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a dependency of ours: use npm's own copy
  }
  if (process.env.npm_execpath) {
    candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  candidates.push(path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  return candidates.find((c) => fs.existsSync(c));
}

const nodeGyp = findNodeGyp();
if (!nodeGyp) fail('node-gyp not found (it comes with npm)');

const args = [nodeGyp, 'rebuild'];
// node-gyp downloads Node's headers unless told where they are; npm passes npm_config_nodedir when set.
const localHeaders = path.resolve(path.dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && fs.existsSync(path.join(localHeaders, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${localHeaders}`);
}
console.error('build-native: building native/onednn (oneDNN convolution kernels)');
const r = spawnSync(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  const log = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-15).join('\n');
  fail(`node-gyp failed (exit ${r.status}):\n${log}`);
}
