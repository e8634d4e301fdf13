import type { FinalizeResult, FinishResult, ResumeResult, TargetHandoffs } from '../engine/handoff/target-handoff.js';
import type { DataEndpoint } from '../engine/wire/overlay-sender.js';
import { asActivity } from './failures.js';
import { checked, type ActivityInput } from './inputs.js';

/** The target cloudlet's part of a handoff; thin adapters over the engine, their inputs checked. */
export function createTargetActivities(target: TargetHandoffs) {
  return {
    /** `source`: the cloudlet whose certificate alone may stream this handoff here. */
    negotiateBaseImage: (input: ActivityInput<'negotiateBaseImage'>): Promise<DataEndpoint> =>
      asActivity(() => {
        const a = checked('negotiateBaseImage', input);
        return target.prepare(a.handoffId, a.vmId, a.baseImageId, a.source);
      }),
    /** Without `expected`, checks against the digests the source sent with the overlay. */
    finalize: (input: ActivityInput<'finalize'>): Promise<FinalizeResult> =>
      asActivity(() => {
        const a = checked('finalize', input);
        return target.finalize(a.handoffId, a.expected);
      }),
    resume: (input: ActivityInput<'resume'>): Promise<ResumeResult> =>
      asActivity(() => {
        const a = checked('resume', input);
        return target.resume(a.handoffId, a.heartbeatAtStop);
      }),
    /** finalize, then resume on the verified state without a round trip through the workflow. */
    finish: (input: ActivityInput<'finish'>): Promise<FinishResult> => asActivity(() => target.finish(checked('finish', input).handoffId)),
    /** `resumed: true`: the VM was already continued here, and nothing was undone. */
    abort: (input: ActivityInput<'abort'>): Promise<{ resumed: boolean }> => asActivity(() => target.abort(checked('abort', input).handoffId)),
  };
}
export type TargetActivities = ReturnType<typeof createTargetActivities>;
