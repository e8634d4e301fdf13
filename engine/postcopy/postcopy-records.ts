import { join } from 'node:path';
import { z } from 'zod';
import { DurableRecord } from '../durable-record.js';
import { cloudletNameSchema } from '../names.js';
import { endSchema } from '../wire/frames.js';

/**
 * A post-copy's record on each side, in the VM's folder beside its handoff phase, so that a
 * restarted worker takes the post-copy up where the last one left it: the source serves the
 * stopped copy's stale pages and disk blocks again (its `staleRuns` are chunks, postcopy/plan.ts)
 * and keeps the copy until the target confirms the whole memory; the target fetches what is
 * still missing (the holes in its RAM file, the blocks its VM host lacks).
 */
const { staleRuns, staleDisk } = endSchema.shape.postCopy.unwrap().shape;

export const sourcePostCopySchema = z.object({ handoffId: z.string(), target: cloudletNameSchema, staleRuns, capMbps: z.number().positive().nullable().default(null) });
export type SourcePostCopyRecord = z.infer<typeof sourcePostCopySchema>;

export function sourcePostCopyRecord(vmDir: string): DurableRecord<SourcePostCopyRecord> {
  return new DurableRecord(join(vmDir, 'source-postcopy.json'), sourcePostCopySchema);
}

export const targetPostCopySchema = z.object({
  handoffId: z.string(),
  source: cloudletNameSchema,
  host: z.string(),
  port: z.number().int(),
  staleRuns,
  /** The disk blocks left stale, with their SHA-256s as stopped: the VM host's missing blocks are what is left of them. */
  staleDisk,
  /**
   * What `finish` verified (written with the record, before the stale pages become holes), the
   * guest's last heartbeat at the stop, and how the VM resumed once it did: a retried `finish` on
   * a restarted worker answers with them (confirming the guest goes on itself where the worker
   * died before it could record that).
   */
  finalized: z.unknown(),
  heartbeatAtStop: z.number().int().nullable(),
  resumed: z.unknown().optional(),
  /** The fetch's report once the last page was in: nothing is left to take up. */
  fetched: z
    .object({
      pages: z.number(), diskBlocks: z.number().optional(), remoteFaults: z.number(), faultLatencyMedianMs: z.number().nullable(), faultLatencyMaxMs: z.number().nullable(),
      refused: z.number(), reconnects: z.number(), bytesReceived: z.number(), ms: z.number(), memoryDigest: z.string().nullable(),
    })
    .optional(),
});
export type TargetPostCopyRecord = z.infer<typeof targetPostCopySchema>;

export function targetPostCopyRecord(vmDir: string): DurableRecord<TargetPostCopyRecord> {
  return new DurableRecord(join(vmDir, 'target-postcopy.json'), targetPostCopySchema);
}

/** The target's SHA-256 of every page as held at the switch (a PageHashTable's buffers), beside the record. */
export const TARGET_HELD_HASHES_FILE = 'target-postcopy-held.bin';
/** Each page checked in since: u32 page index, then its 32-byte SHA-256, appended before the page goes in. */
export const TARGET_ARRIVED_FILE = 'target-postcopy-arrived.bin';
