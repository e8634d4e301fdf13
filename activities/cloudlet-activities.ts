import type { Cloudlet, VmDescription } from '../engine/cloudlet/cloudlet.js';
import type { Workload } from '../engine/names.js';
import { asActivity } from './failures.js';

export type { VmDescription };

/** VM lifecycle on one cloudlet. */
export function createCloudletActivities(cloudlet: Cloudlet) {
  return {
    launchVm: (a: { vmId: string; baseImageId: string; workload?: Workload }): Promise<VmDescription> =>
      asActivity(() => cloudlet.launchVm(a.vmId, a.baseImageId, a.workload)),
    describeVm: (a: { vmId: string }): Promise<VmDescription> => asActivity(() => cloudlet.describe(a.vmId)),
    destroyVm: (a: { vmId: string }): Promise<void> => asActivity(() => cloudlet.destroyVm(a.vmId)),
  };
}
export type CloudletActivities = ReturnType<typeof createCloudletActivities>;
