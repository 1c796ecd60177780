/**
 * Cloud Build (builds that walk QUEUED -> WORKING -> SUCCESS, as long-running operations) and
 * Artifact Registry (repositories; docker images, which a successful build pushes) in the fake.
 */
import * as crypto from 'node:crypto';
import type { Core, Handler, HandlerContext } from './core';
import { alreadyExists, badValue, notFound } from './errors';
import type { Build, DockerImage, FakeBuild, Repository } from './state';

const CB = 'type.googleapis.com/google.devtools.cloudbuild.v1.';
const AR = 'type.googleapis.com/google.devtools.artifactregistry.v1.';
const DONE = /^(SUCCESS|FAILURE|INTERNAL_ERROR|TIMEOUT|CANCELLED|EXPIRED)$/;

/** `projects/P/locations/L` with the project ID (Cloud Build and Artifact Registry name resources by ID). */
function byId(core: Core, name: string): string {
  const m = /^projects\/([^/]+)(\/.*)?$/.exec(name);
  if (!m) return name;
  return `projects/${core.project(m[1] as string).projectId}${m[2] ?? ''}`;
}

function advance(core: Core, b: FakeBuild): void {
  const next = b.plan.length ? b.plan.shift() : undefined;
  if (!next || next === b.build.status) return;
  const t = core.now();
  b.build.status = next;
  if (next === 'WORKING') b.build.startTime = t;
  if (DONE.test(next)) {
    b.build.finishTime = t;
    if (next === 'SUCCESS') pushImages(core, b.build);
    else b.build.failureInfo = { type: 'USER_BUILD_STEP', detail: 'Build step failure: build step 0 "gcr.io/cloud-builders/docker" failed: step exited with non-zero status: 1' };
  }
}

/** Images named `REGION-docker.pkg.dev/PROJECT/REPO/IMAGE[:TAG]` land in that repository, if it exists. */
function pushImages(core: Core, build: Build): void {
  const results: { name: string; digest: string }[] = [];
  for (const uri of build.images ?? []) {
    const m = /^([a-z0-9-]+)-docker\.pkg\.dev\/([^/]+)\/([^/]+)\/([^:@]+)(?::([^@]+))?$/.exec(uri);
    if (!m) continue;
    const [, region, project, repo, image, tag] = m as unknown as [string, string, string, string, string, string | undefined];
    const repoName = byId(core, `projects/${project}/locations/${region}/repositories/${repo}`);
    if (!core.state.repositories.has(repoName)) continue;
    const digest = `sha256:${crypto.createHash('sha256').update(`${uri}${build.id}`).digest('hex')}`;
    const t = core.now();
    for (const img of core.state.dockerImages.values()) {
      if (img.uri?.startsWith(`${m[1]}-docker.pkg.dev/${project}/${repo}/${image}@`) && tag) img.tags = (img.tags ?? []).filter((x) => x !== tag);
    }
    const img: DockerImage = {
      name: `${repoName}/dockerImages/${encodeURIComponent(image)}@${digest}`,
      uri: `${region}-docker.pkg.dev/${project}/${repo}/${image}@${digest}`,
      tags: tag ? [tag] : [],
      imageSizeBytes: '123456789',
      uploadTime: t,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      buildTime: t,
      updateTime: t,
    };
    core.state.dockerImages.set(img.name as string, img);
    results.push({ name: uri, digest });
  }
  if (results.length) build.results = { ...(build.results ?? {}), images: results };
}

function getBuild(c: HandlerContext): FakeBuild {
  const b = c.core.state.builds.get(byId(c.core, c.params.name as string));
  if (!b) throw notFound('Requested entity was not found.');
  return b;
}

