import type { Cloudlet, VmDescription } from '../engine/cloudlet/cloudlet.js';
import type { Workload } from '../engine/names.js';
import { asActivity } from './failures.js';

export type { VmDescription };

/** VM lifecycle on one cloudlet. */
export function createCloudletActivities(cloudlet: Cloudlet) {
  return {
    launchVm: (a: { vmId: string; baseImageId: string; workload?: Workload }): Promise<VmDescription> =>
      // A workload that loads a few hundred MB of state first (kvstore) needs well over the
      // engine's 30 s default under TCG; the workflow's start-to-close (2 minutes) still bounds it.
      asActivity(() => cloudlet.launchVm(a.vmId, a.baseImageId, a.workload, { readyTimeoutMs: 100_000 })),
    describeVm: (a: { vmId: string }): Promise<VmDescription> => asActivity(() => cloudlet.describe(a.vmId)),
    destroyVm: (a: { vmId: string }): Promise<void> => asActivity(() => cloudlet.destroyVm(a.vmId)),
  };
}
export type CloudletActivities = ReturnType<typeof createCloudletActivities>;
