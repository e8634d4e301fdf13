import { defineQuery, defineUpdate } from '@temporalio/workflow';
import { z } from 'zod';
import { baseImageIdSchema, cloudletNameSchema, vmIdSchema, workloadSchema } from '../engine/names.js';
import { locationSchema, siteTopologySchema } from '../engine/placement/site-topology.js';
import type { ConflictRule } from '../engine/placement/merge-intent.js';
import type { PlacementDecision } from '../engine/placement/choose-target.js';

/**
 * What the event endpoint, the event workflows and the CLI share: the event types the site
 * answers, the shape of each one's data, and the answer. Pure, so the workflow bundle imports it.
 * The workflow ids are declared in engine/contract.ts and re-exported here, where their users
 * have always imported them.
 */
export { LOAD_MONITOR_WORKFLOW_ID, drainWorkflowId, eventWorkflowId, launchWorkflowId } from '../engine/contract.js';

export const EVENTS_TASK_QUEUE = 'edge-events';

export const EVENT_TYPES = {
  userMoved: 'edge.user.moved',
  overloaded: 'edge.cloudlet.overloaded',
  drain: 'edge.cloudlet.drain',
  launch: 'edge.vm.launch',
} as const;
export type EdgeEventType = (typeof EVENT_TYPES)[keyof typeof EVENT_TYPES];

/** The `data` of each event type; unknown fields are refused, so a misspelt one is named, not ignored. */
export const eventDataSchemas = {
  [EVENT_TYPES.userMoved]: z
    .object({ vmId: vmIdSchema, toCloudlet: cloudletNameSchema.optional(), near: locationSchema.strict().optional() })
    .strict(),
  /** `load`: busy share of its capacity as a fraction (0.9 = 90%; above 1 when oversubscribed). */
  [EVENT_TYPES.overloaded]: z.object({ cloudlet: cloudletNameSchema, load: z.number().min(0).max(16).optional() }).strict(),
  [EVENT_TYPES.drain]: z.object({ cloudlet: cloudletNameSchema, concurrency: z.number().int().min(1).max(16).optional() }).strict(),
  [EVENT_TYPES.launch]: z
    .object({ vmId: vmIdSchema, cloudlet: cloudletNameSchema.optional(), workload: workloadSchema.extend({ args: workloadSchema.shape.args.optional() }).strict(), baseImageId: baseImageIdSchema.optional() })
    .strict(),
} satisfies Record<EdgeEventType, z.ZodType>;
export type UserMovedData = z.infer<(typeof eventDataSchemas)['edge.user.moved']>;
export type OverloadedData = z.infer<(typeof eventDataSchemas)['edge.cloudlet.overloaded']>;
export type DrainData = z.infer<(typeof eventDataSchemas)['edge.cloudlet.drain']>;
export type LaunchData = z.infer<(typeof eventDataSchemas)['edge.vm.launch']>;

export const isEdgeEventType = (t: string): t is EdgeEventType => Object.values(EVENT_TYPES).includes(t as EdgeEventType);

/** The site's standing orders for events: how the endpoint's configuration reaches each event workflow. */
export const eventPolicySchema = z
  .object({
    site: siteTopologySchema,
    conflictRule: z.enum(['queue', 'refuse']),
    /** The base image a launch uses when its event names none. */
    defaultBaseImageId: baseImageIdSchema.optional(),
    /** Whether the server has the Edge* search attributes (the embedded one does). */
    searchAttributes: z.boolean(),
    /** The WAN's nominal rate between cloudlets, Mbit/s, when the operator declared it: shown in each handoff's summary. */
    linkMbps: z.number().positive().max(100_000).optional(),
    /**
     * Whether the handoffs events start may switch to post-copy (the workflow's `postCopy`). The
     * operator's to set for the site, not an event's sender's: a source host that dies mid
     * post-copy loses the VM. Absent: never.
     */
    postCopy: z.enum(['auto', 'never']).optional(),
  })
  .strict();
export type EventPolicy = z.infer<typeof eventPolicySchema> & { conflictRule: ConflictRule };

/** One received CloudEvent, checked, as its workflow's input (the history keeps it). */
export interface EdgeEventInput {
  type: EdgeEventType;
  source: string;
  id: string;
  /** The event's own time, if it carried one. */
  time?: string;
  receivedAt: string;
  data: unknown;
  policy: EventPolicy;
}

export type EventOutcome = 'started' | 'joined' | 'duplicate' | 'queued' | 'refused';

/** The answer to an event (the body of the endpoint's 202), decided once by its workflow. */
export interface EventAdmission {
  outcome: EventOutcome;
  /** The workflows that carry the event out: a handoff, a drain, a launch (the first delivery's, for a duplicate). */
  workflowIds: string[];
  reason?: string;
  /** The event's own workflow: where its decision and what followed are recorded. */
  eventWorkflowId: string;
}

/** What an event workflow returns when it ends: its answer and how what it started went. */
export interface EventReport {
  admission: EventAdmission;
  placement?: PlacementDecision;
  /** One line per workflow it started or waited for, e.g. "handoff-vm1: moved A → B in 21.3 s". */
  followed: string[];
}

/** Sent with each delivery (Update-with-Start): answered once the workflow decided. */
export const admitEventUpdate = defineUpdate<EventAdmission, []>('admitEvent');
export const admissionQuery = defineQuery<EventAdmission | null>('admission');

/** A handoff's or a launch's result in one line; anything else as its JSON, bounded. */
export function summarizeResult(result: unknown): string {
  const r = result as Record<string, unknown> | null;
  if (r && typeof r.totalMs === 'number' && typeof r.source === 'string') {
    return `moved ${r.source} → ${String(r.target)} in ${(r.totalMs / 1000).toFixed(1)} s, downtime ${String(r.downtimeMs)} ms; ${r.verified ? 'verified' : 'NOT verified'}`;
  }
  if (r && typeof r.runState === 'string' && typeof r.cloudlet === 'string') return `${String(r.vmId)} ${r.runState} on ${r.cloudlet}`;
  return JSON.stringify(result ?? null).slice(0, 300);
}

export interface DrainInput {
  cloudlet: string;
  /** Handoffs at once. */
  concurrency: number;
  policy: EventPolicy;
  trigger: string;
}

export interface DrainedVm {
  vmId: string;
  /** How its move was answered (joined: a handoff off this cloudlet was already in flight). */
  outcome: 'started' | 'joined' | 'queued' | 'refused';
  workflowIds: string[];
  moved: boolean;
  /** From the drain's start of this VM's move to its end. */
  ms: number;
  summary: string;
}

export interface DrainReport {
  cloudlet: string;
  concurrency: number;
  totalMs: number;
  vms: DrainedVm[];
  /** VMs still on the cloudlet when the drain ended (a move that failed, or a VM that arrived late). */
  left: string[];
}

export const drainProgressQuery = defineQuery<DrainReport>('drainProgress');

export interface LoadMonitorInput {
  policy: EventPolicy;
  /** The CloudEvent source its events carry. */
  source: string;
  threshold?: number;
  sustainMs?: number;
  sampleMs?: number;
}

export const LOAD_MONITOR_SOURCE = 'ehoff://load-monitor';
