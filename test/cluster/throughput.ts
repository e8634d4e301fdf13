import { setTimeout as sleep } from 'node:timers/promises';
import type { EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { launchVm } from '../../workflows/vm-lifecycle.js';
import { destroyEverywhere, followHandoff, movedChecks } from './site.js';

export interface ThroughputFigure {
  /** Handoffs that moved, verified, per minute of wall clock from the first start to the last end. */
  handoffsPerMinute: number;
  n: number;
  moved: number;
  seconds: number;
  linkMbps: number | null;
  /** Each handoff's own time (start call to result), s. */
  handoffSeconds: { min: number; median: number; max: number };
  failures: string[];
}

/** The small idle guest each VM runs: 4 MiB it rewrites a little, a beat every 100 ms. */
const IDLE = { name: 'heartbeat', args: ['4', '100'] };

/**
 * N small idle VMs launched on A, then all moved A → B at once, each started as the CLI starts a
 * handoff and waited for (no progress polling, which would add its own load); the figure is how
 * many moved, verified and running only at B, per minute. The VMs are ended afterwards.
 */
export async function measureThroughput(
  cluster: EmbeddedCluster,
  o: { n: number; baseImageId: string; label: string; linkMbps?: number; log(line: string): void },
): Promise<ThroughputFigure> {
  const { client } = cluster;
  const vms = Array.from({ length: o.n }, (_, k) => `cl-tp-${o.label}-${k + 1}`);
  const nominal = cluster.wan?.mbps;
  if (cluster.wan && o.linkMbps !== undefined) await cluster.wan.setRate(o.linkMbps);
  try {
    for (const vmId of vms) await executeWorkflow(client, launchVm, { vmId, cloudlet: 'A', baseImageId: o.baseImageId, workload: IDLE });
    o.log(`  ${o.n} idle VMs running on A; moving them all to B at once`);
    await sleep(2_000);
    const t0 = Date.now();
    const legs = await Promise.all(vms.map((vmId) => followHandoff(client, { vmId, source: 'A', target: 'B' })));
    const seconds = (Date.now() - t0) / 1000;
    const failures: string[] = [];
    let moved = 0;
    for (const [k, leg] of legs.entries()) {
      const f = await movedChecks(client, vms[k]!, 'B', leg);
      if (f.length === 0) moved++;
      failures.push(...f);
    }
    const times = legs.map((l) => l.seconds).sort((a, b) => a - b);
    const figure: ThroughputFigure = {
      handoffsPerMinute: Math.round((moved / (seconds / 60)) * 10) / 10,
      n: o.n,
      moved,
      seconds: Math.round(seconds * 10) / 10,
      linkMbps: cluster.wan ? cluster.wan.mbps : null,
      handoffSeconds: { min: round1(times[0]!), median: round1(times[Math.floor(times.length / 2)]!), max: round1(times[times.length - 1]!) },
      failures,
    };
    o.log(`  ${moved} of ${o.n} moved in ${figure.seconds} s: ${figure.handoffsPerMinute} handoffs/min (each ${figure.handoffSeconds.min}–${figure.handoffSeconds.max} s)`);
    return figure;
  } finally {
    await destroyEverywhere(client, vms);
    if (cluster.wan && nominal !== undefined && cluster.wan.mbps !== nominal) await cluster.wan.setRate(nominal);
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;
