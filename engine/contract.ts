import type { StreamMeasurements } from './adaptation/measurements.js';
import type { ModeId } from './adaptation/mode.js';
import type { HandoffErrorCode } from './errors.js';
import type { PrecopyDecision } from './handoff/precopy-policy.js';
import type { BaseFetchReport } from './image/base-transfer.js';
import type { StageCounts } from './pipeline/overlay-encoder.js';

/**
 * What crosses layers, declared once: the shapes the engine reports and the workflow passes on to
 * its clients (digests, stage totals, epochs, stop marks, the handoff's result), the failure types
 * a workflow ends with, and the workflow ids clients find a workflow by. Engine, workflows,
 * activities and clients import these instead of spelling them again. It sits in the engine only
 * because every layer may import the engine and the engine imports nothing above it; it holds no
 * Temporal import and no runtime code beyond constants and pure id functions, so the workflow
 * bundle takes it as it is. Changing a value here (an id, a failure type) changes what workflows
 * write into their histories: see docs/workflow-changes.md.
 */

/** A VM's state at the source's stop, and as the target assembled it: the two must be equal. */
export interface StateDigests {
  memoryDigest: string;
  diskDigest: string;
}

/** What the stream's stages did to the whole overlay: the encoder's counts and the bytes through it. */
export interface StageTotals extends StageCounts {
  inputBytes: number;
  rawBytes: number;
  payloadBytes: number;
}

export interface EpochReport {
  epoch: number;
  live: boolean;
  memoryPages: number;
  diskBlocks: number;
  /** Of these, the ones an earlier epoch of this stream had sent already: what pre-copy resends. */
  resentMemoryPages: number;
  resentDiskBlocks: number;
  ms: number;
}

/**
 * A resumed attempt's reconcile with what the target held already: chunks it named (content
 * other than the base's) and of those, the ones it did not need again.
 */
export interface ReconcileReport {
  memoryPagesHeld: number;
  memoryPagesKept: number;
  diskBlocksHeld: number;
  diskBlocksKept: number;
  /** The holdings frame's size: what the reconcile cost on the link back. */
  holdingsBytes: number;
  ms: number;
}

/** Host times (ms) of the source's steps after the pause: where its part of the downtime went. */
export interface SourceStopMarks {
  pausedAtMs: number;
  scannedAtMs: number;
  finalEpochEncodedAtMs: number;
  deviceStateSavedAtMs: number;
  ackedAtMs: number;
  digestedAtMs: number;
}

