/**
 * Events that mean the same thing become one handoff. A VM has at most one handoff in flight; a
 * new reason to move it is merged with that one by these rules, and the answer says which
 * happened, so an application that sends `user.moved` twice, or a drain that overlaps a move,
 * never moves a VM twice or races two handoffs.
 */

/** The handoff a VM has in flight, as the event service knows it. */
export interface InFlightHandoff {
  workflowId: string;
  vmId: string;
  source: string;
  target: string;
}

/** What to do with a move to another target than the one in flight (declared in the service's configuration). */
export type ConflictRule = 'queue' | 'refuse';

export type MergeDecision =
  | { outcome: 'started'; reason: string }
  | { outcome: 'joined'; workflowId: string; reason: string }
  | { outcome: 'queued'; behind: string; reason: string }
  | { outcome: 'refused'; reason: string };

/** A request to move `vmId` to `target` (after placement chose it), against what is in flight for that VM. */
export function mergeMove(vmId: string, target: string, inFlight: InFlightHandoff | undefined, rule: ConflictRule): MergeDecision {
  if (!inFlight) return { outcome: 'started', reason: `no handoff of ${vmId} in flight` };
  const moving = `${vmId} is already moving ${inFlight.source} → ${inFlight.target} (${inFlight.workflowId})`;
  if (inFlight.target === target) return { outcome: 'joined', workflowId: inFlight.workflowId, reason: `${moving}: the same move` };
  if (inFlight.source === target) {
    // Back to where it is leaving: the newer wish wins only after the first move ends.
    return rule === 'queue'
      ? { outcome: 'queued', behind: inFlight.workflowId, reason: `${moving}; the move back to ${target} waits for it to end` }
      : { outcome: 'refused', reason: `${moving}; a move back to ${target} would race it` };
  }
  return rule === 'queue'
    ? { outcome: 'queued', behind: inFlight.workflowId, reason: `${moving}; the move to ${target} starts from there once it ends` }
    : { outcome: 'refused', reason: `${moving}; a move to ${target} would race it (the service refuses conflicting moves)` };
}

/**
 * A drain of `cloudlet` meets a VM on it: a VM already leaving it is the drain's move for that VM
 * (joined); one arriving at it is moved off once it has arrived (queued behind that handoff);
 * any other handoff of a VM on the drained cloudlet cannot be, since a VM runs in one place.
 */
export function mergeDrain(cloudlet: string, vmId: string, inFlight: InFlightHandoff | undefined): MergeDecision {
  if (!inFlight) return { outcome: 'started', reason: `${vmId} is moved off ${cloudlet}` };
  if (inFlight.source === cloudlet) return { outcome: 'joined', workflowId: inFlight.workflowId, reason: `${vmId} is already leaving ${cloudlet} for ${inFlight.target} (${inFlight.workflowId}): that is its move` };
  if (inFlight.target === cloudlet) {
    return { outcome: 'queued', behind: inFlight.workflowId, reason: `${vmId} is arriving at ${cloudlet} (${inFlight.workflowId}); it is moved off once that ends, if it runs there then` };
  }
  return { outcome: 'refused', reason: `${vmId} is moving ${inFlight.source} → ${inFlight.target}, not on ${cloudlet}: nothing to drain` };
}
