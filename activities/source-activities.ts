import { Context } from '@temporalio/activity';
import type { RollbackResult, SourceHandoffs, SnapshotResult, StreamResult } from '../engine/handoff/source-handoff.js';
import type { TargetAnswer } from '../engine/handoff/source-phase.js';
import type { DataEndpoint } from '../engine/wire/overlay-sender.js';
import type { StreamMeasurements } from '../engine/adaptation/measurements.js';
import { asActivity } from './failures.js';

/** A stream attempt's progress, in its heartbeats: how far it got, at what rate. */
interface StreamProgress {
  attempt: number;
  atMs: number;
  inputBytes: number;
  wireBytes: number;
  R_Mbps: number | null;
}
import { workflowStreamControl } from './workflow-stream-control.js';

/** The source cloudlet's part of a handoff; thin adapters over the engine. */
export function createSourceActivities(source: SourceHandoffs) {
  return {
    snapshot: (a: { handoffId: string; vmId: string }): Promise<SnapshotResult> => asActivity(() => source.snapshot(a.handoffId, a.vmId)),
    streamOverlay: (a: { handoffId: string; endpoint: DataEndpoint }): Promise<StreamResult> => {
      let progress: StreamProgress = { attempt: Context.current().info.attempt, atMs: 0, inputBytes: 0, wireBytes: 0, R_Mbps: null };
      return asActivity(
        async () => {
          const ctx = Context.current();
          const control = await workflowStreamControl();
          try {
            // The activity's attempt is the stream's: the target serves the newest one only.
            const reporting = { ...control, report: (m: StreamMeasurements) => ((progress = { ...progress, atMs: m.atMs, inputBytes: m.inputBytes, wireBytes: m.wireBytes, R_Mbps: m.R_Mbps }), control.report(m)) };
            return await source.stream(a.handoffId, a.endpoint, reporting, { attempt: ctx.info.attempt, signal: ctx.cancellationSignal });
          } finally {
            control.stop();
          }
        },
        () => progress,
      );
    },
    /** `target`: what the target answered when the workflow asked it to abort. */
    rollback: (a: { handoffId: string; vmId: string; target: TargetAnswer }): Promise<RollbackResult> =>
      asActivity(() => source.rollback(a.handoffId, a.vmId, a.target)),
    retire: (a: { handoffId: string; vmId: string }): Promise<void> => asActivity(() => source.retire(a.handoffId, a.vmId)),
  };
}
export type SourceActivities = ReturnType<typeof createSourceActivities>;
