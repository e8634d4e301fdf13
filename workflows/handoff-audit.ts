import type { SearchAttributePair } from '@temporalio/common';
import type { PlacementDecision } from '../engine/placement/choose-target.js';
import type { PrecopyDecision } from '../engine/handoff/precopy-policy.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import {
  BytesSentSearchAttribute,
  ConvergedSearchAttribute,
  DowntimeMsSearchAttribute,
  ModeSearchAttribute,
  OutcomeSearchAttribute,
  PhaseSearchAttribute,
  PlacementPolicySearchAttribute,
  SourceSearchAttribute,
  TargetSearchAttribute,
  TriggerSearchAttribute,
  VmIdSearchAttribute,
  WORKFLOW_TASK_QUEUE,
  handoffWorkflowId,
  type HandoffInput,
  type HandoffStep,
} from './definitions.js';
import { EVENT_TYPES } from './event-definitions.js';

/**
 * What a handoff says of itself in the Temporal UI: its one-line summary and markdown details
 * (fixed at start), the search attributes an auditor filters by, and the details it keeps current
 * while it runs. Pure, so the client, the event workflows and the handoff workflow share it.
 */

/** How the target was chosen. */
export type PlacementPolicy = 'operator' | 'named-by-event' | 'nearest-to-user' | 'least-loaded';

/** How a handoff ended, in the fault suite's words. */
export type HandoffOutcome = 'moved' | 'stayed-at-source' | 'moved-after-commit-fault' | 'vm-lost' | 'in-doubt';

export interface HandoffStartAudit {
  input: HandoffInput;
  /** "operator", or what asked for it: the event's "type source id", a drain's. */
  trigger: string;
  placementPolicy: PlacementPolicy;
  /** The decision behind the target, when placement chose it. */
  placement?: PlacementDecision;
  /** The WAN's nominal rate, Mbit/s, when the operator declared it. */
  linkMbps?: number;
  /** Whether the namespace has the Edge* search attributes (a start naming unknown ones fails). */
  searchAttributes: boolean;
}

export const OPERATOR_TRIGGER = 'operator';

/** A handoff's start options, whoever starts it (the CLI, an event, a drain). */
export function handoffStartOptions(a: HandoffStartAudit) {
  const { vmId, source, target } = a.input;
  return {
    workflowId: handoffWorkflowId(vmId),
    taskQueue: WORKFLOW_TASK_QUEUE,
    args: [a.input] as [HandoffInput],
    memo: { vmId, source, target, trigger: a.trigger },
    staticSummary: handoffSummary(a),
    staticDetails: handoffDetails(a),
    workflowExecutionTimeout: '1 hour',
    ...(a.searchAttributes ? { typedSearchAttributes: startAttributes(a) } : {}),
  };
}

/** "kvstore-7 A → B, user moved, 10 Mbit/s": what the UI's list shows. */
export function handoffSummary(a: Pick<HandoffStartAudit, 'input' | 'trigger' | 'linkMbps'>): string {
  const { vmId, source, target, bandwidthCapMbps } = a.input;
  const parts = [`${vmId} ${source} → ${target}`, triggerWords(a.trigger)];
  if (a.linkMbps !== undefined) parts.push(`${a.linkMbps} Mbit/s`);
  if (bandwidthCapMbps !== undefined) parts.push(`capped at ${bandwidthCapMbps} Mbit/s`);
  return parts.join(', ');
}

/** The trigger as a few words: "user moved", "drain", "overload", "operator". */
export function triggerWords(trigger: string): string {
  const type = trigger.split(' ')[0];
  if (type === EVENT_TYPES.userMoved) return 'user moved';
  if (type === EVENT_TYPES.drain) return 'drain';
  if (type === EVENT_TYPES.overloaded) return 'overload';
  return trigger === OPERATOR_TRIGGER ? 'operator' : type ?? trigger;
}

