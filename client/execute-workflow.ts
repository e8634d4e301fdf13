import type { Client, WorkflowStartOptions } from '@temporalio/client';
import type { Workflow, WorkflowResultType } from '@temporalio/common';
import { WORKFLOW_TASK_QUEUE } from '../workflows/definitions.js';

/**
 * Runs one of the short workflows (launchVm, describeVm, destroyVm, …) to its result, under an id
 * of its own: these are requests, not things that must be unique per VM. Typed by the function.
 */
export async function executeWorkflow<W extends Workflow>(client: Client, workflow: W, ...args: Parameters<W>): Promise<WorkflowResultType<W>> {
  const workflowId = `${workflow.name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  // The SDK's options type cannot see that a generic W's args fit it.
  return client.workflow.execute(workflow, { taskQueue: WORKFLOW_TASK_QUEUE, workflowId, args } as unknown as WorkflowStartOptions<W>);
}