/** Host times (ms) of the target's: the last frame applied, its finalize's start, the digests compared. */
export interface TargetStopMarks {
  receivedAtMs: number;
  finalizeStartedAtMs: number;
  verifiedAtMs: number;
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

/** One change of mode, with what caused it: the history's record of the adaptation. */
export interface ModeSwitch {
  atMs: number;
  from: ModeId;
  to: ModeId;
  reason: string;
  measurements: StreamMeasurements | null;
}

/** A handoff workflow's result: what clients, the CLI's `--json` and the benches read. */
export interface HandoffResult extends StateDigests {
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
  heartbeatAtStop: number | null;
  heartbeatAfterResume: number | null;
  guestContinued: boolean;
  steps: StepRecord[];
  /** Batches sent in each mode. */
  modesUsed: Record<ModeId, number>;
  /** Pre-copy epochs while the guest ran, then the stop-and-copy one. */
  epochs: EpochReport[];
  /** Whether the live epochs converged, why they stopped, and each decision on the way (as the history's signals hold them). */
  precopy: { converged: boolean; stopReason: string; decisions?: PrecopyDecision[] };
  /**
   * The committed stream attempt's reconcile with what the target held from earlier, broken
   * attempts: pages and blocks named, and of those the ones not sent again. Null when the first
   * attempt went through.
   */
  reconciled: ReconcileReport | null;
  /** How the source found the pages written between epochs; null from a stream before it said. */
  memoryTracking: MemoryTracking | null;
  /**
   * Whether the handoff switched to post-copy, why, and what the target then fetched; null when
   * the pre-copy ran to its stop (or post-copy was not allowed: `postCopyPolicy`).
   */
  postCopy: PostCopyOutcome | null;
  /** The operator's post-copy policy for this handoff. */
  postCopyPolicy: PostCopyPolicy;
  modeSwitches: ModeSwitch[];
  stages: StageTotals;
}

/** Whether a pre-copy that will not converge may switch to post-copy (see PrecopyPolicy.postCopy). */
export type PostCopyPolicy = 'auto' | 'never';

/** The source's side of a post-copy switch: why, and how many memory pages the target then held stale. */
export interface PostCopySwitch {
  reason: string;
  stalePages: number;
  /** Of these, the ones a live epoch had sent already: post-copy's share of pages sent twice. */
  stalePagesSentBefore: number;
}

/** What a post-copy's target fetched after the switch, and how the guest fared meanwhile. */
export interface PostCopyReport {
  /** Pages the switch left to fetch. */
  pages: number;
  /** Disk blocks it left to fetch too (their reads blocked at the target until each was in). */
  diskBlocks?: number;
  /** Pages a guest fault (or the device state's load) waited on, fetched on demand. */
  remoteFaults: number;
  /** From a fault's request to its page checked and handed to the fault server, ms. */
  faultLatencyMedianMs: number | null;
  faultLatencyMaxMs: number | null;
  /** Pages that failed their stop-time hash on arrival, refused and fetched again. */
  refused: number;
  /** Times a page channel was opened again after it broke. */
  reconnects: number;
  bytesReceived: number;
  /** From the start of the fetch to the last page in place, ms. */
  ms: number;
  /** The whole memory's digest once the last page was in; null where it was not computed. */
  memoryDigest: string | null;
}

/** A post-copy handoff's report: the switch, the fetch, and the check of the memory once whole. */
export interface PostCopyOutcome extends PostCopySwitch {
  fetch: PostCopyReport;
  /** The source found the target's digest of the whole memory, once the last page was in, equal to the stopped state's. */
  memoryDigestConfirmed: boolean;
}

/**
 * How a source finds the pages its guest wrote between epochs: the kernel's dirty log
 * (engine/memory/dirty-log.ts), or hashing the whole RAM file each epoch, and why not the log.
 */
export type MemoryTracking = { kind: 'dirty-log' } | { kind: 'hash-scan'; why: string };

/** How a tracking reads in a log line or a report. */
export function describeTracking(t: MemoryTracking): string {
  return t.kind === 'dirty-log' ? 'the kernel dirty log (userfaultfd async write-protect + PAGEMAP_SCAN)' : `hashing the whole RAM file each epoch (${t.why})`;
}

/**
 * The `type` of the ApplicationFailure a workflow itself ends with; its cause chain may hold an
 * activity's failure, whose type is the engine's HandoffErrorCode (errors.ts, beside its
 * retryability). Where the two mean the same thing they are the same word, checked here.
 */
export const WORKFLOW_FAILURE = {
  /** The workflow's input failed its schema: nothing was started. */
  INVALID_INPUT: 'INVALID_INPUT',
  /** The handoff failed and the VM runs on at its source. */
  HANDOFF_FAILED: 'HANDOFF_FAILED',
  /** It failed after the target had resumed the VM: it runs at the target. */
  HANDOFF_FAILED_AFTER_RESUME: 'HANDOFF_FAILED_AFTER_RESUME',
  /** The VM runs nowhere any more. */
  VM_LOST: 'VM_LOST' satisfies HandoffErrorCode,
  /** The commit frame left and the target never answered: an operator decides. */
  HANDOFF_IN_DOUBT: 'HANDOFF_IN_DOUBT' satisfies HandoffErrorCode,
  /** The VM moved, its source copy retired, but the source's stream failed before reporting. */
  HANDOFF_UNREPORTED: 'HANDOFF_UNREPORTED',
  /** The target verified digests other than those the source reported. */
  STATE_MISMATCH: 'STATE_MISMATCH' satisfies HandoffErrorCode,
} as const;
export type WorkflowFailureType = (typeof WORKFLOW_FAILURE)[keyof typeof WORKFLOW_FAILURE];

/** A handoff's workflow id is its VM's: one handoff per VM at a time (a second start fails while one runs). */
export const handoffWorkflowId = (vmId: string) => `handoff-${vmId}`;

/** One drain per cloudlet at a time: a second drain event joins the running one. */
export const drainWorkflowId = (cloudlet: string) => `drain-${cloudlet}`;

/** One launch per VM at a time: a second launch event joins the running one. */
export const launchWorkflowId = (vmId: string) => `launch-${vmId}`;

export const LOAD_MONITOR_WORKFLOW_ID = 'load-monitor';

/**
 * An event's workflow id: the same `source` + `id` always gives the same one (CloudEvents makes
 * that pair unique per event), so a repeated delivery meets the first one's workflow. The id is
 * kept readable for the UI's list; a 64-bit FNV-1a of both tells apart events whose ids look alike
 * once cleaned or come from different sources. Pure, so the load monitor's workflow computes it too.
 */
export function eventWorkflowId(source: string, id: string): string {
  const readable = id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 48);
  return `event-${readable}-${fnv1a64(`${source}\n${id}`)}`;
}

function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) h = BigInt.asUintN(64, (h ^ BigInt(byte)) * 0x100000001b3n);
  return h.toString(16).padStart(16, '0');
}
