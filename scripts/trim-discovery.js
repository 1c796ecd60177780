#!/usr/bin/env node
// Cuts a Google API discovery document down to the methods the fake Google server
// (test/fake-google/) answers and the schemas those methods reach, and writes it as a test
// fixture under test/fixtures/discovery/. The source document is read from a local file; this
// script downloads nothing.
//
//   node scripts/trim-discovery.js SOURCE.json OUT.json '{"repo":..,"path":..,"commit":..}' \
//        METHOD_ID... [--cut SCHEMA...] [--dts node_modules/googleapis/build/src/apis/API/VERSION.d.ts]
//
// --dts: where the source document is older than the pinned googleapis client, properties that the
// client's generated Schema$ interfaces have and the document lacks are added from the .d.ts (type
// from the TypeScript type, description from its comment), each marked "_from": "googleapis .d.ts".
//
// Schemas named after --cut are not transcribed: every reference to one becomes
// {"type":"any","_cut":"Name"} (anything is accepted there), and the fixture's _trim says so.
// Descriptions are shortened to their first sentence (enough to keep "Required." and
// "Output only." markers, which the fake reads); everything else is kept as published.
'use strict';
const fs = require('node:fs');

const [src, out, sourceJson, ...args] = process.argv.slice(2);
const dtsAt = args.indexOf('--dts');
const dtsPath = dtsAt < 0 ? undefined : args[dtsAt + 1];
const rest = dtsAt < 0 ? args : [...args.slice(0, dtsAt), ...args.slice(dtsAt + 2)];
const cutAt = rest.indexOf('--cut');
const methodIds = cutAt < 0 ? rest : rest.slice(0, cutAt);
const cut = new Set(cutAt < 0 ? [] : rest.slice(cutAt + 1));
const doc = JSON.parse(fs.readFileSync(src, 'utf8'));

function firstSentence(text) {
  if (typeof text !== 'string') return text;
  const m = /^[\s\S]*?[.!?](?=\s|$)/.exec(text);
  const s = (m ? m[0] : text).trim();
  return s.length > 300 ? `${s.slice(0, 297)}...` : s;
}

/** Walk resources, keeping only the wanted methods (with their resource nesting). */
function pickResources(resources) {
  const outRes = {};
  for (const [name, r] of Object.entries(resources ?? {})) {
    const kept = {};
    const methods = {};
    for (const [mName, m] of Object.entries(r.methods ?? {})) {
      if (methodIds.includes(m.id)) methods[mName] = m;
    }
    if (Object.keys(methods).length) kept.methods = methods;
    const sub = pickResources(r.resources);
    if (Object.keys(sub).length) kept.resources = sub;
    if (Object.keys(kept).length) outRes[name] = kept;
  }
  return outRes;
}

const found = new Set();
(function collect(resources) {
  for (const r of Object.values(resources ?? {})) {
    for (const m of Object.values(r.methods ?? {})) if (methodIds.includes(m.id)) found.add(m.id);
    collect(r.resources);
  }
})(doc.resources);
const missing = methodIds.filter((id) => !found.has(id));
if (missing.length) {
  console.error(`methods not in ${src}: ${missing.join(', ')}`);
  process.exit(1);
}

const resources = pickResources(doc.resources);
const wanted = new Set();
const cutSeen = new Set();
function refs(node) {
  if (Array.isArray(node)) return node.forEach(refs);
  if (!node || typeof node !== 'object') return;
  if (typeof node.$ref === 'string') {
    const name = node.$ref;
    if (cut.has(name)) cutSeen.add(name);
    else if (!wanted.has(name)) {
      if (!doc.schemas[name]) throw new Error(`schema ${name} not in the document`);
      wanted.add(name);
      refs(doc.schemas[name]);
    }
  }
  for (const [k, v] of Object.entries(node)) if (k !== '$ref') refs(v);
}
refs(resources);

