import { Context } from '@temporalio/activity';
import type { RollbackResult, SourceHandoffs, SnapshotResult, StreamResult } from '../engine/handoff/source-handoff.js';
import type { TargetAnswer } from '../engine/handoff/source-phase.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import { asActivity } from './failures.js';
import { checked, type ActivityInput } from './inputs.js';
import { workflowStreamControl } from './workflow-stream-control.js';
import { tracedControl, writeStreamTrace } from '../engine/adaptation/stream-trace.js';
import { DEFAULT_PRECOPY } from '../engine/handoff/precopy-policy.js';

/**
 * A stream attempt's progress, in its heartbeats: how far it got, at what rate, and the latest
 * measurements whole (mode, P and r per mode, R, the pre-copy's epoch): what `ehoff watch` and the
 * UI's pending activity show, without a history event per sample.
 */
export interface StreamProgress {
  attempt: number;
  atMs: number;
  inputBytes: number;
  wireBytes: number;
  R_Mbps: number | null;
  measurements: StreamMeasurements | null;
}

export interface SourceActivityOptions {
  /** Where each stream attempt writes its trace (engine/adaptation/stream-trace.ts); none if absent. */
  traceDir?: string;
}

/** The source cloudlet's part of a handoff; thin adapters over the engine. */
export function createSourceActivities(source: SourceHandoffs, options: SourceActivityOptions = {}) {
  return {
    snapshot: (input: ActivityInput<'snapshot'>): Promise<SnapshotResult> =>
      asActivity(() => {
        const a = checked('snapshot', input);
        return source.snapshot(a.handoffId, a.vmId);
      }),
    streamOverlay: (input: ActivityInput<'streamOverlay'>): Promise<StreamResult> => {
      let progress: StreamProgress = { attempt: Context.current().info.attempt, atMs: 0, inputBytes: 0, wireBytes: 0, R_Mbps: null, measurements: null };
      return asActivity(
        async () => {
          const a = checked('streamOverlay', input);
          const ctx = Context.current();
          const control = await workflowStreamControl();
          const traced = options.traceDir ? tracedControl(control, a.handoffId, ctx.info.attempt) : undefined;
          const steering = traced?.control ?? control;
          try {
            // The activity's attempt is the stream's: the target serves the newest one only.
            const reporting = { ...steering, report: (m: StreamMeasurements) => ((progress = { ...progress, atMs: m.atMs, inputBytes: m.inputBytes, wireBytes: m.wireBytes, R_Mbps: m.R_Mbps, measurements: m }), steering.report(m)) };
            return await source.stream(a.handoffId, a.endpoint, reporting, {
              attempt: ctx.info.attempt, signal: ctx.cancellationSignal, precopy: { ...DEFAULT_PRECOPY, postCopy: a.postCopy ?? DEFAULT_PRECOPY.postCopy },
            });
          } finally {
            control.stop();
            // A trace is a by-product: one that cannot be written costs the handoff nothing.
            if (traced && traced.trace().ticks.length > 0) {
              await writeStreamTrace(options.traceDir!, traced.trace()).catch((err: Error) => ctx.log.warn('stream trace not written', { error: err.message }));
            }
          }
        },
        () => progress,
      );
    },
    /** `target`: what the target answered when the workflow asked it to abort. */
    rollback: (input: ActivityInput<'rollback'> & { target: TargetAnswer }): Promise<RollbackResult> =>
      asActivity(() => {
        const a = checked('rollback', input);
        return source.rollback(a.handoffId, a.vmId, a.target);
      }),
    retire: (input: ActivityInput<'retire'>): Promise<void> =>
      asActivity(() => {
        const a = checked('retire', input);
        return source.retire(a.handoffId, a.vmId, a.postCopyDigest);
      }),
  };
}
export type SourceActivities = ReturnType<typeof createSourceActivities>;
