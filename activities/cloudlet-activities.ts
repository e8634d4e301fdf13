import type { Cloudlet, VmDescription } from '../engine/cloudlet/cloudlet.js';
import { asActivity } from './failures.js';
import { checked, type ActivityInput } from './inputs.js';

export type { VmDescription };

/** VM lifecycle on one cloudlet. */
export function createCloudletActivities(cloudlet: Cloudlet) {
  return {
    launchVm: (input: ActivityInput<'launchVm'>): Promise<VmDescription> =>
      asActivity(() => {
        const a = checked('launchVm', input);
        // A workload that loads a few hundred MB of state first (kvstore) needs well over the
        // engine's 30 s default under TCG; the workflow's start-to-close (2 minutes) still bounds it.
        return cloudlet.launchVm(a.vmId, a.baseImageId, a.workload, { readyTimeoutMs: 100_000 });
      }),
    describeVm: (input: ActivityInput<'describeVm'>): Promise<VmDescription> => asActivity(() => cloudlet.describe(checked('describeVm', input).vmId)),
    destroyVm: (input: ActivityInput<'destroyVm'>): Promise<void> => asActivity(() => cloudlet.destroyVm(checked('destroyVm', input).vmId)),
  };
}
export type CloudletActivities = ReturnType<typeof createCloudletActivities>;
