import { join } from 'node:path';
import { z } from 'zod';
import { DurableRecord } from '../durable-record.js';
import { ackSchema, endSchema } from '../wire/frames.js';
import { cloudletNameSchema } from '../names.js';

/**
 * The target side of a handoff, as declared and persisted in the incoming copy's folder before
 * each step takes effect, and what a restarted worker needs to take it up again: which handoff,
 * which VM and base, the source cloudlet whose certificate alone may stream it (no secret: the
 * data plane's mutual TLS proves who connects), and the phase:
 *
 * - `prepared`: the copy is laid out, its QEMU waits for its device state.
 * - `receiving`: attempt `attempt` of the source's stream is connected and writing here.
 * - `end-received`: its end frame arrived complete (`end`: the digests the assembled state must
 *   match, its last heartbeat; `ack`: what arrived), recorded as it is acknowledged. The source
 *   may still resume its own copy: without its commit nothing runs here.
 * - `commit-received`: the source's commit frame for that attempt arrived: the VM is this
 *   side's to verify and run. A restarted worker finishes it (verify, load the device state, cont).
 *
 * That the VM runs here is its host's word (HOST_CONTINUED_FILE), written before `cont`; that the
 * handoff was released here, that the folder is gone.
 */
export const targetPhaseSchema = z.enum(['prepared', 'receiving', 'end-received', 'commit-received']);
export const targetSessionRecordSchema = z.object({
  handoffId: z.string(),
  vmId: z.string(),
  baseImageId: z.string(),
  source: cloudletNameSchema,
  preparedAt: z.string(),
  phase: targetPhaseSchema.default('prepared'),
  attempt: z.number().int().min(0).default(0),
  end: z
    .object({
      memoryDigest: z.string(),
      diskDigest: z.string(),
      heartbeatAtStop: z.number().int().nullable(),
      deviceStateSha256: z.string(),
      // A restarted worker that finishes a post-copy end must not run the VM on its stale pages.
      postCopy: endSchema.shape.postCopy,
    })
    .optional(),
  ack: ackSchema.optional(),
});
export type TargetSessionRecord = z.infer<typeof targetSessionRecordSchema>;

export const TARGET_SESSION_FILE = 'target-handoff.json';

export function targetSessionRecord(vmDir: string): DurableRecord<TargetSessionRecord> {
  return new DurableRecord(join(vmDir, TARGET_SESSION_FILE), targetSessionRecordSchema);
}