function shorten(node) {
  if (Array.isArray(node)) return node.map(shorten);
  if (!node || typeof node !== 'object') return node;
  if (typeof node.$ref === 'string' && cut.has(node.$ref)) {
    const o = { type: 'any', _cut: node.$ref };
    if (node.description) o.description = firstSentence(node.description);
    return o;
  }
  const o = {};
  for (const k of Object.keys(node).sort()) {
    if (k === 'enumDescriptions' || k === 'scopes') continue;
    o[k] = k === 'description' && typeof node[k] === 'string' ? firstSentence(node[k]) : shorten(node[k]);
  }
  return o;
}

const schemas = {};
for (const name of [...wanted].sort()) schemas[name] = shorten(doc.schemas[name]);

const supplemented = [];
if (dtsPath) {
  const dts = fs.readFileSync(dtsPath, 'utf8');
  const typeOf = (t) => {
    t = t.replace(/\s*\|\s*null$/, '').trim();
    if (t === 'string') return { type: 'string' };
    if (t === 'boolean') return { type: 'boolean' };
    if (t === 'number') return { type: 'number', _note: 'integer or number: the .d.ts does not say' };
    if (t === 'any') return { type: 'any' };
    let m = /^(.*)\[\]$/.exec(t);
    if (m) return { type: 'array', items: typeOf(m[1]) };
    m = /^\{\s*\[key: string\]: ([\s\S]*?);?\s*\}$/.exec(t);
    if (m) return { type: 'object', additionalProperties: typeOf(m[1]) };
    if (t.startsWith('{')) return { type: 'any', _note: 'an inline object type in the .d.ts, not transcribed' };
    m = /^Schema\$(\w+)$/.exec(t);
    if (m) return schemas[m[1]] ? { $ref: m[1] } : { type: 'any', _cut: m[1] };
    throw new Error(`type ${t} not understood`);
  };
  for (const [name, schema] of Object.entries(schemas)) {
    const m = new RegExp(`export interface Schema\\$${name} \\{([\\s\\S]*?)\\n    \\}`).exec(dts);
    if (!m) continue;
    // Properties of the interface itself are indented 8 spaces; those of inline nested types more.
    const re = /(?:\n {8}\/\*\*\n {9}\* ([\s\S]*?)\n {9}\*\/)?\n {8}'?([A-Za-z0-9_@$.-]+)'?\?: (\{[\s\S]*?\n {8}\}(?: \| null)?|[^;{]+);/g;
    let p;
    while ((p = re.exec(m[1]))) {
      const [, comment, prop, type] = p;
      if (schema.properties && schema.properties[prop]) continue;
      schema.properties = schema.properties ?? {};
      schema.properties[prop] = { ...typeOf(type), description: firstSentence((comment ?? '').replace(/\n\s*\*\s?/g, ' ')), _from: 'googleapis .d.ts' };
      supplemented.push(`${name}.${prop}`);
    }
  }
}

const source = JSON.parse(sourceJson);
const fixture = {
  _source: { ...source, revision: doc.revision, discoveryId: doc.id },
  _trim:
    'Only the methods listed in _methods and the schemas they reach. Descriptions are cut to their first sentence; ' +
    'enumDescriptions and scopes are left out. ' +
    (cutSeen.size
      ? `These schemas were not transcribed (deep branches our code never sends or reads); each reference to one is ` +
        `{"type":"any","_cut":NAME} and accepts anything: ${[...cutSeen].sort().join(', ')}.`
      : 'No schema was cut.') +
    (supplemented.length
      ? ` The source document predates googleapis ${require('../node_modules/googleapis/package.json').version}; these properties ` +
        `were added from that client's ${dtsPath.replace(/^.*node_modules\//, '')} (marked "_from"): ${supplemented.join(', ')}.`
      : ''),
  _methods: [...methodIds].sort(),
  id: doc.id,
  name: doc.name,
  version: doc.version,
  revision: doc.revision,
  rootUrl: doc.rootUrl,
  servicePath: doc.servicePath,
  basePath: doc.basePath,
  batchPath: doc.batchPath,
  parameters: shorten(doc.parameters),
  resources: shorten(resources),
  schemas,
};
fs.writeFileSync(out, `${JSON.stringify(fixture, null, 1)}\n`);
console.log(`${out}: ${found.size} methods, ${wanted.size} schemas, ${cutSeen.size} cut, ${fs.statSync(out).size} bytes`);
