/**
 * The Cloud TPU choices of `imgclass train --backend gcp --tpu`, as Vertex AI custom jobs name them
 * (aiplatform v1 MachineSpec): TPU v2/v3 as `cloud-tpu` with 8 accelerators, TPU v5e as the
 * `ct5lp-hightpu-Nt` machine types with a tpuTopology. Cores are what the global batch is split over.
 *
 * Regions: the Cloud TPU zones list (cloud.google.com/tpu/docs/regions-zones); Vertex AI may offer a
 * TPU in fewer of them, so the list is what a "no capacity" message suggests, not a promise.
 * Prices: list prices per hour for the whole slice (see README "Cost"), for the dry-run summary.
 */
import type { aiplatform_v1 } from 'googleapis/build/src/apis/aiplatform/v1';
import { UserError } from '../../errors';

export type TpuChoice = 'v5e-1' | 'v5e-4' | 'v5e-8' | 'v2-8' | 'v3-8';

export interface TpuSpec {
  choice: TpuChoice;
  machineSpec: aiplatform_v1.Schema$GoogleCloudAiplatformV1MachineSpec;
  /** TensorCores the TPU strategy replicates the model over (one per v5e chip; 8 on a v2-8/v3-8). */
  cores: number;
  regions: string[];
  /** USD per hour, on-demand list price of the slice. */
  usdPerHour: number;
}

const V5E_REGIONS = ['us-central1', 'us-south1', 'us-west1', 'us-west4', 'europe-west4', 'asia-southeast1'];

export const TPUS: Record<TpuChoice, TpuSpec> = {
  'v5e-1': { choice: 'v5e-1', machineSpec: { machineType: 'ct5lp-hightpu-1t', tpuTopology: '1x1' }, cores: 1, regions: V5E_REGIONS, usdPerHour: 1.2 },
  'v5e-4': { choice: 'v5e-4', machineSpec: { machineType: 'ct5lp-hightpu-4t', tpuTopology: '2x2' }, cores: 4, regions: V5E_REGIONS, usdPerHour: 4.8 },
  'v5e-8': { choice: 'v5e-8', machineSpec: { machineType: 'ct5lp-hightpu-8t', tpuTopology: '2x4' }, cores: 8, regions: V5E_REGIONS, usdPerHour: 9.6 },
  'v2-8': {
    choice: 'v2-8', machineSpec: { machineType: 'cloud-tpu', acceleratorType: 'TPU_V2', acceleratorCount: 8 }, cores: 8,
    regions: ['us-central1', 'europe-west4', 'asia-east1'], usdPerHour: 4.5,
  },
  'v3-8': {
    choice: 'v3-8', machineSpec: { machineType: 'cloud-tpu', acceleratorType: 'TPU_V3', acceleratorCount: 8 }, cores: 8,
    regions: ['us-central1', 'europe-west4'], usdPerHour: 8.0,
  },
};

export const DEFAULT_TPU: TpuChoice = 'v5e-4';

export function tpuSpec(choice: string | undefined): TpuSpec {
  const c = (choice ?? DEFAULT_TPU) as TpuChoice;
  const spec = TPUS[c];
  if (!spec) throw new UserError(`--tpu "${choice}" is not known: use ${Object.keys(TPUS).join(', ')}`);
  return spec;
}

/** A batch size split evenly across the TPU's cores, or an error naming the flag and the fix. */
export function checkBatchDivides(flag: string, batch: number, tpu: TpuSpec): void {
  if (batch % tpu.cores !== 0) {
    const lower = Math.max(tpu.cores, Math.floor(batch / tpu.cores) * tpu.cores);
    const upper = Math.ceil(batch / tpu.cores) * tpu.cores;
    throw new UserError(
      `--${flag} ${batch} does not divide across the ${tpu.cores} TensorCores of a TPU ${tpu.choice}: ` +
        `use a multiple of ${tpu.cores} (${lower === upper ? upper : `${lower} or ${upper}`})`,
    );
  }
}

/** "us-central1, europe-west4" and where the list comes from, for capacity and quota messages. */
export function regionsHint(tpu: TpuSpec): string {
  return `TPU ${tpu.choice} is offered in ${tpu.regions.join(', ')} (Cloud TPU regions; pass one with --region)`;
}
