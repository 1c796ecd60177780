/**
 * The account-level APIs in the fake: Cloud Resource Manager (project, IAM policy), Service Usage
 * (which services are enabled; enabling is a long-running operation) and IAM service accounts.
 */
import * as crypto from 'node:crypto';
import type { Core, Handler } from './core';
import { GoogleError, SERVICE_TITLES, badValue, notFound } from './errors';
import type { FakeProject } from './state';

const SU = 'type.googleapis.com/google.api.serviceusage.v1.';

function crmProject(p: FakeProject): Record<string, unknown> {
  return {
    projectNumber: p.projectNumber,
    projectId: p.projectId,
    lifecycleState: 'ACTIVE',
    name: p.projectId,
    createTime: '2024-01-15T10:00:00.000Z',
  };
}

function service(p: FakeProject, serviceName: string): Record<string, unknown> {
  return {
    name: `projects/${p.projectNumber}/services/${serviceName}`,
    parent: `projects/${p.projectNumber}`,
    config: { name: serviceName, title: SERVICE_TITLES[serviceName] ?? serviceName },
    state: p.enabledServices.has(serviceName) ? 'ENABLED' : 'DISABLED',
  };
}

/** `projects/P/services/S` (Service Usage also takes folders/ and organizations/, which the fake does not hold). */
function parseServiceName(core: Core, name: string): { project: FakeProject; service: string } {
  const m = /^projects\/([^/]+)\/services\/([^/]+)$/.exec(name);
  if (!m) throw badValue(`fake-google: service name "${name}" is not projects/PROJECT/services/SERVICE`);
  return { project: core.project(m[1] as string), service: m[2] as string };
}

function parentProject(core: Core, parent: string): FakeProject {
  const m = /^projects\/([^/]+)$/.exec(parent);
  if (!m) throw badValue(`fake-google: parent "${parent}" is not projects/PROJECT`);
  return core.project(m[1] as string);
}

function enableOperation(core: Core, p: FakeProject, names: string[], batch: boolean): unknown {
  const opName = `operations/acf.p2-${p.projectNumber}-${crypto.randomUUID()}`;
  return core.startOperation(opName, { '@type': SU + 'OperationMetadata', resourceNames: names.map((n) => `services/${n}/projectSettings/${p.projectNumber}`) }, () => {
    for (const n of names) p.enabledServices.add(n);
    if (batch) return { response: { '@type': SU + 'BatchEnableServicesResponse', services: names.map((n) => service(p, n)) } };
    return { response: { '@type': SU + 'EnableServiceResponse', service: service(p, names[0] as string) } };
  });
}

export const platformHandlers: Record<string, Handler> = {
  'cloudresourcemanager.projects.get': (c) => crmProject(c.core.project(c.params.projectId as string)),
  'cloudresourcemanager.projects.getIamPolicy': (c) => {
    const p = c.core.project(c.params.resource as string);
    const requested = Number(c.body?.options?.requestedPolicyVersion ?? 1);
    if (![0, 1, 3].includes(requested)) throw badValue(`Invalid requested policy version ${requested}; valid values are 0, 1 and 3.`);
    return p.iamPolicy;
  },

  'serviceusage.services.get': (c) => {
    const { project, service: s } = parseServiceName(c.core, c.params.name as string);
    return service(project, s);
  },
  'serviceusage.services.batchGet': (c) => {
    const p = parentProject(c.core, c.params.parent as string);
    const names = (c.query.names as string[] | undefined) ?? [];
    if (!names.length) throw badValue('names must list at least one service.');
    if (names.length > 30) throw badValue('At most 30 services can be requested in one batchGet.');
    return {
      services: names.map((n) => {
        const { project, service: s } = parseServiceName(c.core, n);
        if (project !== p) throw badValue(`Service ${n} is not under ${c.params.parent as string}.`);
        return service(p, s);
      }),
    };
  },
  'serviceusage.services.enable': (c) => {
    const { project, service: s } = parseServiceName(c.core, c.params.name as string);
    if (!SERVICE_TITLES[s]) throw new GoogleError(403, 'PERMISSION_DENIED', `Not found or permission denied for service(s): ${s}.`);
    return enableOperation(c.core, project, [s], false);
  },
  'serviceusage.services.batchEnable': (c) => {
    const p = parentProject(c.core, c.params.parent as string);
    const ids = (c.body.serviceIds as string[] | undefined) ?? [];
    if (!ids.length) throw badValue('serviceIds must list at least one service.');
    if (ids.length > 20) throw badValue('At most 20 services can be enabled in one batchEnable.');
    return enableOperation(c.core, p, ids, true);
  },
  'serviceusage.operations.get': (c) => c.core.pollOperation(c.params.name as string),

  'iam.projects.serviceAccounts.get': (c) => {
    const m = /^projects\/([^/]+)\/serviceAccounts\/([^/]+)$/.exec(c.params.name as string) as RegExpExecArray;
    const key = m[2] as string;
    for (const p of c.core.state.projects.values()) {
      if (m[1] !== '-' && p.projectId !== m[1] && p.projectNumber !== m[1]) continue;
      for (const sa of p.serviceAccounts.values()) {
        if (sa.email === key || sa.uniqueId === key) return sa;
      }
    }
    throw notFound(`Unknown service account`);
  },
};
