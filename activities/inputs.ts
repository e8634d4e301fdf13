import { z } from 'zod';
import { HandoffError } from '../engine/errors.js';
import { baseImageIdSchema, cloudletNameSchema, handoffIdSchema, vmIdSchema, workloadSchema } from '../engine/names.js';

/**
 * What each activity takes, checked where it enters the worker: an activity can be scheduled by
 * any client of the namespace, not only by this project's workflow, so its input is outside data.
 */
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'is not a SHA-256 in hex');

export const dataEndpointSchema = z.object({
  host: z.string().min(1).max(255),
  port: z.number().int().min(1).max(65535),
  cloudlet: cloudletNameSchema,
});

export const activityInputs = {
  launchVm: z.object({ vmId: vmIdSchema, baseImageId: baseImageIdSchema, workload: workloadSchema.optional() }),
  describeVm: z.object({ vmId: vmIdSchema }),
  destroyVm: z.object({ vmId: vmIdSchema }),
  cloudletState: z.object({}),
  setDraining: z.object({ draining: z.boolean() }),
  overlayEstimates: z.object({}),
  vmLoads: z.object({ windowMs: z.number().int().min(200).max(30_000) }),
  dataEndpoint: z.object({}),
  holdsBaseImage: z.object({ baseImageId: baseImageIdSchema }),
  fetchBaseImage: z.object({ baseImageId: baseImageIdSchema, from: dataEndpointSchema }),
  measureVm: z.object({ vmId: vmIdSchema, windowMs: z.number().int().min(200).max(60_000) }),
  watchLoad: z.object({
    cpuCores: z.number().positive(),
    threshold: z.number().positive(),
    sustainMs: z.number().int().min(1_000),
    sampleMs: z.number().int().min(200).max(60_000),
  }),
  snapshot: z.object({ handoffId: handoffIdSchema, vmId: vmIdSchema }),
  streamOverlay: z.object({ handoffId: handoffIdSchema, endpoint: dataEndpointSchema, postCopy: z.enum(['auto', 'never']).optional() }),
  rollback: z.object({ handoffId: handoffIdSchema, vmId: vmIdSchema, target: z.enum(['committed', 'released', 'no-answer']) }),
  retire: z.object({ handoffId: handoffIdSchema, vmId: vmIdSchema, postCopyDigest: sha256Hex.optional() }),
  negotiateBaseImage: z.object({ handoffId: handoffIdSchema, vmId: vmIdSchema, baseImageId: baseImageIdSchema, source: cloudletNameSchema }),
  finalize: z.object({ handoffId: handoffIdSchema, expected: z.object({ memoryDigest: sha256Hex, diskDigest: sha256Hex }).optional() }),
  resume: z.object({ handoffId: handoffIdSchema, heartbeatAtStop: z.number().int().nonnegative().nullable() }),
  finish: z.object({ handoffId: handoffIdSchema }),
  abort: z.object({ handoffId: handoffIdSchema }),
} as const;

export type ActivityInput<K extends keyof typeof activityInputs> = z.infer<(typeof activityInputs)[K]>;

/** `input` as activity `name` takes it, or a non-retryable BAD_INPUT naming the first field that is wrong. */
export function checked<K extends keyof typeof activityInputs>(name: K, input: unknown): ActivityInput<K> {
  const r = activityInputs[name].safeParse(input);
  if (r.success) return r.data as ActivityInput<K>;
  const issue = r.error.issues[0];
  throw new HandoffError('BAD_INPUT', `activity ${name}: input ${issue?.path.join('.') || '(whole)'}: ${issue?.message ?? 'invalid'}`);
}
