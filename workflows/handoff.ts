import {
  ApplicationFailure,
  CancellationScope,
  proxyActivities,
  log,
  patched,
  setHandler,
  upsertMemo,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { SourceActivities } from '../activities/source-activities.js';
import type { TargetActivities } from '../activities/target-activities.js';
import { chooseMode, type StreamPolicy } from '../engine/adaptation/choose-mode.js';
import { DEFAULT_MODE, modeId, modeIdSchema, type ModeId } from '../engine/adaptation/mode.js';
import {
  capBandwidthSignal,
  pinModeSignal,
  reportMeasurementsSignal,
  streamControlQuery,
  unpinModeSignal,
  type ModeSwitch,
  cloudletTaskQueue,
  describeInvalid,
  handoffInputSchema,
  progressQuery,
  type HandoffInput,
  type HandoffResult,
  type HandoffStep,
  type StepRecord,
} from './definitions.js';

/**
 * Per-cloudlet activity options. scheduleToClose bounds the whole attempt chain: a task queue
 * belongs to one host, and if that host is gone no retry on it will ever start.
 */
function onCloudlet(cloudlet: string, opts: Partial<ActivityOptions> = {}): ActivityOptions {
  return {
    taskQueue: cloudletTaskQueue(cloudlet),
    scheduleToCloseTimeout: '3 minutes',
    startToCloseTimeout: '2 minutes',
    heartbeatTimeout: '30 seconds',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumAttempts: 3 },
    ...opts,
  };
}

/**
 * Moves a VM from one cloudlet to another: snapshot → base-image negotiation → delta stream →
 * finalize (verify) → resume, each on the cloudlet that must run it. Until the target has
 * resumed and confirmed the guest, the source copy is kept; any failure puts it back to running.
 */
