import { Context } from '@temporalio/activity';
import { WorkflowFailedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { z } from 'zod';
import { cloudletNameSchema, vmIdSchema } from '../engine/names.js';
import { assertCloudletOnline } from '../client/cloudlet-check.js';
import type { InFlightHandoff } from '../engine/placement/merge-intent.js';
import { handoffWorkflowId } from '../workflows/definitions.js';
import { summarizeResult } from '../workflows/event-definitions.js';

/**
 * The event workflows' view of other workflows: which cloudlets poll, which handoff a VM has in
 * flight, and waiting for one to end. They need a Temporal client: every cloudlet worker runs them
 * on the edge-events queue, with a client of its own, so no single process is needed for them.
 */
const inFlightInput = z.object({ vmId: vmIdSchema }).strict();
const onlineInput = z.object({ cloudlets: z.array(cloudletNameSchema).max(64) }).strict();
const awaitInput = z.object({ workflowId: z.string().min(1).max(1000) }).strict();
const handoffMemo = z.object({ source: z.string(), target: z.string() });

export interface WorkflowEnd {
  workflowId: string;
  ok: boolean;
  /** One line: how it went ("moved A → B in 21.3 s, downtime 392 ms; verified") or why it failed. */
  summary: string;
}

export function createSiteActivities(client: Client) {
  return {
    /** The cloudlets whose worker polls its queue: the others are offline, not asked (and not waited for). */
    async onlineCloudlets(input: z.infer<typeof onlineInput>): Promise<string[]> {
      const { cloudlets } = onlineInput.parse(input);
      const online = await Promise.all(cloudlets.map((c) => assertCloudletOnline(client, c).then(() => true, () => false)));
      return cloudlets.filter((_, i) => online[i]);
    },

    async inFlightHandoff(input: z.infer<typeof inFlightInput>): Promise<InFlightHandoff | null> {
      const { vmId } = inFlightInput.parse(input);
      const workflowId = handoffWorkflowId(vmId);
      try {
        const d = await client.workflow.getHandle(workflowId).describe();
        if (d.status.name !== 'RUNNING') return null;
        const memo = handoffMemo.safeParse(d.memo);
        if (!memo.success) throw new Error(`handoff ${workflowId} runs without the memo that names its source and target`);
        return { workflowId, vmId, ...memo.data };
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return null;
        throw err;
      }
    },

    /** Waits for a workflow (the newest run of its id) to close, heartbeating, and says how it went. */
    async awaitWorkflowEnd(input: z.infer<typeof awaitInput>): Promise<WorkflowEnd> {
      const { workflowId } = awaitInput.parse(input);
      const beat = setInterval(() => Context.current().heartbeat(), 5_000);
      try {
        const result = await Promise.race([client.workflow.getHandle(workflowId).result(), Context.current().cancelled]);
        return { workflowId, ok: true, summary: summarizeResult(result) };
      } catch (err) {
        if (err instanceof WorkflowFailedError) return { workflowId, ok: false, summary: `failed: ${err.cause?.message ?? err.message}` };
        if (err instanceof WorkflowNotFoundError) return { workflowId, ok: false, summary: 'not found (already past retention?)' };
        throw err;
      } finally {
        clearInterval(beat);
      }
    },
  };
}
export type SiteActivities = ReturnType<typeof createSiteActivities>;
