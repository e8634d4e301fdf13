import type { ExpectedState, FinalizeResult, FinishResult, ResumeResult, TargetHandoffs } from '../engine/handoff/target-handoff.js';
import type { DataEndpoint } from '../engine/wire/overlay-sender.js';
import { asActivity } from './failures.js';

/** The target cloudlet's part of a handoff; thin adapters over the engine. */
export function createTargetActivities(target: TargetHandoffs) {
  return {
    negotiateBaseImage: (a: { handoffId: string; vmId: string; baseImageId: string }): Promise<DataEndpoint> =>
      asActivity(() => target.prepare(a.handoffId, a.vmId, a.baseImageId)),
    /** Without `expected`, checks against the digests the source sent with the overlay. */
    finalize: (a: { handoffId: string; expected?: ExpectedState }): Promise<FinalizeResult> =>
      asActivity(() => target.finalize(a.handoffId, a.expected)),
    resume: (a: { handoffId: string; heartbeatAtStop: number | null }): Promise<ResumeResult> =>
      asActivity(() => target.resume(a.handoffId, a.heartbeatAtStop)),
    /** finalize, then resume on the verified state without a round trip through the workflow. */
    finish: (a: { handoffId: string }): Promise<FinishResult> => asActivity(() => target.finish(a.handoffId)),
    /** `resumed: true`: the VM was already continued here, and nothing was undone. */
    abort: (a: { handoffId: string }): Promise<{ resumed: boolean }> => asActivity(() => target.abort(a.handoffId)),
  };
}
export type TargetActivities = ReturnType<typeof createTargetActivities>;
