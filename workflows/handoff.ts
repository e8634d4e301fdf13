import {
  ApplicationFailure,
  CancellationScope,
  proxyActivities,
  log,
  sleep,
  deprecatePatch,
  patched,
  setCurrentDetails,
  setHandler,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { SearchAttributePair } from '@temporalio/common';
import type { PrecopyDecision } from '../engine/handoff/precopy-policy.js';
import { currentDetails, failedAttributes, movedAttributes, phaseAttributes, type HandoffOutcome } from './handoff-audit.js';
import type { SourceActivities } from '../activities/source-activities.js';
import type { CloudletActivities } from '../activities/cloudlet-activities.js';
import type { BaseFetchReport } from '../engine/image/base-transfer.js';
import type { TargetActivities } from '../activities/target-activities.js';
import type { TargetAnswer } from '../engine/handoff/source-phase.js';
import { chooseMode, type StreamPolicy } from '../engine/adaptation/choose-mode.js';
import { DEFAULT_MODE, modeId, modeIdSchema, type ModeId } from '../engine/adaptation/mode.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import {
  capBandwidthSignal,
  pinModeSignal,
  precopyDecisionSignal,
  reportMeasurementsSignal,
  VmIdSearchAttribute,
  streamMeasurementsQuery,
  streamControlQuery,
  unpinModeSignal,
  cloudletTaskQueue,
  describeInvalid,
  handoffInputSchema,
  progressQuery,
  type HandoffInput,
} from './definitions.js';
import {
  WORKFLOW_FAILURE,
  type HandoffResult,
  type HandoffStep,
  type ModeSwitch,
  type SourceStopMarks,
  type StepRecord,
  type TargetStopMarks,
  type WorkflowFailureType,
} from '../engine/contract.js';

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

/** An activity call's line on the UI's timeline. */
const summary = (text: string): ActivityOptions => ({ summary: text });

/** How long a rollback keeps asking a silent target before it leaves the decision to an operator. */
const IN_DOUBT_LIMIT_MS = 30 * 60_000;

/**
 * Moves a VM from one cloudlet to another: snapshot → base-image negotiation → delta stream →
 * finalize (verify) → resume, each on the cloudlet that must run it. Until the target has
 * resumed and confirmed the guest, the source copy is kept; any failure puts it back to running.
 */