export async function handoff(rawInput: HandoffInput): Promise<HandoffResult> {
  const parsed = handoffInputSchema.safeParse(rawInput);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(describeInvalid('handoff request', parsed.error), 'INVALID_INPUT');
  const { vmId, source, target } = parsed.data;
  const { workflowId } = workflowInfo();
  const handoffId = `${workflowId}/${workflowInfo().runId}`;
  const startedAt = Date.now();

  const src = proxyActivities<SourceActivities>(onCloudlet(source));
  const dst = proxyActivities<TargetActivities>(onCloudlet(target));
  // The stream, and the target's finalize that waits it out, last as long as the pre-copy does
  // (minutes at 5 Mbit/s for a busy guest); heartbeats, not these bounds, notice a dead worker.
  const longRunning: Partial<ActivityOptions> = { startToCloseTimeout: '30 minutes', scheduleToCloseTimeout: '35 minutes' };
  const srcStream = proxyActivities<SourceActivities>(onCloudlet(source, longRunning));
  const dstFinalize = proxyActivities<TargetActivities>(onCloudlet(target, longRunning));
  // Putting the VM back must outlast a source worker's restart: retry for longer.
  const srcRecovery = proxyActivities<SourceActivities>(
    onCloudlet(source, { scheduleToCloseTimeout: '30 minutes', retry: { initialInterval: '1 second', maximumInterval: '30 seconds' } }),
  );
  const dstCleanup = proxyActivities<TargetActivities>(onCloudlet(target, { scheduleToCloseTimeout: '1 minute' }));

  const steps: StepRecord[] = [];
  let step: HandoffStep = 'snapshot';
  setHandler(progressQuery, () => ({ step, steps }));
  const enter = (next: HandoffStep) => {
    const now = Date.now();
    const open = steps[steps.length - 1];
    if (open && open.endedAt === undefined) open.endedAt = now;
    step = next;
    steps.push({ step: next, startedAt: now });
  };

  // Adaptation: the stream reports, this decides; every switch lands in the history (memo).
  let mode: ModeId = modeId(DEFAULT_MODE);
  const policy: StreamPolicy = { pinnedMode: null, bandwidthCapMbps: parsed.data.bandwidthCapMbps ?? null };
  const modeSwitches: ModeSwitch[] = [];
  // The starting mode was not chosen on measurements: the dwell counts from the first switch.
  let modeSince = -Infinity;
  const switchTo = (to: ModeId, reason: string, measurements: ModeSwitch['measurements']) => {
    if (to === mode) return;
    const sw: ModeSwitch = { atMs: Date.now() - startedAt, from: mode, to, reason, measurements };
    modeSwitches.push(sw);
    mode = to;
    modeSince = Date.now();
    upsertMemo({ mode, lastModeSwitch: sw });
  };
  setHandler(streamControlQuery, () => ({ mode, ...policy }));
  if (parsed.data.pinnedMode) {
    policy.pinnedMode = parsed.data.pinnedMode;
    switchTo(parsed.data.pinnedMode, 'pinned by operator', null);
  }
  if (policy.bandwidthCapMbps !== null) upsertMemo({ bandwidthCapMbps: policy.bandwidthCapMbps });
  setHandler(reportMeasurementsSignal, (m) => {
    // Histories from before the dwell rule replay without it (their switches are in the memo).
    const d = chooseMode(m, policy, mode, patched('mode-dwell') ? Date.now() - modeSince : Infinity);
    switchTo(d.mode, d.reason, m);
  });
  setHandler(pinModeSignal, (pinned) => {
    if (!modeIdSchema.safeParse(pinned).success) {
      log.warn('pinMode ignored: unknown mode', { pinned });
      return;
    }
    policy.pinnedMode = pinned;
    switchTo(pinned, 'pinned by operator', null);
  });
  setHandler(unpinModeSignal, () => {
    policy.pinnedMode = null;
  });
  setHandler(capBandwidthSignal, (mbps) => {
    if (mbps !== null && !(typeof mbps === 'number' && mbps > 0)) {
      log.warn('capBandwidth ignored: not a positive number or null', { mbps });
      return;
    }
    policy.bandwidthCapMbps = mbps;
    upsertMemo({ bandwidthCapMbps: mbps });
  });

  let targetTouched = false;
  /** The target answered an abort: nothing of this handoff is left there. */
  let targetReleased = false;
  /** The stream's failure, when the target had already continued the VM (see below). */
  let streamFailure: unknown;
  try {
    enter('snapshot');
    const snap = await src.snapshot({ handoffId, vmId });
    enter('negotiate');
    targetTouched = true;
    const endpoint = await dst.negotiateBaseImage({ handoffId, vmId, baseImageId: snap.baseImageId });
    enter('stream');
    let stream: Awaited<ReturnType<typeof src.streamOverlay>> | undefined;
    let fin: Awaited<ReturnType<typeof dst.finalize>>;
    let resumed: Awaited<ReturnType<typeof dst.resume>> | undefined;
    const resumedByTarget = patched('resume-at-finalize');
    if (resumedByTarget) {
      // The target resumes on its own once what it assembled matches the digests the source sent
      // with the overlay's end (libvirt's Finish phase): no orchestration round trip while the VM
      // is stopped. From its `cont` on, the handoff is committed there and the source's copy is
      // never run again (see the rollback below).
      const finishing = dstFinalize.finish({ handoffId });
      finishing.catch(() => undefined);
      stream = await srcStream.streamOverlay({ handoffId, endpoint }).catch((err: unknown) => {
        streamFailure = err;
        return undefined;
      });
      if (stream === undefined) {
        // The overlay's end may have reached the target before the source lost its connection
        // or its worker: then the target has continued the VM, and the handoff stands.
        const { resumed: committed } = await dstCleanup.abort({ handoffId });
        if (!committed) {
          targetReleased = true;
          throw streamFailure;
        }
      }
      enter('finalize');
      ({ finalized: fin, resumed } = await finishing);
      enter('resume');
      // The target checked against these digests as the source sent them; its report must say
      // the same. It is too late to undo the move, not to refuse to call it clean.
      if (stream && (fin.memoryDigest !== stream.memoryDigest || fin.diskDigest !== stream.diskDigest)) {
        throw ApplicationFailure.nonRetryable(`the target verified digests that differ from the source's report`, 'STATE_MISMATCH');
      }
    } else if (patched('finalize-alongside-stream')) {
      // The target checks what it assembled against the digests the source sends with the
      // overlay's end, so its finalize is already waiting when the last frame lands: no
      // activity hop between them while the VM is stopped. If the stream fails, the rollback's
      // abort on the target ends this wait.
      const finalizing = dstFinalize.finalize({ handoffId });
      finalizing.catch(() => undefined);
      stream = await srcStream.streamOverlay({ handoffId, endpoint });
      enter('finalize');
      fin = await finalizing;
      // Both engines' digests, side by side in this history: they must be the same.
      if (fin.memoryDigest !== stream.memoryDigest || fin.diskDigest !== stream.diskDigest) {
        throw ApplicationFailure.nonRetryable(`the target verified digests that differ from the source's result; the VM was not resumed at ${target}`, 'STATE_MISMATCH');
      }
    } else {
      stream = await src.streamOverlay({ handoffId, endpoint });
      enter('finalize');
      fin = await dst.finalize({ handoffId, expected: { memoryDigest: stream.memoryDigest, diskDigest: stream.diskDigest } });
    }
    if (resumed === undefined) {
      enter('resume');
      resumed = await dst.resume({ handoffId, heartbeatAtStop: stream!.heartbeatAtStop });
    }
    enter('retire-source');
    await srcRecovery.retire({ handoffId, vmId });
    enter('done');
    steps[steps.length - 1]!.endedAt = Date.now();
    if (stream !== undefined) return {
      workflowId,
      vmId,
      source,
      target,
      baseImageId: snap.baseImageId,
      totalMs: Date.now() - startedAt,
      downtimeMs: resumed.resumedAtMs - stream.pausedAtMs,
      downtimeBreakdown: downtimeBreakdown(stream.stopMarks, fin.marks, resumed, resumedByTarget),
      guestGapMs:
        resumed.firstHeartbeatAtMs !== null && stream.lastHeartbeatAtMs !== null
          ? Math.max(stream.liveMaxGapMs, resumed.firstHeartbeatAtMs - stream.lastHeartbeatAtMs)
          : null,
      guestGapParts: {
        liveMs: stream.liveMaxGapMs,
        acrossStopMs: resumed.firstHeartbeatAtMs !== null && stream.lastHeartbeatAtMs !== null ? resumed.firstHeartbeatAtMs - stream.lastHeartbeatAtMs : null,
        beforePauseMs: stream.lastHeartbeatAtMs === null ? null : stream.pausedAtMs - stream.lastHeartbeatAtMs,
        afterResumeMs: resumed.firstHeartbeatAtMs === null ? null : resumed.firstHeartbeatAtMs - resumed.resumedAtMs,
      },
      bytesSent: stream.bytesSent,
      memoryPages: stream.epochs[0]?.memoryPages ?? 0,
      diskBlocks: stream.epochs[0]?.diskBlocks ?? 0,
      deviceStateBytes: stream.deviceStateBytes,
      verified: fin.verified,
      memoryDigest: fin.memoryDigest,
      diskDigest: fin.diskDigest,
      heartbeatAtStop: stream.heartbeatAtStop,
      heartbeatAfterResume: resumed.heartbeatAfter,
      guestContinued: stream.heartbeatAtStop !== null && resumed.heartbeatAfter !== null && resumed.heartbeatAfter > stream.heartbeatAtStop,
      epochs: stream.epochs,
      precopy: { converged: stream.converged, stopReason: stream.stopReason },
      steps,
      modesUsed: stream.modesUsed,
      modeSwitches,
      stages: stream.stages,
    };
  } catch (err) {
    const failedAt = step;
    enter('rollback');
    const runsAtTarget = await CancellationScope.nonCancellable(async () => {
      // A target that has continued the VM holds its only running copy from then on: the
      // source's stays stopped. (Histories from before this check saw no answer here.)
      const answer = targetTouched && !targetReleased ? await dstCleanup.abort({ handoffId }).catch(() => undefined) : undefined;
      if (answer?.resumed === true) return true;
      await srcRecovery.rollback({ handoffId, vmId });
      return false;
    });
    enter('failed');
    const cause = describeFailure(err);
    throw ApplicationFailure.create({
      message: runsAtTarget
        ? `handoff of VM '${vmId}' from ${source} to ${target} failed at step '${failedAt}' after ${target} had resumed it: ${cause}. The VM runs at ${target}; its copy at ${source} was left stopped, not resumed.`
        : `handoff of VM '${vmId}' from ${source} to ${target} failed at step '${failedAt}': ${cause}. The VM runs on at ${source}.`,
      type: runsAtTarget ? 'HANDOFF_FAILED_AFTER_RESUME' : 'HANDOFF_FAILED',
      nonRetryable: true,
      cause: err instanceof Error ? err : undefined,
    });
  }
  // Only a stream that failed after the target had resumed gets here, the source retired.
  throw ApplicationFailure.create({
    message: `VM '${vmId}' moved from ${source} to ${target}: verified, resumed and going on there, its copy at ${source} retired; but the source's stream failed after the overlay's end had reached ${target}, so there is no handoff report: ${describeFailure(streamFailure)}`,
    type: 'HANDOFF_UNREPORTED',
    nonRetryable: true,
  });
}

