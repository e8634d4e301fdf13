import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import type { PrecopyDecision } from '../engine/handoff/precopy-policy.js';
import type { HandoffStep, StepRecord } from '../engine/contract.js';
import { modeIdSchema, type ModeId } from '../engine/adaptation/mode.js';
import { z } from 'zod';
import { baseImageIdSchema, cloudletNameSchema, vmIdSchema, workloadSchema } from '../engine/names.js';

/**
 * What client, workers and workflows share: input schemas, task-queue names, queries and
 * search attributes. Pure and deterministic, so the workflow bundle can import it. The handoff's
 * result and its workflow id are declared in engine/contract.ts and re-exported here, where
 * clients have always imported them.
 */
export { HANDOFF_STEPS, handoffWorkflowId, type HandoffResult, type HandoffStep, type ModeSwitch, type StepRecord } from '../engine/contract.js';

export const WORKFLOW_TASK_QUEUE = 'edge-handoff';
export const cloudletTaskQueue = (cloudlet: string) => `cloudlet-${cloudlet}`;

const vmId = vmIdSchema;
const cloudlet = cloudletNameSchema;

export const handoffInputSchema = z
  .object({
    vmId,
    source: cloudlet,
    target: cloudlet,
    /** Start with this mode and keep it (an operator's pin, as the pinMode signal sets later). */
    pinnedMode: modeIdSchema.optional(),
    /** Never send faster than this, Mbit/s (as the capBandwidth signal sets later). */
    bandwidthCapMbps: z.number().positive().max(100_000).optional(),
    /**
     * Whether a pre-copy that will not converge may switch to post-copy (`auto`), or must stop and
     * copy the rest (`never`, the default): mid post-copy the VM's memory is split between the two
     * hosts, and a source host lost then loses the VM.
     */
    postCopy: z.enum(['auto', 'never']).optional(),
  })
  .strict()
  .refine((i) => i.source !== i.target, { message: 'source and target must be different cloudlets', path: ['target'] });
export type HandoffInput = z.infer<typeof handoffInputSchema>;

export const launchVmInputSchema = z
  .object({
    vmId,
    cloudlet,
    baseImageId: baseImageIdSchema,
    workload: workloadSchema.optional(),
  })
  .strict();
export type LaunchVmInput = z.infer<typeof launchVmInputSchema>;

export const vmRefSchema = z.object({ vmId, cloudlet }).strict();
export type VmRef = z.infer<typeof vmRefSchema>;

/** Names the first thing wrong with an input, in words an operator can act on. */
export function describeInvalid(what: string, error: z.ZodError): string {
  const issue = error.issues[0];
  const field = issue?.path.length ? `'${issue.path.join('.')}'` : 'the request';
  return `malformed ${what}: ${field}: ${issue?.message ?? 'invalid'}`;
}

export interface HandoffProgress {
  step: HandoffStep;
  steps: StepRecord[];
}

export interface StreamControlState {
  mode: ModeId;
  pinnedMode: ModeId | null;
  bandwidthCapMbps: number | null;
  /** When the current mode was switched to (workflow time, ms since the epoch); null: the starting mode. */
  modeSinceMs: number | null;
}

export const progressQuery = defineQuery<HandoffProgress>('progress');
/** The stream reads the mode and bandwidth cap the workflow decided. */
export const streamControlQuery = defineQuery<StreamControlState>('streamControl');
/** The stream's latest report (null before its first): what `ehoff watch` shows. */
export const streamMeasurementsQuery = defineQuery<StreamMeasurements | null>('streamMeasurements');
/**
 * From the streaming activity: P, r per mode and R, when they would change the mode (the stream
 * runs the same rule first; samples that would not are kept in its heartbeats, not sent).
 */
export const reportMeasurementsSignal = defineSignal<[StreamMeasurements]>('reportMeasurements');
/** From the streaming activity: each pre-copy decision (continue, slow the guest, catch up, stop) and its figures. */
export const precopyDecisionSignal = defineSignal<[PrecopyDecision]>('precopyDecision');
/** From an operator: use this mode whatever the measurements say. */
export const pinModeSignal = defineSignal<[ModeId]>('pinMode');
export const unpinModeSignal = defineSignal<[]>('unpinMode');
/** From an operator: never send faster than this (Mbit/s); null lifts the cap. */
export const capBandwidthSignal = defineSignal<[number | null]>('capBandwidth');

/**
 * A handoff's audit record in the namespace's visibility store: what an operator filters the UI's
 * list by (`EdgeOutcome = "moved" AND EdgeDowntimeMs > 1000`). Set at start (VM, cloudlets,
 * trigger, placement), as it moves (phase) and at its end (outcome, mode, figures).
 */
export const VmIdSearchAttribute = defineSearchAttributeKey('EdgeVmId', 'KEYWORD');
export const SourceSearchAttribute = defineSearchAttributeKey('EdgeSourceCloudlet', 'KEYWORD');
export const TargetSearchAttribute = defineSearchAttributeKey('EdgeTargetCloudlet', 'KEYWORD');
/** "edge.user.moved /app l1" (the event's type, source and id), "drain …" or "operator". */
export const TriggerSearchAttribute = defineSearchAttributeKey('EdgeTrigger', 'KEYWORD');
/** The step it is in (see HandoffStep), updated as it moves. */
export const PhaseSearchAttribute = defineSearchAttributeKey('EdgePhase', 'KEYWORD');
/** How it ended, in the fault suite's words: moved, stayed-at-source, moved-after-commit-fault, vm-lost, in-doubt. */
export const OutcomeSearchAttribute = defineSearchAttributeKey('EdgeOutcome', 'KEYWORD');
/** The mode the stream ended in. */
export const ModeSearchAttribute = defineSearchAttributeKey('EdgeMode', 'KEYWORD');
export const ConvergedSearchAttribute = defineSearchAttributeKey('EdgeConverged', 'BOOL');
export const DowntimeMsSearchAttribute = defineSearchAttributeKey('EdgeDowntimeMs', 'INT');
export const BytesSentSearchAttribute = defineSearchAttributeKey('EdgeBytesSent', 'INT');
/** How the target was chosen: operator, named-by-event, nearest-to-user, least-loaded. */
export const PlacementPolicySearchAttribute = defineSearchAttributeKey('EdgePlacementPolicy', 'KEYWORD');

/** Every attribute above: what a server must have registered before a handoff starts. */
export const EDGE_SEARCH_ATTRIBUTES = [
  VmIdSearchAttribute,
  SourceSearchAttribute,
  TargetSearchAttribute,
  TriggerSearchAttribute,
  PhaseSearchAttribute,
  OutcomeSearchAttribute,
  ModeSearchAttribute,
  ConvergedSearchAttribute,
  DowntimeMsSearchAttribute,
  BytesSentSearchAttribute,
  PlacementPolicySearchAttribute,
] as const;
