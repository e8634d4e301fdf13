import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery } from '@temporalio/workflow';
import { z } from 'zod';
import { baseImageIdSchema, cloudletNameSchema, vmIdSchema, workloadSchema } from '../engine/names.js';

/**
 * What client, workers and workflows share: input schemas, task-queue names, queries and
 * search attributes. Pure and deterministic, so the workflow bundle can import it.
 */
export const WORKFLOW_TASK_QUEUE = 'edge-handoff';
export const cloudletTaskQueue = (cloudlet: string) => `cloudlet-${cloudlet}`;

const vmId = vmIdSchema;
const cloudlet = cloudletNameSchema;

export const handoffInputSchema = z
  .object({ vmId, source: cloudlet, target: cloudlet })
  .strict()
  .refine((i) => i.source !== i.target, { message: 'source and target must be different cloudlets', path: ['target'] });
export type HandoffInput = z.infer<typeof handoffInputSchema>;

export const launchVmInputSchema = z
  .object({
    vmId,
    cloudlet,
    baseImageId: baseImageIdSchema,
    workload: workloadSchema.optional(),
  })
  .strict();
export type LaunchVmInput = z.infer<typeof launchVmInputSchema>;

export const vmRefSchema = z.object({ vmId, cloudlet }).strict();
export type VmRef = z.infer<typeof vmRefSchema>;

/** Names the first thing wrong with an input, in words an operator can act on. */
export function describeInvalid(what: string, error: z.ZodError): string {
  const issue = error.issues[0];
  const field = issue?.path.length ? `'${issue.path.join('.')}'` : 'the request';
  return `malformed ${what}: ${field}: ${issue?.message ?? 'invalid'}`;
}

export const HANDOFF_STEPS = ['snapshot', 'negotiate', 'stream', 'finalize', 'resume'] as const;
export type HandoffStep = (typeof HANDOFF_STEPS)[number] | 'retire-source' | 'rollback' | 'done' | 'failed';

export interface StepRecord {
  step: HandoffStep;
  startedAt: number;
  endedAt?: number;
  detail?: string;
}

export interface HandoffProgress {
  step: HandoffStep;
  steps: StepRecord[];
}

export interface HandoffResult {
  workflowId: string;
  vmId: string;
  source: string;
  target: string;
  baseImageId: string;
  totalMs: number;
  downtimeMs: number;
  bytesSent: number;
  memoryPages: number;
  diskBlocks: number;
  deviceStateBytes: number;
  verified: boolean;
  memoryDigest: string;
  diskDigest: string;
  heartbeatAtStop: number | null;
  heartbeatAfterResume: number | null;
  guestContinued: boolean;
  steps: StepRecord[];
}

export const progressQuery = defineQuery<HandoffProgress>('progress');

export const VmIdSearchAttribute = defineSearchAttributeKey('EdgeVmId', 'KEYWORD');
export const SourceSearchAttribute = defineSearchAttributeKey('EdgeSourceCloudlet', 'KEYWORD');
export const TargetSearchAttribute = defineSearchAttributeKey('EdgeTargetCloudlet', 'KEYWORD');
