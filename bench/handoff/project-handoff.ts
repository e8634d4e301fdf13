import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HeartbeatWatch } from '../../engine/vm/heartbeat-watch.js';
import type { Workload } from '../../engine/names.js';
import type { ModeId } from '../../engine/adaptation/mode.js';
import type { PostCopyPolicy } from '../../engine/contract.js';
import type { EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { runHandoff } from '../../client/start-handoff.js';
import { WORKFLOW_TASK_QUEUE, type HandoffResult } from '../../workflows/definitions.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { destroyVm, launchVm } from '../../workflows/vm-lifecycle.js';
import { CpuSampler } from './cpu-sampler.js';
import { awaitRecovery } from './recovery-watch.js';
import type { Degradation } from './work-rate.js';

export interface ProjectHandoffOutcome {
  result: HandoffResult;
  /** Bytes the source cloudlet's uplink carried during the handoff (data plane and its Temporal traffic). */
  wireBytes: number;
  /** Both workers and their QEMUs, vCPU threads left out. */
  cpuSeconds: number;
  /** From the resume until the guest's work rate was back (work-rate.ts); null when it never beat at B. */
  degradation: Degradation | null;
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
  const workers = ['A', 'B'].map((c) => cluster.workers.get(c)!.pid);
  const serialLog = (cloudlet: string) => join(cluster.workers.get(cloudlet)!.runDir, 'vms', o.vmId, 'serial.log');
  // The guest's beats at A, for its work rate before the handoff (the warm-up is longer than
  // the window read); at B from the log's start, once the target has made it.
  const atSource = new HeartbeatWatch(serialLog('A'), { keep: true });
  const atTarget = new HeartbeatWatch(serialLog('B'), { keep: true, fromStart: true });
  const targetWatched = new AbortController();
  let watchingTarget: Promise<unknown> = Promise.resolve();
  let outcome: Omit<ProjectHandoffOutcome, 'cpuSeconds' | 'degradation'>;
  let cpuSeconds: number;
  let degradation: Degradation | null = null;
  try {
    await atSource.start();
    watchingTarget = whenPresent(serialLog('B'), targetWatched.signal).then((present) => (present ? atTarget.start() : undefined));
    o.log(`  handoff: ${o.workload.name} running at A; warming up ${o.warmupSeconds} s`);
    await sleep(o.warmupSeconds * 1000);
    const cpu = new CpuSampler(workers, { descendants: true });
    await cpu.start();
    const bytesBefore = await wan.uplinkBytes('A');
    const handoffStartedAtMs = Date.now();
    let result: HandoffResult;
    try {
      const input = { vmId: o.vmId, source: 'A', target: 'B', ...(o.pinnedMode ? { pinnedMode: o.pinnedMode } : {}), ...(o.postCopy ? { postCopy: o.postCopy } : {}) };
      const handoff = () => runHandoff(cluster.client, input);
      result = await (o.around ? o.around(handoff) : handoff());
      outcome = { result, wireBytes: (await wan.uplinkBytes('A')) - bytesBefore };
    } finally {
      cpuSeconds = await cpu.stop();
    }
    // The resume, on this watch's clock: the beat the handoff saw first after it, less the time
    // it measured from `cont` to that beat (the watch may not have read the beat yet: wait for it).
    const after = result.heartbeatAfterResume;
    const first = after === null ? undefined : await atTarget.next(after - 1, 5_000).then(() => atTarget.seen.find((b) => b.counter === after), () => undefined);
    if (first) degradation = await awaitRecovery({ before: atSource, after: atTarget, handoffStartedAtMs, resumedAtMs: first.atMs - (result.guestGapParts.afterResumeMs ?? 0) });
  } finally {
    targetWatched.abort();
    await watchingTarget.catch(() => undefined);
    for (const w of [atSource, atTarget]) await w.stop();
    for (const cloudlet of ['B', 'A']) await executeWorkflow(cluster.client, destroyVm, { vmId: o.vmId, cloudlet }).catch(() => undefined);
  }
  return { ...outcome, cpuSeconds, degradation };
}

/** Resolves true once `path` exists (polling), false if `signal` aborts first. */
async function whenPresent(path: string, signal: AbortSignal): Promise<boolean> {
  while (!signal.aborted) {
    if (await access(path).then(() => true, () => false)) return true;
    await sleep(20);
  }
  return false;
}