/** The request and the placement decision, as markdown. */
export function handoffDetails(a: HandoffStartAudit): string {
  const { vmId, source, target, pinnedMode, bandwidthCapMbps, postCopy } = a.input;
  const lines = [
    `### Request`,
    `Move VM \`${vmId}\` from **${source}** to **${target}**.`,
    '',
    `- trigger: ${a.trigger === OPERATOR_TRIGGER ? 'an operator' : `\`${a.trigger}\``}`,
    `- placement: ${a.placementPolicy}`,
    ...(pinnedMode ? [`- mode pinned: \`${pinnedMode}\``] : []),
    ...(bandwidthCapMbps !== undefined ? [`- bandwidth cap: ${bandwidthCapMbps} Mbit/s`] : []),
    `- post-copy: ${postCopy === 'auto' ? 'allowed (auto)' : 'never'}`,
    ...(a.linkMbps !== undefined ? [`- link: ${a.linkMbps} Mbit/s (declared)`] : []),
  ];
  if (a.placement) {
    lines.push('', `### Placement`, a.placement.reason, '', '| cloudlet | verdict | why |', '|---|---|---|');
    for (const c of a.placement.candidates) lines.push(`| ${c.cloudlet} | ${c.verdict} | ${c.why.replaceAll('|', '/')} |`);
  }
  return lines.join('\n');
}

function startAttributes(a: HandoffStartAudit): SearchAttributePair[] {
  return [
    { key: VmIdSearchAttribute, value: a.input.vmId },
    { key: SourceSearchAttribute, value: a.input.source },
    { key: TargetSearchAttribute, value: a.input.target },
    { key: TriggerSearchAttribute, value: a.trigger },
    { key: PlacementPolicySearchAttribute, value: a.placementPolicy },
  ];
}

/** The phase attribute, as the handoff moves. */
export const phaseAttributes = (step: HandoffStep): SearchAttributePair[] => [{ key: PhaseSearchAttribute, value: step }];

/** What a handoff that moved its VM records at its end. */
export function movedAttributes(r: { mode: string; converged: boolean; downtimeMs: number; bytesSent: number }): SearchAttributePair[] {
  return [
    { key: OutcomeSearchAttribute, value: 'moved' },
    { key: ModeSearchAttribute, value: r.mode },
    { key: ConvergedSearchAttribute, value: r.converged },
    { key: DowntimeMsSearchAttribute, value: Math.round(r.downtimeMs) },
    { key: BytesSentSearchAttribute, value: r.bytesSent },
  ];
}

/** What a handoff that did not complete records: its outcome, and the mode it was in. */
export function failedAttributes(outcome: HandoffOutcome, mode: string): SearchAttributePair[] {
  return [
    { key: OutcomeSearchAttribute, value: outcome },
    { key: ModeSearchAttribute, value: mode },
  ];
}

/** What the running handoff shows as its current details. */
export interface HandoffNow {
  step: HandoffStep;
  mode: string;
  pinnedMode: string | null;
  bandwidthCapMbps: number | null;
  /** The last measurements the workflow got (a switch's), and the last pre-copy decision. */
  measurements: StreamMeasurements | null;
  decision: PrecopyDecision | null;
  modeSwitches: number;
}

/** The running handoff in a few markdown lines: phase, epoch, bytes, mode, P/R, predicted downtime, last decision. */
export function currentDetails(now: HandoffNow): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  const m = now.measurements;
  const d = now.decision;
  const current = m?.modes.find((x) => x.mode === now.mode);
  const lines = [
    `**${now.step}** · mode \`${now.mode}\`${now.pinnedMode ? ' (pinned)' : ''}${now.bandwidthCapMbps !== null ? ` · cap ${now.bandwidthCapMbps} Mbit/s` : ''} · ${now.modeSwitches} mode switch${now.modeSwitches === 1 ? '' : 'es'}`,
  ];
  if (m) {
    lines.push(
      `at ${(m.atMs / 1000).toFixed(0)} s: ${mb(m.inputBytes)} read → ${mb(m.wireBytes)} sent` +
        (current ? ` · P ${current.P_MBps.toFixed(1)} MB/s, r ${current.ratio.toFixed(2)}` : '') +
        ` · R ${m.R_Mbps === null ? 'not measured' : `${m.R_Mbps.toFixed(1)} Mbit/s`}`,
    );
  }
  if (d) {
    lines.push(
      `epoch ${d.epoch}: **${d.action}** — ${d.pendingChunks} chunks left, ~${d.estimateMs} ms to send (budget ${d.budgetMs} ms)` +
        (d.dirtyBytesPerS !== null ? ` · dirty ${((d.dirtyBytesPerS * 8) / 1e6).toFixed(1)} Mbit/s` : '') +
        (d.R_Mbps !== null ? ` vs R ${d.R_Mbps.toFixed(1)} Mbit/s` : ''),
    );
  }
  return lines.join('\n\n');
}
