import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { executeWorkflow } from '../../client/execute-workflow.js';
import type { HandoffResult } from '../../workflows/definitions.js';
import { describeVm } from '../../workflows/vm-lifecycle.js';

/** Whether the VM's guest beats on `cloudlet`: its heartbeat advances over `overMs` and it runs. */
export async function guestBeats(client: Client, cloudlet: string, vmId: string, overMs: number): Promise<boolean> {
  const first = await executeWorkflow(client, describeVm, { vmId, cloudlet }).catch(() => undefined);
  await sleep(overMs);
  const second = await executeWorkflow(client, describeVm, { vmId, cloudlet }).catch(() => undefined);
  return first?.lastHeartbeat != null && second?.lastHeartbeat != null && second.lastHeartbeat > first.lastHeartbeat && second.runState === 'running';
}

/**
 * The handoff's result, asked again every second while the server does not answer (a restart, a
 * node killed under it): only the workflow's own end is an answer, its failure rethrown. Past
 * `until` (ms since the epoch), the last error of asking is thrown instead.
 */
export async function resultThroughOutages(handle: WorkflowHandle, until = Infinity): Promise<HandoffResult> {
  for (;;) {
    try {
      return (await handle.result()) as HandoffResult;
    } catch (err) {
      if (err instanceof WorkflowFailedError || Date.now() > until) throw err;
      await sleep(1_000);
    }
  }
}