export async function handoff(rawInput: HandoffInput): Promise<HandoffResult> {
  const parsed = handoffInputSchema.safeParse(rawInput);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(describeInvalid('handoff request', parsed.error), WORKFLOW_FAILURE.INVALID_INPUT);
  const { vmId, source, target } = parsed.data;
  const { workflowId } = workflowInfo();
  const handoffId = `${workflowId}/${workflowInfo().runId}`;
  const startedAt = Date.now();

  const src = proxyActivities<SourceActivities>(onCloudlet(source));
  const dst = proxyActivities<TargetActivities>(onCloudlet(target));
  // The stream, and the target's finalize that waits it out, last as long as the pre-copy does
  // (minutes at 5 Mbit/s for a busy guest); heartbeats, not these bounds, notice a dead worker.
  // A stream attempt that fails (a broken connection, a worker restarted) is tried again, with
  // patience for a worker that is coming back: 8 attempts, up to 10 s apart. A dead worker's
  // attempt is noticed by its heartbeats (sent every second, see the worker) within 5 s: every
  // second of that gap the guest dirties pages the next attempt has to send again.
  const longRunning: Partial<ActivityOptions> = {
    heartbeatTimeout: '5 seconds',
    startToCloseTimeout: '30 minutes',
    scheduleToCloseTimeout: '35 minutes',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: 8 },
  };
  const srcStream = proxyActivities<SourceActivities>(onCloudlet(source, longRunning));
  const dstFinalize = proxyActivities<TargetActivities>(onCloudlet(target, longRunning));
  // Putting the VM back must outlast a source worker's restart: retry for longer.
  const srcRecovery = proxyActivities<SourceActivities>(
    onCloudlet(source, { scheduleToCloseTimeout: '30 minutes', retry: { initialInterval: '1 second', maximumInterval: '30 seconds' } }),
  );
  const dstCleanup = proxyActivities<TargetActivities>(onCloudlet(target, { scheduleToCloseTimeout: '1 minute' }));
  const srcSite = proxyActivities<CloudletActivities>(onCloudlet(source));
  const dstSite = proxyActivities<CloudletActivities>(onCloudlet(target));
  // A base image crosses the link once per cloudlet (48 MB of frames for the 512 MiB guest's:
  // under 2 minutes at 5 Mbit/s); a retry resumes it. Bounded well inside the handoff's hour.
  const dstFetch = proxyActivities<CloudletActivities>(onCloudlet(target, { ...longRunning, heartbeatTimeout: '30 seconds', startToCloseTimeout: '20 minutes', scheduleToCloseTimeout: '25 minutes' }));
  // Asking the target whether it committed: a short bound, since no answer is an answer to wait on.
  // Releasing a target that was silent, once the source runs again: retried for minutes.
  const dstRelease = proxyActivities<TargetActivities>(onCloudlet(target, { scheduleToCloseTimeout: '5 minutes', retry: { initialInterval: '1 second', maximumInterval: '10 seconds' } }));
  // One try per ask: the loop that asks is the retry, with its own backoff.
  const dstAsk = proxyActivities<TargetActivities>(onCloudlet(target, { scheduleToCloseTimeout: '20 seconds', startToCloseTimeout: '15 seconds', retry: { maximumAttempts: 1 } }));

  // The audit record: search attributes only where the starter set them (the namespace has them
  // registered), current details always (the UI asks the workflow for them).
  const audited = workflowInfo().typedSearchAttributes.get(VmIdSearchAttribute) !== undefined;
  const audit = (pairs: SearchAttributePair[]) => audited && upsertSearchAttributes(pairs);
  const decisions: PrecopyDecision[] = [];
  let latestMeasurements: StreamMeasurements | null = null;
  const showNow = () =>
    setCurrentDetails(
      currentDetails({ step, mode, pinnedMode: policy.pinnedMode, bandwidthCapMbps: policy.bandwidthCapMbps, measurements: latestMeasurements, decision: decisions.at(-1) ?? null, modeSwitches: modeSwitches.length }),
    );

  const steps: StepRecord[] = [];
  let step: HandoffStep = 'snapshot';
  setHandler(progressQuery, () => ({ step, steps }));
  const enter = (next: HandoffStep) => {
    const now = Date.now();
    const open = steps[steps.length - 1];
    if (open && open.endedAt === undefined) open.endedAt = now;
    step = next;
    steps.push({ step: next, startedAt: now });
    audit(phaseAttributes(next));
    showNow();
  };

  // Adaptation: the stream reports, this decides; every switch lands in the history (memo).
  let mode: ModeId = modeId(DEFAULT_MODE);
  const policy: StreamPolicy = { pinnedMode: null, bandwidthCapMbps: parsed.data.bandwidthCapMbps ?? null };
  /** The operator's choice for this handoff (see handoffInputSchema.postCopy). */
  const postCopyPolicy = parsed.data.postCopy ?? 'never';
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
    showNow();
  };
  setHandler(streamControlQuery, () => ({ mode, ...policy, modeSinceMs: modeSince === -Infinity ? null : modeSince }));
  if (parsed.data.pinnedMode) {
    policy.pinnedMode = parsed.data.pinnedMode;
    switchTo(parsed.data.pinnedMode, 'pinned by operator', null);
  }
  if (policy.bandwidthCapMbps !== null) upsertMemo({ bandwidthCapMbps: policy.bandwidthCapMbps });
  setHandler(streamMeasurementsQuery, () => latestMeasurements);
  setHandler(precopyDecisionSignal, (d) => {
    decisions.push(d);
    showNow();
  });
  setHandler(reportMeasurementsSignal, (m) => {
    latestMeasurements = m;
    deprecatePatch('mode-dwell');
    // Runs started before it judged other modes at their estimates, not their low ends.
    const d = chooseMode(m, policy, mode, Date.now() - modeSince, { confidence: patched('mode-confidence') });
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
    showNow();
  });

  /**
   * After a failure: ask the target to let go, and let the source decide from its persisted phase
   * and that answer whether its copy runs again. While the commit frame has left and the target does
   * not answer, the source's copy stays stopped and this keeps asking, with backoff, up to a bound.
   */
  const settleAfterFailure = async (): Promise<{ outcome: 'runs-at-target' | 'runs-at-source' | 'lost' | 'in-doubt'; reason: string }> => {
    const givesUpAt = Date.now() + IN_DOUBT_LIMIT_MS;
    for (let backoffMs = 1_000; ; backoffMs = Math.min(backoffMs * 2, 60_000)) {
      const answer: TargetAnswer =
        !targetTouched || targetReleased
          ? 'released'
          : await dstAsk.abort.executeWithOptions(summary(`ask ${target} whether it continued ${vmId}`), [{ handoffId }]).then((a) => (a.resumed ? 'committed' : 'released'), () => 'no-answer' as const);
      // The target runs the VM: the source's copy stays as it is, stopped, never resumed.
      if (answer === 'committed') return { outcome: 'runs-at-target', reason: `${target} answered that it continued the VM` };
      if (answer === 'released') targetReleased = true;
      const r = await srcRecovery.rollback.executeWithOptions(summary(`roll back ${vmId} at ${source} (${target}: ${answer})`), [{ handoffId, vmId, target: answer }]);
      if (r.action === 'resume-here') {
        // The copy here runs; a target that did not answer may still hold a prepared copy: it is
        // told to let go, for longer, so that nothing is left there.
        if (!targetReleased) await dstRelease.abort.executeWithOptions(summary(`release ${target}'s copy of ${vmId}`), [{ handoffId }]).catch((e: unknown) => log.warn('the target did not release the handoff', { error: String(e) }));
        return { outcome: 'runs-at-source', reason: r.reason };
      }
      if (r.action === 'nothing' && (r.runState === 'lost' || r.runState === 'absent')) return { outcome: 'lost', reason: r.reason };
      if (r.action === 'nothing') return { outcome: 'runs-at-source', reason: r.reason };
      if (Date.now() + backoffMs > givesUpAt) return { outcome: 'in-doubt', reason: r.reason };
      if (step !== 'waiting-for-target') enter('waiting-for-target');
      upsertMemo({ waitingForTarget: { since: new Date().toISOString(), reason: r.reason } });
      await sleep(backoffMs);
    }
  };

  let targetTouched = false;
  /** The target answered an abort: nothing of this handoff is left there. */
  let targetReleased = false;
  /** The stream's failure, when the target had already continued the VM (see below). */
  let streamFailure: unknown;
  /** Set when the target had to fetch the VM's base first: reported apart, and the handoff's clock starts after it. */
  let baseFetch: BaseFetchReport | null = null;
  let handoffStartedAt = startedAt;
  try {
    deprecatePatch('base-travels');
    {
      // A target without the VM's base fetches it from the source first (over the data plane,
      // resumable, verified part by part), so a handoff to it completes instead of being refused.
      const { baseImageId } = await srcSite.describeVm.executeWithOptions(summary(`describe ${vmId} at ${source}`), [{ vmId }]);
      if (baseImageId !== null && !(await dstSite.holdsBaseImage.executeWithOptions(summary(`does ${target} hold base ${baseImageId.slice(0, 12)}?`), [{ baseImageId }]))) {
        enter('fetch-base');
        const from = await srcSite.dataEndpoint.executeWithOptions(summary(`${source}'s data endpoint`), [{}]);
        baseFetch = await dstFetch.fetchBaseImage.executeWithOptions(summary(`${target} fetches base ${baseImageId.slice(0, 12)} from ${source}`), [{ baseImageId, from }]);
        upsertMemo({ baseFetch });
        handoffStartedAt = Date.now();
      }
    }
    enter('snapshot');
    const snap = await src.snapshot.executeWithOptions(summary(`snapshot ${vmId} at ${source}`), [{ handoffId, vmId }]);
    enter('negotiate');
    targetTouched = true;
    const endpoint = await dst.negotiateBaseImage.executeWithOptions(summary(`${target} prepares for ${vmId}`), [{ handoffId, vmId, baseImageId: snap.baseImageId, source }]);
    enter('stream');
    deprecatePatch('resume-at-finalize');
    // The target resumes on its own once what it assembled matches the digests the source sent
    // with the overlay's end (libvirt's Finish phase): no orchestration round trip while the VM
    // is stopped. From its `cont` on, the handoff is committed there and the source's copy is
    // never run again (see the rollback below).
    const finishing = dstFinalize.finish.executeWithOptions(summary(`${target} verifies and resumes ${vmId}`), [{ handoffId }]);
    finishing.catch(() => undefined);
    const stream = await srcStream.streamOverlay.executeWithOptions(summary(`stream ${vmId} ${source} → ${target}`), [{ handoffId, endpoint, postCopy: postCopyPolicy }]).catch((err: unknown) => {
      streamFailure = err;
      return undefined;
    });
    if (stream === undefined) {
      // The overlay's end may have reached the target before the source lost its connection
      // or its worker: then the target has continued the VM, and the handoff stands.
      const { resumed: committed } = await dstCleanup.abort.executeWithOptions(summary(`ask ${target} whether it continued ${vmId}`), [{ handoffId }]);
      if (!committed) {
        targetReleased = true;
        throw streamFailure;
      }
    }
    enter('finalize');
    const { finalized: fin, resumed, postCopy: fetched } = await finishing;
    enter('resume');
    // The target checked against these digests as the source sent them; its report must say
    // the same. It is too late to undo the move, not to refuse to call it clean.
    if (stream && (fin.memoryDigest !== stream.memoryDigest || fin.diskDigest !== stream.diskDigest)) {
      throw ApplicationFailure.nonRetryable(`the target verified digests that differ from the source's report`, WORKFLOW_FAILURE.STATE_MISMATCH);
    }
    enter('retire-source');
    // After a post-copy switch the source's stopped copy goes only once it finds the target's
    // digest of the whole memory, taken when the last page was in, equal to the stopped state's.
    const postCopyDigest = fetched?.memoryDigest ?? undefined;
    await srcRecovery.retire.executeWithOptions(summary(`retire ${vmId}'s stopped copy at ${source}`), [{ handoffId, vmId, ...(postCopyDigest ? { postCopyDigest } : {}) }]);
    enter('done');
    steps[steps.length - 1]!.endedAt = Date.now();
    if (stream !== undefined) {
      audit(movedAttributes({ mode, converged: stream.converged, downtimeMs: resumed.resumedAtMs - stream.pausedAtMs, bytesSent: stream.bytesSent }));
      return {
        workflowId,
        vmId,
        source,
        target,
        baseImageId: snap.baseImageId,
        totalMs: Date.now() - handoffStartedAt,
        baseFetch,
        downtimeMs: resumed.resumedAtMs - stream.pausedAtMs,
        downtimeBreakdown: downtimeBreakdown(stream.stopMarks, fin.marks, resumed),
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
        precopy: { converged: stream.converged, stopReason: stream.stopReason, decisions },
        reconciled: stream.reconciled ?? null,
        memoryTracking: stream.memoryTracking ?? null,
        postCopy: stream.postCopy && fetched ? { ...stream.postCopy, fetch: fetched, memoryDigestConfirmed: postCopyDigest !== undefined } : null,
        postCopyPolicy,
        steps,
        modesUsed: stream.modesUsed,
        modeSwitches,
        stages: stream.stages,
      };
    }
  } catch (err) {
    const failedAt = step;
    enter('rollback');
    const settled = await CancellationScope.nonCancellable(() => settleAfterFailure());
    // The target answered that it verified and continued the VM: the source's stopped copy is
    // retired as on success (it refuses unless this handoff's commit frame left). Histories from
    // before this left the copy for an operator.
    const retired =
      settled.outcome === 'runs-at-target' &&
      patched('retire-after-commit-fault') &&
      (await CancellationScope.nonCancellable(() => srcRecovery.retire.executeWithOptions(summary(`retire ${vmId}'s stopped copy at ${source}`), [{ handoffId, vmId }])).then(
        () => true,
        (e: unknown) => (log.warn('the source copy was not retired', { error: String(e) }), false),
      ));
    enter('failed');
    audit(failedAttributes(SETTLED_OUTCOME[settled.outcome], mode));
    const cause = describeFailure(err);
    const where = `handoff of VM '${vmId}' from ${source} to ${target} failed at step '${failedAt}'`;
    const outcome: Record<typeof settled.outcome, { type: WorkflowFailureType; message: string }> = {
      'runs-at-target': {
        type: WORKFLOW_FAILURE.HANDOFF_FAILED_AFTER_RESUME,
        message: `${where} after ${target} had resumed it: ${cause}. The VM runs at ${target}; its copy at ${source} was ${retired ? 'retired' : 'left stopped, not resumed'}.`,
      },
      'runs-at-source': { type: WORKFLOW_FAILURE.HANDOFF_FAILED, message: `${where}: ${cause}. The VM runs on at ${source}.` },
      lost: { type: WORKFLOW_FAILURE.VM_LOST, message: `${where}: ${cause}. The VM does not run at ${source} any more (${settled.reason}), and ${target} holds no copy of it.` },
      'in-doubt': {
        type: WORKFLOW_FAILURE.HANDOFF_IN_DOUBT,
        message:
          `${where}: ${cause}. The commit frame left ${source} and ${target} did not answer whether it committed (${settled.reason}). ` +
          `The copy at ${source} is stopped, not destroyed. Check ${target}: if VM '${vmId}' runs there (describeVm), destroy the stopped copy at ${source}; if not, run a rollback of this handoff again once ${target} answers.`,
      },
    };
    throw ApplicationFailure.create({
      ...outcome[settled.outcome],
      nonRetryable: true,
      cause: err instanceof Error ? err : undefined,
    });
  }
  // Only a stream that failed after the target had resumed gets here, the source retired.
  audit(failedAttributes('moved-after-commit-fault', mode));
  throw ApplicationFailure.create({
    message: `VM '${vmId}' moved from ${source} to ${target}: verified, resumed and going on there, its copy at ${source} retired; but the source's stream failed after the overlay's end had reached ${target}, so there is no handoff report: ${describeFailure(streamFailure)}`,
    type: WORKFLOW_FAILURE.HANDOFF_UNREPORTED,
    nonRetryable: true,
  });
}

