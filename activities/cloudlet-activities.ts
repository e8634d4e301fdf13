import type { Cloudlet, CloudletState, VmDescription } from '../engine/cloudlet/cloudlet.js';
import { Context } from '@temporalio/activity';
import { CpuMeter } from '../engine/cloudlet/cpu-meter.js';
import { expectedOverlayBytes, measureVm, type VmMeasurement } from '../engine/cloudlet/measure-vm.js';
import { isOverloaded, type LoadSample } from '../engine/placement/overload.js';
import type { BaseFetchReport } from '../engine/image/base-transfer.js';
import type { DataEndpoint } from '../engine/wire/overlay-sender.js';
import { asActivity } from './failures.js';
import { checked, type ActivityInput } from './inputs.js';

export type { CloudletState, VmDescription, VmMeasurement };

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
    /** `destroyed: false`: there was no such VM here (nothing to do is not a failure). */
    destroyVm: (input: ActivityInput<'destroyVm'>): Promise<{ destroyed: boolean }> =>
      asActivity(async () => ({ destroyed: await cloudlet.destroyVm(checked('destroyVm', input).vmId) })),
    /** What placement reads: this cloudlet's VMs, base images and drain mark. */
    cloudletState: (input: ActivityInput<'cloudletState'> = {}): Promise<CloudletState> =>
      asActivity(() => {
        checked('cloudletState', input);
        return cloudlet.state();
      }),
    setDraining: (input: ActivityInput<'setDraining'>): Promise<void> => asActivity(() => cloudlet.setDraining(checked('setDraining', input).draining)),
    /** Per VM, what its handoff would send now (see Cloudlet.expectedOverlayBytes). */
    overlayEstimates: (input: ActivityInput<'overlayEstimates'> = {}): Promise<Array<{ vmId: string; bytes: number }>> =>
      asActivity(async () => {
        checked('overlayEstimates', input);
        const out: Array<{ vmId: string; bytes: number }> = [];
        for (const vm of cloudlet.vmList()) out.push({ vmId: vm.vmId, bytes: await expectedOverlayBytes(cloudlet, vm.vmId) });
        return out;
      }),
    /** `ehoff plan`'s measurement of a VM: its overlay, dirty rate and compressibility (the VM runs on). */
    measureVm: (input: ActivityInput<'measureVm'>): Promise<VmMeasurement> =>
      asActivity(() => {
        const a = checked('measureVm', input);
        return measureVm(cloudlet, a.vmId, a.windowMs);
      }),
    /** Each VM's CPU (cores its QEMU kept busy) over `windowMs`, measured now. */
    vmLoads: (input: ActivityInput<'vmLoads'>): Promise<Array<{ vmId: string; cpuCores: number | null }>> =>
      asActivity(async () => {
        const { windowMs } = checked('vmLoads', input);
        const meter = new CpuMeter();
        await cloudlet.vmLoads(meter);
        await Context.current().sleep(windowMs);
        return cloudlet.vmLoads(meter);
      }),
    dataEndpoint: (input: ActivityInput<'dataEndpoint'> = {}): Promise<DataEndpoint> =>
      asActivity(async () => {
        checked('dataEndpoint', input);
        return cloudlet.dataEndpoint();
      }),
    holdsBaseImage: (input: ActivityInput<'holdsBaseImage'>): Promise<boolean> => asActivity(() => cloudlet.images.has(checked('holdsBaseImage', input).baseImageId)),
    /**
     * Fetches a base image this cloudlet lacks from a peer that holds it (base-transfer.ts);
     * a retry resumes what the last attempt left. Heartbeats its progress.
     */
    fetchBaseImage: (input: ActivityInput<'fetchBaseImage'>): Promise<BaseFetchReport> =>
      asActivity(async () => {
        const a = checked('fetchBaseImage', input);
        const ctx = Context.current();
        let wireBytes = 0;
        const beat = setInterval(() => ctx.heartbeat({ wireBytes }), 1_000);
        try {
          return await cloudlet.fetchBaseImage(a.baseImageId, a.from, (n) => (wireBytes = n), ctx.cancellationSignal);
        } finally {
          clearInterval(beat);
        }
      }),
    watchLoad: (input: ActivityInput<'watchLoad'>): Promise<LoadWatchResult> => asActivity(() => watchLoad(cloudlet, checked('watchLoad', input))),
  };
}
export type CloudletActivities = ReturnType<typeof createCloudletActivities>;

export interface LoadWatchResult {
  cloudlet: string;
  load: number;
  reason: string;
  vms: Array<{ vmId: string; cpuCores: number | null }>;
}

/**
 * The load monitor's eye on one cloudlet: samples its VMs' CPU every `sampleMs` (heartbeating
 * each sample) and returns once the load stayed above the threshold for `sustainMs`. Runs as long
 * as the cloudlet is not overloaded; the workflow's cancel ends it.
 */
async function watchLoad(cloudlet: Cloudlet, o: ActivityInput<'watchLoad'>): Promise<LoadWatchResult> {
  const meter = new CpuMeter();
  const samples: LoadSample[] = [];
  await cloudlet.vmLoads(meter);
  for (;;) {
    await Context.current().sleep(o.sampleMs);
    const vms = await cloudlet.vmLoads(meter);
    const load = vms.reduce((n, v) => n + (v.cpuCores ?? 0), 0) / o.cpuCores;
    const now = Date.now();
    samples.push({ atMs: now, load });
    while (samples.length > 2 && samples[1]!.atMs <= now - o.sustainMs) samples.shift();
    Context.current().heartbeat({ load });
    const verdict = isOverloaded(samples, now, o.threshold, o.sustainMs);
    if (verdict.overloaded) return { cloudlet: cloudlet.name, load, reason: verdict.reason, vms };
  }
}
