/**
 * The trimmed discovery documents the fake Google server checks requests against
 * (test/fixtures/discovery/) agree with the generated client of the googleapis version we pin: every
 * method's URL template, HTTP method and required parameters, and every schema's property names. The
 * fixtures were cut from copies of the published documents that may be older or newer than the
 * client, so this is what keeps the fake from accepting or refusing what the client really sends.
 * And the validator itself: each kind of violation is found, and named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadDiscovery } from './fake-google/discovery';
import type { DiscoveryApi } from './fake-google/discovery';
import { REPO_ROOT } from './helpers';

const FIXTURES = path.join(REPO_ROOT, 'test/fixtures/discovery');
const APIS = fs
  .readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.json'))
  .map((f) => f.replace(/\.json$/, ''));
const GENERATED = path.join(REPO_ROOT, 'node_modules/googleapis/build/src/apis');

test('there is a fixture for every API the fake serves, each naming its source', () => {
  assert.deepEqual(APIS.sort(), ['aiplatform-v1', 'artifactregistry-v1', 'cloudbuild-v1', 'cloudresourcemanager-v1', 'dataflow-v1b3', 'iam-v1', 'logging-v2', 'serviceusage-v1', 'storage-v1']);
  for (const name of APIS) {
    const src = loadDiscovery(name).doc._source;
    for (const k of ['repo', 'path', 'commit', 'revision']) assert.ok(src[k], `${name}: _source.${k}`);
    assert.match(src.commit as string, /^[0-9a-f]{40}$/);
  }
});

for (const name of APIS) {
  test(`${name}: methods and schema properties match googleapis' generated client`, () => {
    const api: DiscoveryApi = loadDiscovery(name);
    const js = fs.readFileSync(path.join(GENERATED, api.doc.name, `${api.doc.version}.js`), 'utf8').replace(/\s+/g, ' ');
    const dts = fs.readFileSync(path.join(GENERATED, api.doc.name, `${api.doc.version}.d.ts`), 'utf8');
    for (const m of api.methods.values()) {
      const url = `'/${api.doc.servicePath}${m.path}')`;
      // Each generated method: url: (rootUrl + '/v1/{+name}').replace(...), method: 'GET', ... requiredParams: [...]
      const found = [...js.matchAll(new RegExp(`${url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[^]*?method: '(\\w+)'[^]*?requiredParams: \\[([^\\]]*)\\]`, 'g'))].map((x) => ({
        method: x[1],
        required: [...(x[2] as string).matchAll(/'([^']+)'/g)].map((r) => r[1]).sort(),
      }));
      const required = Object.entries(m.parameters ?? {})
        .filter(([, p]) => p.required)
        .map(([k]) => k)
        .sort();
      assert.ok(
        found.some((f) => f.method === m.httpMethod && JSON.stringify(f.required) === JSON.stringify(required)),
        `${m.id}: ${m.httpMethod} ${url} with required ${required.join(',')} is not in the generated client (found ${JSON.stringify(found)})`,
      );
    }
    for (const [schema, s] of Object.entries(api.doc.schemas)) {
      const body = new RegExp(`export interface Schema\\$${schema} \\{([\\s\\S]*?)\\n    \\}`).exec(dts);
      assert.ok(body, `${schema} is not a Schema$ interface of the generated client`);
      const props = [...(body[1] as string).matchAll(/\n {8}'?([A-Za-z0-9_@$.-]+)'?\?:/g)].map((x) => x[1]).sort();
      assert.deepEqual(Object.keys(s.properties ?? {}).sort(), props, `${name} ${schema}: properties differ from the generated client's`);
    }
  });
}

test('the validator names each kind of violation', () => {
  const ai = loadDiscovery('aiplatform-v1');
  const upload = ai.methods.get('aiplatform.projects.locations.models.upload');
  const list = ai.methods.get('aiplatform.projects.locations.models.list');
  assert.ok(upload && list);
  const model = { displayName: 'm', containerSpec: { imageUri: 'gcr.io/x/y' } };
  ai.checkBody(upload, { model });
  const cases: Array<[unknown, RegExp]> = [
    [{ model: { ...model, extra: 1 } }, /Unknown name "extra" at 'model'/],
    [{ model: { ...model, displayName: ['m'] } }, /Invalid value at 'model.displayName' \(TYPE_STRING\)/],
    [{ model: { ...model, containerSpec: { imageUri: 'x', ports: [{ containerPort: 1.5 }] } } }, /'model.containerSpec.ports\[0\].containerPort' \(TYPE_INT32\), 1.5/],
    [{ model: { ...model, labels: { a: 1 } } }, /'model.labels.a' \(TYPE_STRING\), 1/],
    [{ model: { containerSpec: { imageUri: 'x' } } }, /Required field 'model.displayName' is not set/],
    [{ model: { ...model, containerSpec: {} } }, /Required field 'model.containerSpec.imageUri' is not set/],
    [{ model: { ...model, containerSpec: { imageUri: 'x', deploymentTimeout: '10 minutes' } } }, /google.protobuf.Duration/],
    [[], /TYPE_MESSAGE/],
  ];
  for (const [body, message] of cases) assert.throws(() => ai.checkBody(upload, body), message);
  assert.deepEqual(ai.checkQuery(list, new URLSearchParams('pageSize=5&filter=x')), { pageSize: '5', filter: 'x' });
  assert.throws(() => ai.checkQuery(list, new URLSearchParams('pageSize=5.5')), /TYPE_INT32/);
  assert.throws(() => ai.checkQuery(list, new URLSearchParams('alt=xml')), /TYPE_ENUM\), "xml"/);
  assert.throws(() => ai.checkQuery(list, new URLSearchParams('filter=a&filter=b')), /given more than once/);
  assert.equal(ai.match('GET', 'v1/projects/p/locations/l/models/123').method.id, 'aiplatform.projects.locations.models.get');
  assert.equal(ai.match('GET', 'v1/projects/p/locations/l/models/123/operations/9').method.id, 'aiplatform.projects.locations.models.operations.get');
  assert.equal(ai.match('POST', 'v1/projects/p/locations/l/endpoints/1:predict').pathParams.endpoint, 'projects/p/locations/l/endpoints/1');
  const su = loadDiscovery('serviceusage-v1');
  const q = su.checkQuery(su.methods.get('serviceusage.services.batchGet') as NonNullable<ReturnType<typeof su.methods.get>>, new URLSearchParams('names=a&names=b'));
  assert.deepEqual(q.names, ['a', 'b'], 'repeated parameters collect every value');
});
