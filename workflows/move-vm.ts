import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { ParentClosePolicy, startChild, log } from '@temporalio/workflow';
import type { WorkflowEnd } from '../activities/site-activities.js';
import { chooseTarget, type PlacementDecision } from '../engine/placement/choose-target.js';
import { mergeDrain, mergeMove, type InFlightHandoff, type MergeDecision } from '../engine/placement/merge-intent.js';
import type { Location } from '../engine/placement/site-topology.js';
import { candidatesFor, whereRuns } from '../engine/placement/site-view.js';
import type { HandoffResult } from './definitions.js';
import { handoff } from './handoff.js';
import { handoffStartOptions, type PlacementPolicy } from './handoff-audit.js';
import { summarizeResult, type EventAdmission, type EventPolicy } from './event-definitions.js';
import { readSite, siteLookups, siteWaits } from './site-reads.js';

/** A reason to move one VM: an event's wish, or a drain's. */
export interface MoveRequest {
  vmId: string;
  toCloudlet?: string;
  near?: Location;
  /**
   * A move off this cloudlet (a drain's, an overload's), wherever placement sends it: a VM already
   * leaving it is joined, one arriving is moved once it arrived, one elsewhere is left alone.
   */
  offCloudlet?: string;
  /** What asked for it, recorded on the handoff (memo): "edge.user.moved /app/42". */
  trigger: string;
  policy: EventPolicy;
}

export type Answer = Omit<EventAdmission, 'eventWorkflowId'>;

export interface MoveOutcome {
  /** The first answer this move gave (what the event's sender was told). */
  answer: Answer;
  placement?: PlacementDecision;
  /** The handoffs it started or waited for, and how each ended. */
  ends: WorkflowEnd[];
}

/** Rounds of plan → start before giving up: each lost race to another event's start costs one. */
const MAX_ROUNDS = 6;

/**
 * One VM's move, carried out: plan it against the site and the handoff in flight, then start it,
 * join the one in flight, wait behind it and plan again, or refuse — by the merge rules — and wait
 * for the handoff it led to. `answer` is told once, as soon as the first decision is taken.
 */
export async function carryOutMove(req: MoveRequest, answer: (a: Answer) => void): Promise<MoveOutcome> {
  let first: Answer | undefined;
  const tell = (a: Answer) => {
    if (first) return;
    first = a;
    answer(a);
  };
  const ends: WorkflowEnd[] = [];
  let placement: PlacementDecision | undefined;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const plan = await planMove(req);
    placement = plan.placement ?? placement;
    const d = plan.decision;
    log.info('move planned', { vmId: req.vmId, outcome: d.outcome, reason: d.reason, round });
    if (d.outcome === 'refused') {
      tell({ outcome: 'refused', workflowIds: [], reason: d.reason });
      return { answer: first!, ...(placement ? { placement } : {}), ends };
    }
    if (d.outcome === 'joined') {
      tell({ outcome: 'joined', workflowIds: [d.workflowId], reason: d.reason });
      ends.push(await siteWaits.awaitWorkflowEnd({ workflowId: d.workflowId }));
      return { answer: first!, ...(placement ? { placement } : {}), ends };
    }
    if (d.outcome === 'queued') {
      tell({ outcome: 'queued', workflowIds: [d.behind], reason: d.reason });
      ends.push(await siteWaits.awaitWorkflowEnd({ workflowId: d.behind }));
      continue;
    }
    const handle = await startHandoff(req, plan.source!, plan.placement!);
    // Another event's handoff of this VM started between the plan and the start: plan against it.
    if (handle === 'in-flight') continue;
    tell({ outcome: 'started', workflowIds: [handle.workflowId], reason: plan.placement!.reason });
    try {
      const result: HandoffResult = await handle.result();
      ends.push({ workflowId: handle.workflowId, ok: true, summary: summarizeResult(result) });
    } catch (err) {
      ends.push({ workflowId: handle.workflowId, ok: false, summary: `failed: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}` });
    }
    return { answer: first!, placement: plan.placement!, ends };
  }
  tell({ outcome: 'refused', workflowIds: [], reason: `${req.vmId}: other handoffs kept starting first (${MAX_ROUNDS} rounds)` });
  return { answer: first!, ...(placement ? { placement } : {}), ends };
}

interface MovePlan {
  decision: MergeDecision;
  placement?: PlacementDecision;
  source?: string;
}

/** Where the VM is, what is in flight for it, where placement sends it, and what the merge rules make of that. */
async function planMove(req: MoveRequest): Promise<MovePlan> {
  // The handoff in flight, the site, then the handoff in flight again: one that ended (or began)
  // between the reads would pair a VM's old place with no handoff, and a move from where it left.
  let view;
  let inFlight: InFlightHandoff | undefined;
  for (let reads = 0; ; reads++) {
    const before = await siteLookups.inFlightHandoff({ vmId: req.vmId });
    view = await readSite(req.policy.site);
    const after = await siteLookups.inFlightHandoff({ vmId: req.vmId });
    inFlight = after ?? undefined;
    if (JSON.stringify(before) === JSON.stringify(after) || reads >= 2) break;
  }
  const at = whereRuns(view.states, req.vmId);
  if (req.offCloudlet !== undefined) {
    const d = mergeDrain(req.offCloudlet, req.vmId, inFlight);
    if (d.outcome !== 'started') return { decision: d };
    if (at?.cloudlet !== req.offCloudlet) return { decision: { outcome: 'refused', reason: `${req.vmId} no longer runs on ${req.offCloudlet}` } };
  }
  if (!at) return { decision: { outcome: 'refused', reason: `${req.vmId} runs on no cloudlet of the site (${req.policy.site.cloudlets.map((c) => c.name).join(', ')})` } };
  const source = inFlight?.source ?? at.cloudlet;
  const placement = chooseTarget(
    { vmId: req.vmId, source, ...(req.toCloudlet ? { toCloudlet: req.toCloudlet } : {}), ...(req.near ? { near: req.near } : {}) },
    candidatesFor(view, at.baseImageId),
  );
  if (placement.target === null) return { decision: { outcome: 'refused', reason: placement.reason }, placement };
  if (req.offCloudlet !== undefined) return { decision: { outcome: 'started', reason: placement.reason }, placement, source };
  return { decision: mergeMove(req.vmId, placement.target, inFlight, req.policy.conflictRule), placement, source };
}

/** How placement chose, for the audit: the event's named target, the user's place, or load alone. */
function placementPolicyOf(req: MoveRequest): PlacementPolicy {
  return req.toCloudlet ? 'named-by-event' : req.near ? 'nearest-to-user' : 'least-loaded';
}

/** Starts the VM's handoff as a child that outlives this workflow, or says one is already in flight. */
async function startHandoff(req: MoveRequest, source: string, placement: PlacementDecision) {
  try {
    return await startChild(handoff, {
      ...handoffStartOptions({
        input: { vmId: req.vmId, source, target: placement.target!, ...(req.policy.postCopy ? { postCopy: req.policy.postCopy } : {}) },
        trigger: req.trigger,
        placementPolicy: placementPolicyOf(req),
        placement,
        ...(req.policy.linkMbps !== undefined ? { linkMbps: req.policy.linkMbps } : {}),
        searchAttributes: req.policy.searchAttributes,
      }),
      // A handoff ends by its own rules (rollback, in-doubt): never cut short by its requester.
      parentClosePolicy: ParentClosePolicy.ABANDON,
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return 'in-flight' as const;
    throw err;
  }
}