const buildsCreate: Handler = (c) => {
  const parent = byId(c.core, c.params.parent as string);
  const project = c.core.project(parent.split('/')[1] as string);
  const id = crypto.randomUUID();
  const t = c.core.now();
  const build: Build = {
    ...(c.body as Build),
    id,
    name: `${parent}/builds/${id}`,
    projectId: project.projectId,
    status: 'QUEUED',
    createTime: t,
    logUrl: `https://console.cloud.google.com/cloud-build/builds;region=${parent.split('/')[3] as string}/${id}?project=${project.projectNumber}`,
    logsBucket: `gs://${project.projectNumber}.cloudbuild-logs.googleusercontent.com`,
  };
  if (!build.steps?.length) throw badValue('Invalid build: steps must not be empty.');
  const fake: FakeBuild = { build, plan: c.core.state.buildPlan.slice(1) };
  c.core.state.builds.set(build.name as string, fake);
  const opName = `projects/${project.projectNumber}/locations/${parent.split('/')[3] as string}/operations/${Buffer.from(id).toString('base64url')}`;
  const op = c.core.startOperation(opName, { '@type': CB + 'BuildOperationMetadata', build }, () => {
    while (fake.plan.length) advance(c.core, fake);
    if (fake.build.status === 'SUCCESS') return { response: { '@type': CB + 'Build', ...fake.build } };
    return { error: { code: 2, message: `Build failed; check build logs for details (status ${fake.build.status as string}).` } };
  });
  return op;
};

const buildsGet: Handler = (c) => {
  const b = getBuild(c);
  advance(c.core, b);
  return b.build;
};

const repositoriesGet: Handler = (c) => {
  const r = c.core.state.repositories.get(byId(c.core, c.params.name as string));
  if (!r) throw notFound(`Requested entity was not found.`);
  return r;
};

const repositoriesCreate: Handler = (c) => {
  const parent = byId(c.core, c.params.parent as string);
  const id = c.query.repositoryId as string | undefined;
  if (!id) throw badValue('repository_id must be set.');
  if (!/^[a-z]([a-z0-9-]*[a-z0-9])?$/.test(id)) throw badValue(`Invalid repository id "${id}".`);
  const name = `${parent}/repositories/${id}`;
  if (c.core.state.repositories.has(name)) throw alreadyExists(`the repository already exists`);
  const body = c.body as Repository;
  if (!body.format || body.format === 'FORMAT_UNSPECIFIED') throw badValue('Repository format must be set.');
  const opName = `${parent}/operations/${crypto.randomUUID()}`;
  return c.core.startOperation(opName, { '@type': AR + 'OperationMetadata' }, () => {
    const t = c.core.now();
    const repo: Repository = { ...body, name, mode: body.mode ?? 'STANDARD_REPOSITORY', createTime: t, updateTime: t, sizeBytes: '0' };
    c.core.state.repositories.set(name, repo);
    return { response: { '@type': AR + 'Repository', ...repo } };
  });
};

const imagesList: Handler = (c) => {
  const parent = byId(c.core, c.params.parent as string);
  if (!c.core.state.repositories.has(parent)) throw notFound(`Requested entity was not found.`);
  const all = [...c.core.state.dockerImages.values()].filter((i) => i.name?.startsWith(`${parent}/dockerImages/`));
  const page = c.core.page(all, c.query);
  return { dockerImages: page.items, ...(page.nextPageToken ? { nextPageToken: page.nextPageToken } : {}) };
};

const imagesGet: Handler = (c) => {
  const name = byId(c.core, c.params.name as string);
  // The image part of the name is percent-encoded in resource names (a/b -> a%2Fb).
  const img = c.core.state.dockerImages.get(name) ?? [...c.core.state.dockerImages.values()].find((i) => decodeURIComponent(i.name as string) === decodeURIComponent(name));
  if (!img) throw notFound(`Requested entity was not found.`);
  return img;
};

export const buildHandlers: Record<string, Handler> = {
  'cloudbuild.projects.locations.builds.create': buildsCreate,
  'cloudbuild.projects.locations.builds.get': buildsGet,
  'cloudbuild.projects.locations.operations.get': (c) => c.core.pollOperation(c.params.name as string),
  'cloudbuild.operations.get': (c) => c.core.pollOperation(c.params.name as string),
  'artifactregistry.projects.locations.repositories.get': repositoriesGet,
  'artifactregistry.projects.locations.repositories.create': repositoriesCreate,
  'artifactregistry.projects.locations.repositories.dockerImages.list': imagesList,
  'artifactregistry.projects.locations.repositories.dockerImages.get': imagesGet,
  'artifactregistry.projects.locations.operations.get': (c) => c.core.pollOperation(c.params.name as string),
};
