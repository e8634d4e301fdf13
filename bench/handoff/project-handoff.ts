import { setTimeout as sleep } from 'node:timers/promises';
import type { Workload } from '../../engine/names.js';
import type { ModeId } from '../../engine/adaptation/mode.js';
import type { PostCopyPolicy } from '../../engine/contract.js';
import type { EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { runHandoff } from '../../client/start-handoff.js';
import { WORKFLOW_TASK_QUEUE, type HandoffResult } from '../../workflows/definitions.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { destroyVm, launchVm } from '../../workflows/vm-lifecycle.js';
import { CpuSampler } from './cpu-sampler.js';

export interface ProjectHandoffOutcome {
  result: HandoffResult;
  /** Bytes the source cloudlet's uplink carried during the handoff (data plane and its Temporal traffic). */
  wireBytes: number;
  /** Both workers and their QEMUs, vCPU threads left out. */
  cpuSeconds: number;
}

/**
 * One handoff A → B of a fresh VM running `workload`, through the workflow, exactly as an
 * operator triggers it: launch, let the workload warm up, hand off, then end the VM at B.
 */
export async function runProjectHandoff(o: {
  cluster: EmbeddedCluster;
  baseImageId: string;
  workload: Workload;
  warmupSeconds: number;
  vmId: string;
  log: (line: string) => void;
  /** Hand off in this mode throughout (the workflow's pinnedMode); absent: the adaptive policy. */
  pinnedMode?: ModeId;
  /** Whether the handoff may switch to post-copy (the workflow's postCopy); absent: never. */
  postCopy?: PostCopyPolicy;
  /** Wraps the handoff itself (not the launch or warm-up): bench:adaptation plays its link profile there. */
  around?: <T>(handoff: () => Promise<T>) => Promise<T>;
}): Promise<ProjectHandoffOutcome> {
  const { cluster } = o;
  const wan = cluster.wan;
  if (!wan) throw new Error('the handoff benchmark needs the cluster on a WAN testbed');
  await executeWorkflow(cluster.client, launchVm, { vmId: o.vmId, cloudlet: 'A', baseImageId: o.baseImageId, workload: o.workload });
  o.log(`  handoff: ${o.workload.name} running at A; warming up ${o.warmupSeconds} s`);
  await sleep(o.warmupSeconds * 1000);
  const workers = ['A', 'B'].map((c) => cluster.workers.get(c)!.pid);
  const cpu = new CpuSampler(workers, { descendants: true });
  await cpu.start();
  const bytesBefore = await wan.uplinkBytes('A');
  let outcome: Omit<ProjectHandoffOutcome, 'cpuSeconds'>;
  let cpuSeconds: number;
  try {
    const input = { vmId: o.vmId, source: 'A', target: 'B', ...(o.pinnedMode ? { pinnedMode: o.pinnedMode } : {}), ...(o.postCopy ? { postCopy: o.postCopy } : {}) };
    const handoff = () => runHandoff(cluster.client, input);
    const result = await (o.around ? o.around(handoff) : handoff());
    outcome = { result, wireBytes: (await wan.uplinkBytes('A')) - bytesBefore };
  } finally {
    cpuSeconds = await cpu.stop();
    for (const cloudlet of ['B', 'A']) await executeWorkflow(cluster.client, destroyVm, { vmId: o.vmId, cloudlet }).catch(() => undefined);
  }
  return { ...outcome, cpuSeconds };
}
