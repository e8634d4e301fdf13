import { join } from 'node:path';
import { z } from 'zod';
import { DurableRecord } from '../durable-record.js';

/**
 * What a target needs to take a handoff up again after its worker restarted, kept in the
 * incoming copy's folder from `prepare` on: which handoff, which VM and base, and the token the
 * source's data connection must carry (it also travels in the negotiate step's result today, so
 * it is in the workflow's history; per-cloudlet TLS is to replace it). Whether the copy was committed is its host's
 * word (HOST_CONTINUED_FILE), written before `cont`; whether it was released, that the folder is gone.
 */
export const targetSessionRecordSchema = z.object({
  handoffId: z.string(),
  vmId: z.string(),
  baseImageId: z.string(),
  token: z.string().min(16),
  preparedAt: z.string(),
});
export type TargetSessionRecord = z.infer<typeof targetSessionRecordSchema>;

export const TARGET_SESSION_FILE = 'target-handoff.json';

export function targetSessionRecord(vmDir: string): DurableRecord<TargetSessionRecord> {
  return new DurableRecord(join(vmDir, TARGET_SESSION_FILE), targetSessionRecordSchema);
}
