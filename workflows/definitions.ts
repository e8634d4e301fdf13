import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import type { ReconcileReport } from '../engine/handoff/overlay-stream.js';
import type { BaseFetchReport } from '../engine/image/base-transfer.js';
import type { PrecopyDecision } from '../engine/handoff/precopy-policy.js';
import { modeIdSchema, type ModeId } from '../engine/adaptation/mode.js';
import { z } from 'zod';
import { baseImageIdSchema, cloudletNameSchema, vmIdSchema, workloadSchema } from '../engine/names.js';

/**
 * What client, workers and workflows share: input schemas, task-queue names, queries and
 * search attributes. Pure and deterministic, so the workflow bundle can import it.
 */
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
  })
  .strict()
  .refine((i) => i.source !== i.target, { message: 'source and target must be different cloudlets', path: ['target'] });
export type HandoffInput = z.infer<typeof handoffInputSchema>;

/** A handoff's workflow id is its VM's: one handoff per VM at a time (a second start fails while one runs). */
export const handoffWorkflowId = (vmId: string) => `handoff-${vmId}`;

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

export const HANDOFF_STEPS = ['snapshot', 'negotiate', 'stream', 'finalize', 'resume'] as const;
/**
 * `waiting-for-target`: the end frame left and the target has not answered whether it committed;
 * the source's copy stays stopped while the workflow keeps asking (see the rollback).
 */
export type HandoffStep = (typeof HANDOFF_STEPS)[number] | 'fetch-base' | 'retire-source' | 'rollback' | 'waiting-for-target' | 'done' | 'failed';

export interface StepRecord {
  step: HandoffStep;
  startedAt: number;
  endedAt?: number;
  detail?: string;
}

export interface HandoffProgress {
  step: HandoffStep;
  steps: StepRecord[];
}

export interface HandoffResult {
  workflowId: string;
  vmId: string;
  source: string;
  target: string;
  baseImageId: string;
  /** From the snapshot on: a base image the target fetched first is not counted here, but in `baseFetch`. */
  totalMs: number;
  /** The target lacked the VM's base and fetched it from the source before the handoff; null when it held it. */
  baseFetch: BaseFetchReport | null;
  /** Host side: from the source's pause to the target's `cont`. */
  downtimeMs: number;
  /**
   * Where the host-side downtime went, in order, ms each (source and target clocks: exact on one
   * host, approximate across machines). Steps overlap where the engine overlaps them.
   */
  downtimeBreakdown: Array<{ step: string; ms: number }>;
  /** Guest side: the longest silence between heartbeats across the handoff, on the host clock. */
  guestGapMs: number | null;
  /** Its two candidates: the longest silence while the guest ran at the source (the pre-copy,
   * its slowdown included), and the one across the stop (last beat there → first beat here).
   * The latter is the host downtime plus the two ends around it: how old the source's last beat
   * was when it paused, and how long the target's guest took to beat after `cont` returned. */
  guestGapParts: { liveMs: number; acrossStopMs: number | null; beforePauseMs: number | null; afterResumeMs: number | null };
  bytesSent: number;
  memoryPages: number;
  diskBlocks: number;
  deviceStateBytes: number;
  verified: boolean;
  memoryDigest: string;
  diskDigest: string;
  heartbeatAtStop: number | null;
  heartbeatAfterResume: number | null;
  guestContinued: boolean;
  steps: StepRecord[];
  /** Batches sent in each mode. */
  modesUsed: Record<ModeId, number>;
  /** Pre-copy epochs while the guest ran, then the stop-and-copy one. */
  epochs: Array<{ epoch: number; live: boolean; memoryPages: number; diskBlocks: number; ms: number }>;
  /** Whether the live epochs converged, why they stopped, and each decision on the way (as the history's signals hold them). */
  precopy: { converged: boolean; stopReason: string; decisions?: PrecopyDecision[] };
  /**
   * The committed stream attempt's reconcile with what the target held from earlier, broken
   * attempts: pages and blocks named, and of those the ones not sent again. Null when the first
   * attempt went through.
   */
  reconciled: ReconcileReport | null;
  modeSwitches: ModeSwitch[];
  stages: { chunks: number; zero: number; baseRefs: number; selfRefs: number; data: number; againstPrevious: number; inputBytes: number; rawBytes: number; payloadBytes: number };
}

/** One change of mode, with what caused it: the history's record of the adaptation. */
export interface ModeSwitch {
  atMs: number;
  from: ModeId;
  to: ModeId;
  reason: string;
  measurements: StreamMeasurements | null;
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
