import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { describeCloudlets, destroyVm } from '../../workflows/vm-lifecycle.js';
import { handoff } from '../../workflows/handoff.js';
import { OPERATOR_TRIGGER, handoffStartOptions } from '../../workflows/handoff-audit.js';
import { guestBeats, resultThroughOutages } from '../support/site-checks.js';
import { progressQuery, type HandoffInput, type HandoffProgress, type HandoffResult } from '../../workflows/definitions.js';

/**
 * What the scale-out cases ask of the site, read from the cloudlets' workers, never from a
 * handoff's own answer: where a VM runs, whether its guest beats; and a handoff followed to its
 * end through a Temporal node's loss.
 */

export const CLOUDLETS = ['A', 'B', 'C'] as const;

/** Where the VM is, as every cloudlet's worker reports it now: ['B:running'] for one copy on B; 'X:?' for a cloudlet that did not answer. */
export async function placesOf(client: Client, vmId: string): Promise<string[]> {
  const site = await executeWorkflow(client, describeCloudlets, { cloudlets: [...CLOUDLETS] });
  return CLOUDLETS.flatMap((c) => {
    const s = site[c];
    if (!s) return [`${c}:?`];
    const vm = s.vms.find((v) => v.vmId === vmId);
    return vm ? [`${c}:${vm.runState}`] : [];
  });
}

/** Whether the VM's guest beats on `cloudlet`: its heartbeat advances over 1.5 s and it runs. */
export const beats = (client: Client, cloudlet: string, vmId: string) => guestBeats(client, cloudlet, vmId, 1_500);

/** Ends the VMs on every cloudlet (a no-op where one is not). */
export async function destroyEverywhere(client: Client, vmIds: string[]): Promise<void> {
  for (const vmId of vmIds) {
    for (const cloudlet of CLOUDLETS) await executeWorkflow(client, destroyVm, { vmId, cloudlet }).catch(() => undefined);
  }
}

export interface FollowedHandoff {
  workflowId: string;
  result?: HandoffResult;
  /** The workflow's failure type and message, or a timeout. */
  failure?: string;
  /** From the start call to the result, on this host's clock. */
  seconds: number;
}

/**
 * Starts a handoff as the CLI does (search attributes and all), polls its progress every 100 ms
 * if `onProgress` wants each answer, and waits for its result, asking again while the server does not
 * answer (a node killed under it): only the workflow's own end is an answer.
 */
export async function followHandoff(
  client: Client,
  input: HandoffInput,
  opts: { onProgress?: (p: HandoffProgress, handle: WorkflowHandle) => void | Promise<void>; timeoutMs?: number } = {},
): Promise<FollowedHandoff> {
  const started = Date.now();
  const handle = await client.workflow.start(handoff, handoffStartOptions({ input, trigger: OPERATOR_TRIGGER, placementPolicy: 'operator', searchAttributes: true }));
  let done = false;
  const polling = (async () => {
    while (!done && opts.onProgress) {
      const p = await handle.query(progressQuery).catch(() => undefined);
      if (p && opts.onProgress) await opts.onProgress(p, handle);
      await sleep(100);
    }
  })();
  const deadline = started + (opts.timeoutMs ?? 10 * 60_000);
  try {
    try {
      const result = await resultThroughOutages(handle, deadline);
      return { workflowId: handle.workflowId, result, seconds: (Date.now() - started) / 1000 };
    } catch (err) {
      if (err instanceof WorkflowFailedError) {
        const cause = err.cause as (Error & { type?: string }) | undefined;
        return { workflowId: handle.workflowId, failure: `${cause?.type ?? 'FAILED'}: ${cause?.message ?? err.message}`, seconds: (Date.now() - started) / 1000 };
      }
      return { workflowId: handle.workflowId, failure: `TIMEOUT: no result in ${(opts.timeoutMs ?? 600_000) / 1000} s (last: ${(err as Error).message})`, seconds: (Date.now() - started) / 1000 };
    }
  } finally {
    done = true;
    await polling;
  }
}

/** The checks every moved VM must pass, as failure messages (empty: it moved, verified, and runs only at `to`). */
export async function movedChecks(client: Client, vmId: string, to: string, h: { result?: HandoffResult; failure?: string }): Promise<string[]> {
  const failures: string[] = [];
  if (!h.result) return [`${vmId} → ${to}: ${h.failure ?? 'no result'}`];
  if (h.result.verified !== true) failures.push(`${vmId} → ${to}: not verified`);
  if (h.result.guestContinued !== true) failures.push(`${vmId} → ${to}: the guest did not continue (heartbeat ${h.result.heartbeatAtStop} → ${h.result.heartbeatAfterResume})`);
  const places = await placesOf(client, vmId);
  if (places.join(',') !== `${to}:running`) failures.push(`${vmId} after its move to ${to}: the cloudlets report [${places.join(', ')}]`);
  return failures;
}
