import { continueAsNew, log, proxyActivities, startChild, workflowInfo } from '@temporalio/workflow';
import type { CloudletActivities } from '../activities/cloudlet-activities.js';
import { OVERLOAD_THRESHOLD, SUSTAIN_MS } from '../engine/placement/overload.js';
import { WORKFLOW_TASK_QUEUE, cloudletTaskQueue } from './definitions.js';
import { EVENT_TYPES, eventWorkflowId, type EdgeEventInput, type LoadMonitorInput } from './event-definitions.js';
import { handleEvent } from './handle-event.js';

/** Past this many history events it starts afresh (continue-as-new) with the same input. */
const HISTORY_LIMIT = 2_000;

/**
 * The built-in event source for load: on every cloudlet of the site, a long-running activity
 * samples its VMs' CPU and returns once the load stayed above the threshold long enough; the
 * monitor then raises `edge.cloudlet.overloaded` — an event workflow like any other, with an id
 * of its own — waits for what it did, and watches again. Few history events: one activity per
 * episode, not one per sample.
 */
export async function monitorLoad(input: LoadMonitorInput): Promise<void> {
  await Promise.all(input.policy.site.cloudlets.map((c) => watchCloudlet(input, c.name, c.cpuCores)));
}

async function watchCloudlet(input: LoadMonitorInput, cloudlet: string, cpuCores: number): Promise<void> {
  const watcher = proxyActivities<CloudletActivities>({
    taskQueue: cloudletTaskQueue(cloudlet),
    startToCloseTimeout: '30 days',
    // A sample every 2 s beats the heartbeat: a dead worker is noticed within 30 s, and the
    // watch starts again wherever the cloudlet's next worker polls.
    heartbeatTimeout: '30 seconds',
    retry: { initialInterval: '5 seconds', maximumInterval: '1 minute' },
  });
  for (;;) {
    if (workflowInfo().historyLength > HISTORY_LIMIT) await continueAsNew<typeof monitorLoad>(input);
    const seen = await watcher.watchLoad({ cpuCores, threshold: input.threshold ?? OVERLOAD_THRESHOLD, sustainMs: input.sustainMs ?? SUSTAIN_MS, sampleMs: input.sampleMs ?? 2_000 });
    const id = `${cloudlet}-${Date.now()}`;
    const event: EdgeEventInput = {
      type: EVENT_TYPES.overloaded,
      source: input.source,
      id,
      time: new Date().toISOString(),
      receivedAt: new Date().toISOString(),
      data: { cloudlet, load: seen.load },
      policy: input.policy,
    };
    log.info('cloudlet overloaded', { cloudlet, load: seen.load, reason: seen.reason });
    try {
      const handle = await startChild(handleEvent, { workflowId: eventWorkflowId(input.source, id), taskQueue: WORKFLOW_TASK_QUEUE, args: [event], parentClosePolicy: 'ABANDON' });
      await handle.result();
    } catch (err) {
      log.warn('the overloaded event failed', { cloudlet, error: (err as Error).message });
    }
  }
}