/** A failed handoff's settlement in the audit's words. */
const SETTLED_OUTCOME: Record<'runs-at-target' | 'runs-at-source' | 'lost' | 'in-doubt', HandoffOutcome> = {
  'runs-at-target': 'moved-after-commit-fault',
  'runs-at-source': 'stayed-at-source',
  lost: 'vm-lost',
  'in-doubt': 'in-doubt',
};

function describeFailure(err: unknown): string {
  const inner = err instanceof Error && err.cause instanceof Error ? err.cause : err;
  // A cancellation's failure may carry no message: say what it was.
  return inner instanceof Error ? inner.message || inner.name : String(inner);
}

/**
 * The downtime, step by step, from the marks each side reported (see HandoffResult). The steps
 * follow the stopped VM's path, so they add up to the host downtime; work done alongside (the
 * device state is saved during the scan, the scan's first finds are sent while it goes on)
 * shows only where it held the path up.
 */
function downtimeBreakdown(
  src: SourceStopMarks,
  dst: TargetStopMarks,
  resumed: { resumeStartedAtMs: number; resumedAtMs: number },
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
    { step: 'target: device state loaded → resume', ms: resumed.resumeStartedAtMs - dst.verifiedAtMs },
    { step: 'target: cont', ms: resumed.resumedAtMs - resumed.resumeStartedAtMs },
  ];
}
