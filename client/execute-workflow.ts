import type { Client } from '@temporalio/client';
import { WORKFLOW_TASK_QUEUE } from '../workflows/definitions.js';

/**
 * Runs one of the short workflows (launchVm, describeVm, destroyVm) to its result, under an id of
 * its own: these are requests, not things that must be unique per VM.
 */
export async function executeWorkflow<T>(client: Client, name: string, input: unknown): Promise<T> {
  const workflowId = `${name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  return (await client.workflow.execute(name, { taskQueue: WORKFLOW_TASK_QUEUE, workflowId, args: [input] })) as T;
}
