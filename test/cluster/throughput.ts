import { setTimeout as sleep } from 'node:timers/promises';
import type { EmbeddedCluster } from '../../infra/embedded-cluster.js';
import { executeWorkflow } from '../../client/execute-workflow.js';
import { launchVm } from '../../workflows/vm-lifecycle.js';
import { destroyEverywhere, followHandoff, movedChecks } from './site.js';

export interface ThroughputFigure {
  /** Handoffs that moved, verified, per minute of wall clock while handoffs ran (each round from its first start to its last end). */
  handoffsPerMinute: number;
  n: number;
  rounds: number;
  handoffs: number;
  moved: number;
  seconds: number;
  linkMbps: number | null;
  /** Each handoff's own time (start call to result), s. */
  handoffSeconds: { min: number; median: number; max: number };
  roundSeconds: number[];
  failures: string[];
}

/** The small idle guest each VM runs: 4 MiB it rewrites a little, a beat every 100 ms. */
const IDLE = { name: 'heartbeat', args: ['4', '100'] };

/**
 * N small idle VMs launched on A, then moved all at once, `rounds` times (A → B, B → A, A → B, …),
 * each handoff started as the CLI starts one and waited for (no progress polling, which would add
 * load of its own). The figure: handoffs that moved — verified, the guest continuing, running only
 * at the target — per minute of the rounds' time. One round of idle VMs lasts seconds; several
 * give a figure that one slow handoff does not decide. The VMs are ended afterwards.
 */
export async function measureThroughput(
  cluster: EmbeddedCluster,
  o: { n: number; rounds: number; baseImageId: string; label: string; linkMbps?: number; log(line: string): void },
): Promise<ThroughputFigure> {
  const { client } = cluster;
  const vms = Array.from({ length: o.n }, (_, k) => `cl-tp-${o.label}-${k + 1}`);
  const nominal = cluster.wan?.mbps;
  if (cluster.wan && o.linkMbps !== undefined) await cluster.wan.setRate(o.linkMbps);
  try {
    for (const vmId of vms) await executeWorkflow(client, launchVm, { vmId, cloudlet: 'A', baseImageId: o.baseImageId, workload: IDLE });
    o.log(`  ${o.n} idle VMs running on A; ${o.rounds} rounds of moving them all at once`);
    await sleep(2_000);
    const failures: string[] = [];
    const times: number[] = [];
    const roundSeconds: number[] = [];
    let moved = 0;
    for (let round = 0; round < o.rounds; round++) {
      const [from, to] = round % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
      const t0 = Date.now();
      const legs = await Promise.all(vms.map((vmId) => followHandoff(client, { vmId, source: from, target: to })));
      roundSeconds.push((Date.now() - t0) / 1000);
      let movedNow = 0;
      for (const [k, leg] of legs.entries()) {
        const f = await movedChecks(client, vms[k]!, to, leg);
        if (f.length === 0) movedNow++;
        failures.push(...f.map((x) => `round ${round + 1}: ${x}`));
        times.push(leg.seconds);
      }
      moved += movedNow;
      o.log(`  round ${round + 1} ${from} → ${to}: ${movedNow} of ${o.n} moved in ${roundSeconds[round]!.toFixed(1)} s`);
      // A VM that did not move stays where it is: the next round would start from the wrong place.
      if (movedNow < o.n) break;
    }
    const seconds = roundSeconds.reduce((a, b) => a + b, 0);
    times.sort((a, b) => a - b);
    const figure: ThroughputFigure = {
      handoffsPerMinute: round1(moved / (seconds / 60)),
      n: o.n,
      rounds: o.rounds,
      handoffs: times.length,
      moved,
      seconds: round1(seconds),
      linkMbps: cluster.wan ? cluster.wan.mbps : null,
      handoffSeconds: { min: round1(times[0]!), median: round1(times[Math.floor(times.length / 2)]!), max: round1(times[times.length - 1]!) },
      roundSeconds: roundSeconds.map(round1),
      failures,
    };
    o.log(`  ${moved} of ${o.n * o.rounds} handoffs moved in ${figure.seconds} s: ${figure.handoffsPerMinute} handoffs/min (each ${figure.handoffSeconds.min}–${figure.handoffSeconds.max} s)`);
    return figure;
  } finally {
    await destroyEverywhere(client, vms);
    if (cluster.wan && nominal !== undefined && cluster.wan.mbps !== nominal) await cluster.wan.setRate(nominal);
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;
