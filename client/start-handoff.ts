import { ApplicationFailure, WorkflowFailedError, type Client } from '@temporalio/client';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  EDGE_SEARCH_ATTRIBUTES,
  describeInvalid,
  handoffInputSchema,
  handoffWorkflowId,
  progressQuery,
  type HandoffProgress,
  type HandoffResult,
} from '../workflows/definitions.js';
import { handoff } from '../workflows/handoff.js';
import { OPERATOR_TRIGGER, handoffStartOptions } from '../workflows/handoff-audit.js';
import { assertCloudletOnline, hasSearchAttributes } from './cloudlet-check.js';

export class InvalidRequestError extends Error {}

export { handoffWorkflowId };

export class HandoffFailedError extends Error {
  /** The workflow's failure type (WORKFLOW_FAILURE in engine/contract.ts): HANDOFF_FAILED (the VM runs on at the source), HANDOFF_IN_DOUBT, VM_LOST, … */
  constructor(message: string, readonly workflowId: string, readonly type?: string) {
    super(message);
  }
}

/**
 * Validates a handoff request, checks both cloudlets are online, starts the workflow and follows
 * its progress until it ends. Throws InvalidRequestError before anything starts if the request
 * is malformed or names an unknown cloudlet.
 */
export async function runHandoff(
  client: Client,
  raw: unknown,
  onProgress: (p: HandoffProgress) => void = () => undefined,
): Promise<HandoffResult> {
  const parsed = handoffInputSchema.safeParse(raw);
  if (!parsed.success) throw new InvalidRequestError(describeInvalid('handoff request', parsed.error));
  const input = parsed.data;
  for (const c of [input.source, input.target]) {
    try {
      await assertCloudletOnline(client, c);
    } catch (err) {
      throw new InvalidRequestError((err as Error).message);
    }
  }
  const searchAttributes = await hasSearchAttributes(client, EDGE_SEARCH_ATTRIBUTES.map((a) => a.name));
  const workflowId = handoffWorkflowId(input.vmId);
  const handle = await client.workflow.start(handoff, handoffStartOptions({ input, trigger: OPERATOR_TRIGGER, placementPolicy: 'operator', searchAttributes }));
  let done = false;
  const follow = (async () => {
    let last = '';
    while (!done) {
      try {
        const p = await handle.query(progressQuery);
        const key = JSON.stringify(p.steps.map((s) => [s.step, s.endedAt !== undefined]));
        if (key !== last) {
          last = key;
          onProgress(p);
        }
      } catch {
        // Not yet queryable (first workflow task pending) or already closed.
      }
      await sleep(200);
    }
  })();
  try {
    return await handle.result();
  } catch (err) {
    if (err instanceof WorkflowFailedError) {
      const cause = err.cause?.message ?? err.message;
      throw new HandoffFailedError(cause, workflowId, err.cause instanceof ApplicationFailure ? (err.cause.type ?? undefined) : undefined);
    }
    throw err;
  } finally {
    done = true;
    await follow;
  }
}
