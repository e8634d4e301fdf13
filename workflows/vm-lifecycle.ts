import { ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import { z } from 'zod';
import { cloudletNameSchema, vmIdSchema } from '../engine/names.js';
import { WORKFLOW_FAILURE } from '../engine/contract.js';
import { readCloudlets } from './site-reads.js';
import type { CloudletActivities, CloudletState, VmDescription, VmMeasurement } from '../activities/cloudlet-activities.js';
import { cloudletTaskQueue, describeInvalid, launchVmInputSchema, vmRefSchema, type LaunchVmInput, type VmRef } from './definitions.js';

const on = (cloudlet: string) =>
  proxyActivities<CloudletActivities>({
    taskQueue: cloudletTaskQueue(cloudlet),
    // The queue belongs to one host: bound the wait for it as well as the run.
    scheduleToCloseTimeout: '3 minutes',
    startToCloseTimeout: '2 minutes',
    retry: { maximumAttempts: 2 },
  });

/** Starts a VM from a base image on a cloudlet, with a workload if one is named. */
export async function launchVm(input: LaunchVmInput): Promise<VmDescription> {
  const parsed = launchVmInputSchema.safeParse(input);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(describeInvalid('launch request', parsed.error), WORKFLOW_FAILURE.INVALID_INPUT);
  return on(parsed.data.cloudlet).launchVm(parsed.data);
}

/** Reports a VM's run state and last heartbeat as its cloudlet sees it. */
export async function describeVm(input: VmRef): Promise<VmDescription> {
  const parsed = vmRefSchema.safeParse(input);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(describeInvalid('VM reference', parsed.error), WORKFLOW_FAILURE.INVALID_INPUT);
  return on(parsed.data.cloudlet).describeVm(parsed.data);
}

/** Ends a VM on its cloudlet; `destroyed: false` when it was not there (a no-op, not a failure). */
export async function destroyVm(input: VmRef): Promise<VmRef & { destroyed: boolean }> {
  const parsed = vmRefSchema.safeParse(input);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(describeInvalid('VM reference', parsed.error), WORKFLOW_FAILURE.INVALID_INPUT);
  const { destroyed } = await on(parsed.data.cloudlet).destroyVm(parsed.data);
  return { ...parsed.data, destroyed };
}

const describeCloudletsInput = z.object({ cloudlets: z.array(cloudletNameSchema).min(1).max(64) }).strict();

/**
 * Each named cloudlet's VMs, base images and drain mark, as its worker reports them now; null for
 * a cloudlet whose worker did not answer within 5 s. Never fails for a VM that is not there: what
 * `ehoff status` reads, one short workflow for the whole site.
 */
export async function describeCloudlets(input: z.infer<typeof describeCloudletsInput>): Promise<Record<string, CloudletState | null>> {
  const parsed = describeCloudletsInput.safeParse(input);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(describeInvalid('cloudlet list', parsed.error), WORKFLOW_FAILURE.INVALID_INPUT);
  return readCloudlets(parsed.data.cloudlets);
}

const measureVmInput = z.object({ vmId: vmIdSchema, cloudlet: cloudletNameSchema, windowMs: z.number().int().min(200).max(60_000) }).strict();

/** Measures a running VM for `ehoff plan` (overlay, dirty rate, compressibility); it runs on. */
export async function measureVm(input: z.infer<typeof measureVmInput>): Promise<VmMeasurement> {
  const parsed = measureVmInput.safeParse(input);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(describeInvalid('measure request', parsed.error), WORKFLOW_FAILURE.INVALID_INPUT);
  return on(parsed.data.cloudlet).measureVm({ vmId: parsed.data.vmId, windowMs: parsed.data.windowMs });
}
