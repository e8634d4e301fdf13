import { Client } from '@temporalio/client';
import { connectTo, type TemporalTarget } from '../infra/temporal-connection.js';
import type { Logger } from 'pino';
import type { ConflictRule } from '../engine/placement/merge-intent.js';
import type { SiteTopology } from '../engine/placement/site-topology.js';
import { hasSearchAttributes } from '../client/cloudlet-check.js';
import { EDGE_SEARCH_ATTRIBUTES, WORKFLOW_TASK_QUEUE } from '../workflows/definitions.js';
import { LOAD_MONITOR_SOURCE, LOAD_MONITOR_WORKFLOW_ID, type EventPolicy, type LoadMonitorInput } from '../workflows/event-definitions.js';
import { monitorLoad } from '../workflows/load-monitor.js';
import { admitEvent } from './admit-event.js';
import { startEventsEndpoint } from './events-endpoint.js';

export interface EventsServiceOptions {
  /** Where Temporal is and how to reach it (address, namespace, TLS, API key). */
  temporal: TemporalTarget;
  host: string;
  port: number;
  token: string;
  site: SiteTopology;
  conflictRule: ConflictRule;
  maxInFlight: number;
  defaultBaseImageId?: string;
  /** The WAN's nominal rate, Mbit/s, if declared: shown in each handoff's summary. */
  linkMbps?: number;
  /** Whether the handoffs events start may switch to post-copy (absent: never). */
  postCopy?: 'auto' | 'never';
  /** Run the built-in load monitor (workflow load-monitor), raising edge.cloudlet.overloaded. */
  loadMonitor: boolean;
  log: Logger;
}

export interface EventsService {
  url: string;
  stop(): Promise<void>;
}

/**
 * The event service: the HTTP endpoint and its Temporal client. What the event workflows ask of
 * Temporal itself runs in the cloudlet workers (queue edge-events), so this holds no state.
 */
export async function startEventsService(o: EventsServiceOptions): Promise<EventsService> {
  const connection = await connectTo(o.temporal, { connectTimeout: 5_000 });
  const client = new Client({ connection, namespace: o.temporal.namespace });
  const policy: EventPolicy = {
    site: o.site,
    conflictRule: o.conflictRule,
    searchAttributes: await hasSearchAttributes(client, EDGE_SEARCH_ATTRIBUTES.map((a) => a.name)),
    ...(o.linkMbps !== undefined ? { linkMbps: o.linkMbps } : {}),
    ...(o.postCopy ? { postCopy: o.postCopy } : {}),
    ...(o.defaultBaseImageId ? { defaultBaseImageId: o.defaultBaseImageId } : {}),
  };
  const endpoint = await startEventsEndpoint({
    host: o.host,
    port: o.port,
    token: o.token,
    log: o.log,
    admit: (event) => admitEvent({ client, policy, maxInFlight: o.maxInFlight, retryAfterS: 10 }, event),
  }).catch(async (err: Error) => {
    await connection.close();
    throw new Error(`events endpoint cannot listen on ${o.host}:${o.port}: ${err.message}`);
  });
  if (o.loadMonitor) {
    // The newest service's policy wins: a monitor left by an earlier one is replaced.
    const input: LoadMonitorInput = { policy, source: LOAD_MONITOR_SOURCE };
    await client.workflow.start(monitorLoad, { workflowId: LOAD_MONITOR_WORKFLOW_ID, taskQueue: WORKFLOW_TASK_QUEUE, args: [input], workflowIdConflictPolicy: 'TERMINATE_EXISTING' });
    o.log.info({ workflowId: LOAD_MONITOR_WORKFLOW_ID }, 'load monitor started');
  }
  o.log.info({ url: endpoint.url, conflictRule: o.conflictRule, maxInFlight: o.maxInFlight }, 'events service ready');
  return {
    url: endpoint.url,
    stop: async () => {
      await endpoint.close();
      await connection.close();
    },
  };
}
