import type { SourceHandoffs, SnapshotResult, StreamResult } from '../engine/handoff/source-handoff.js';
import type { DataEndpoint } from '../engine/wire/overlay-sender.js';
import { asActivity } from './failures.js';
import { workflowStreamControl } from './workflow-stream-control.js';

/** The source cloudlet's part of a handoff; thin adapters over the engine. */
export function createSourceActivities(source: SourceHandoffs) {
  return {
    snapshot: (a: { handoffId: string; vmId: string }): Promise<SnapshotResult> => asActivity(() => source.snapshot(a.handoffId, a.vmId)),
    streamOverlay: (a: { handoffId: string; endpoint: DataEndpoint }): Promise<StreamResult> =>
      asActivity(async () => {
        const control = await workflowStreamControl();
        try {
          return await source.stream(a.handoffId, a.endpoint, control);
        } finally {
          control.stop();
        }
      }),
    rollback: (a: { handoffId: string; vmId: string }): Promise<{ runState: string }> => asActivity(() => source.rollback(a.handoffId, a.vmId)),
    retire: (a: { handoffId: string; vmId: string }): Promise<void> => asActivity(() => source.retire(a.handoffId, a.vmId)),
  };
}
export type SourceActivities = ReturnType<typeof createSourceActivities>;
