/**
 * Credentials for the gcp backend. GOOGLE_OAUTH_ACCESS_TOKEN (gcloud's own variable) wins: that token
 * is sent as the bearer token and nothing else is looked up (no metadata server, no key file), which
 * is also how the tests reach their fake server. Otherwise Application Default Credentials: the file
 * `gcloud auth application-default login` writes, a key named by GOOGLE_APPLICATION_CREDENTIALS, or
 * the metadata server on Google Cloud.
 *
 * Two copies of google-auth-library are in play on purpose: googleapis (v10, through googleapis-common)
 * and @google-cloud/storage 7 (v9) each check `instanceof` against their own, so each gets a client
 * made by its own copy.
 */
import { GoogleAuth, OAuth2Client } from 'googleapis-common';
import type { Storage, StorageOptions } from '@google-cloud/storage';
import { apiOverride } from './apis';

export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';

export type ApiAuth = GoogleAuth | OAuth2Client;

/** The auth client googleapis calls use (one per process: ADC caches its token). */
let shared: ApiAuth | undefined;
let sharedKey: string | undefined;

export function apiAuth(env: NodeJS.ProcessEnv = process.env): ApiAuth {
  const token = env.GOOGLE_OAUTH_ACCESS_TOKEN?.trim();
  const key = token ? `token:${token}` : 'adc';
  if (shared && sharedKey === key) return shared;
  if (token) {
    const c = new OAuth2Client();
    c.setCredentials({ access_token: token });
    shared = c;
  } else {
    shared = new GoogleAuth({ scopes: [CLOUD_PLATFORM_SCOPE] });
  }
  sharedKey = key;
  return shared;
}

/** The identity the credentials stand for, when it can be known without a request (for messages). */
export async function knownIdentity(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (env.GOOGLE_OAUTH_ACCESS_TOKEN?.trim()) return undefined;
  try {
    const creds = await (apiAuth(env) as GoogleAuth).getCredentials();
    return creds.client_email ? `serviceAccount:${creds.client_email}` : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Options for @google-cloud/storage: STORAGE_EMULATOR_HOST is honoured by the library itself; a
 * CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE root becomes its apiEndpoint, still authenticated (a proxy or
 * private endpoint needs the token as much as Google does).
 */
export function storageOptions(env: NodeJS.ProcessEnv = process.env): StorageOptions {
  const opts: StorageOptions = {};
  const override = apiOverride('STORAGE', env);
  if (override && !env.STORAGE_EMULATOR_HOST) {
    opts.apiEndpoint = override.replace(/\/+$/, '');
    opts.useAuthWithCustomEndpoint = true;
  }
  const token = env.GOOGLE_OAUTH_ACCESS_TOKEN?.trim();
  if (token) {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { OAuth2Client: StorageOAuth2Client } = require('google-auth-library') as typeof import('google-auth-library');
    const c = new StorageOAuth2Client();
    c.setCredentials({ access_token: token });
    opts.authClient = c;
    // Without a project id the library asks the metadata server for one; it is not needed for
    // bucket-scoped calls, so name a placeholder instead of looking anything up.
    opts.projectId = env.GOOGLE_CLOUD_PROJECT ?? env.CLOUDSDK_CORE_PROJECT ?? 'imgclass';
  }
  return opts;
}

/** A Storage client with storageOptions(). */
export function makeStorage(env: NodeJS.ProcessEnv = process.env): Storage {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { Storage: StorageClass } = require('@google-cloud/storage') as typeof import('@google-cloud/storage');
  return new StorageClass(storageOptions(env));
}
