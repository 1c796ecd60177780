/**
 * The gcp backend's modules, for the notebooks (`ic.cloud.…`) and library users: the client, its
 * errors and dry runs, section 2's access check, section 5 on Dataflow, and Vertex AI endpoints
 * (sections 7-8).
 */
export * from './service-account';
export { CloudClient, checkProjectRegion, formatPlanned } from './client';
export type { CloudOptions, CallSpec, PlannedRequest } from './client';
export { apiRoot, apiOverride, overrideVariable, SERVICE_OF, API_NAMES } from './apis';
export type { ApiName } from './apis';
export { cloudError, statusError, LOGIN_HINT } from './errors';
export { waitForOperation } from './operations';
export { terminalReporter, notebookReporter, memoryReporter } from './report';
export type { Reporter } from './report';
export { checkAccess, formatAccessReport, REQUIRED_SERVICES, BUCKET_ROLE } from './access';
export type { AccessReport, AccessCheck } from './access';
export {
  deployToVertex, undeployFromVertex, resolveEndpoint, predictOnVertex, findSavedModel, predictionImage, modelIdFor,
  TENSORFLOW_VERSION, DEFAULT_MACHINE_TYPE,
} from './endpoints';
export type { VertexDeployment, VertexDeployOptions } from './endpoints';
export { gcpBackend, readVertexDeployment } from './backend';
export * as dataflow from './dataflow';
