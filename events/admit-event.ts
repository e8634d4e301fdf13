import { randomUUID } from 'node:crypto';
import { WithStartWorkflowOperation, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { WORKFLOW_TASK_QUEUE } from '../workflows/definitions.js';
import { handleEvent } from '../workflows/handle-event.js';
import {
  EVENT_TYPES,
  admissionQuery,
  admitEventUpdate,
  eventWorkflowId,
  type EdgeEventInput,
  type EventAdmission,
  type EventPolicy,
} from '../workflows/event-definitions.js';
import type { ReceivedEvent } from './read-cloudevent.js';

export interface AdmissionOptions {
  client: Client;
  policy: EventPolicy;
  /** More handoffs running than this: new events that would start more are answered 429. */
  maxInFlight: number;
  /** Seconds a 429 asks the sender to wait: about a third of a handoff at the testbed's rates. */
  retryAfterS: number;
}

export type Admitted =
  | { status: 202; admission: EventAdmission }
  | { status: 429; retryAfterS: number; error: string };

/** Event types that start handoffs, and so count against the in-flight limit. */
const MOVES_VMS: ReadonlySet<string> = new Set([EVENT_TYPES.userMoved, EVENT_TYPES.overloaded, EVENT_TYPES.drain]);

/**
 * Hands one checked event to its workflow and returns that workflow's answer. The workflow's id
 * is made from `source` + `id`, and every delivery is an Update-with-Start on it
 * (conflict policy USE_EXISTING): a first delivery starts it, a repeat — concurrent or later, also
 * after a restart of this service — reaches the same workflow and is answered `duplicate` with the
 * first one's ids. One that comes after the workflow closed is answered from its recorded decision
 * (REJECT_DUPLICATE keeps a closed event from running again).
 */
export async function admitEvent(o: AdmissionOptions, event: ReceivedEvent): Promise<Admitted> {
  const workflowId = eventWorkflowId(event.source, event.id);
  const known = await describeOrNull(o.client, workflowId);
  if (known?.closed) return { status: 202, admission: await closedAnswer(o.client, workflowId, event) };
  if (!known && MOVES_VMS.has(event.type)) {
    const inFlight = await o.client.workflow.count(`WorkflowType = 'handoff' AND ExecutionStatus = 'Running'`);
    if (inFlight.count >= o.maxInFlight) {
      return { status: 429, retryAfterS: o.retryAfterS, error: `${inFlight.count} handoffs are in flight (the limit is ${o.maxInFlight}): send the event again later` };
    }
  }
  const input: EdgeEventInput = { ...event, receivedAt: new Date().toISOString(), policy: o.policy };
  const start = new WithStartWorkflowOperation(handleEvent, {
    workflowId,
    taskQueue: WORKFLOW_TASK_QUEUE,
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'REJECT_DUPLICATE',
    memo: { eventType: event.type, eventSource: event.source, eventId: event.id },
    staticSummary: `${event.type} ${event.id} from ${event.source}`,
    workflowExecutionTimeout: '6 hours',
  });
  try {
    const admission = await o.client.workflow.executeUpdateWithStart(admitEventUpdate, { startWorkflowOperation: start, updateId: randomUUID() });
    return { status: 202, admission };
  } catch (err) {
    // It closed between the look and the update: answer from what it decided.
    if ((await describeOrNull(o.client, workflowId))?.closed) return { status: 202, admission: await closedAnswer(o.client, workflowId, event) };
    throw err;
  }
}

async function describeOrNull(client: Client, workflowId: string): Promise<{ closed: boolean } | null> {
  try {
    const d = await client.workflow.getHandle(workflowId).describe();
    return { closed: d.status.name !== 'RUNNING' };
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
}

/** A delivery of an event whose workflow has ended: its decision, read back by a query, as a duplicate. */
async function closedAnswer(client: Client, workflowId: string, event: ReceivedEvent): Promise<EventAdmission> {
  const first = await client.workflow.getHandle(workflowId).query(admissionQuery);
  if (!first) throw new Error(`event workflow ${workflowId} ended without deciding`);
  const was = `${first.outcome}${first.reason ? ` (${first.reason})` : ''}`;
  return { ...first, outcome: 'duplicate', reason: `event ${event.id} from ${event.source} was handled already (${workflowId}, now closed): ${was}` };
}
