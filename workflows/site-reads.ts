import { proxyActivities } from '@temporalio/workflow';
import type { CloudletActivities, CloudletState } from '../activities/cloudlet-activities.js';
import type { SiteActivities } from '../activities/site-activities.js';
import type { SiteTopology } from '../engine/placement/site-topology.js';
import type { SiteView } from '../engine/placement/site-view.js';
import { cloudletTaskQueue } from './definitions.js';
import { EVENTS_TASK_QUEUE } from './event-definitions.js';

/**
 * What event workflows read and ask of the site. A cloudlet whose worker does not pick the read up
 * within 5 s is offline for placement: one try, since the next event reads it again.
 */
const cloudletRead = (cloudlet: string) =>
  proxyActivities<CloudletActivities>({ taskQueue: cloudletTaskQueue(cloudlet), scheduleToStartTimeout: '5 seconds', startToCloseTimeout: '20 seconds', retry: { maximumAttempts: 1 } });

/** A cloudlet's drain mark and state, where its worker must answer (a drain cannot proceed without it). */
export const cloudletOps = (cloudlet: string) =>
  proxyActivities<CloudletActivities>({ taskQueue: cloudletTaskQueue(cloudlet), scheduleToCloseTimeout: '2 minutes', startToCloseTimeout: '20 seconds', retry: { maximumAttempts: 5 } });

/** For what must happen however long the cloudlet's worker is away (lifting a drain mark): retried without end. */
export const cloudletPatient = (cloudlet: string) =>
  proxyActivities<CloudletActivities>({ taskQueue: cloudletTaskQueue(cloudlet), startToCloseTimeout: '20 seconds', retry: { initialInterval: '1 second', maximumInterval: '1 minute' } });

export const siteLookups = proxyActivities<SiteActivities>({ taskQueue: EVENTS_TASK_QUEUE, startToCloseTimeout: '30 seconds', retry: { maximumAttempts: 5 } });
/** Waiting for another workflow lasts as long as it runs; the heartbeat notices a dead event service. */
export const siteWaits = proxyActivities<SiteActivities>({ taskQueue: EVENTS_TASK_QUEUE, startToCloseTimeout: '2 hours', heartbeatTimeout: '30 seconds', retry: { maximumInterval: '30 seconds' } });

/** Every declared cloudlet's state, read in parallel; null for one whose worker did not answer. */
export async function readSite(site: SiteTopology): Promise<SiteView> {
  return { site, states: await readCloudlets(site.cloudlets.map((c) => c.name)) };
}

export async function readCloudlets(names: string[]): Promise<Record<string, CloudletState | null>> {
  // Asking an offline cloudlet costs its 5 s schedule-to-start: ask only those with a poller.
  const online = new Set(await siteLookups.onlineCloudlets({ cloudlets: names }));
  const reads = await Promise.allSettled(names.map((name) => (online.has(name) ? cloudletRead(name).cloudletState({}) : Promise.reject(new Error('offline')))));
  const states: Record<string, CloudletState | null> = {};
  names.forEach((name, i) => {
    const r = reads[i]!;
    states[name] = r.status === 'fulfilled' ? r.value : null;
  });
  return states;
}