function describeFailure(err: unknown): string {
  return err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
}

/**
 * The downtime, step by step, from the marks each side reported (see HandoffResult). The steps
 * follow the stopped VM's path, so they add up to the host downtime; work done alongside (the
 * device state is saved during the scan, the scan's first finds are sent while it goes on)
 * shows only where it held the path up.
 */
function downtimeBreakdown(
  src: { pausedAtMs: number; scannedAtMs: number; finalEpochEncodedAtMs: number; deviceStateSavedAtMs: number },
  dst: { receivedAtMs: number; finalizeStartedAtMs: number; verifiedAtMs: number },
  resumed: { resumeStartedAtMs: number; resumedAtMs: number },
  /** The target resumed on its own (no orchestration hop between its check and `cont`). */
  resumedByTarget: boolean,
): Array<{ step: string; ms: number }> {
  const sourceDone = Math.max(src.finalEpochEncodedAtMs, src.deviceStateSavedAtMs);
  const checking = Math.max(dst.receivedAtMs, dst.finalizeStartedAtMs);
  return [
    { step: 'source: scan for the last changed pages (its finds sent meanwhile)', ms: src.scannedAtMs - src.pausedAtMs },
    { step: 'source: encode the rest of the final epoch', ms: src.finalEpochEncodedAtMs - src.scannedAtMs },
    { step: 'source: device state (saved alongside)', ms: sourceDone - src.finalEpochEncodedAtMs },
    { step: 'link + target: last frames applied', ms: dst.receivedAtMs - sourceDone },
    { step: 'orchestration: stream → finalize', ms: checking - dst.receivedAtMs },
    { step: 'target: digests compared', ms: dst.verifiedAtMs - checking },
    { step: resumedByTarget ? 'target: device state loaded → resume' : 'orchestration: finalize → resume', ms: resumed.resumeStartedAtMs - dst.verifiedAtMs },
    { step: 'target: cont', ms: resumed.resumedAtMs - resumed.resumeStartedAtMs },
  ];
}
